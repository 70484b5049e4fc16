"""The LM head's matmul in bf16 (``head_dtype="bfloat16"``) against float32, side by side in one process.

    .venv/bin/python benchmarks/head_dtype.py            # ~6 minutes on 2 CPU cores

SmolLM2-135M-Instruct, bf16 compute (``compute_dtype="bfloat16"``), full fine-tuning, 2 threads:

- rollout: generated tokens/s of SB3's ``collect_rollouts`` (32 envs, prompts left-padded to 64, 48 new tokens) with
  a float32 and a bf16 head, alternated ABBA (``--rounds`` times), against HF ``generate`` in float32 on the same
  prompts, batch and lengths, timed between them (the floor ``make bench`` states its rollout ratios against);
- GRPO iteration: seconds per iteration of ``agents.GRPO`` on ``make bench-peer``'s shape (4 groups of 4
  completions of 48 tokens, 1 epoch over minibatches of 8, k3 KL in the loss), each head once per round, alternated;
- the first-epoch ``|ratio - 1|`` of each (the rollout's stored log-probabilities against the update's);
- whether torch has a bf16 x bf16 -> float32 matmul on the CPU (the head's speed without bf16 logits).

The summary ratios are of medians.

The head's 576 x 49,152 matmul is the largest of the model: in float32 it takes as long as the whole bf16 trunk at a
decode step (``benchmarks/decode_ceiling.py``). Results go to ``benchmarks/head_dtype.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
from datetime import date
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).parent))
import throughput  # noqa: E402
from precision import FirstEpochRatio, seconds_per_iteration  # noqa: E402
from throughput import NEW_TOKENS, make_env, make_ppo, time_collect, time_generate  # noqa: E402

from agents import GRPO, CausalLMPolicy  # noqa: E402

RESULTS = Path(__file__).with_name("head_dtype.json")
SPEC = "smollm2-135m-instruct"
HEADS = ("float32", "bfloat16")


def first_epoch_ratio(head_dtype: str) -> dict[str, float]:
    """Quantiles of ``|ratio - 1|`` over the first epoch of one GRPO update (bench-peer's shape)."""
    env = make_env(stop_on_eos=False)
    model = GRPO(
        CausalLMPolicy, env, group_size=4, batch_size=8 * 48, kl_coef=0.04, learning_rate=1e-5, seed=0,
        policy_kwargs=dict(model=SPEC, compute_dtype="bfloat16", head_dtype=head_dtype),
    )  # fmt: skip
    ratio = FirstEpochRatio()
    model.learn(1, callback=ratio)
    return ratio.quantiles()


def float32_output_matmul() -> str:
    """Whether torch multiplies bf16 by bf16 into float32 on the CPU (``torch.mm(..., out_dtype=torch.float32)``),
    which would give the bf16 head's speed without rounding the logits to bf16: "available", or torch's error."""
    a = torch.ones(4, 8, dtype=torch.bfloat16)
    try:
        torch.mm(a, a.t(), out_dtype=torch.float32)
    except (NotImplementedError, RuntimeError, TypeError) as error:
        return f"{type(error).__name__}: {str(error).splitlines()[0][:160]}"
    return "available"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2, help="ABBA rounds of the rollout comparison")
    parser.add_argument("--grpo-rounds", type=int, default=2, help="rounds of the GRPO iteration comparison")
    args = parser.parse_args()
    torch.set_num_threads(2)
    bench_peer_envs, throughput.N_ENVS = throughput.N_ENVS, 32  # make bench's rollout shape; GRPO keeps bench-peer's
    env = make_env()
    models = {head: make_ppo(SPEC, env, fast=True, compute_dtype="bfloat16", head_dtype=head) for head in HEADS}
    models["bfloat16"].policy.load_state_dict(models["float32"].policy.state_dict())
    tokens = env.num_envs * NEW_TOKENS
    for model in models.values():
        time_collect(model, 2)  # warm-up
    rollout: dict[str, list[float]] = {head: [] for head in HEADS}
    generate: list[float] = []
    for round_ in range(args.rounds):
        order = HEADS if round_ % 2 == 0 else HEADS[::-1]
        for head in order:
            rollout[head].append(tokens / time_collect(models[head], NEW_TOKENS))
        generate.append(tokens / time_generate(models["float32"].policy.lm, env))
        for head in order[::-1]:
            rollout[head].append(tokens / time_collect(models[head], NEW_TOKENS))
    del models
    throughput.N_ENVS = bench_peer_envs
    grpo: dict[str, list[float]] = {head: [] for head in HEADS}
    for round_ in range(args.grpo_rounds):
        for head in HEADS if round_ % 2 == 0 else HEADS[::-1]:
            grpo[head].append(seconds_per_iteration("grpo", SPEC, "bfloat16", 2, head_dtype=head))
    results: dict[str, Any] = {
        "rollout_tokens_per_s": rollout,
        "generate_float32_tokens_per_s": generate,
        "grpo_seconds_per_iteration": grpo,
        "first_epoch_abs_ratio_minus_1": {head: first_epoch_ratio(head) for head in HEADS},
        "bf16_matmul_into_float32_on_cpu": float32_output_matmul(),
    }
    median = {head: statistics.median(values) for head, values in rollout.items()}
    results["rollout_bf16_head_over_float32_head"] = median["bfloat16"] / median["float32"]
    results["rollout_over_generate_float32"] = {head: median[head] / statistics.median(generate) for head in HEADS}
    results["grpo_bf16_head_over_float32_head"] = statistics.median(grpo["bfloat16"]) / statistics.median(
        grpo["float32"]
    )
    results["meta"] = {
        "date": date.today().isoformat(),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
        "model": "SmolLM2-135M-Instruct, full fine-tuning, compute_dtype bfloat16",
        "envs": env.num_envs,
        "new_tokens": NEW_TOKENS,
    }
    print(json.dumps(results, indent=2))
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
