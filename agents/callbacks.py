"""Callbacks: the per-token KL penalty against a frozen reference (Ziegler et al. 2019), and a wall-clock budget."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.utils import obs_as_tensor

from agents.models import ModelSpec
from agents.policy import CausalLMPolicyMixin
from agents.reference import ReferenceModel


class KLPenaltyCallback(BaseCallback):
    """Shape each token's reward with ``r_t -= kl_coef * (log pi(a_t|s_t) - log pi_ref(a_t|s_t))``.

    At the end of each rollout the reference scores all of its transitions at once (one forward pass per episode;
    with LoRA, one switch of the adapters), the penalty is subtracted from the rollout buffer's rewards, and the
    buffer's returns and advantages are recomputed with its own ``compute_returns_and_advantage``. The policy's
    log-probabilities are the ones stored at sampling time. This works unchanged for PPO, A2C, TRPO and
    MaskablePPO (whose action masks apply to the reference too).

    With ``target_kl`` set, ``kl_coef`` adapts after each rollout like Ziegler et al. (2019), section 2.2 (and TRL's
    ``AdaptiveKLController``): ``kl_coef *= 1 + clip(KL / target_kl - 1, -0.2, 0.2) * n_episodes / horizon``,
    with ``KL`` the mean summed KL of the rollout's finished episodes.

    Logged each rollout: ``kl/per_token`` (mean sampled KL per token), ``kl/per_episode``, ``kl/coef``, and
    ``kl/score``, the mean unshaped reward-model score of the episodes that ended.

    :param kl_coef: initial coefficient (beta). TRL's default is 0.2 (adaptive); Ziegler et al. start at 0.1-0.15.
    :param target_kl: target KL per episode for the adaptive controller; ``None`` keeps ``kl_coef`` fixed.
    :param horizon: adaptation horizon in episodes (Ziegler et al. and TRL: 10,000).
    :param reference: ``None`` for the policy's initial weights (LoRA: adapters disabled, no copy), or a model
        spec for the reference (e.g. the pretrained model's name when resuming a run).
    """

    def __init__(
        self,
        kl_coef: float = 0.05,
        target_kl: float | None = None,
        horizon: int = 10_000,
        reference: ModelSpec | None = None,
        verbose: int = 0,
    ) -> None:
        super().__init__(verbose)
        if kl_coef < 0:
            raise ValueError(f"kl_coef must be >= 0, got {kl_coef}.")
        if target_kl is not None and target_kl <= 0:
            raise ValueError(f"target_kl must be > 0 or None, got {target_kl}.")
        if horizon < 1:
            raise ValueError(f"horizon must be >= 1, got {horizon}.")
        self.kl_coef = float(kl_coef)
        self.target_kl = target_kl
        self.horizon = horizon
        self.reference_spec = reference
        self.reference: ReferenceModel | None = None
        #: One row per rollout: timesteps, kl_per_token, kl_per_episode, score, kl_coef (for plots and CSV).
        self.history: list[dict[str, float]] = []
        self._running_kl: np.ndarray | None = None  # (n_envs,) KL so far of each env's current episode
        self._dones: list[np.ndarray] = []
        self._scores: list[float] = []

    def _init_callback(self) -> None:
        from agents.grpo import GRPO

        if isinstance(self.model, GRPO):
            raise TypeError(
                "KLPenaltyCallback shapes the rewards of the critic-based algorithms; GRPO has its own kl_coef: "
                "GRPO(..., kl_coef=beta, kl_in='reward', kl_estimator='k1') applies the same per-token penalty."
            )
        policy = self.model.policy
        if not isinstance(policy, CausalLMPolicyMixin):
            raise TypeError(
                f"KLPenaltyCallback needs a CausalLMPolicy or MaskableCausalLMPolicy, got {type(policy).__name__}."
            )
        if self.reference is None:  # made once: a second learn() call keeps the original reference
            self.reference = ReferenceModel(policy, self.reference_spec)
        if self._running_kl is None or len(self._running_kl) != self.training_env.num_envs:
            self._running_kl = np.zeros(self.training_env.num_envs)

    def _on_rollout_start(self) -> None:
        self._dones, self._scores = [], []

    def _on_step(self) -> bool:
        dones = np.asarray(self.locals["dones"], dtype=bool)
        self._dones.append(dones.copy())
        for env_index in np.flatnonzero(dones):
            score = self.locals["infos"][env_index].get("score")
            if score is not None:
                self._scores.append(float(score))
        return True

    def _on_rollout_end(self) -> None:
        assert self.reference is not None and self._running_kl is not None
        buffer = self.model.rollout_buffer
        n_steps, n_envs = buffer.rewards.shape  # not yet flattened: SB3 flattens in get()
        # Env-major rows keep each episode's transitions together for the reference's prefix sharing.
        obs = {
            key: torch.as_tensor(value.swapaxes(0, 1).reshape(n_envs * n_steps, -1), device=self.model.device)
            for key, value in buffer.observations.items()
        }  # (E*S, L)
        actions = torch.as_tensor(buffer.actions.swapaxes(0, 1).reshape(-1), device=self.model.device)  # (E*S,)
        masks = getattr(buffer, "action_masks", None)
        masks = None if masks is None else masks.swapaxes(0, 1).reshape(n_envs * n_steps, -1)
        reference = self.reference.log_probs(obs, actions, masks).double().cpu().numpy()  # (E*S,)
        kl = buffer.log_probs.astype(np.float64) - reference.reshape(n_envs, n_steps).T  # (S, E) sampled KL estimate
        buffer.rewards -= (self.kl_coef * kl).astype(buffer.rewards.dtype)
        with torch.no_grad():  # the bootstrap value of the last observation (MaskablePPO's locals lack it)
            last_values = self.model.policy.predict_values(obs_as_tensor(self.locals["new_obs"], self.model.device))
        buffer.compute_returns_and_advantage(last_values=last_values, dones=self.locals["dones"])

        finished = []
        for step_kl, dones in zip(kl, self._dones, strict=True):
            self._running_kl += step_kl
            finished.extend(self._running_kl[dones].tolist())
            self._running_kl[dones] = 0.0
        row = {"timesteps": float(self.num_timesteps), "kl_coef": self.kl_coef, "kl_per_token": float(kl.mean())}
        if finished:
            row["kl_per_episode"] = float(np.mean(finished))
        if self._scores:
            row["score"] = float(np.mean(self._scores))
        for key in ("kl_per_token", "kl_per_episode", "score"):
            if key in row:
                self.logger.record(f"kl/{key.removeprefix('kl_')}", row[key])
        self.logger.record("kl/coef", self.kl_coef)
        self.history.append(row)
        if self.target_kl is not None and finished:
            error = float(np.clip(row["kl_per_episode"] / self.target_kl - 1.0, -0.2, 0.2))
            self.kl_coef *= 1.0 + error * len(finished) / self.horizon

    # ------------------------------------------------------------------ state, for exact resume
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly: settings, coefficient, per-env running KL, history, and the
        reference weights when they are a frozen copy (with LoRA the reference is the base model: nothing to save).
        """
        reference_state = None
        if self.reference is not None and not self.reference.uses_disabled_adapters:
            reference_state = {k: v.detach().cpu().clone() for k, v in self.reference.lm.state_dict().items()}
        return {
            "kl_coef": self.kl_coef,
            "target_kl": self.target_kl,
            "horizon": self.horizon,
            "running_kl": None if self._running_kl is None else self._running_kl.copy(),
            "history": list(self.history),
            "reference_state": reference_state,
        }

    @classmethod
    def from_state_dict(cls, state: dict[str, Any], policy: CausalLMPolicyMixin) -> KLPenaltyCallback:
        """A callback that continues from :meth:`state_dict`, with its reference rebuilt on ``policy``."""
        callback = cls(kl_coef=state["kl_coef"], target_kl=state["target_kl"], horizon=state["horizon"])
        callback._running_kl = None if state["running_kl"] is None else np.array(state["running_kl"])
        callback.history = list(state["history"])
        callback.reference = ReferenceModel(policy, reference_state=state["reference_state"])
        return callback


class RolloutHistoryCallback(BaseCallback):
    """One row per rollout of what the algorithm and the KL callback logged, under one set of names, for plots.

    Reads SB3's logger at the end of each rollout (after the algorithm and any earlier callback recorded their
    values, before the logger is dumped): ``score`` (mean reward-model score), ``kl_per_episode`` (summed sampled KL
    per completion: ``kl/per_episode`` of :class:`KLPenaltyCallback`, ``kl/k1_per_completion`` of the group
    algorithms) and ``kl_coef``. Place it after :class:`KLPenaltyCallback` in a ``CallbackList``.
    """

    #: Row field -> logger keys, first found wins.
    SOURCES: dict[str, tuple[str, ...]] = {
        "score": ("kl/score", "rollout/score"),
        "kl_per_episode": ("kl/per_episode", "kl/k1_per_completion"),
        "kl_coef": ("kl/coef",),
    }

    def __init__(self, verbose: int = 0) -> None:
        super().__init__(verbose)
        self.rows: list[dict[str, float]] = []

    def _on_rollout_end(self) -> None:
        logged = self.logger.name_to_value
        row = {"timesteps": float(self.num_timesteps)}
        for field, keys in self.SOURCES.items():
            for key in keys:
                if key in logged:
                    row[field] = float(logged[key])
                    break
        self.rows.append(row)

    def _on_step(self) -> bool:
        return True


class TimeBudgetCallback(BaseCallback):
    """Stop training before a wall-clock budget runs out, between rollouts (never in the middle of one), with a
    progress bar over the budget.

    The run stops when the time left is less than the slowest iteration (rollout + update) seen so far, so it ends
    within the budget rather than after it.

    :param seconds: the budget for ``learn()``.
    :param progress_bar: show a tqdm bar of the budget, with the latest mean score.
    """

    def __init__(self, seconds: float, progress_bar: bool = True, verbose: int = 0) -> None:
        super().__init__(verbose)
        if seconds <= 0:
            raise ValueError(f"The time budget must be > 0 seconds, got {seconds}.")
        self.seconds = seconds
        self.progress_bar = progress_bar
        self._start = 0.0
        self._iteration_start = 0.0
        self._slowest = 0.0
        self._stop = False
        self._bar: Any = None
        self.stopped_early = False

    def _on_training_start(self) -> None:
        self._start = self._iteration_start = time.monotonic()
        if self.progress_bar:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=round(self.seconds), unit="s", desc="training (time budget)")

    def _on_rollout_start(self) -> None:
        now = time.monotonic()
        if now > self._iteration_start:
            self._slowest = max(self._slowest, now - self._iteration_start)
        self._iteration_start = now
        elapsed = now - self._start
        if self._bar is not None:
            self._bar.n = min(round(elapsed), self._bar.total)
            scores = [info["r"] for info in self.model.ep_info_buffer] if self.model.ep_info_buffer else []
            if scores:
                self._bar.set_postfix(score=f"{np.mean(scores):+.3f}")
            self._bar.refresh()
        self._stop = elapsed + self._slowest > self.seconds

    def _on_step(self) -> bool:
        if self._stop:
            self.stopped_early = True
            return False  # first step of a rollout: SB3 returns before training on it
        return True

    def _on_training_end(self) -> None:
        if self._bar is not None:
            self._bar.n = min(round(time.monotonic() - self._start), self._bar.total)
            self._bar.close()
