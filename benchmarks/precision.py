"""bf16 against float32 on TRL's PPO shape, side by side in one process: seconds per iteration and the first-epoch
probability ratio.

    .venv/bin/python benchmarks/precision.py                 # SmolLM2-135M, full fine-tuning, ~6 minutes
    .venv/bin/python benchmarks/precision.py --model tiny    # seconds

Shape (as ``benchmarks/group_vs_ppo.py``): 16 envs, review openings up to 64 tokens, 48 new tokens, PPO with 4
epochs over minibatches of 8 episodes and the KL reference (a frozen copy), then GRPO (4 groups of 4, 1 epoch).
For each ``compute_dtype``: seconds per iteration (after one warm-up iteration), and |ratio - 1| of every token of
one rollout, between the log-probabilities sampled with the KV cache and those the update recomputes with one
full-sequence pass per episode, before any optimizer step (float32: rounding only). Results go to
``benchmarks/precision.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback, CallbackList

sys.path.insert(0, str(Path(__file__).parent))
from group_vs_ppo import IterationTimer  # noqa: E402
from throughput import make_env, tiny_config  # noqa: E402

from agents import GRPO, CausalLMPolicy, EpisodeRolloutBuffer, KLPenaltyCallback  # noqa: E402

RESULTS = Path(__file__).with_name("precision.json")


class FirstEpochRatio(BaseCallback):
    """|ratio - 1| of every token of the first rollout, scored by the update path before any optimizer step."""

    def __init__(self) -> None:
        super().__init__()
        self.deviations: np.ndarray | None = None

    def _on_rollout_end(self) -> None:
        if self.deviations is not None:
            return
        deviations = []
        with torch.no_grad():
            for batch in self.model.rollout_buffer.get(8 * 48):
                _, log_prob, _ = self.model.policy.evaluate_actions(batch.observations, batch.actions)
                deviations.append((torch.exp(log_prob - batch.old_log_prob.flatten()) - 1).abs())
        self.deviations = torch.cat(deviations).double().numpy()

    def _on_step(self) -> bool:
        return True

    def quantiles(self) -> dict[str, float]:
        assert self.deviations is not None
        values = self.deviations
        return {f"p{q}": float(np.percentile(values, q)) for q in (50, 90, 99)} | {"max": float(values.max())}


def seconds_per_iteration(
    algorithm: str,
    spec: Any,
    compute_dtype: str,
    iterations: int,
    gradient_checkpointing: bool = False,
    lora_r: int = 0,
    chat: bool = False,
    micro_batch: int = 0,
    head_dtype: str = "float32",
) -> float:
    """Seconds per iteration of ``algorithm`` ("ppo" or "grpo") after one warm-up iteration; ``lora_r`` > 0 trains
    LoRA adapters of that rank on all linear layers (alpha 2r, as the main job), ``chat`` chat-formats the prompts,
    ``micro_batch`` > 0 accumulates GRPO's gradients over passes of that many completions, ``head_dtype`` is the LM
    head's matmul dtype."""
    env = make_env(stop_on_eos=False, chat=chat)
    policy_kwargs: dict[str, Any] = dict(
        model=spec, compute_dtype=compute_dtype, gradient_checkpointing=gradient_checkpointing, head_dtype=head_dtype
    )
    if lora_r > 0:
        policy_kwargs["lora"] = dict(r=lora_r, lora_alpha=2 * lora_r, target_modules="all-linear")
    timer = IterationTimer()
    steps = (iterations + 1) * 48 * env.num_envs
    if algorithm == "ppo":
        model: Any = PPO(
            CausalLMPolicy, env, n_steps=48, batch_size=8 * 48, n_epochs=4, learning_rate=1e-5,
            rollout_buffer_class=EpisodeRolloutBuffer, policy_kwargs=policy_kwargs, seed=0,
        )  # fmt: skip
        model.learn(steps, callback=CallbackList([KLPenaltyCallback(kl_coef=0.05), timer]))
    else:
        model = GRPO(
            CausalLMPolicy, env, group_size=4, batch_size=8 * 48, kl_coef=0.04, learning_rate=1e-5,
            micro_batch_size=micro_batch * 48 or None, policy_kwargs=policy_kwargs, seed=0,
        )  # fmt: skip
        model.learn(steps, callback=timer)
    seconds = timer.seconds()[1:]
    return sum(seconds) / len(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=["smollm2", "tiny"], default="smollm2")
    parser.add_argument("--iterations", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(2)
    spec = "smollm2-135m-instruct" if args.model == "smollm2" else tiny_config()
    results: dict[str, Any] = {}
    for dtype in ("float32", "bfloat16"):
        ratio_model = GRPO(
            CausalLMPolicy, make_env(stop_on_eos=False), group_size=4,
            policy_kwargs=dict(model=spec, compute_dtype=dtype), seed=0,
        )  # fmt: skip
        ratio = FirstEpochRatio()
        ratio_model.learn(1, callback=ratio)
        results[dtype] = {"first_epoch_abs_ratio_minus_1": ratio.quantiles()}
        del ratio_model
        for algorithm in ("ppo", "grpo"):
            results[dtype][f"{algorithm}_seconds_per_iteration"] = seconds_per_iteration(
                algorithm, spec, dtype, args.iterations
            )
        print(dtype, json.dumps(results[dtype]), flush=True)
    for algorithm in ("ppo", "grpo"):
        key = f"{algorithm}_seconds_per_iteration"
        results[f"{algorithm}_bf16_to_fp32"] = results["bfloat16"][key] / results["float32"][key]
    results["meta"] = {
        "date": date.today().isoformat(),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
        "model": args.model,
        "trl_ppo_seconds_per_iteration_same_shape": 96.9,  # measured 2026-11-24, issue 11 (TRL 0.24 PPOTrainer)
    }
    print(json.dumps(results, indent=2))
    if args.model == "smollm2":
        RESULTS.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
