"""Per-episode reward-scoring cost at 32 envs: one call per finished episode (the env scoring alone) against one
batched call per vector step (``agents.common.vec_env.BatchedRewardVecEnv``), side by side in one process.

    .venv/bin/python benchmarks/reward_batching.py      # ~1 minute

Reward models: ``ClassifierReward`` on a sequence classifier built from the shipped all-MiniLM-L6-v2 encoder (a
randomly initialised 2-label head: the cost, not the labels, is measured) and ``EmbeddingSimilarityReward``
(all-MiniLM-L6-v2). 32 completions of 48 tokens from the shipped review openings; each way repeated 3 times, the
fastest kept. Results go to ``benchmarks/reward_batching.json``.
"""

from __future__ import annotations

import json
import platform
import tempfile
import time
from datetime import date
from pathlib import Path

import torch

from text_env import shipped_prompts
from text_env.rewards import ClassifierReward, EmbeddingSimilarityReward
from text_env.rewards.neural import minilm_dir

RESULTS = Path(__file__).with_name("reward_batching.json")
N_ENVS = 32


def best_of(repeats: int, fn) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.set_num_threads(2)
    prompts = shipped_prompts(split="test")[:N_ENVS]
    completions = [(p + " and the acting was superb, the score moving, the ending earned") * 2 for p in prompts]
    with tempfile.TemporaryDirectory() as directory:
        torch.manual_seed(0)
        AutoModelForSequenceClassification.from_pretrained(minilm_dir(), num_labels=2).save_pretrained(directory)
        AutoTokenizer.from_pretrained(minilm_dir()).save_pretrained(directory)
        models = {
            "ClassifierReward": ClassifierReward(directory),
            "EmbeddingSimilarityReward": EmbeddingSimilarityReward(["a wonderful, moving film"]),
        }
        results = {}
        for name, model in models.items():
            model.score(prompts[:2], completions[:2])  # warm-up
            pairs = list(zip(prompts, completions, strict=True))
            one_by_one = best_of(3, lambda m=model, pairs=pairs: [m.score([p], [c]) for p, c in pairs])
            batched = best_of(3, lambda m=model: m.score(prompts, completions))
            results[name] = {
                "ms_per_episode_one_call_each": 1000 * one_by_one / N_ENVS,
                "ms_per_episode_batched": 1000 * batched / N_ENVS,
                "speedup": one_by_one / batched,
            }
            print(name, json.dumps(results[name]), flush=True)
    results["meta"] = {
        "date": date.today().isoformat(),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
        "n_envs": N_ENVS,
    }
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
