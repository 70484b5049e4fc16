"""Memory measurement that is true for child processes too."""

from __future__ import annotations

import resource
import sys


def peak_rss_mib() -> float:
    """Peak resident set size of this process, in MiB.

    Reads ``VmHWM`` from ``/proc/self/status`` on Linux. ``getrusage().ru_maxrss`` is not used there: Linux keeps it
    across ``fork`` and ``execve``, so a child process started by a large parent (a benchmark, a multiprocessing
    pool) reports the parent's peak instead of its own. ``VmHWM`` belongs to the process's own address space.
    Elsewhere falls back to ``ru_maxrss`` (bytes on macOS, KiB on other systems).
    """
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # the value is in kB
    except OSError:
        pass
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return maxrss / 2**20 if sys.platform == "darwin" else maxrss / 1024


def current_rss_mib() -> float:
    """Resident set size of this process now, in MiB (``/proc/self/statm`` on Linux; elsewhere the peak)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            return int(statm.read().split()[1]) * resource.getpagesize() / 2**20
    except OSError:
        return peak_rss_mib()
