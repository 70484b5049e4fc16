"""The matmul floor of one decode step: what a bf16 rollout can gain over HF ``generate`` in float32 on this CPU.

    .venv/bin/python benchmarks/decode_ceiling.py [--rows 32]

A decode step at ``rows`` envs is one ``(rows, in) x (in, out)`` matmul per linear layer of the trunk plus the LM
head's ``(rows, hidden) x (hidden, vocab)``. This times each of SmolLM2-135M's linear layers (``nn.Linear``) on
``rows`` random rows, in float32 and with weights already in bf16, and sums them per step; the trunk also with
oneDNN's pre-packed bf16 weights (as the rollout's decode twin runs them); and the LM head in float32 (as the
rollout keeps it: the stored log-probabilities must equal the update's) and in bf16.
The ratio of the float32 sum to the bf16 trunk + float32 head is the ceiling of "rollout tokens/s over ``generate``
in float32" from the matmuls alone; ``generate`` also pays ``torch.multinomial`` and its per-step overhead, which
the rollout avoids (docs/speed.md). Then real bf16 rollouts with the decode twin pre-packed or not, alternated
(``--rollout-pairs``; 0 skips them). Results: ``benchmarks/decode_ceiling.json``.
"""

from __future__ import annotations

import argparse
import functools
import json
import platform
import sys
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))  # throughput.py

from agents.common.models import load_causal_lm, prepack_linears, trunk_and_head

RESULTS = Path(__file__).with_name("decode_ceiling.json")


def microseconds(call: Callable[[], object], repeats: int) -> float:
    """Mean wall time of ``call`` in microseconds, after a few warm-up calls."""
    for _ in range(3):
        call()
    start = time.perf_counter()
    for _ in range(repeats):
        call()
    return (time.perf_counter() - start) / repeats * 1e6


def step_ms(weights: list[torch.Tensor], rows: int, dtype: torch.dtype, repeats: int, prepacked: bool = False) -> float:
    """Milliseconds of one ``nn.Linear`` call per weight ``(out, in)`` on ``rows`` rows, weights pre-cast to
    ``dtype``; ``prepacked``: through :func:`~agents.common.models.prepack_linears`, as the bf16 decode twin."""
    total = 0.0
    for weight in weights:
        layer = nn.Linear(weight.shape[1], weight.shape[0], bias=False, dtype=dtype)
        layer.weight.data.copy_(weight.detach())  # (out, in)
        if prepacked and prepack_linears(layer, rows) == 0:
            raise SystemExit("this torch has no oneDNN pre-packing")
        x = torch.randn(rows, weight.shape[1], dtype=dtype)  # (rows, in)
        total += microseconds(functools.partial(layer, x), repeats)
    return total / 1e3


def rollouts_with_and_without_prepacking(rows: int, pairs: int) -> dict[str, Any]:
    """Tokens/s of bf16 rollouts (``rows`` envs x 48 tokens, ``benchmarks/throughput.py``'s PPO) whose decode twin
    is pre-packed or not, alternated in this process (ABBA: each order equally often), full fine-tuning and LoRA
    r=16 (the main job's policy)."""
    import throughput
    from throughput import NEW_TOKENS, make_env, make_ppo, time_collect

    import agents.common.models as models

    real, off = models.prepack_linears, (lambda module, rows=32: 0)
    throughput.N_ENVS = rows  # make_env's env count (its own default is 16)
    env = make_env()
    assert env.num_envs == rows
    out: dict[str, Any] = {}
    for case, extra in {"full": {}, "lora16": {"lora": dict(r=16, lora_alpha=32, target_modules="all-linear")}}.items():
        model = make_ppo("smollm2-135m-instruct", env, fast=True, compute_dtype="bfloat16", **extra)
        time_collect(model, 2)  # warm-up
        speeds: dict[str, list[float]] = {"prepacked": [], "plain": []}
        for i in range(2 * pairs):
            for name in ("prepacked", "plain") if i % 2 == 0 else ("plain", "prepacked"):
                models.prepack_linears = real if name == "prepacked" else off  # type: ignore[assignment]
                model.policy.reset_caches()  # the twin is made again, with or without packing, inside the timing
                speeds[name].append(rows * NEW_TOKENS / time_collect(model, NEW_TOKENS))
        models.prepack_linears = real
        out[case] = speeds | {"ratio_of_means": sum(speeds["prepacked"]) / sum(speeds["plain"])}
        print(case, json.dumps(out[case]), flush=True)
        del model
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=32, help="envs decoded together (batch rows)")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--rollout-pairs", type=int, default=2, help="ABBA pairs of real rollouts with and without packing (0: none)"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    lm = load_causal_lm("smollm2-135m-instruct")
    trunk, head = trunk_and_head(lm)
    linears = [m.weight for m in trunk.modules() if isinstance(m, torch.nn.Linear)]
    with torch.no_grad():
        result: dict[str, object] = {
            "trunk_float32_ms": step_ms(linears, args.rows, torch.float32, args.repeats),
            "trunk_bf16_ms": step_ms(linears, args.rows, torch.bfloat16, args.repeats),
            "head_float32_ms": step_ms([head.weight], args.rows, torch.float32, args.repeats),
            "head_bf16_ms": step_ms([head.weight], args.rows, torch.bfloat16, args.repeats),
        }
        if torch.backends.mkldnn.is_available():
            result["trunk_bf16_prepacked_ms"] = step_ms(linears, args.rows, torch.bfloat16, args.repeats, True)
    trunk = result.get("trunk_bf16_prepacked_ms", result["trunk_bf16_ms"])
    generate = result["trunk_float32_ms"] + result["head_float32_ms"]  # type: ignore[operator]
    result |= {
        "ceiling_bf16_trunk_float32_head": generate / (trunk + result["head_float32_ms"]),  # type: ignore[operator]
        "ceiling_bf16_trunk_and_head": generate / (trunk + result["head_bf16_ms"]),  # type: ignore[operator]
        "rows": args.rows,
        "linear_layers": len(linears),
        "date": date.today().isoformat(),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
    }
    if args.rollout_pairs:
        result["rollout_tokens_per_s"] = rollouts_with_and_without_prepacking(args.rows, args.rollout_pairs)
    print(json.dumps(result, indent=2))
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
