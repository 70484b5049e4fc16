"""Compare RL algorithms on text: the registered algorithms (PPO, A2C, TRPO, MaskablePPO, GRPO, Dr. GRPO, RLOO)
with the LM policy, the same task, the same budget of generated tokens, several seeds each.

    python -m agents.compare                                   # tiny Vowels task, every algorithm, 3 seeds
    python -m agents.compare --env-id text_env/PositiveReview-v0 --algorithms ppo grpo rloo --seeds 0 1 2 \\
        --budget-tokens 18432 --eval-every-tokens 3072 --compute-dtype bfloat16 --out runs/compare-real

Each (algorithm, seed) runs in a fresh process (one torch thread; ``--workers`` at a time), so its peak memory is
its own. Two modes:

- **tiny task** (an env with the ``char`` tokenizer, no ``--model`` or ``--config``): a 2-layer GPT-2, no KL term;
  writes ``comparison.png`` (mean episode reward against env steps, min-max band over seeds), ``comparison.csv``
  (one row per run) and ``comparison.json``.
- **real task** (an env with its own tokenizer, e.g. ``text_env/PositiveReview-v0``, or ``--model`` or
  ``--config``): every run is the main job (``python -m agents.train``'s ``setup`` and ``learn``, its defaults:
  SmolLM2-135M-Instruct, LoRA, 32 envs x 48 tokens per rollout, KL penalty or the group algorithm's own KL term)
  for ``--budget-tokens`` generated tokens, evaluated on the held-out prompts every ``--eval-every-tokens``. Once
  per comparison, ``--best-of-n`` completions per held-out prompt from the base model give the best-of-n reference
  (cached in ``best_of_n.json``), and the same samples the KL-regularised optimum's reward-against-KL curve.
  Writes ``score_vs_tokens.png``, ``frontier.png`` and ``frontier_sqrt_kl.png`` (held-out score against exact KL,
  or its square root, with the best-of-n and optimum curves), ``comparison.csv`` (per algorithm: final score with
  a 95% bootstrap CI over seeds, KL, distinct-2, repetition, gap to the optimum at the run's KL, seconds per 1,000
  generated tokens, peak RSS), ``checkpoints.csv`` (every
  evaluation), ``comparison.json`` (everything), ``runs/<algorithm>-seed<seed>/`` and ``logs/``.
"""

from __future__ import annotations

import argparse
import copy
import csv
import dataclasses
import importlib.util
import json
import multiprocessing
import os
import platform
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from multiprocessing.connection import wait
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from agents.common.best_of_n import tilted_optimum_curve
from agents.common.resources import peak_rss_mib
from agents.registry import ALGORITHMS

if TYPE_CHECKING:
    from agents.cli.config import TrainConfig

#: Real-task defaults, sized so that 3 algorithms x 3 seeds and the best-of-n reference fit in an hour on 2 cores
#: with 2 workers (README, "Comparing algorithms").
TASK_BUDGET_TOKENS = 18_432  # 12 rollouts of 32 envs x 48 tokens
TASK_EVAL_EVERY_TOKENS = 3_072  # every 2 rollouts: 7 checkpoints with the one before training
TASK_EVAL_SAMPLES = 1  # per held-out prompt (the main job's 2 doubles the cost of each checkpoint)
TASK_ALGORITHMS = ("ppo", "grpo", "rloo")
TINY_BUDGET_TOKENS = 8192
#: The time budget of the real-task runs: they stop at their token budget; this is only there because the main job
#: always has one.
NO_TIME_BUDGET_MINUTES = 7 * 24 * 60.0


# ---------------------------------------------------------------------------------------------- tiny task mode
def tiny_lm_config() -> Any:
    """The tiny mode's model: a 2-layer GPT-2, 64 wide (:func:`agents.testing.tiny_gpt2_config`)."""
    from agents.testing import tiny_gpt2_config

    return tiny_gpt2_config(n_embd=64)


def tiny_config(algorithm: str, seed: int, env_id: str, n_envs: int) -> TrainConfig:
    """The tiny mode's configuration of one algorithm: the main job's settings and code path; only the step sizes
    (each algorithm's own on this task, its settings class's ``tiny_task``: A2C's short rollouts are its design)
    and lambda differ. No KL term, but for an algorithm whose loss is one (``apo``: its ``tiny_task`` sets
    ``kl_coef``). GAE lambda 1.0: the main job's 0.5 is tuned for SmolLM2 on VADER; on this task, from a random
    init, it lowers PPO's final reward from ~0.99 to 0.82 and MaskablePPO's to 0.67 in the budget (2026-11-25)."""
    from agents.cli.config import TrainConfig

    values = dict(env_id=env_id, algorithm=algorithm, seed=seed, n_envs=n_envs, batch_size=64, lora_r=0, kl_coef=0.0)
    settings: dict[str, Any] = {**ALGORITHMS[algorithm].settings.tiny_task, "gae_lambda": 1.0}
    return TrainConfig.from_values(values | settings, strict=False)  # A2C takes no batch_size


def run_one(algorithm: str, seed: int, env_id: str, timesteps: int, n_envs: int) -> dict[str, Any]:
    """Train one algorithm with one seed on the tiny task; return its learning curve, wall-clock and peak RSS."""
    import torch
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.env_util import make_vec_env

    import text_env  # noqa: F401
    from agents.cli.train import build_model

    torch.set_num_threads(1)
    env = make_vec_env(env_id, n_envs=n_envs, seed=seed)
    config = tiny_config(algorithm, seed, env_id, n_envs)
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
    """The tiny mode's plot: mean episode reward against env steps, mean over seeds with a min-max band."""
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


def compare_tiny(args: argparse.Namespace) -> int:
    budget = args.budget_tokens or TINY_BUDGET_TOKENS
    n_envs = args.n_envs or 8
    jobs = [
        Job(f"{a}-seed{s}", run_one, (a, s, args.env_id, budget, n_envs)) for a in args.algorithms for s in args.seeds
    ]
    started = time.monotonic()
    done = run_in_processes(jobs, args.workers, args.out / "logs")
    results = [result for job in jobs if (result := done[job.name]) is not None]
    plot(results, args.out / "comparison.png", args.env_id)
    with open(args.out / "comparison.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["algorithm", "seed", "final_reward", "seconds", "peak_rss_mib"])
        writer.writeheader()
        for r in results:
            writer.writerow({k: r[k] for k in writer.fieldnames})
    (args.out / "comparison.json").write_text(json.dumps(results, indent=1))
    print(f"\n{args.env_id}: {budget} env steps per run, seeds {args.seeds} ({time.monotonic() - started:.0f} s)")
    print("| algorithm | final reward (mean ± std) | wall-clock s | peak RSS MiB |\n|---|---|---|---|")
    for algorithm in args.algorithms:
        runs = [r for r in results if r["algorithm"] == algorithm]
        if not runs:
            continue
        finals = np.array([r["final_reward"] for r in runs])
        print(
            f"| {algorithm} | {finals.mean():.3f} ± {finals.std():.3f} | "
            f"{np.mean([r['seconds'] for r in runs]):.0f} | {np.max([r['peak_rss_mib'] for r in runs]):.0f} |"
        )
    print(f"plot: {args.out / 'comparison.png'}, table: {args.out / 'comparison.csv'}")
    return 0 if len(results) == len(jobs) else 1


# ---------------------------------------------------------------------------------------------- processes
@dataclasses.dataclass
class Job:
    """One run: ``function(*args)`` in a fresh process, returning a JSON-serialisable dict."""

    name: str
    function: Callable[..., dict[str, Any]]
    args: tuple[Any, ...]
    quiet: bool = False  # send the run's stdout and stderr to ``<logs>/<name>.log`` instead of the console


def _run_job(job: Job, result_path: Path, log_path: Path) -> None:
    """A spawned process's body: run the job, write its result as JSON (the parent reads it once we exit 0)."""
    if job.quiet:
        log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(log, 1)  # file descriptors: torch, tqdm and warnings end up in the log too
        os.dup2(log, 2)
    result = job.function(*job.args)
    partial = result_path.with_suffix(".partial")
    partial.write_text(json.dumps(result), encoding="utf-8")
    partial.replace(result_path)


def run_in_processes(jobs: list[Job], workers: int, log_dir: Path) -> dict[str, dict[str, Any] | None]:
    """Run each job in a fresh spawned process, ``workers`` at a time, in the order given; return each job's
    result by name, ``None`` for a job that failed (its traceback is in ``<log_dir>/<name>.log``). A process that
    dies (e.g. killed for memory) fails its job only."""
    log_dir.mkdir(parents=True, exist_ok=True)
    context = multiprocessing.get_context("spawn")
    pending = list(jobs)
    running: dict[Any, tuple[Any, Job, Path, float]] = {}  # process sentinel -> process, job, result file, start
    results: dict[str, dict[str, Any] | None] = {}
    try:
        while pending or running:
            while pending and len(running) < workers:
                job = pending.pop(0)
                result_path = log_dir / f"{job.name}.json"
                result_path.unlink(missing_ok=True)
                process = context.Process(target=_run_job, args=(job, result_path, log_dir / f"{job.name}.log"))
                process.start()
                running[process.sentinel] = (process, job, result_path, time.monotonic())
                if job.quiet:
                    print(f"[compare] {job.name} started (log: {log_dir / job.name}.log)", flush=True)
            for sentinel in wait(list(running)):
                process, job, result_path, started = running.pop(sentinel)
                process.join()
                seconds = time.monotonic() - started
                if process.exitcode == 0 and result_path.is_file():
                    results[job.name] = json.loads(result_path.read_text(encoding="utf-8"))
                    if job.quiet:
                        print(f"[compare] {job.name} done in {seconds:.0f} s", flush=True)
                else:
                    results[job.name] = None
                    print(
                        f"[compare] {job.name} FAILED (exit code {process.exitcode}) after {seconds:.0f} s: see "
                        f"{log_dir / job.name}.log",
                        flush=True,
                    )
    finally:
        for process, *_ in running.values():  # interrupted: stop the runs this call started
            process.terminate()
            process.join()
    return results


# ---------------------------------------------------------------------------------------------- real task mode
def task_configs(args: argparse.Namespace) -> tuple[Any, list[Any], int, int]:
    """The base config and one :class:`TrainConfig` per (algorithm, seed), the token budget and the evaluation
    interval, both whole rollouts. Raises ``ValueError`` (one line) on a bad option; loads no model weights."""

    from agents.cli.config import TrainConfig, read_yaml

    given = dict(
        env_id=args.env_id, model=args.model, compute_dtype=args.compute_dtype, n_envs=args.n_envs,
        eval_prompts=args.eval_prompts, eval_samples=args.eval_samples,
    )  # fmt: skip
    values = {name: value for name, value in given.items() if value is not None}
    # One set of options for every algorithm compared: each takes those that apply to it (strict=False).
    values = {"eval_samples": TASK_EVAL_SAMPLES, **(read_yaml(args.config) if args.config else {}), **values}
    source = str(args.config or "options")
    base = TrainConfig.from_values(values, source, strict=False)
    base.check_environment()  # env id, model directory, tokenizer against the model: no weights loaded

    rollout = base.task.n_envs * base.settings.n_steps  # generated tokens per rollout, every algorithm
    budget = args.budget_tokens or TASK_BUDGET_TOKENS
    if budget < rollout:
        raise ValueError(
            f"--budget-tokens {budget} is less than one rollout ({base.task.n_envs} envs x "
            f"{base.settings.n_steps} steps = {rollout} tokens)."
        )
    if budget % rollout:
        print(f"[compare] --budget-tokens {budget} is not a whole number of rollouts of {rollout} tokens: using "
              f"{budget // rollout * rollout} ({budget // rollout} rollouts)")  # fmt: skip
        budget = budget // rollout * rollout
    every = args.eval_every_tokens or TASK_EVAL_EVERY_TOKENS
    rounded = max(1, round(every / rollout)) * rollout
    if rounded != every:
        print(f"[compare] --eval-every-tokens {every} is not a whole number of rollouts of {rollout} tokens: "
              f"evaluating every {rounded}")  # fmt: skip
    if rounded > budget:
        raise ValueError(f"--eval-every-tokens {every} is more than the budget of {budget} tokens.")
    run_values = dict(
        output_dir=str(args.out / "runs"),
        total_timesteps=budget,
        budget_minutes=NO_TIME_BUDGET_MINUTES,
        eval_every=rounded // rollout,
        checkpoint_every=0,  # a comparison run is repeated, not resumed
    )
    configs = [
        TrainConfig.from_values(
            {**values, **run_values, "algorithm": algorithm, "seed": seed, "name": f"{algorithm}-seed{seed}"},
            source,
            strict=False,
        )  # each checked on its own, e.g. group_size against n_envs for the group algorithms
        for algorithm in args.algorithms
        for seed in args.seeds
    ]
    return base, configs, budget, rounded


def compare_task(args: argparse.Namespace, base: Any, configs: list[Any], budget: int, every: int) -> int:
    from agents.cli import compare_report as report
    from agents.cli.compare_task import best_of_n_key, best_of_n_reference, run_task
    from agents.cli.train import package_versions

    started = time.monotonic()
    bon_path = args.out / "best_of_n.json"
    bon_key = json.loads(json.dumps(best_of_n_key(base, args.best_of_n)))
    best_of_n = None
    if args.best_of_n > 0 and bon_path.is_file():
        cached = json.loads(bon_path.read_text(encoding="utf-8"))
        if cached.get("key") == bon_key:
            best_of_n = cached
            print(f"[compare] best-of-n reference: reusing {bon_path}")
    jobs = []
    if args.best_of_n > 0 and best_of_n is None:
        bon_config = copy.deepcopy(base)  # the policy before training, as every run starts from
        bon_config.run.name, bon_config.run.output_dir = "best-of-n", str(args.out / "runs")
        jobs.append(Job("best-of-n", best_of_n_reference, (bon_config, args.best_of_n), quiet=True))
    # In the registry's order, which puts the critic-based runs first: they take longest, and so start first, so
    # that the workers finish together.
    for config in sorted(configs, key=lambda c: list(ALGORITHMS).index(c.algorithm)):
        jobs.append(Job(config.run.name, run_task, (config, every), quiet=True))
    done = run_in_processes(jobs, args.workers, args.out / "logs")
    if "best-of-n" in done and done["best-of-n"] is not None:
        best_of_n = done["best-of-n"]
        bon_path.write_text(json.dumps(best_of_n, indent=1), encoding="utf-8")
    results = [result for c in configs if (result := done.get(c.run.name)) is not None]
    failed = [job.name for job in jobs if done.get(job.name) is None]

    curve = best_of_n["curve"] if best_of_n else None
    optimum = tilted_optimum_curve(best_of_n["scores"]) if best_of_n else None
    rows = report.summary_rows(results, args.algorithms, optimum)
    title = f"{base.task.env_id}, {Path(base.lm.model).name}, {budget:,} tokens per run"
    report.write_csvs(args.out, rows, results)
    if results:
        report.plot_score_vs_tokens(results, args.algorithms, args.out / "score_vs_tokens.png", title)
    for name, sqrt_kl in (("frontier.png", False), ("frontier_sqrt_kl.png", True)):
        report.plot_frontier(
            results, args.algorithms, curve, args.out / name, title, optimum, sqrt_kl, samples=args.best_of_n or None
        )
    seconds = time.monotonic() - started
    machine = f"{cpu_name()}, {os.cpu_count()} CPUs, {args.workers} workers x 1 thread"
    date = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    summary = {
        "env_id": base.task.env_id, "model": base.lm.model, "compute_dtype": base.lm.compute_dtype,
        "head_dtype": base.lm.head_dtype, "lora_r": base.lm.lora_r,
        "algorithms": args.algorithms, "seeds": args.seeds, "budget_tokens": budget, "eval_every_tokens": every,
        "rollout_tokens": base.task.n_envs * base.settings.n_steps, "eval_prompts": base.task.eval_prompts,
        "samples_per_prompt": base.task.eval_samples, "best_of_n_samples": args.best_of_n, "date": date,
        "machine": machine, "wall_clock_seconds": round(seconds, 1), "versions": package_versions(), "table": rows,
        "best_of_n": best_of_n, "optimum": optimum, "failed": failed, "runs": results,
    }  # fmt: skip
    (args.out / "comparison.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")

    print(f"\n{title}; evaluated every {every:,} tokens; seeds {args.seeds} ({date}, {machine}; {seconds:.0f} s)")
    print(report.format_table(rows))
    if curve:
        print(report.format_best_of_n(curve))
    if failed:
        print(f"FAILED: {', '.join(failed)} (logs in {args.out / 'logs'})")
    print(f"outputs: {args.out}/ (score_vs_tokens.png, frontier.png, comparison.csv, checkpoints.csv, comparison.json)")
    return 1 if failed else 0


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux), else the architecture: figures state their machine."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()


# ---------------------------------------------------------------------------------------------- command line
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m agents.compare", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--env-id", default=None, help="registered env (default: text_env/Vowels-v0, the tiny task)")
    parser.add_argument("--algorithms", nargs="+", default=None, help=f"names or comma lists of {list(ALGORITHMS)} "
                        f"(default: all in the tiny mode, {' '.join(TASK_ALGORITHMS)} on a real task)")  # fmt: skip
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument(
        "--budget-tokens", "--timesteps", type=int, default=None, dest="budget_tokens",
        help=f"generated tokens (env steps) per run, the same for all (default: {TINY_BUDGET_TOKENS:,} tiny, "
        f"{TASK_BUDGET_TOKENS:,} real; real: whole rollouts)",
    )  # fmt: skip
    parser.add_argument("--workers", type=int, default=2, help="runs in parallel (one torch thread each)")
    parser.add_argument("--out", type=Path, default=Path("runs/compare"))
    parser.add_argument("--n-envs", type=int, default=None, help="envs per run (default: 8 tiny, the main job's 32)")
    real = parser.add_argument_group("real-task mode (the main job's settings; flags override --config)")
    real.add_argument("--model", default=None, help="model name or directory (default: the main job's SmolLM2)")
    real.add_argument("--config", default=None, help="a main-job YAML config for every run (python -m agents.train)")
    real.add_argument(
        "--eval-every-tokens",
        type=int,
        default=None,
        help=f"held-out evaluation interval in generated tokens (default {TASK_EVAL_EVERY_TOKENS:,})",
    )
    real.add_argument("--eval-prompts", type=int, default=None, help="held-out prompts (default: the main job's 64)")
    real.add_argument(
        "--eval-samples",
        type=int,
        default=None,
        help=f"completions per held-out prompt at each checkpoint (default {TASK_EVAL_SAMPLES})",
    )
    real.add_argument("--compute-dtype", default=None, help="float32 or bfloat16 (default: the main job's)")
    real.add_argument("--best-of-n", type=int, default=16,
                      help="base-model samples per held-out prompt for the best-of-n reference (0: none)")  # fmt: skip
    return parser


#: Flags of the real-task mode only: the tiny mode refuses them rather than ignore them.
TASK_ONLY_FLAGS = ("eval_every_tokens", "eval_prompts", "eval_samples", "compute_dtype")


def one_line(error: Exception) -> str:
    """An error message on one line (the config's checks list their problems on separate lines)."""
    return " ".join(part.strip() for part in str(error).splitlines() if part.strip())


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        algorithms = [name for item in args.algorithms or [] for name in item.split(",") if name]
        unknown = [name for name in algorithms if name not in ALGORITHMS]
        if unknown:
            raise ValueError(f"--algorithms: unknown {unknown}; choose from {list(ALGORITHMS)}")
        for flag, values in (("--algorithms", algorithms), ("--seeds", args.seeds)):
            if len(set(values)) != len(values):
                raise ValueError(f"{flag} lists a value twice: {values}")
        for flag in ("budget_tokens", "eval_every_tokens", "eval_prompts", "eval_samples", "n_envs", "best_of_n"):
            value, least = getattr(args, flag), 0 if flag in ("eval_prompts", "best_of_n") else 1
            if value is not None and value < least:
                raise ValueError(f"--{flag.replace('_', '-')} must be >= {least}, got {value}")
        if args.workers < 1:
            raise ValueError(f"--workers must be >= 1, got {args.workers}")
        real = is_task_mode(args)
        needed = ("matplotlib", "scipy") if real else ("matplotlib",)  # the report's plots and confidence intervals
        missing = [name for name in needed if importlib.util.find_spec(name) is None]
        if missing:
            raise ValueError(f"the comparison's report needs {' and '.join(missing)}: pip install 'text-env-rl[plots]'")
        args.algorithms = algorithms or list(TASK_ALGORITHMS if real else ALGORITHMS)
        args.env_id = args.env_id or "text_env/Vowels-v0"
        if not real:
            given = [f"--{flag.replace('_', '-')}" for flag in TASK_ONLY_FLAGS if getattr(args, flag) is not None]
            if given:
                raise ValueError(
                    f"{', '.join(given)} apply to the real-task mode only (--model, --config, or an env with its own "
                    f"tokenizer); {args.env_id} without --model runs the tiny mode"
                )
            args.out.mkdir(parents=True, exist_ok=True)
            return compare_tiny(args)
        base, configs, budget, every = task_configs(args)
    except (ValueError, OSError) as error:
        parser.error(one_line(error))
    args.out.mkdir(parents=True, exist_ok=True)
    return compare_task(args, base, configs, budget, every)


def is_task_mode(args: argparse.Namespace) -> bool:
    """The real-task mode: ``--model`` or ``--config`` given, or an env whose tokenizer is not ``char``."""
    import gymnasium as gym

    import text_env  # noqa: F401  (registers the ids)
    from agents.cli.options import TaskOptions

    if args.model is not None or args.config is not None:
        return True
    env_id = args.env_id or "text_env/Vowels-v0"
    if env_id not in gym.registry:
        known = sorted(k for k in gym.registry if k.startswith("text_env/"))
        raise ValueError(f"Unknown env_id {env_id!r}; registered text envs: {known}")
    return TaskOptions(env_id=env_id).tokenizer_name(model="") != "char"


if __name__ == "__main__":
    sys.exit(main())
