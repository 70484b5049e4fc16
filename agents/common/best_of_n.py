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
