"""What one pass per shared prompt saves a group algorithm, side by side in one process.

    .venv/bin/python benchmarks/shared_prompts.py                          # SmolLM2, Arithmetic-v0 (chat); ~6 minutes
    .venv/bin/python benchmarks/shared_prompts.py --env-id text_env/PositiveReview-v0 --model tiny

The main job's set-up for the task (its own settings: GRPO, groups of 4, LoRA r=16, bf16 here) collects one rollout;
then GRPO's update over that rollout (``model.train()``: every minibatch forward and backward, and the optimizer
steps) runs alternately with the policy's ``share_prompts`` on (each group's prompt encoded once, its completions
attending to it) and off (each completion encoded whole), ``--repeats`` times each after a warm-up of each; and the
rollout's first step (every env starting its episode) is timed as the trunk's prefill of every row against that of
the distinct rows only, which is what the rollout KV cache now runs. Ratios are what to read. Results print and go
to ``benchmarks/shared_prompts.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import torch

RESULTS = Path(__file__).with_name("shared_prompts.json")


def build(env_id: str, model: str, out: str) -> Any:
    from agents.cli.config import TrainConfig
    from agents.cli.train import setup

    values: dict[str, Any] = {
        "env_id": env_id, "algorithm": "grpo", "compute_dtype": "bfloat16", "output_dir": out, "name": "bench",
    }  # fmt: skip
    if model == "tiny":
        values.update(model=str(Path(out) / "tiny"), tokenizer="char", lora_r=0)
        from transformers import AutoModelForCausalLM

        from agents.testing import tiny_gpt2_config

        AutoModelForCausalLM.from_config(tiny_gpt2_config(n_positions=256)).save_pretrained(values["model"])
    return setup(TrainConfig.from_values(values, "benchmark", strict=False))


def timed(step: Any) -> float:
    started = time.perf_counter()
    step()
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--env-id", default="text_env/Arithmetic-v0")
    parser.add_argument("--model", default="smollm2-135m-instruct", help="a model, or 'tiny'")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as out:
        run = build(args.env_id, args.model, out)
        model, policy = run.model, run.model.policy
        rollout_seconds = timed(lambda: model.learn(model.n_steps * model.n_envs))  # one rollout and its update
        buffer = model.rollout_buffer
        starts = {k: torch.as_tensor(v[0]) for k, v in buffer.observations.items()}  # (E, L) the episodes' starts
        prompt_tokens = float(starts["attention_mask"].sum(1).float().mean())
        completion_tokens = float(buffer.completion_lengths().mean())

        update: dict[bool, list[float]] = {True: [], False: []}
        for share in (True, False):  # warm-up of each path
            policy.share_prompts = share
            model.train()
        for _ in range(args.repeats):
            for share in (True, False):
                policy.share_prompts = share
                update[share].append(timed(model.train))
        policy.share_prompts = True

        ids, mask = policy.obs_tokens(starts)
        distinct = torch.unique(torch.cat([ids, mask], 1), dim=0)
        cases = {"every_row": (ids, mask), "distinct_rows": (distinct[:, : ids.shape[1]], distinct[:, ids.shape[1] :])}
        prefill: dict[str, list[float]] = {"every_row": [], "distinct_rows": []}
        with torch.no_grad(), policy.trunk_precision():
            for _ in range(args.repeats + 1):
                for name, (rows_ids, rows_mask) in cases.items():
                    seconds = timed(lambda i=rows_ids, m=rows_mask: policy.trunk(input_ids=i, attention_mask=m))
                    prefill[name].append(seconds)
    shared, whole = float(np.mean(update[True])), float(np.mean(update[False]))
    every, once = float(np.mean(prefill["every_row"][1:])), float(np.mean(prefill["distinct_rows"][1:]))
    result = {
        "date": date.today().isoformat(), "machine": f"{platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} threads", "env_id": args.env_id, "model": args.model,
        "envs": model.n_envs, "group_size": model.group_size, "rows_at_rollout_start": int(ids.shape[0]),
        "distinct_rows": int(distinct.shape[0]), "prompt_tokens_mean": round(prompt_tokens, 1),
        "completion_tokens_mean": round(completion_tokens, 1),
        "first_rollout_and_update_seconds": round(rollout_seconds, 1),
        "update_seconds_shared_prompts": [round(s, 2) for s in update[True]],
        "update_seconds_whole_completions": [round(s, 2) for s in update[False]],
        "update_shared_over_whole": round(shared / whole, 3),
        "prefill_seconds_every_row": round(every, 3), "prefill_seconds_distinct_rows": round(once, 3),
        "prefill_distinct_over_every": round(once / every, 3),
    }  # fmt: skip
    print(json.dumps(result, indent=1))
    if args.model != "tiny":
        RESULTS.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    return result


if __name__ == "__main__":
    main()
