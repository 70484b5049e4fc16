"""Memory: measurement that is true for child processes too, and the C heap's reuse of freed memory."""

from __future__ import annotations

import ctypes
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


#: glibc's ``mallopt`` parameters (``<malloc.h>``).
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_MMAP_MAX = -1, -3, -4


def keep_freed_memory() -> bool:
    """Let this process reuse the memory it frees instead of handing it back to the system (glibc only).

    On CPU, PyTorch takes every tensor from the C heap (there is no caching allocator as on CUDA). glibc serves
    large blocks (above 32 MiB always, smaller ones above its moving threshold) with fresh ``mmap`` pages and
    unmaps them when freed, so every logits-sized tensor (rows x vocabulary), every embedding gradient and every
    large activation is backed by new zeroed pages at every update: one page fault per 4 KiB. This sets
    ``M_MMAP_MAX`` to 0 (blocks come from the heap, where freed blocks are reused; a thread other than the main
    one still maps a block larger than its arena's 64 MiB heap) and ``M_TRIM_THRESHOLD`` to 2 GiB (free memory
    at the heap's top is returned only beyond it): the resident set no longer shrinks after a peak, and
    fragmentation can raise the peak (by up to ~10% in our runs). Measured: docs/speed.md ("Freed memory kept for
    reuse"; SmolLM2-135M GRPO updates take ~0.8x the time, whole iterations ~0.88x).

    Process-wide and one-way: call it once at the start of a program, before the models are loaded (blocks
    already mapped stay mapped). ``agents.train`` calls it unless ``--no-keep-freed-memory``. The environment
    variables ``MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=2147483647`` do the same for any process. Returns
    whether it took effect: ``False`` without glibc (macOS, Windows, musl), where it does nothing.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # mallopt returns 1 on success; an int parameter caps the trim threshold at 2**31 - 1 (2 GiB of free heap top).
    return bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, 2**31 - 1))
