"""Seconds per iteration of GRPO against PPO on the same tokens, side by side in one process.

    .venv/bin/python benchmarks/group_vs_ppo.py                 # SmolLM2-135M, full fine-tuning, ~4 minutes
    .venv/bin/python benchmarks/group_vs_ppo.py --model tiny    # seconds

TRL's PPO shape: 16 envs, prompts of the shipped review openings (up to 64 tokens), 48 new tokens (no EOS stop, so
both algorithms generate exactly 16 x 48 tokens), KL reference a frozen copy:

- PPO: stock SB3 ``PPO`` + ``CausalLMPolicy`` (value head) + ``EpisodeRolloutBuffer`` + ``KLPenaltyCallback``,
  4 epochs, minibatches of 8 episodes (TRL's ``ppo_epochs=4``, ``mini_batch_size=8``);
- GRPO: ``GRPO`` (no value head), 4 groups of 4, 1 epoch, minibatches of 8 completions, ``kl_coef=0.04`` with k3
  in the loss (DeepSeekMath).

Each algorithm runs ``--iterations`` + 1 iterations; the first (warm-up) is not timed. The ratio is the figure to
read; results go to ``benchmarks/group_vs_ppo.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from datetime import date
from pathlib import Path
from typing import Any

import torch
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback, CallbackList

sys.path.insert(0, str(Path(__file__).parent))
from throughput import make_env, tiny_config  # noqa: E402

from agents import GRPO, CausalLMPolicy, EpisodeRolloutBuffer, KLPenaltyCallback  # noqa: E402
from agents.common.resources import peak_rss_mib  # noqa: E402

RESULTS = Path(__file__).with_name("group_vs_ppo.json")


class IterationTimer(BaseCallback):
    """Wall-clock of each iteration (rollout start to the next rollout start, so the update is included)."""

    def __init__(self) -> None:
        super().__init__()
        self.starts: list[float] = []

    def _on_rollout_start(self) -> None:
        self.starts.append(time.perf_counter())

    def _on_training_end(self) -> None:
        self.starts.append(time.perf_counter())

    def _on_step(self) -> bool:
        return True

    def seconds(self) -> list[float]:
        return [b - a for a, b in zip(self.starts, self.starts[1:], strict=False)]


def build(algorithm: str, env: Any, model_spec: Any) -> tuple[Any, list[BaseCallback]]:
    """The algorithm on TRL's shape, and the callbacks it trains with."""
    policy_kwargs = dict(model=model_spec)
    if algorithm == "ppo":
        ppo = PPO(
            CausalLMPolicy, env, n_steps=48, batch_size=8 * 48, n_epochs=4, learning_rate=1e-5,
            rollout_buffer_class=EpisodeRolloutBuffer, policy_kwargs=policy_kwargs, seed=0,
        )  # fmt: skip
        return ppo, [KLPenaltyCallback(kl_coef=0.05)]
    grpo = GRPO(
        CausalLMPolicy, env, group_size=4, n_epochs=1, batch_size=8 * 48, kl_coef=0.04, learning_rate=1e-5,
        policy_kwargs=policy_kwargs, seed=0,
    )  # fmt: skip
    return grpo, []


def run(algorithm: str, model_spec: Any, iterations: int) -> dict[str, float]:
    env = make_env(stop_on_eos=False)  # 16 envs, 48 new tokens each
    model, callbacks = build(algorithm, env, model_spec)
    timer = IterationTimer()
    model.learn((iterations + 1) * 48 * env.num_envs, callback=CallbackList([*callbacks, timer]))
    seconds = timer.seconds()[1:]  # drop the warm-up iteration
    return {"seconds_per_iteration": sum(seconds) / len(seconds), "iterations": len(seconds)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=["smollm2", "tiny"], default="smollm2")
    parser.add_argument("--iterations", type=int, default=2, help="timed iterations per algorithm (after 1 warm-up)")
    args = parser.parse_args()
    torch.set_num_threads(2)
    spec = "smollm2-135m-instruct" if args.model == "smollm2" else tiny_config()
    results = {name: run(name, spec, args.iterations) for name in ("ppo", "grpo")}
    results["ratio_grpo_to_ppo"] = results["grpo"]["seconds_per_iteration"] / results["ppo"]["seconds_per_iteration"]
    results["meta"] = {
        "date": date.today().isoformat(),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
        "model": args.model,
        "peak_rss_mib_process": round(peak_rss_mib()),
    }
    print(json.dumps(results, indent=2))
    if args.model == "smollm2":
        RESULTS.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
