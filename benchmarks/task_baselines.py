"""The base model on the verifiable suite: held-out pass@1, pass@8 and the share of GRPO groups (G=4) whose
rewards are all equal, per task and difficulty. A task where the base model never succeeds teaches nothing, so each
task's default difficulty is chosen for a base pass@8 between ~10% and ~70% (issue 21).

    .venv/bin/python benchmarks/task_baselines.py                       # every suite task at its default difficulty
    .venv/bin/python benchmarks/task_baselines.py --tasks Reverse --difficulties 1 2 --prompts 32

Writes ``benchmarks/task_baselines.json`` (merged by task and difficulty). Sampling at temperature 1 with the
task's own chat template and token limits, the model in bf16 autocast where the CPU runs it natively.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

import text_env  # noqa: F401  (registers the ids)
from agents.cli.options import native_bfloat16
from agents.common.evaluation import majority_answer_accuracy, summarize
from agents.common.generation import generate_completions
from agents.common.policy import CausalLMPolicy
from text_env import task_for

SUITE = ("Reverse", "LetterCount", "Arithmetic", "Keywords")
OUT = Path(__file__).with_name("task_baselines.json")


def all_equal_share(scores: np.ndarray, samples: int, group_size: int = 4) -> float:
    """Share of groups of ``group_size`` consecutive samples of one prompt whose rewards are all equal."""
    groups = scores.reshape(-1, samples)[:, : samples // group_size * group_size].reshape(-1, group_size)  # (G', g)
    return float(np.mean(np.all(groups == groups[:, :1], axis=1)))


def measure(task: str, difficulty: int | None, prompts: int, samples: int, seed: int) -> dict[str, float]:
    env_id = f"text_env/{task}-v0"
    kwargs = {} if difficulty is None else {"difficulty": difficulty}
    env = gym.make(env_id, **kwargs)
    records = env.unwrapped.eval_records[:prompts]
    torch.manual_seed(seed)
    policy = CausalLMPolicy(
        env.observation_space,
        env.action_space,
        lambda _: 0.0,
        model="smollm2-135m-instruct",
        value_head=False,
        compute_dtype="bfloat16" if native_bfloat16("cpu") else "float32",
    )
    started = time.monotonic()
    # One block of `samples` per prompt, so that consecutive samples of a prompt form the groups.
    result = generate_completions(policy, env, [r for r in records for _ in range(samples)], batch_size=64)
    metrics = summarize(result, task_for(env_id))
    return {
        "difficulty": env.unwrapped.records[0].meta.get("difficulty"),
        "prompts": len(records),
        "samples": samples,
        "pass@1": metrics["pass@1"],
        f"pass@{samples}": metrics[f"pass@{samples}"],
        "mean_reward": metrics["score"],
        "all_equal_groups_g4": all_equal_share(result.scores, samples),
        # What answering the most common held-out reference every time would score (0 for free-form references).
        "majority_answer_accuracy": majority_answer_accuracy(records),
        "seconds": round(time.monotonic() - started, 1),
        "examples": [
            {"prompt": p, "completion": c, "score": float(s)}
            for p, c, s in list(zip(result.prompts, result.completions, result.scores, strict=True))[:: samples * 8][:4]
        ],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", default=list(SUITE), choices=SUITE)
    parser.add_argument("--difficulties", nargs="+", type=int, default=None, help="default: each task's own")
    parser.add_argument("--prompts", type=int, default=64, help="held-out prompts per task")
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(2)
    results = json.loads(OUT.read_text()) if OUT.exists() else {}
    for task in args.tasks:
        for difficulty in args.difficulties or [None]:
            row = measure(task, difficulty, args.prompts, args.samples, args.seed)
            row["date"] = time.strftime("%Y-%m-%d")
            results[f"{task}-v0/difficulty={row['difficulty']}"] = row
            shown = {k: v for k, v in row.items() if k != "examples"}
            print(task, json.dumps(shown))
            for example in row["examples"][:2]:
                print("   ", repr(example["prompt"][-50:]), "->", repr(example["completion"]), example["score"])
            OUT.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
