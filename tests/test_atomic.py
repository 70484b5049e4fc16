"""Atomic writes leave files and directories with the permissions a plain write would give (not tempfile's 0600)."""

from __future__ import annotations

import os
import stat

from text_env.atomic import atomic_directory, atomic_file


def test_atomic_outputs_follow_the_umask(tmp_path):
    previous = os.umask(0o022)
    try:
        file = atomic_file(tmp_path / "checkpoint.zip", lambda staging: staging.write_bytes(b"x"))
        directory = atomic_directory(tmp_path / "model", lambda staging: (staging / "config.json").write_text("{}"))
    finally:
        os.umask(previous)
    assert stat.S_IMODE(file.stat().st_mode) == 0o644  # readable by the group, as SB3's own save would leave it
    assert stat.S_IMODE(directory.stat().st_mode) == 0o755
    assert file.read_bytes() == b"x" and (directory / "config.json").read_text() == "{}"
