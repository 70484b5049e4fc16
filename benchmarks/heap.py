"""Where the C heap holds GRPO's peak memory: resident set and glibc's own figures, phase by phase (Linux, glibc).

    .venv/bin/python benchmarks/heap.py                          # ~1 minute on 2 CPU cores
    .venv/bin/python benchmarks/heap.py --update-mmap-kib 128    # glibc's mmap threshold at 128 KiB in updates
    .venv/bin/python benchmarks/heap.py --trim before-update     # malloc_trim(0) before each update
    MALLOC_MMAP_THRESHOLD_=131072 .venv/bin/python benchmarks/heap.py --label process-mmap-128k

Runs ``make bench-peer``'s ``agents.GRPO`` bf16 case (SmolLM2-135M-Instruct, full fine-tuning, 4 groups of 4
completions of 48 tokens, 1 epoch over minibatches of 8, k3 KL in the loss; 2 iterations after a warm-up) while a
thread samples the resident set every 3 ms. For each phase (the rollout, the reference pass, the update's forward and
backward passes, the optimizer step) it prints the highest resident set seen and, at that moment, what glibc's
``mallinfo2`` says: bytes in use (heap chunks and mmapped ones) and bytes free inside the heap. The resident set
minus both is what lives outside malloc (libraries, Python's own arenas, the weights loaded from their file).

``--update-mmap-kib K`` sets glibc's ``M_MMAP_THRESHOLD`` to K KiB (after a ``malloc_trim``) for the update and to
32 MiB (glibc's own ceiling for its dynamic threshold) afterwards: allocations above K KiB then go to ``mmap`` and
return to the system when freed, at the price of fresh zeroed pages for each one. With ``MALLOC_MMAP_THRESHOLD_``
set in the environment instead, the setting holds for the whole process. ``--trim before-update`` / ``after-step``
calls ``malloc_trim(0)`` (free heap pages back to the system) before each update / after each optimizer step.

Each run adds its result to ``benchmarks/heap.json`` under ``--label`` (default: the options given). Results:
docs/speed.md, "Where the update's peak sits in the C heap".
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import platform
import sys
import threading
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import torch
from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook

sys.path.insert(0, str(Path(__file__).parent))
from precision import seconds_per_iteration  # noqa: E402

from agents.common.resources import M_MMAP_THRESHOLD, current_rss_mib, peak_rss_mib  # noqa: E402
from agents.grpo.grpo import GRPO  # noqa: E402

RESULTS = Path(__file__).with_name("heap.json")


class MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost",
        )
    ]  # fmt: skip


class PhaseSampler:
    """The highest resident set of each phase, with glibc's in-use and free bytes at that moment (MiB)."""

    def __init__(self, libc: ctypes.CDLL) -> None:
        self.libc = libc
        self.phase = "setup"
        self.peaks: dict[str, dict[str, float]] = {}
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while True:
            rss, phase = current_rss_mib(), self.phase
            if rss > self.peaks.get(phase, {}).get("rss", 0.0):
                info = self.libc.mallinfo2()
                self.peaks[phase] = {
                    "rss": rss,
                    "malloc_in_use": (info.uordblks + info.hblkhd) / 2**20,
                    "free_in_heap": info.fordblks / 2**20,
                }
            time.sleep(0.003)

    def label(self, name: str, function: Callable[..., Any]) -> Callable[..., Any]:
        """``function`` with this sampler's phase set to ``name`` while it runs."""

        def labelled(*args: Any, **kwargs: Any) -> Any:
            outer, self.phase = self.phase, name
            try:
                return function(*args, **kwargs)
            finally:
                self.phase = outer

        return labelled


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--update-mmap-kib", type=int, default=0, help="glibc's mmap threshold in updates (0: unset)")
    parser.add_argument("--trim", choices=["before-update", "after-step"], help="malloc_trim(0) at these points")
    parser.add_argument("--label", help="the result's name in heap.json (default: from the options)")
    args = parser.parse_args()
    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = MallInfo2
    sampler = PhaseSampler(libc)
    GRPO.collect_rollouts = sampler.label("rollout", GRPO.collect_rollouts)  # type: ignore[method-assign]
    GRPO._reference_log_probs = sampler.label("reference", GRPO._reference_log_probs)  # type: ignore[method-assign]
    GRPO._backward_part = sampler.label("forward_backward", GRPO._backward_part)  # type: ignore[method-assign]
    train = sampler.label("update", GRPO.train)
    seconds = {"update": 0.0}

    def timed_train(self: GRPO) -> None:
        if args.update_mmap_kib or args.trim == "before-update":
            libc.malloc_trim(0)
        if args.update_mmap_kib:
            libc.mallopt(M_MMAP_THRESHOLD, args.update_mmap_kib * 1024)
        start = time.perf_counter()
        try:
            train(self)
        finally:
            seconds["update"] += time.perf_counter() - start
            if args.update_mmap_kib:
                libc.mallopt(M_MMAP_THRESHOLD, 32 * 2**20)

    GRPO.train = timed_train  # type: ignore[method-assign]
    outer: list[str] = []

    def before_step(*_: Any) -> None:
        outer.append(sampler.phase)
        sampler.phase = "optimizer_step"

    def after_step(*_: Any) -> None:
        sampler.phase = outer.pop()
        if args.trim == "after-step":
            libc.malloc_trim(0)

    register_optimizer_step_pre_hook(before_step)
    register_optimizer_step_post_hook(after_step)
    torch.set_num_threads(2)
    per_iteration = seconds_per_iteration("grpo", "smollm2-135m-instruct", "bfloat16", 2)
    result = {
        "seconds_per_iteration": per_iteration,
        "update_seconds_per_iteration": seconds["update"] / 3,  # the warm-up and the 2 timed iterations
        "peak_rss_mib": peak_rss_mib(),
        "update_mmap_threshold_kib": args.update_mmap_kib or None,
        "trim": args.trim,
        "malloc_mmap_threshold_env": os.environ.get("MALLOC_MMAP_THRESHOLD_"),
        "phases": {phase: {k: round(v) for k, v in peak.items()} for phase, peak in sampler.peaks.items()},
        "date": date.today().isoformat(),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
    }
    print(json.dumps(result, indent=2))
    parts = []  # the options given, e.g. "update-mmap-128k"
    if args.update_mmap_kib:
        parts.append(f"update-mmap-{args.update_mmap_kib}k")
    if args.trim:
        parts.append(args.trim)
    label = args.label or "_".join(parts) or "default"
    stored = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    RESULTS.write_text(json.dumps({**stored, label: result}, indent=2) + "\n")


if __name__ == "__main__":
    main()
