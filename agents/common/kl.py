"""The KL to the reference, in pieces each on its own: one settings object for every algorithm, the per-token
estimators, the coefficient's controller and per-token reward shaping.

:class:`KLSettings` is what a run asks for (``--kl-*`` on the command line); each algorithm's settings class
(:mod:`agents.common.settings`, :mod:`agents.grpo.settings`) says which of it applies and turns it into its own KL
term: :class:`~agents.KLPenaltyCallback` for the critic-based algorithms, constructor arguments for GRPO. The pieces
are plain objects and functions, unit-tested without SB3 (``tests/test_kl.py``), as TRL's controllers are.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from agents.common.checks import option, raise_problems

#: Per-token estimators of ``KL(pi || pi_ref)`` (Schulman 2020, "Approximating KL divergence").
KL_ESTIMATORS = ("k1", "k2", "k3")
#: Where the KL term acts: taken from the reward, or added to the loss (GRPO).
KL_PLACEMENTS = ("reward", "loss")


def kl_estimate(log_ratio: torch.Tensor, estimator: str) -> torch.Tensor:
    """Per-token estimate of ``KL(pi || pi_ref)`` from ``log_ratio = log pi(a) - log pi_ref(a)``, ``a ~ pi``:
    ``k1 = log_ratio`` (unbiased, negative for some samples), ``k2 = log_ratio**2 / 2`` (biased, non-negative),
    ``k3 = exp(-log_ratio) + log_ratio - 1`` (unbiased and non-negative)."""
    if estimator == "k1":
        return log_ratio
    if estimator == "k2":
        return 0.5 * log_ratio.square()
    if estimator == "k3":
        return torch.expm1(-log_ratio) + log_ratio  # exp(-x) - 1 + x, accurate near 0
    raise ValueError(f"kl_estimator must be one of {KL_ESTIMATORS}, got {estimator!r}.")


@dataclass
class KLSettings:
    """The KL to the frozen reference that a run asks for, the same object for every algorithm.

    Each algorithm's settings class checks which of it applies (``kl_problems``) and builds its KL term from it:
    the critic-based algorithms shape each token's reward with ``k1`` through :class:`~agents.KLPenaltyCallback`,
    fixed or adaptive; the group algorithms optimise any estimator in the loss or the reward, with a fixed
    coefficient.

    :param coef: ``beta``, initial if adaptive (>= 0; 0: no KL term).
    :param target: target KL per episode of the adaptive controller (:class:`KLController`; TRL: 6), ``None`` for a
        fixed ``beta``.
    :param horizon: the controller's horizon in episodes (Ziegler et al. and TRL: 10,000).
    :param estimator: ``k1``, ``k2`` or ``k3``; ``None``: the algorithm's own (``k1`` in the reward, GRPO's ``k3``).
    :param placement: ``"reward"`` or ``"loss"``; ``None``: the algorithm's own.
    """

    coef: float = option(0.1, "KL coefficient beta, initial if adaptive (TRL init_kl_coef 0.2; VADER's range)")
    target: float | None = option(
        None,
        "target KL per episode of the adaptive KL controller (TRL: 6); none (default) for a fixed beta: over a "
        "16-minute run the controller moves beta by about one percent with its 10,000-episode horizon",
    )
    horizon: int = option(10_000, "adaptive KL horizon in episodes (Ziegler et al.)")
    estimator: str | None = option(
        None, "KL estimator k1, k2 or k3; none: the algorithm's own (k1 on the reward, GRPO's k3)"
    )
    placement: str | None = option(None, "where the KL acts: 'reward' or 'loss' (GRPO); none: the algorithm's own")

    #: The flag of each field (``--kl-coef``, ..., ``--kl-in``).
    FLAGS: ClassVar[dict[str, str]] = {
        "coef": "kl_coef", "target": "kl_target", "horizon": "kl_horizon", "estimator": "kl_estimator",
        "placement": "kl_in",
    }  # fmt: skip

    def __post_init__(self) -> None:
        problems = []
        if self.coef < 0:
            problems.append(f"kl_coef must be >= 0, got {self.coef}")
        if self.target is not None and self.target <= 0:
            problems.append(f"kl_target must be > 0 or none, got {self.target}")
        if self.horizon < 1:
            problems.append(f"kl_horizon must be >= 1, got {self.horizon}")
        if self.estimator is not None and self.estimator not in KL_ESTIMATORS:
            problems.append(f"kl_estimator must be one of {KL_ESTIMATORS} or none, got {self.estimator!r}")
        if self.placement is not None and self.placement not in KL_PLACEMENTS:
            problems.append(f"kl_in must be one of {KL_PLACEMENTS} or none, got {self.placement!r}")
        raise_problems(problems)


class KLController:
    """The KL coefficient ``beta``: fixed, or adapted towards a target KL per episode.

    With ``target`` set, after each rollout ``beta *= 1 + clip(KL / target - 1, -0.2, 0.2) * n_episodes / horizon``
    (Ziegler et al. 2019, section 2.2; TRL's ``AdaptiveKLController``), with ``KL`` the mean summed KL of the
    rollout's finished episodes. Without a target, :meth:`update` leaves ``beta`` as it is.

    :param coef: initial ``beta`` (>= 0).
    :param target: target KL per episode (TRL: 6), or ``None`` for a fixed coefficient.
    :param horizon: adaptation horizon in episodes (Ziegler et al. and TRL: 10,000).
    """

    def __init__(self, coef: float, target: float | None = None, horizon: int = 10_000) -> None:
        if coef < 0:
            raise ValueError(f"kl_coef must be >= 0, got {coef}.")
        if target is not None and target <= 0:
            raise ValueError(f"kl_target must be > 0 or None, got {target}.")
        if horizon < 1:
            raise ValueError(f"horizon must be >= 1, got {horizon}.")
        self.coef = float(coef)
        self.target = target
        self.horizon = horizon

    @property
    def adaptive(self) -> bool:
        return self.target is not None

    def update(self, kl_per_episode: float, n_episodes: int) -> float:
        """Move ``beta`` after a rollout whose ``n_episodes`` finished episodes had mean KL ``kl_per_episode``;
        returns the new ``beta``."""
        if self.target is not None and n_episodes > 0:
            error = float(np.clip(kl_per_episode / self.target - 1.0, -0.2, 0.2))
            self.coef *= 1.0 + error * n_episodes / self.horizon
        return self.coef

    def state_dict(self) -> dict[str, Any]:
        return {"kl_coef": self.coef, "kl_target": self.target, "horizon": self.horizon}

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> KLController:
        return cls(state["kl_coef"], state["kl_target"], state["horizon"])


def shape_rewards(
    rewards: np.ndarray, log_probs: np.ndarray, ref_log_probs: np.ndarray, coef: float
) -> tuple[np.ndarray, np.ndarray]:
    """Per-token KL shaping: ``r_t - coef * (log pi(a_t|s_t) - log pi_ref(a_t|s_t))``.

    :param rewards: environment rewards, any shape (e.g. ``(n_steps, n_envs)``).
    :param log_probs: ``log pi`` of the sampled actions at sampling time, same shape.
    :param ref_log_probs: ``log pi_ref`` of the same actions, same shape.
    :return: the shaped rewards (``rewards``' dtype) and the per-token sampled KL estimate (float64).
    """
    kl = log_probs.astype(np.float64) - ref_log_probs.astype(np.float64)
    return (rewards - coef * kl).astype(rewards.dtype), kl
