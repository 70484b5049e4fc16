"""The formulas of the group-relative algorithms, as pure functions: group baselines, KL estimators, loss aggregation,
and the rule on group sizes that every caller checks (:func:`group_size_problems`).

Kept free of SB3 and of the buffer so that each can be checked against its definition on hand-made numbers
(``tests/test_grpo.py``).

- Advantages of one group of ``G`` completions of the same prompt with rewards ``r_1..r_G``:

  - ``"grpo"`` (Shao et al. 2024, DeepSeekMath): ``(r_i - mean(r)) / (std(r) + eps)``, with the unbiased
    standard deviation (ddof=1, as TRL's ``GRPOTrainer``);
  - ``"dr_grpo"`` (Liu et al. 2025, "Understanding R1-Zero-Like Training"): ``r_i - mean(r)``: no division by the
    standard deviation, which up-weights prompts that are almost always solved or failed;
  - ``"rloo"`` (Ahmadian et al. 2024, "Back to Basics"): ``r_i - mean(r_j, j != i)``, the leave-one-out baseline,
    which is ``G / (G - 1) * (r_i - mean(r))``.

- KL estimators of ``KL(pi || pi_ref)`` from a token sampled from ``pi``, with ``log_ratio = log pi - log pi_ref``
  (Schulman 2020, "Approximating KL divergence"): ``k1 = log_ratio`` (unbiased, negative for some samples),
  ``k2 = log_ratio**2 / 2`` (biased, non-negative), ``k3 = exp(-log_ratio) + log_ratio - 1``
  (``pi_ref/pi - log(pi_ref/pi) - 1``: unbiased and non-negative; GRPO's choice in the loss).

- Aggregation of per-token losses into the minibatch loss:

  - ``"sequence"``: mean over each completion's tokens, then over completions (GRPO; a long completion's tokens
    each weigh less: the length bias that Dr. GRPO removes);
  - ``"constant"``: sum over all tokens divided by ``max_completion_length * n_completions`` (Dr. GRPO; for RLOO
    this is the REINFORCE gradient of each completion's log-probability, scaled by a constant);
  - ``"token"``: mean over all tokens of the minibatch (DAPO, Yu et al. 2025).
"""

from __future__ import annotations

import numpy as np
import torch

ADVANTAGES = ("grpo", "dr_grpo", "rloo")
KL_ESTIMATORS = ("k1", "k2", "k3")
LOSS_AGGREGATIONS = ("sequence", "constant", "token")
#: The aggregation each advantage type is defined with.
DEFAULT_AGGREGATION = {"grpo": "sequence", "dr_grpo": "constant", "rloo": "constant"}
#: Added to the group standard deviation (TRL's ``GRPOTrainer``).
STD_EPS = 1e-4


def group_size_problems(
    group_size: int, n_envs: int | None = None, world_size: int = 1, name: str = "GRPO"
) -> list[str]:
    """The one rule of the group algorithms' sizes: each group of ``group_size >= 2`` consecutive envs completes one
    prompt (a baseline needs other completions), so it divides each process's envs: ``n_envs`` (``None``: not
    known yet) split evenly over ``world_size`` data-parallel ranks. What breaks it, one line each (none: fine).

    :param name: the algorithm, as the messages name it.
    """
    if group_size < 2:
        return [f"group_size must be >= 2 (a baseline needs other completions), got {group_size}"]
    per_rank = None if n_envs is None else n_envs // world_size
    if per_rank is None or per_rank % group_size == 0:
        return []
    if world_size > 1:
        return [
            f"n_envs={n_envs} gives each of the {world_size} ranks {per_rank} envs, not whole groups of "
            f"group_size={group_size}: use a multiple of {world_size * group_size}"
        ]
    return [
        f"{name} needs group_size >= 2 dividing n_envs: n_envs={n_envs} is not a multiple of group_size={group_size}"
        f" (each group of {group_size} consecutive envs completes one prompt): use n_envs = k * group_size"
    ]


def group_advantages(rewards: np.ndarray, kind: str = "grpo", eps: float = STD_EPS) -> np.ndarray:
    """Advantages of completions grouped by prompt.

    :param rewards: ``(..., G)``: the last axis holds the ``G >= 2`` completions of one prompt.
    :param kind: ``"grpo"``, ``"dr_grpo"`` or ``"rloo"`` (see the module docstring).
    :return: advantages, same shape as ``rewards``.
    """
    if kind not in ADVANTAGES:
        raise ValueError(f"advantage must be one of {ADVANTAGES}, got {kind!r}.")
    rewards = np.asarray(rewards, dtype=np.float64)
    size = rewards.shape[-1]
    if size < 2:
        raise ValueError(f"A group needs at least 2 completions to form a baseline, got {size}.")
    # Advantages do not change when a constant is added to a group: measured from its first member, a group of
    # equal rewards is all zeros exactly (its mean would otherwise carry rounding, e.g. 1e-12 for 3 x 0.7).
    rewards = rewards - rewards[..., :1]
    mean = rewards.mean(-1, keepdims=True)  # (..., 1)
    if kind == "grpo":
        return (rewards - mean) / (rewards.std(-1, ddof=1, keepdims=True) + eps)
    if kind == "dr_grpo":
        return rewards - mean
    others_mean = (rewards.sum(-1, keepdims=True) - rewards) / (size - 1)  # (..., G) mean of the other G-1
    return rewards - others_mean


def kl_estimate(log_ratio: torch.Tensor, estimator: str) -> torch.Tensor:
    """Per-token estimate of ``KL(pi || pi_ref)`` from ``log_ratio = log pi(a) - log pi_ref(a)``, ``a ~ pi``."""
    if estimator == "k1":
        return log_ratio
    if estimator == "k2":
        return 0.5 * log_ratio.square()
    if estimator == "k3":
        return torch.expm1(-log_ratio) + log_ratio  # exp(-x) - 1 + x, accurate near 0
    raise ValueError(f"kl_estimator must be one of {KL_ESTIMATORS}, got {estimator!r}.")


def aggregate_loss(
    per_token: torch.Tensor,
    completion: torch.Tensor,
    n_completions: int,
    how: str,
    max_completion_length: int,
) -> torch.Tensor:
    """Reduce per-token losses ``(N,)`` of ``n_completions`` completions to one scalar.

    :param completion: ``(N,)`` index in ``[0, n_completions)`` of the completion each token belongs to.
    :param how: ``"sequence"``, ``"constant"`` or ``"token"`` (see the module docstring).
    """
    if how == "token":
        return per_token.mean()
    if how == "constant":
        return per_token.sum() / (max_completion_length * n_completions)
    if how == "sequence":
        sums = per_token.new_zeros(n_completions).index_add(0, completion, per_token)  # (C,)
        lengths = torch.bincount(completion, minlength=n_completions).clamp(min=1)  # (C,)
        return (sums / lengths).mean()
    raise ValueError(f"loss_aggregation must be one of {LOSS_AGGREGATIONS}, got {how!r}.")
