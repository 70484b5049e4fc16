"""Peak-memory measurement used by the benchmark and the algorithm comparison."""

import subprocess
import sys

from agents import resources
from agents.resources import peak_rss_mib


def test_peak_rss_grows_with_an_allocation() -> None:
    before = peak_rss_mib()
    block = b"\x01" * (64 * 2**20)  # 64 MiB, every page written
    assert peak_rss_mib() >= before + 60 or before > 64  # a large earlier peak may already cover it
    assert peak_rss_mib() >= len(block) / 2**20


def test_a_child_process_reports_its_own_peak_not_its_parents() -> None:
    block = b"\x01" * (512 * 2**20)  # the parent peaks above 512 MiB
    child = subprocess.run(
        # runpy: only this module, without importing torch through the agents package
        [sys.executable, "-c", f"import runpy; print(runpy.run_path({resources.__file__!r})['peak_rss_mib']())"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert peak_rss_mib() >= len(block) / 2**20
    assert float(child.stdout) < 128  # a bare interpreter; ru_maxrss would report the parent's > 512 MiB
