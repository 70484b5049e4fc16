"""The benchmark: algorithms x tasks x seeds at an equal budget of generated tokens per task, aggregated across tasks
with rliable (Agarwal et al. 2021: interquartile mean with stratified bootstrap intervals, performance profiles,
probability of improvement).

    python -m agents.benchmark --out runs/benchmark          # 7 algorithms x 4 tasks x 3 seeds (make benchmark)
    python -m agents.benchmark --report-only --out runs/benchmark           # aggregate what the cells wrote

Each cell (task, algorithm, seed) is one run of the main job (``agents.cli.compare_task.run_task``: the task's own
recommended settings, SmolLM2-135M-Instruct with LoRA, held-out evaluations during and after training), in its own
process, ``--workers`` at a time (at most the CPU count). A cell that finished is never run again: its result is
``<out>/cells/<task>/<algorithm>-seed<seed>.json``, written last and atomically, so an interrupted benchmark resumes
where it stopped. Per task, one best-of-16 reference from the base model (``best_of_n.json``).

Scores are normalised per task: 0 is the base model's mean score and 1 its best of 16 samples per held-out prompt
(the KL-regularised frontier's cheap reference: Gao et al. 2022), both from the task's one best-of-n job, so every
cell of a task is on the same scale. Aggregates
(``aggregate.json``, ``aggregate.csv``, ``aggregate.png``, ``profiles.png``) are over every (task, seed) of an
algorithm; per task, ``<task>/frontier.png``, ``frontier_sqrt_kl.png`` (with the KL-regularised optimum estimated from
the same base-model samples; each cell's gap to it at the cell's own KL is in ``aggregate.json``) and
``<task>/score_vs_tokens.png`` as ``agents.compare`` draws them.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from agents.common.best_of_n import optimum_gap, tilted_optimum_curve
from agents.registry import ALGORITHMS

#: Seven algorithms covering every family: critic (PPO), group baselines (RLOO, GRPO), the 2025 variants (DAPO's
#: dynamic sampling, CISPO) and the two that aim at the frontier: rejection sampling (RAFT) and A*-PO's regression
#: on the optimum's advantage (apo).
BENCHMARK_ALGORITHMS = ("ppo", "rloo", "grpo", "dapo", "cispo", "raft", "apo")
#: The sentiment task and three verifiable ones of the suite.
BENCHMARK_TASKS = (
    "text_env/PositiveReview-v0", "text_env/Arithmetic-v0", "text_env/Keywords-v0", "text_env/LetterCount-v0",
)  # fmt: skip
#: Generated tokens per cell, per task: whole rollouts of the task's settings (32 envs). Six rollouts per cell is an
#: estimate for 7 algorithms x 4 tasks x 3 seeds in about 3 hours on 2 cores with 2 workers of one thread (the
#: 16-minute runs of docs/tasks.md make ~60 rollouts with 2 threads); a larger budget moves every cell further from
#: the base model and separates the algorithms more.
BUDGET_ROLLOUTS = 6
EVAL_EVERY_ROLLOUTS = 3
BEST_OF_N = 16
EVAL_PROMPTS = 32


def cell_name(algorithm: str, seed: int) -> str:
    return f"{algorithm}-seed{seed}"


def task_dir(out: Path, env_id: str) -> Path:
    return out / "cells" / env_id.split("/")[-1]


def cell_configs(args: argparse.Namespace, env_id: str) -> tuple[Any, list[Any], int, int]:
    """The base config of a task and one config per (algorithm, seed), the token budget and the evaluation
    interval (whole rollouts of the task's settings)."""
    from agents.cli.compare import NO_TIME_BUDGET_MINUTES
    from agents.cli.config import TrainConfig, read_yaml

    given = read_yaml(args.config) if args.config is not None else {}
    values: dict[str, Any] = {**given, "env_id": env_id, "eval_prompts": args.eval_prompts, "eval_samples": 1}
    if args.model is not None:
        values["model"] = args.model
    base = TrainConfig.from_values(values, "benchmark", strict=False)
    rollout = base.task.n_envs * base.settings.n_steps
    budget, every = args.budget_rollouts * rollout, args.eval_every_rollouts * rollout
    runs = str(task_dir(args.out, env_id) / "runs")
    configs = [
        TrainConfig.from_values(
            {
                **values,
                "algorithm": algorithm,
                "seed": seed,
                "name": cell_name(algorithm, seed),
                "output_dir": runs,
                "total_timesteps": budget,
                "budget_minutes": NO_TIME_BUDGET_MINUTES,
                "eval_every": args.eval_every_rollouts,
                "checkpoint_every": 0,
            },
            "benchmark",
            strict=False,
        )  # fmt: skip
        for algorithm in args.algorithms
        for seed in args.seeds
    ]
    return base, configs, budget, every


def pending_jobs(args: argparse.Namespace) -> tuple[list[Any], dict[str, Any]]:
    """The jobs of the cells (and best-of-n references) without a result yet, and where each stores its result.

    Ordered seed-major (every best-of-n reference, then every task x algorithm at the first seed, then the next seed):
    an interrupted benchmark has whole seeds done, a complete comparison with fewer seeds."""
    from agents.cli.compare import Job
    from agents.cli.compare_task import best_of_n_reference, run_task

    references: list[Any] = []
    cells: list[tuple[tuple[int, int, int], Any]] = []  # ((seed, task, algorithm) order, job)
    where: dict[str, Path] = {}
    for t, env_id in enumerate(args.tasks):
        base, configs, _, every = cell_configs(args, env_id)
        folder = task_dir(args.out, env_id)
        recover(args.out, f"{folder.name}-best-of-n", folder / "best_of_n.json")
        if not (folder / "best_of_n.json").is_file():
            reference = copy.deepcopy(base)
            reference.run.name, reference.run.output_dir = "best-of-n", str(folder / "runs")
            name = f"{folder.name}-best-of-n"
            references.append(Job(name, best_of_n_reference, (reference, BEST_OF_N), quiet=True))
            where[name] = folder / "best_of_n.json"
        for config in configs:
            result, name = folder / f"{config.run.name}.json", f"{folder.name}-{config.run.name}"
            recover(args.out, name, result)
            if not result.is_file():
                order = (args.seeds.index(config.run.seed), t, list(ALGORITHMS).index(config.algorithm))
                cells.append((order, Job(name, run_task, (config, every), quiet=True)))
                where[name] = result
    return references + [job for _, job in sorted(cells, key=lambda cell: cell[0])], where


def recover(out: Path, name: str, result: Path) -> None:
    """Keep the result of a job that finished in a benchmark interrupted before it stored it (the worker writes
    ``<out>/logs/<name>.json`` last and atomically)."""
    finished = out / "logs" / f"{name}.json"
    if finished.is_file() and not result.is_file():
        result.parent.mkdir(parents=True, exist_ok=True)
        finished.replace(result)


def held_out_majority_answer_accuracy(env_id: str, prompts: int) -> float | None:
    """What always giving the most common reference scores on the held-out prompts the cells are evaluated on
    (``None`` for a task without references): an accuracy at this level can be a constant answer."""
    import gymnasium as gym

    import text_env  # noqa: F401  (registers the ids)
    from agents.common.evaluation import majority_answer_accuracy

    env = gym.make(env_id)
    try:
        return majority_answer_accuracy(list(getattr(env.unwrapped, "eval_records", None) or [])[:prompts])
    finally:
        env.close()


def normalised_scores(args: argparse.Namespace) -> tuple[dict[str, np.ndarray], dict[str, dict[str, Any]]]:
    """Per algorithm, ``(seeds, tasks)`` final held-out scores normalised per task (0: the base model's mean score,
    1: its best-of-16, both from the task's 16 base-model samples per held-out prompt, so every cell of a task has
    the same scale), and per task the raw figures behind them (each cell's own first evaluation included)."""
    per_task: dict[str, dict[str, Any]] = {}
    scores = {algorithm: np.full((len(args.seeds), len(args.tasks)), np.nan) for algorithm in args.algorithms}
    for t, env_id in enumerate(args.tasks):
        folder = task_dir(args.out, env_id)
        reference = json.loads((folder / "best_of_n.json").read_text(encoding="utf-8"))
        curve, optimum = reference["curve"], tilted_optimum_curve(reference["scores"])
        base, top = curve[0]["score"], curve[-1]["score"]  # n = 1 (the base model's mean score) and the largest n
        per_task[env_id] = {
            "base": base, "best_of_n": top, "optimum_kl_bound": optimum[-1]["kl"],
            "majority_answer_accuracy": held_out_majority_answer_accuracy(env_id, args.eval_prompts), "cells": {},
        }  # fmt: skip
        for algorithm in args.algorithms:
            for s, seed in enumerate(args.seeds):
                path = folder / f"{cell_name(algorithm, seed)}.json"
                if not path.is_file():
                    continue
                history = json.loads(path.read_text(encoding="utf-8"))["history"]
                before, after = history[0]["score"], history[-1]["score"]
                scores[algorithm][s, t] = (after - base) / (top - base) if top - base > 1e-9 else np.nan
                final = {key: history[-1].get(key) for key in ("kl", "accuracy", "distinct_2")}
                cell = {"before": before, "after": after, **final}
                if final["kl"] is not None:  # (every cell of the main job has a reference)
                    gap, lower_bound = optimum_gap(optimum, final["kl"], after)
                    cell.update(optimum_gap=gap, optimum_gap_lower_bound=lower_bound)
                per_task[env_id]["cells"][cell_name(algorithm, seed)] = cell
    return scores, per_task


def aggregate(scores: dict[str, np.ndarray], reps: int = 2000) -> dict[str, Any]:
    """rliable's aggregates with 95% stratified bootstrap intervals: IQM, mean, median and optimality gap of the
    normalised scores, and the probability that each algorithm improves on each other."""
    from rliable import library as rly
    from rliable import metrics

    complete = {name: values for name, values in scores.items() if not np.isnan(values).any()}
    if not complete:
        return {}

    def all_four(x: np.ndarray) -> np.ndarray:
        return np.array([metrics.aggregate_iqm(x), metrics.aggregate_mean(x), metrics.aggregate_median(x),
                         metrics.aggregate_optimality_gap(x, 1.0)])  # fmt: skip

    points, intervals = rly.get_interval_estimates(complete, all_four, reps=reps)
    result: dict[str, Any] = {"algorithms": {}}
    for name in complete:
        result["algorithms"][name] = {
            metric: {"value": float(points[name][i]), "ci95": [float(bound[i]) for bound in intervals[name]]}
            for i, metric in enumerate(("iqm", "mean", "median", "optimality_gap"))
        }
    pairs = {f"{a},{b}": (complete[a], complete[b]) for a in complete for b in complete if a != b}
    if pairs:
        improve, improve_ci = rly.get_interval_estimates(pairs, metrics.probability_of_improvement, reps=reps // 4)
        result["probability_of_improvement"] = {
            pair: {
                "value": float(np.asarray(improve[pair]).reshape(-1)[0]),
                "ci95": np.asarray(improve_ci[pair], dtype=float).reshape(2).tolist(),  # (2, 1) from rliable
            }
            for pair in pairs
        }
    return result


def plot_aggregate(scores: dict[str, np.ndarray], result: dict[str, Any], out: Path) -> None:
    """``aggregate.png`` (IQM and mean with their intervals) and ``profiles.png`` (performance profiles)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from rliable import library as rly

    names = list(result.get("algorithms", {}))
    if not names:
        return
    fig, axes = plt.subplots(1, 2, figsize=(10, 0.5 * len(names) + 1.5))
    for ax, metric in zip(axes, ("iqm", "mean"), strict=True):
        values = [result["algorithms"][n][metric] for n in names]
        low = [v["value"] - v["ci95"][0] for v in values]
        high = [v["ci95"][1] - v["value"] for v in values]
        ax.errorbar([v["value"] for v in values], range(len(names)), xerr=[low, high], fmt="o", capsize=3)
        ax.set_yticks(range(len(names)), names)
        ax.axvline(0, color="grey", lw=0.5)
        ax.set(xlabel=f"{metric.upper()} of normalised score (0 base, 1 best-of-{BEST_OF_N})")
    fig.tight_layout()
    fig.savefig(out / "aggregate.png", dpi=110)
    plt.close(fig)
    thresholds = np.linspace(-0.5, 1.5, 41)
    complete = {n: scores[n] for n in names}
    profiles, profile_cis = rly.create_performance_profile(complete, thresholds)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name in names:
        ax.plot(thresholds, profiles[name], label=name)
        ax.fill_between(thresholds, profile_cis[name][0], profile_cis[name][1], alpha=0.15)
    ax.set(xlabel="normalised score tau", ylabel="fraction of runs with score > tau", title="Performance profiles")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "profiles.png", dpi=110)
    plt.close(fig)


def report(args: argparse.Namespace, seconds: float) -> dict[str, Any]:
    """Aggregate what the cells wrote (also after an interrupted run: missing cells are counted, not guessed)."""
    import csv

    from agents.cli import compare_report

    scores, per_task = normalised_scores(args)
    result = aggregate(scores)
    for env_id in args.tasks:  # the per-task plots, as agents.compare draws them
        folder = task_dir(args.out, env_id)
        runs = [json.loads(p.read_text(encoding="utf-8")) for p in sorted(folder.glob("*-seed*.json"))]
        if runs:
            reference = json.loads((folder / "best_of_n.json").read_text(encoding="utf-8"))
            curve, optimum = reference["curve"], tilted_optimum_curve(reference["scores"])
            for name, sqrt_kl in (("frontier.png", False), ("frontier_sqrt_kl.png", True)):
                compare_report.plot_frontier(
                    runs, args.algorithms, curve, folder / name, env_id, optimum, sqrt_kl, samples=BEST_OF_N
                )
            compare_report.plot_score_vs_tokens(runs, args.algorithms, folder / "score_vs_tokens.png", env_id)
    summary = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
        "machine": f"{os.cpu_count()} CPUs, {args.workers} workers x 1 thread",
        "wall_clock_seconds": round(seconds, 1),
        "tasks": args.tasks, "algorithms": args.algorithms, "seeds": args.seeds,
        "budget_rollouts": args.budget_rollouts, "best_of_n": BEST_OF_N,
        "missing_cells": int(sum(np.isnan(v).sum() for v in scores.values())),
        "normalised_scores": {name: values.tolist() for name, values in scores.items()},
        "aggregate": result, "per_task": per_task,
    }  # fmt: skip
    (args.out / "aggregate.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
    with (args.out / "aggregate.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["algorithm", "iqm", "iqm_low", "iqm_high", "mean", "mean_low", "mean_high"])
        for name, metrics_ in result.get("algorithms", {}).items():
            iqm, mean = metrics_["iqm"], metrics_["mean"]
            writer.writerow([name, iqm["value"], *iqm["ci95"], mean["value"], *mean["ci95"]])
    plot_aggregate(scores, result, args.out)
    (args.out / "report.md").write_text(markdown_report(summary, args.out), encoding="utf-8")
    return summary


#: Final-evaluation figures shown per task when the task reports them (verifiable tasks, the second judge).
EXTRA_COLUMNS = {"accuracy": "accuracy", "judge_positive": "judge P(positive)", "judge_on_topic": "judge on-topic"}


def _interval(metric: dict[str, Any]) -> str:
    low, high = metric["ci95"]
    return f"{metric['value']:.2f} ({low:.2f} to {high:.2f})"


def markdown_report(summary: dict[str, Any], out: Path) -> str:
    """``report.md``: the aggregate with its intervals, the probabilities of improvement and one table per task
    (mean over seeds with a 95% bootstrap interval over seeds, as ``agents.compare`` reports a comparison)."""
    from agents.cli import compare_report

    algorithms = summary["algorithms"]
    per_task_cells = {}  # the cells of this report's algorithms and seeds, per task
    for env_id in summary["tasks"]:
        found = [json.loads(p.read_text(encoding="utf-8")) for p in sorted(task_dir(out, env_id).glob("*-seed*.json"))]
        per_task_cells[env_id] = [c for c in found if c["algorithm"] in algorithms and c["seed"] in summary["seeds"]]
    cells = [cell for runs in per_task_cells.values() for cell in runs]
    references = [
        json.loads((task_dir(out, env_id) / "best_of_n.json").read_text(encoding="utf-8"))
        for env_id in summary["tasks"]
    ]
    cell_hours = (sum(c["wall_clock_seconds"] for c in cells) + sum(r["seconds"] for r in references)) / 3600
    lines = [
        f"# Benchmark: {len(algorithms)} algorithms x {len(summary['tasks'])} tasks x seeds {summary['seeds']}",
        "",
        f"{summary['date']}, {summary['machine']}; {summary['budget_rollouts']} rollouts per cell; "
        f"{summary['missing_cells']} missing cells; {len(cells)} cells and {len(references)} best-of-"
        f"{summary['best_of_n']} references took {cell_hours:.1f} process-hours.",
        "",
        f"## Across tasks (normalised per task: 0 = base model, 1 = its best-of-{summary['best_of_n']})",
        "",
        "Point estimates with 95% stratified bootstrap intervals (rliable) over every (task, seed) of an algorithm.",
        "",
        "| algorithm | IQM | mean | median | optimality gap |",
        "| --- | --- | --- | --- | --- |",
    ]
    ranked = sorted(summary["aggregate"].get("algorithms", {}).items(), key=lambda item: -item[1]["iqm"]["value"])
    for name, metrics_ in ranked:
        row = " | ".join(_interval(metrics_[m]) for m in ("iqm", "mean", "median", "optimality_gap"))
        lines.append(f"| {name} | {row} |")
    improvement = summary["aggregate"].get("probability_of_improvement", {})
    if improvement:
        names = [name for name, _ in ranked]
        lines += ["", "Probability that the row's algorithm improves on the column's (Agarwal et al. 2021):", ""]
        lines += ["| | " + " | ".join(names) + " |", "| --- |" + " --- |" * len(names)]
        for a in names:
            better = ["" if a == b else f"{improvement[f'{a},{b}']['value']:.2f}" for b in names]
            lines.append(f"| {a} | " + " | ".join(better) + " |")
    for env_id in summary["tasks"]:
        folder = task_dir(out, env_id)
        runs = per_task_cells[env_id]
        task = summary["per_task"][env_id]
        optimum = tilted_optimum_curve(json.loads((folder / "best_of_n.json").read_text(encoding="utf-8"))["scores"])
        constant = task.get("majority_answer_accuracy")
        lines += [
            "",
            f"## {env_id}",
            "",
            f"Base model {task['base']:.3f}, best-of-{summary['best_of_n']} {task['best_of_n']:.3f}; the "
            f"KL-regularised optimum is estimated up to {task['optimum_kl_bound']:.2f} nats."
            + ("" if constant is None else f" Always giving the most common answer scores {constant:.3f} accuracy."),
            "",
            compare_report.format_table(compare_report.summary_rows(runs, algorithms, optimum)),
        ]
        extra = [key for key in EXTRA_COLUMNS if any(key in r["history"][-1] for r in runs)]
        if extra:
            lines += ["", "| algorithm | " + " | ".join(EXTRA_COLUMNS[k] for k in extra) + " |"]
            lines.append("| --- |" + " --- |" * len(extra))
            for algorithm in algorithms:
                finals = [r["history"][-1] for r in runs if r["algorithm"] == algorithm]
                if finals:
                    values = [np.mean([f[k] for f in finals if f.get(k) is not None] or [np.nan]) for k in extra]
                    lines.append(f"| {algorithm} | " + " | ".join(f"{v:.3f}" for v in values) + " |")
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m agents.benchmark", description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", nargs="+", default=list(BENCHMARK_TASKS))
    parser.add_argument("--algorithms", nargs="+", default=list(BENCHMARK_ALGORITHMS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--budget-rollouts", type=int, default=BUDGET_ROLLOUTS,
                        help="rollouts per cell (generated tokens: this x the task's rollout)")  # fmt: skip
    parser.add_argument("--eval-every-rollouts", type=int, default=EVAL_EVERY_ROLLOUTS)
    parser.add_argument("--eval-prompts", type=int, default=EVAL_PROMPTS, help="held-out prompts per evaluation")
    parser.add_argument("--model", default=None, help="model name or directory (default: the main job's SmolLM2)")
    parser.add_argument("--config", type=Path, default=None,
                        help="a main-job YAML config for every cell, under the task's own settings")  # fmt: skip
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1), help="cells in parallel (<= CPUs)")
    parser.add_argument("--out", type=Path, default=Path("runs/benchmark"))
    parser.add_argument("--report-only", action="store_true", help="aggregate what the cells wrote; run nothing")
    return parser


def main(argv: list[str] | None = None) -> int:
    from agents.cli.compare import run_in_processes

    parser = build_parser()
    args = parser.parse_args(argv)
    cpus = os.cpu_count() or 1
    problems = [f"--algorithms: unknown {a!r}" for a in args.algorithms if a not in ALGORITHMS]
    if not 1 <= args.workers <= cpus:
        problems.append(f"--workers must be from 1 to the {cpus} CPUs of this machine, got {args.workers}")
    if args.budget_rollouts < 1 or not 1 <= args.eval_every_rollouts <= args.budget_rollouts:
        problems.append("--budget-rollouts must be >= 1 and --eval-every-rollouts from 1 to it")
    try:
        import rliable  # noqa: F401
    except ModuleNotFoundError:
        problems.append("the aggregation needs rliable: pip install 'text-env-rl[benchmark]'")
    if problems:
        parser.error("; ".join(problems))
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    if not args.report_only:
        jobs, where = pending_jobs(args)
        print(f"[benchmark] {len(jobs)} jobs to run ({len(where)} results missing), {args.workers} at a time")
        done = run_in_processes(jobs, args.workers, args.out / "logs")
        for name, result in done.items():  # each result is kept as soon as the whole run returns
            if result is not None:
                partial = where[name].with_suffix(".partial")
                partial.parent.mkdir(parents=True, exist_ok=True)
                partial.write_text(json.dumps(result, indent=1), encoding="utf-8")
                partial.replace(where[name])
    summary = report(args, time.monotonic() - started)
    print(json.dumps(summary["aggregate"].get("algorithms", {}), indent=1))
    return 0 if summary["missing_cells"] == 0 else 1
