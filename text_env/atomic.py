"""Atomic writes: a file or a directory is written beside its final place and renamed into it in one step, so a
reader (or a crash) never sees half of it. The one implementation behind model conversion, export and checkpoints."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path


def _default_mode(directory: bool) -> int:
    """The permissions a plain ``open`` / ``mkdir`` would give under the current umask (``tempfile`` makes its
    staging files 0600 and directories 0700, which would hide a shared model or checkpoint from its group)."""
    umask = os.umask(0)
    os.umask(umask)
    return (0o777 if directory else 0o666) & ~umask


def atomic_directory(target: str | os.PathLike[str], write: Callable[[Path], None], *, replace: bool = True) -> Path:
    """Create directory ``target`` with ``write(staging)``, where ``staging`` is an empty directory beside it.

    If ``write`` fails, the staging directory is removed and ``target`` is untouched. An existing ``target`` is
    replaced only once the new one is complete (``replace=True``), or kept as it is (``replace=False``: e.g. the
    same cache entry that another process finished first).
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent))
    try:
        write(staging)
        staging.chmod(_default_mode(directory=True))
        if target.exists() and replace:
            retired = Path(tempfile.mkdtemp(prefix=f".{target.name}.old.", dir=target.parent))
            os.replace(target, retired / "previous")
            os.replace(staging, target)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            try:
                os.rename(staging, target)
            except OSError:
                if not target.is_dir():  # not a lost race with another writer: a real error
                    raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def atomic_file(target: str | os.PathLike[str], write: Callable[[Path], None]) -> Path:
    """Create or replace file ``target`` with ``write(staging_path)``; on failure ``target`` is untouched."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    descriptor, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(descriptor)
    staging = Path(name)
    try:
        write(staging)
        staging.chmod(_default_mode(directory=False))
        os.replace(staging, target)  # atomic on POSIX: readers see the old file or the new one, never half
    finally:
        staging.unlink(missing_ok=True)
    return target
