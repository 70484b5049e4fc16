"""Peak-memory measurement used by the benchmark and the algorithm comparison, and keep_freed_memory."""

import os
import platform
import subprocess
import sys

import pytest

from agents.common import resources
from agents.common.resources import peak_rss_mib


def _in_bare_interpreter(code: str, env: dict[str, str] | None = None) -> str:
    """Run ``code`` with ``peak_rss_mib`` defined, in a fresh interpreter that does not import torch."""
    # runpy: only this module, without importing torch through the agents package
    prelude = f"import runpy; peak_rss_mib = runpy.run_path({resources.__file__!r})['peak_rss_mib']\n"
    command = [sys.executable, "-c", prelude + code]
    return subprocess.run(command, capture_output=True, text=True, check=True, env=env).stdout


def test_peak_rss_grows_with_an_allocation() -> None:
    before, after = map(
        float,
        _in_bare_interpreter(
            "before = peak_rss_mib()\nblock = b'\\x01' * (200 * 2**20)\nprint(before, peak_rss_mib())"
        ).split(),
    )
    assert before < 100 and after - before > 190  # the 200 MiB block, every page written


def test_a_child_process_reports_its_own_peak_not_its_parents() -> None:
    block = b"\x01" * (512 * 2**20)  # the parent peaks above 512 MiB
    child = float(_in_bare_interpreter("print(peak_rss_mib())"))
    assert peak_rss_mib() >= len(block) / 2**20
    assert child < 128  # a bare interpreter; ru_maxrss would report the parent's > 512 MiB


def _rss_after_freeing_a_block(keep: bool) -> tuple[float, float]:
    """Resident MiB with a 256 MiB block allocated and after freeing it, in a fresh interpreter (the setting is
    process-wide) on glibc's defaults, with or without ``keep_freed_memory`` called first."""
    code = (
        f"m = runpy.run_path({resources.__file__!r})\n"
        f"kept = m['keep_freed_memory']() if {keep} else True\n"
        "block = b'\\x01' * (256 * 2**20)\nwith_block = m['current_rss_mib']()\ndel block\n"
        "print(kept, with_block, m['current_rss_mib']())"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}  # glibc's allocator as it ships
    kept, with_block, after = _in_bare_interpreter(code, env).split()
    assert kept == "True"  # mallopt took both settings
    return float(with_block), float(after)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="keep_freed_memory sets glibc's allocator")
def test_freed_memory_is_kept_for_reuse_only_when_asked() -> None:
    with_block, after = _rss_after_freeing_a_block(keep=False)
    assert with_block - after > 200  # glibc mapped the large block on its own and unmapped it when freed
    with_block, after = _rss_after_freeing_a_block(keep=True)
    assert with_block - after < 16  # the block came from the heap and stays there for the next allocation
