"""The KL penalty's pieces, each on its own: the coefficient's controller and per-token reward shaping.

:class:`~agents.KLPenaltyCallback` composes them with a :class:`~agents.ReferenceModel`; they are plain objects and
functions, unit-tested without SB3 (``tests/test_kl.py``), as TRL's controllers are.
"""

from __future__ import annotations

from typing import Any

import numpy as np


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
