"""Best-of-n sampling as the reference an RL fine-tuned policy is judged against: the expected reward of the best of
``n`` completions sampled from the base model, estimated from ``N >= n`` samples per prompt, and the analytic bound
on its KL to the base model.

Keeping the highest-scoring of ``n`` samples needs no training and moves the policy by at most
``log n - (n - 1) / n`` nats (Beirami et al. 2024, https://arxiv.org/abs/2401.01879; exact when the scores of all
completions differ); RL fine-tuning is worth its cost where it reaches a higher reward at the same KL (Gao et al.
2023, https://arxiv.org/abs/2210.10760).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.typing import ArrayLike


def expected_best_of_n(scores: ArrayLike, n: int) -> float:
    """The unbiased estimate of ``E[max of n draws]`` from ``N >= n`` i.i.d. draws ``scores`` of one prompt.

    It is the mean of the maximum over all ``C(N, n)`` subsets of size ``n`` (the U-statistic of the max kernel, the
    construction of Codex's unbiased pass@k, Chen et al. 2021, https://arxiv.org/abs/2107.03374): with the scores
    sorted ascending, ``s_(i)`` is the maximum of exactly ``C(i - 1, n - 1)`` of the subsets, so
    ``E = sum_i s_(i) C(i - 1, n - 1) / C(N, n)``. Lower-variance than drawing disjoint groups of ``n``.
    """
    values = np.sort(np.asarray(scores, dtype=np.float64).ravel())  # (N,) ascending
    total = len(values)
    if not 1 <= n <= total:
        raise ValueError(f"n must be in [1, {total}] (the number of samples), got {n}.")
    weights = np.array([math.comb(i - 1, n - 1) for i in range(1, total + 1)], dtype=np.float64)  # (N,)
    return float(values @ weights / math.comb(total, n))


def kl_bound(n: int) -> float:
    """Upper bound on KL(best-of-n || base) per completion, in nats: ``log n - (n - 1) / n`` (0 at n = 1)."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}.")
    return math.log(n) - (n - 1) / n


def n_values(n_max: int) -> list[int]:
    """1, 2, 4, ... up to ``n_max``, and ``n_max`` itself when it is not a power of two."""
    values = [2**k for k in range(n_max.bit_length()) if 2**k <= n_max]
    return values if values[-1] == n_max else [*values, n_max]


def best_of_n_curve(scores: ArrayLike) -> list[dict[str, float]]:
    """The best-of-n reference from a ``(prompts, N)`` matrix of base-model scores: for each ``n`` of
    :func:`n_values` (N), the expected best-of-n score averaged over prompts, and its KL bound."""
    matrix = np.asarray(scores, dtype=np.float64)  # (P, N)
    if matrix.ndim != 2 or matrix.size == 0:
        raise ValueError(f"scores must be a non-empty (prompts, samples) matrix, got shape {matrix.shape}.")
    return [
        {"n": n, "score": float(np.mean([expected_best_of_n(row, n) for row in matrix])), "kl_bound": kl_bound(n)}
        for n in n_values(matrix.shape[1])
    ]


#: Temperatures of the tilted policy swept for the optimum curve, log-spaced, in units of the scores' standard
#: deviation: far above it the optimum is the base model (KL 0), far below it the best sample of each prompt.
RELATIVE_BETAS = tuple(float(b) for b in np.geomspace(1e-3, 1e2, 121))


def tilted_optimum(scores: ArrayLike, beta: float) -> tuple[float, float]:
    """Expected reward and KL to the base model of the KL-regularised optimum ``pi*(y|x) ~ pi_ref(y|x) exp(r/beta)``,
    estimated per prompt from ``N`` samples of ``pi_ref`` and averaged over prompts.

    Every KL-regularised objective ``E[r] - beta KL(pi || pi_ref)`` is maximised by this tilted policy (Korbak et al.
    2022, https://arxiv.org/abs/2205.11275; Rafailov et al. 2023). Self-normalised importance weights
    ``w_j ~ exp(r_j / beta)`` over the samples give ``E[r] ~ sum_j w_j r_j`` and
    ``KL ~ sum_j w_j r_j / beta - log mean_j exp(r_j / beta)`` (the KL of the weights against uniform on the
    samples), so the estimate is at most ``log N`` nats: beyond that the samples cannot tell what the optimum does.
    It is the exact optimum over the samples' own distribution, biased low against the population's as KL nears
    ``log N`` (it never exceeds the best sample), where :func:`expected_best_of_n` estimates the population: near
    ``log N``, best-of-n from the same samples can plot above it. ``scores`` is ``(prompts, N)``.
    """
    if not beta > 0:
        raise ValueError(f"beta must be > 0, got {beta}.")
    matrix = np.asarray(scores, dtype=np.float64)  # (P, N)
    if matrix.ndim != 2 or matrix.size == 0:
        raise ValueError(f"scores must be a non-empty (prompts, samples) matrix, got shape {matrix.shape}.")
    logits = matrix / beta  # (P, N)
    log_normaliser = np.logaddexp.reduce(logits, axis=1, keepdims=True)  # (P, 1): log sum_j exp(r_j / beta)
    weights = np.exp(logits - log_normaliser)  # (P, N), each row sums to 1
    reward = (weights * matrix).sum(1)  # (P,)
    kl = (weights * logits).sum(1) - (log_normaliser[:, 0] - np.log(matrix.shape[1]))  # (P,)
    return float(reward.mean()), float(np.clip(kl, 0.0, None).mean())


def tilted_optimum_curve(scores: ArrayLike, betas: ArrayLike | None = None) -> list[dict[str, float | None]]:
    """:func:`tilted_optimum` for each ``beta`` (default: :data:`RELATIVE_BETAS` times the scores' standard
    deviation), ordered by KL, from the base model itself (KL 0, ``beta`` None) on: the reward-against-KL frontier
    that KL-regularised RL aims at (Gao et al. 2023), estimated from the same base-model samples as
    :func:`best_of_n_curve`."""
    matrix = np.asarray(scores, dtype=np.float64)  # (P, N)
    if betas is None:
        spread = float(matrix.std()) if matrix.size and float(matrix.std()) > 0 else 1.0
        betas = spread * np.asarray(RELATIVE_BETAS)
    points: list[dict[str, float | None]] = [{"score": float(matrix.mean()), "kl": 0.0, "beta": None}]
    for beta in np.ravel(betas):
        reward, kl = tilted_optimum(matrix, float(beta))
        points.append({"score": reward, "kl": kl, "beta": float(beta)})
    return sorted(points, key=lambda point: (point["kl"], point["score"]))


def optimum_at_kl(curve: list[dict[str, Any]], kl: float) -> float | None:
    """The optimum's expected reward at ``kl`` nats, interpolated along :func:`tilted_optimum_curve`; ``None``
    beyond the curve's largest KL (``<= log N``), where the samples cannot estimate it."""
    kls = np.array([point["kl"] for point in curve])  # ascending
    if kl > kls[-1] + 1e-9:
        return None
    return float(np.interp(kl, kls, [point["score"] for point in curve]))


def optimum_gap(curve: list[dict[str, Any]], kl: float, score: float) -> tuple[float, bool]:
    """How far ``score`` at ``kl`` nats is below the KL-regularised optimum at the same KL, and whether that is only
    a lower bound: beyond the curve's largest KL the optimum is at least the curve's last point (its reward grows
    with KL), so the gap there is measured to that point."""
    at_kl = optimum_at_kl(curve, kl)
    if at_kl is None:
        return curve[-1]["score"] - score, True
    return at_kl - score, False
