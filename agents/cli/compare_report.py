"""The real-task comparison's report: a table per algorithm with bootstrap confidence intervals over seeds, CSVs and
the two plots (held-out score against generated tokens; the reward-vs-KL frontier with the best-of-n reference).

A run's result (:func:`agents.cli.compare_task.run_task`) holds ``algorithm``, ``seed``, ``history`` (one row per
held-out evaluation: ``timesteps``, ``score``, ``kl``, ``distinct_2``, ``repetition``, ...), ``seconds_per_1k_tokens``
and ``peak_rss_mib``.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

#: Columns of ``comparison.csv`` (one row per algorithm) and of the console table.
TABLE_FIELDS = (
    "algorithm", "seeds", "tokens", "score_mean", "score_ci_low", "score_ci_high", "kl_mean", "distinct_2_mean",
    "repetition_mean", "optimum_gap_mean", "optimum_gap_lower_bound", "seconds_per_1k_tokens", "eval_seconds_mean",
    "peak_rss_mib",
)  # fmt: skip
#: Columns of ``checkpoints.csv`` (one row per evaluation of every run).
CHECKPOINT_FIELDS = ("algorithm", "seed", "timesteps", "score", "kl", "distinct_2", "repetition", "ref_log_likelihood")


def bootstrap_ci(values: Sequence[float], confidence: float = 0.95, seed: int = 0) -> tuple[float, float] | None:
    """Percentile bootstrap confidence interval of the mean over seeds (``scipy.stats.bootstrap``), or ``None``
    with fewer than two values or none that differ (no spread to resample).

    The percentile method, because BCa's jackknife acceleration is undefined for two seeds and unstable for three;
    with so few seeds any interval is rough (Agarwal et al. 2021, https://arxiv.org/abs/2108.13264).
    """
    from scipy.stats import bootstrap

    data = np.asarray(values, dtype=np.float64)
    if data.size < 2 or np.ptp(data) == 0:
        return None
    result = bootstrap(
        (data,), np.mean, confidence_level=confidence, n_resamples=10_000, method="percentile", random_state=seed
    )
    low, high = float(result.confidence_interval.low), float(result.confidence_interval.high)
    return (low, high) if np.isfinite(low) and np.isfinite(high) else None


def _mean(runs: list[dict[str, Any]], key: str) -> float:
    values = [r["history"][-1][key] for r in runs if key in r["history"][-1]]
    return float(np.mean(values)) if values else float("nan")


def summary_rows(
    results: list[dict[str, Any]], algorithms: Sequence[str], optimum: list[dict[str, Any]] | None = None
) -> list[dict[str, Any]]:
    """One row per algorithm (in the given order) from its runs' final evaluations; with the KL-regularised
    ``optimum`` curve, the mean gap of each run's final score to the optimum at the run's own KL (a lower bound
    where a run's KL is beyond the curve's ``log N``)."""
    from agents.common.best_of_n import optimum_gap

    rows = []
    for algorithm in algorithms:
        runs = [r for r in results if r["algorithm"] == algorithm]
        if not runs:
            continue
        finals = [r["history"][-1]["score"] for r in runs]
        ci = bootstrap_ci(finals)
        gaps = [
            optimum_gap(optimum, r["history"][-1]["kl"], r["history"][-1]["score"])
            for r in runs
            if optimum and "kl" in r["history"][-1]
        ]
        rows.append(
            {
                "algorithm": algorithm,
                "seeds": len(runs),
                "tokens": int(np.mean([r["tokens"] for r in runs])),
                "score_mean": float(np.mean(finals)),
                "score_ci_low": None if ci is None else ci[0],
                "score_ci_high": None if ci is None else ci[1],
                "kl_mean": _mean(runs, "kl"),
                "distinct_2_mean": _mean(runs, "distinct_2"),
                "repetition_mean": _mean(runs, "repetition"),
                "optimum_gap_mean": float(np.mean([gap for gap, _ in gaps])) if gaps else None,
                "optimum_gap_lower_bound": any(bound for _, bound in gaps),
                "seconds_per_1k_tokens": float(np.mean([r["seconds_per_1k_tokens"] for r in runs])),
                "eval_seconds_mean": float(np.mean([r["eval_seconds"] for r in runs])),
                "peak_rss_mib": float(np.max([r["peak_rss_mib"] for r in runs])),
            }
        )
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    """The console table (Markdown): CI "n/a" with one seed or no spread between seeds."""
    lines = [
        "| algorithm | seeds | held-out score (95% CI) | KL nats | distinct-2 | repetition | s / 1k tokens "
        "| gap to the optimum | peak RSS MiB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        low, high = row["score_ci_low"], row["score_ci_high"]
        ci = "n/a" if low is None else f"{low:.3f} to {high:.3f}"
        gap = row.get("optimum_gap_mean")
        gap_text = "n/a" if gap is None else f"{'>= ' if row['optimum_gap_lower_bound'] else ''}{gap:.3f}"
        lines.append(
            f"| {row['algorithm']} | {row['seeds']} | {row['score_mean']:.3f} ({ci}) | {row['kl_mean']:.2f} | "
            f"{row['distinct_2_mean']:.3f} | {row['repetition_mean']:.3f} | {row['seconds_per_1k_tokens']:.1f} | "
            f"{gap_text} | {row['peak_rss_mib']:.0f} |"
        )
    return "\n".join(lines)


def format_best_of_n(curve: list[dict[str, float]]) -> str:
    """One line: the best-of-n reference's score and KL bound for each n."""
    points = ", ".join(f"n={p['n']}: {p['score']:.3f} (KL <= {p['kl_bound']:.2f})" for p in curve)
    return f"best-of-n from the base model: {points}"


def write_csvs(out: Path, rows: list[dict[str, Any]], results: list[dict[str, Any]]) -> None:
    """``comparison.csv`` (the table) and ``checkpoints.csv`` (every evaluation of every run)."""
    with open(out / "comparison.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=TABLE_FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    with open(out / "checkpoints.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=CHECKPOINT_FIELDS, extrasaction="ignore")
        writer.writeheader()
        for r in results:
            for row in r["history"]:
                writer.writerow({"algorithm": r["algorithm"], "seed": r["seed"], **row})


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_score_vs_tokens(results: list[dict[str, Any]], algorithms: Sequence[str], path: Path, title: str) -> None:
    """Held-out score against generated tokens: per algorithm the mean over seeds and a min-max band, each seed's
    checkpoints interpolated onto the union of all checkpoints."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for algorithm in algorithms:
        runs = [r for r in results if r["algorithm"] == algorithm]
        if not runs:
            continue
        curves = [np.array([(row["timesteps"], row["score"]) for row in r["history"]]) for r in runs]  # (C, 2) each
        grid = np.unique(np.concatenate([c[:, 0] for c in curves]))  # (G,)
        scores = np.array([np.interp(grid, c[:, 0], c[:, 1]) for c in curves])  # (seeds, G)
        (line,) = ax.plot(grid, scores.mean(0), "o-", ms=3, label=f"{algorithm} ({len(runs)} seeds)")
        ax.fill_between(grid, scores.min(0), scores.max(0), alpha=0.2, color=line.get_color())
    ax.set(xlabel="generated tokens (environment steps)", ylabel="held-out mean score", title=title)
    ax.legend(title="mean over seeds, band: min to max", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_frontier(
    results: list[dict[str, Any]],
    algorithms: Sequence[str],
    best_of_n: list[dict[str, float]] | None,
    path: Path,
    title: str,
    optimum: list[dict[str, Any]] | None = None,
    sqrt_kl: bool = False,
    samples: int | None = None,
) -> None:
    """Held-out score against exact KL to the reference: one point per checkpoint and seed (each seed's checkpoints
    joined in training order), the best-of-n reference at its KL bound (DPO's comparison of methods, Rafailov et al.
    2023, https://arxiv.org/abs/2305.18290) and the KL-regularised optimum estimated from the same base-model samples
    (:func:`agents.common.best_of_n.tilted_optimum_curve`, valid up to ``log N`` nats for ``samples`` N per
    prompt). KL on a symmetric-log axis
    (best-of-n lives below 2 nats), or ``sqrt_kl`` for the square root of KL (Gao et al. 2023's axis)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))

    def x(values: Sequence[float]) -> np.ndarray:
        array = np.asarray(values, dtype=np.float64)
        return np.sqrt(np.clip(array, 0.0, None)) if sqrt_kl else array

    for algorithm in algorithms:
        runs = [r for r in results if r["algorithm"] == algorithm]
        color = None
        for index, r in enumerate(runs):
            rows = [row for row in r["history"] if "kl" in row]
            kl, score = [row["kl"] for row in rows], [row["score"] for row in rows]
            (line,) = ax.plot(
                x(kl), score, "o-", ms=4, lw=0.6, alpha=0.75, color=color, label=algorithm if index == 0 else None
            )
            color = line.get_color()
    if best_of_n:
        kl, score = [p["kl_bound"] for p in best_of_n], [p["score"] for p in best_of_n]
        ax.plot(x(kl), score, "k--s", ms=4, label="best-of-n from the base model (KL bound)")
        for point in best_of_n:
            ax.annotate(f"n={point['n']}", (float(x([point["kl_bound"]])[0]), point["score"]),
                        textcoords="offset points", xytext=(4, -10), fontsize=8)  # fmt: skip
    if optimum:
        bound = f"; valid to log N = {math.log(samples):.2f} nats" if samples else ""
        ax.plot(x([p["kl"] for p in optimum]), [p["score"] for p in optimum], "-", color="0.45", lw=2,
                label=f"KL-regularised optimum (estimated from the base model's samples{bound})")  # fmt: skip
    if sqrt_kl:
        ax.set(xlabel="sqrt KL(pi || pi_ref) per completion, sqrt(nats) (exact KL)")
    else:
        ax.set_xscale("symlog", linthresh=1.0)
        largest = max([1.0, *(x for line in ax.get_lines() for x in line.get_xdata())])
        ticks = [t for t in (0, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64) if t <= 1.5 * largest]
        ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
        ax.set(xlabel="KL(pi || pi_ref) per completion, nats (exact)")
    ax.set(ylabel="held-out mean score", title=title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
