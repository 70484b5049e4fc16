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
  - ``"raft"`` (RAFT, Dong et al. 2023; rejection-sampling fine-tuning): 1 for the best completion of a group
    whose rewards are not all equal, 0 for the others, trained with the LM loss (``policy_loss="nll"``).

- The optimal advantage (A*-PO, Brantley et al. 2025, https://arxiv.org/abs/2505.20686,
  :func:`optimal_advantages`): ``r_i - V*(x)`` with ``V*(x) = beta log E_{y ~ pi_ref}[exp(r(x, y) / beta)]``, the
  value of the KL-regularised optimum, estimated from the group's own completions with importance weights to the
  reference; regressed on by ``policy_loss="apo"``.

- Advantages per token (REINFORCE++, Hu et al. 2025, :func:`reinforce_pp_advantages`): the return-to-go of the
  per-token reward ``-beta * k1_t`` plus the completion's reward at its last token, whitened over the rollout;
  ``"reinforce_pp_baseline"`` subtracts each group's mean reward first.

- Per-token policy losses (:func:`policy_loss`): PPO's clipped ratio, GSPO's clipped sequence ratio, CISPO's
  clipped and detached importance weight on REINFORCE, and the LM loss.

- KL estimators (:func:`agents.common.kl.kl_estimate`) of ``KL(pi || pi_ref)`` from a token sampled from ``pi``,
  with ``log_ratio = log pi - log pi_ref``
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

#: Advantages of a completion against its group (:func:`group_advantages`).
GROUP_ADVANTAGES = ("grpo", "dr_grpo", "rloo", "raft")
#: Advantages against the optimal value ``V*(x)``, which need the reference and ``beta`` (:func:`optimal_advantages`).
OPTIMAL_ADVANTAGES = ("apo",)
#: Advantages per token, from returns-to-go whitened over the rollout (:func:`reinforce_pp_advantages`).
TOKEN_ADVANTAGES = ("reinforce_pp", "reinforce_pp_baseline")
ADVANTAGES = GROUP_ADVANTAGES + TOKEN_ADVANTAGES + OPTIMAL_ADVANTAGES
LOSS_AGGREGATIONS = ("sequence", "constant", "token")
#: The aggregation each advantage type is defined with.
DEFAULT_AGGREGATION = {
    "grpo": "sequence", "dr_grpo": "constant", "rloo": "constant", "raft": "token", "reinforce_pp": "token",
    "reinforce_pp_baseline": "token", "apo": "sequence",
}  # fmt: skip
#: The per-token policy losses (:func:`policy_loss`).
POLICY_LOSSES = ("clip", "gspo", "cispo", "nll", "apo")
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
    :param kind: ``"grpo"``, ``"dr_grpo"``, ``"rloo"`` or ``"raft"`` (see the module docstring).
    :return: advantages, same shape as ``rewards``.
    """
    if kind not in GROUP_ADVANTAGES:
        raise ValueError(f"advantage must be one of {GROUP_ADVANTAGES}, got {kind!r}.")
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
    if kind == "raft":  # 1 for the best of each group with a signal (the first of equals), 0 for the rest
        best = np.zeros_like(rewards)
        np.put_along_axis(best, rewards.argmax(-1)[..., None], 1.0, axis=-1)
        return best * (rewards != 0).any(-1, keepdims=True)  # measured from the first member: all 0 if all equal
    others_mean = (rewards.sum(-1, keepdims=True) - rewards) / (size - 1)  # (..., G) mean of the other G-1
    return rewards - others_mean


def optimal_advantages(rewards: np.ndarray, sequence_log_ratio: np.ndarray, beta: float) -> np.ndarray:
    """A*-PO's regression targets ``r_i - V*(x)`` for groups of completions of one prompt each.

    ``V*(x) = beta log E_{y ~ pi_ref}[exp(r(x, y) / beta)]`` is the value of the optimum of every KL-regularised
    objective, ``pi*(y|x) ~ pi_ref(y|x) exp(r(x, y) / beta)``. A*-PO estimates it once from ``N`` samples of the
    reference; here each group's ``G`` completions, sampled from ``pi_old``, estimate it with importance weights
    ``pi_ref(y) / pi_old(y)``: ``V* ~ beta log mean_j exp(r_j / beta - log(pi_old(y_j) / pi_ref(y_j)))``. That is
    A*-PO's estimate while ``pi_old = pi_ref`` (the first rollout), unbiased inside the log for any ``pi_old``, and
    exact from any ``G`` once ``pi_old = pi*`` (every term is then ``exp(V* / beta)``). Like any log of a mean of
    ``G`` terms it is biased low by Jensen's inequality, the more so the fewer the completions.

    :param rewards: ``(..., G)`` the completions' rewards, the last axis one group.
    :param sequence_log_ratio: ``(..., G)`` ``log pi_old(y) - log pi_ref(y)`` of each completion (summed over its
        tokens).
    :param beta: the KL coefficient ``> 0`` of the optimum.
    :return: ``(..., G)`` ``r_i - V*(x)``.
    """
    if not beta > 0:
        raise ValueError(f"beta must be > 0 for the optimal value V* = beta log E[exp(r / beta)], got {beta}.")
    rewards = np.asarray(rewards, dtype=np.float64)
    terms = rewards / beta - np.asarray(sequence_log_ratio, dtype=np.float64)  # (..., G) log of each weighted term
    log_mean = np.logaddexp.reduce(terms, axis=-1, keepdims=True) - np.log(rewards.shape[-1])  # (..., 1)
    return rewards - beta * log_mean


def reinforce_pp_advantages(
    rewards: np.ndarray,
    active: np.ndarray,
    kl_per_token: np.ndarray | None = None,
    kl_coef: float = 0.0,
    group_size: int | None = None,
    eps: float = 1e-8,
) -> np.ndarray:
    """REINFORCE++ (Hu et al. 2025) advantages per token: each token's return-to-go of the per-token reward
    ``-kl_coef * k1_t``, plus the completion's reward at its last token, whitened over every token of the rollout.

    :param rewards: ``(R, E)`` each completion's reward.
    :param active: ``(R, T, E)`` which of the ``T`` slots hold a token of the completion.
    :param kl_per_token: ``(R, T, E)`` ``log pi - log pi_ref`` of each token (``None``: no KL term).
    :param group_size: REINFORCE++-baseline: subtract the mean reward of each group of ``group_size``
        consecutive completions first (``None``: no baseline but the whitening).
    :return: ``(R, T, E)`` advantages, 0 at inactive slots.
    """
    rewards = np.asarray(rewards, dtype=np.float64)
    if group_size is not None:
        groups = rewards.reshape(rewards.shape[0], -1, group_size)  # (R, g, G)
        rewards = (groups - groups.mean(-1, keepdims=True)).reshape(rewards.shape)
    active = np.asarray(active, dtype=bool)
    per_token = np.zeros(active.shape)  # (R, T, E)
    if kl_per_token is not None:
        per_token -= kl_coef * np.where(active, kl_per_token, 0.0)
    last = active.shape[1] - 1 - np.argmax(active[:, ::-1, :], axis=1)  # (R, E) last active slot
    np.put_along_axis(
        per_token, last[:, None, :], np.take_along_axis(per_token, last[:, None, :], 1) + rewards[:, None, :], 1
    )
    returns = np.flip(np.cumsum(np.flip(per_token, 1), 1), 1) * active  # (R, T, E) return-to-go, gamma = 1
    values = returns[active]
    return np.where(active, (returns - values.mean()) / (values.std() + eps), 0.0)


def policy_loss(
    kind: str,
    log_prob: torch.Tensor,
    old_log_prob: torch.Tensor,
    advantages: torch.Tensor,
    completion: torch.Tensor,
    n_completions: int,
    clip_low: float,
    clip_high: float,
    ref_log_prob: torch.Tensor | None = None,
    beta: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token policy losses ``(N,)`` and which tokens are clipped ``(N,)`` (bool), for tokens of
    ``n_completions`` completions sampled with ``old_log_prob``.

    - ``"clip"`` (PPO, GRPO, DAPO): ``-min(rho A, clip(rho, 1 - low, 1 + high) A)`` with ``rho = pi / pi_old`` per
      token;
    - ``"gspo"`` (Zheng et al. 2025, GSPO): the same with the sequence ratio ``s_i = exp(mean_t log rho_{i,t})`` of
      each token's completion (every token of a completion carries its completion's loss; aggregated by
      ``"sequence"`` it is the paper's per-sequence objective);
    - ``"cispo"`` (MiniMax-M1 2025): ``-sg(min(rho, 1 + high)) A log pi``: REINFORCE weighted by the importance
      ratio clipped from above and detached, so that every token keeps its gradient;
    - ``"nll"`` (RAFT, rejection-sampling fine-tuning): ``-A log pi``, the language-model loss of the completions
      with ``A = 1`` (the chosen ones);
    - ``"apo"`` (A*-PO): ``(beta log(pi(y) / pi_ref(y)) - A)^2`` with ``A = r - V*(x)``
      (:func:`optimal_advantages`), carried by every token of its completion like GSPO's (``"sequence"``
      aggregation makes it the paper's per-completion loss). Zero exactly at ``pi = pi*``: the regression aims at
      the KL-regularised optimum, with no ratio to clip.

    :param completion: ``(N,)`` index in ``[0, n_completions)`` of each token's completion.
    :param ref_log_prob: ``(N,)`` ``log pi_ref`` of each token (``"apo"`` only).
    :param beta: the KL coefficient of the optimum (``"apo"`` only).
    """
    log_ratio = log_prob - old_log_prob  # (N,)
    if kind in ("clip", "gspo"):
        if kind == "gspo":
            log_ratio = completion_means(log_ratio, completion, n_completions)[completion]  # (N,) its completion's
        ratio = torch.exp(log_ratio)  # (N,)
        clipped = torch.clamp(ratio, 1 - clip_low, 1 + clip_high)
        loss = -torch.min(ratio * advantages, clipped * advantages)
        return loss, (ratio < 1 - clip_low) | (ratio > 1 + clip_high)
    if kind == "cispo":
        ratio = torch.exp(log_ratio.detach())  # (N,)
        return -torch.clamp(ratio, max=1 + clip_high) * advantages * log_prob, ratio > 1 + clip_high
    if kind == "nll":
        return -advantages * log_prob, torch.zeros_like(log_prob, dtype=torch.bool)
    if kind == "apo":
        if ref_log_prob is None or not beta > 0:
            raise ValueError("policy_loss 'apo' needs the reference's log-probabilities and beta > 0.")
        per_token = log_prob - ref_log_prob  # (N,)
        sequence = completion_sums(per_token, completion, n_completions)[completion]  # (N,) its completion's
        return (beta * sequence - advantages) ** 2, torch.zeros_like(log_prob, dtype=torch.bool)
    raise ValueError(f"policy_loss must be one of {POLICY_LOSSES}, got {kind!r}.")


def completion_sums(per_token: torch.Tensor, completion: torch.Tensor, n_completions: int) -> torch.Tensor:
    """Each completion's sum ``(C,)`` of per-token values ``(N,)``; ``completion`` ``(N,)`` indexes ``[0, C)``."""
    return per_token.new_zeros(n_completions).index_add(0, completion, per_token)


def completion_means(per_token: torch.Tensor, completion: torch.Tensor, n_completions: int) -> torch.Tensor:
    """Each completion's mean ``(C,)`` of per-token values ``(N,)`` (0 for a completion without tokens)."""
    lengths = torch.bincount(completion, minlength=n_completions).clamp(min=1)  # (C,)
    return completion_sums(per_token, completion, n_completions) / lengths


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
        return completion_means(per_token, completion, n_completions).mean()
    raise ValueError(f"loss_aggregation must be one of {LOSS_AGGREGATIONS}, got {how!r}.")


def part_weight(how: str, part_tokens: int, part_completions: int, tokens: int, completions: int) -> float:
    """The weight of a micro-batch's aggregated loss in its minibatch's (gradient accumulation): the sum over the
    parts of ``weight * aggregate_loss(part)`` equals ``aggregate_loss(minibatch)`` for each ``how``, since
    ``"token"`` averages over tokens and ``"sequence"`` and ``"constant"`` over completions."""
    if how == "token":
        return part_tokens / tokens
    if how in ("sequence", "constant"):
        return part_completions / completions
    raise ValueError(f"loss_aggregation must be one of {LOSS_AGGREGATIONS}, got {how!r}.")
