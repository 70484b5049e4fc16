"""Compare RL algorithms on text: every registered algorithm (PPO, A2C, TRPO, MaskablePPO, GRPO, Dr. GRPO, RLOO)
with the LM policy, same task, same budget of environment steps, several seeds each.

    python -m agents.compare                                   # tiny Vowels task, 3 seeds x 8192 steps
    python -m agents.compare --timesteps 20000 --seeds 0 1 2 3 --out runs/compare

Each (algorithm, seed) runs in a fresh process so that its peak memory is its own. Writes
``<out>/comparison.png`` (mean episode reward against environment steps, mean across seeds with a min-max band),
``<out>/comparison.csv`` (one row per run) and prints a table of final reward, wall-clock and peak memory.
"""

from __future__ import annotations

import argparse
import csv
import json
import multiprocessing
import time
from pathlib import Path
from typing import Any

import numpy as np

from agents.common.resources import peak_rss_mib
from agents.registry import ALGORITHMS


def tiny_lm_config() -> Any:
    """The comparison's model: a 2-layer GPT-2, 64 wide (:func:`agents.testing.tiny_gpt2_config`)."""
    from agents.testing import tiny_gpt2_config

    return tiny_gpt2_config(n_embd=64)


def run_one(algorithm: str, seed: int, env_id: str, timesteps: int, n_envs: int) -> dict[str, Any]:
    """Train one algorithm with one seed; return its learning curve, wall-clock and peak RSS."""
    import torch
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.env_util import make_vec_env

    import text_env  # noqa: F401
    from agents.cli.config import TrainConfig
    from agents.cli.train import build_model

    torch.set_num_threads(1)
    env = make_vec_env(env_id, n_envs=n_envs, seed=seed)
    # The main job's settings and code path; only the step sizes differ: A2C's short rollouts are its design. No KL
    # term for any algorithm (the critic-based ones get none here either: there is no KLPenaltyCallback).
    settings: dict[str, Any] = (
        dict(n_steps=8, learning_rate=1e-3) if algorithm == "a2c" else dict(n_steps=64, learning_rate=3e-3)
    )
    config = TrainConfig(
        env_id=env_id, algorithm=algorithm, seed=seed, n_envs=n_envs, batch_size=64, lora_r=0, kl_coef=0.0, **settings
    )
    model = build_model(config, env, model=tiny_lm_config())

    curve: list[tuple[int, float]] = []

    class Curve(BaseCallback):
        def _on_rollout_end(self) -> None:
            if self.model.ep_info_buffer:
                recent = list(self.model.ep_info_buffer)[-32:]
                curve.append((self.num_timesteps, float(np.mean([info["r"] for info in recent]))))

        def _on_step(self) -> bool:
            return True

    start = time.monotonic()
    model.learn(timesteps, callback=Curve())
    seconds = time.monotonic() - start
    peak_mib = peak_rss_mib()
    final = float(np.mean([info["r"] for info in model.ep_info_buffer]))
    return {
        "algorithm": algorithm,
        "seed": seed,
        "final_reward": final,
        "seconds": seconds,
        "peak_rss_mib": peak_mib,
        "curve": curve,
    }


def _worker(args: tuple[str, int, str, int, int]) -> dict[str, Any]:
    return run_one(*args)


def plot(results: list[dict[str, Any]], path: Path, env_id: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for algorithm in ALGORITHMS:
        runs = [r for r in results if r["algorithm"] == algorithm]
        if not runs:
            continue
        grid = np.linspace(0, max(c[-1][0] for c in (r["curve"] for r in runs) if c), 60)
        curves = np.array([np.interp(grid, *np.array(r["curve"]).T) for r in runs if r["curve"]])
        ax.plot(grid, curves.mean(0), label=f"{algorithm} ({len(curves)} seeds)")
        ax.fill_between(grid, curves.min(0), curves.max(0), alpha=0.2)
    ax.set(xlabel="environment steps (tokens)", ylabel="mean episode reward", title=f"LM policy on {env_id}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env-id", default="text_env/Vowels-v0", help="registered env with the 'char' tokenizer")
    parser.add_argument("--algorithms", nargs="+", default=list(ALGORITHMS), choices=ALGORITHMS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--timesteps", type=int, default=8192, help="environment steps per run (same for all)")
    parser.add_argument("--n-envs", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2, help="runs in parallel (one thread each)")
    parser.add_argument("--out", type=Path, default=Path("runs/compare"))
    args = parser.parse_args(argv)
    if args.timesteps < 1 or args.n_envs < 1 or args.workers < 1:
        parser.error("--timesteps, --n-envs and --workers must be >= 1")
    args.out.mkdir(parents=True, exist_ok=True)
    jobs = [(a, s, args.env_id, args.timesteps, args.n_envs) for a in args.algorithms for s in args.seeds]
    started = time.monotonic()
    # A fresh process per run (maxtasksperchild=1): peak RSS is per run, nothing leaks between runs.
    with multiprocessing.get_context("spawn").Pool(args.workers, maxtasksperchild=1) as pool:
        results = pool.map(_worker, jobs, chunksize=1)
    plot(results, args.out / "comparison.png", args.env_id)
    with open(args.out / "comparison.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["algorithm", "seed", "final_reward", "seconds", "peak_rss_mib"])
        writer.writeheader()
        for r in results:
            writer.writerow({k: r[k] for k in writer.fieldnames})
    (args.out / "comparison.json").write_text(json.dumps(results, indent=1))
    print(
        f"\n{args.env_id}: {args.timesteps} env steps per run, seeds {args.seeds} ({time.monotonic() - started:.0f} s)"
    )
    print("| algorithm | final reward (mean ± std) | wall-clock s | peak RSS MiB |\n|---|---|---|---|")
    for algorithm in args.algorithms:
        runs = [r for r in results if r["algorithm"] == algorithm]
        finals = np.array([r["final_reward"] for r in runs])
        print(
            f"| {algorithm} | {finals.mean():.3f} ± {finals.std():.3f} | "
            f"{np.mean([r['seconds'] for r in runs]):.0f} | {np.max([r['peak_rss_mib'] for r in runs]):.0f} |"
        )
    print(f"plot: {args.out / 'comparison.png'}, table: {args.out / 'comparison.csv'}")


if __name__ == "__main__":
    main()
