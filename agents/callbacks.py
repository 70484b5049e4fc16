"""Callbacks: the per-token KL penalty against a frozen reference (Ziegler et al. 2019), and a wall-clock budget."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch
from stable_baselines3.common.callbacks import BaseCallback

from agents.models import ModelSpec
from agents.policy import CausalLMPolicyMixin
from agents.reference import ReferenceModel


class KLPenaltyCallback(BaseCallback):
    """Shape each token's reward with ``r_t -= kl_coef * (log pi(a_t|s_t) - log pi_ref(a_t|s_t))``.

    SB3 calls ``on_step`` after ``env.step`` and before the transition enters the rollout buffer; ``rewards`` in the
    algorithm's locals is the very array the buffer stores, so it is changed in place. The same holds for PPO, A2C,
    TRPO and MaskablePPO (whose action masks apply to the reference too).

    With ``target_kl`` set, ``kl_coef`` adapts after each rollout like Ziegler et al. (2019), section 2.2 (and TRL's
    ``AdaptiveKLController``): ``kl_coef *= 1 + clip(KL / target_kl - 1, -0.2, 0.2) * n_episodes / horizon``,
    with ``KL`` the mean summed KL of the rollout's finished episodes.

    Logged each rollout: ``kl/per_token`` (mean sampled KL per token), ``kl/per_episode``, ``kl/coef``, and
    ``kl/score``, the mean unshaped reward-model score of the episodes that ended.

    :param kl_coef: initial coefficient (beta). TRL's default is 0.05; Ziegler et al. start at 0.1-0.15.
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
        self._reset_statistics()

    def _reset_statistics(self) -> None:
        self._token_kl: list[float] = []
        self._finished_kl: list[float] = []
        self._scores: list[float] = []
        self._running_kl: np.ndarray | None = None

    def _init_callback(self) -> None:
        policy = self.model.policy
        if not isinstance(policy, CausalLMPolicyMixin):
            raise TypeError(
                f"KLPenaltyCallback needs a CausalLMPolicy or MaskableCausalLMPolicy, got {type(policy).__name__}."
            )
        if self.reference is None:  # made once: a second learn() call keeps the original reference
            self.reference = ReferenceModel(policy, self.reference_spec)
        self._running_kl = np.zeros(self.training_env.num_envs)

    def _on_rollout_start(self) -> None:
        running = self._running_kl
        self._reset_statistics()
        self._running_kl = running  # episodes that span rollouts keep their KL so far

    def _on_step(self) -> bool:
        assert self.reference is not None and self._running_kl is not None
        actions = torch.as_tensor(np.asarray(self.locals["actions"])).reshape(-1)  # (B,)
        log_probs = self.locals["log_probs"].detach().reshape(-1).cpu()  # (B,)
        reference = self.reference.log_probs(self.locals["obs_tensor"], actions, self.locals.get("action_masks")).cpu()
        kl = (log_probs - reference).double().numpy()  # (B,) sampled estimate of KL(pi || pi_ref)
        rewards: np.ndarray = self.locals["rewards"]
        rewards -= (self.kl_coef * kl).astype(rewards.dtype)  # in place: this array goes into the buffer
        self._token_kl.extend(kl.tolist())
        self._running_kl += kl
        for env_index, done in enumerate(self.locals["dones"]):
            if done:
                self._finished_kl.append(float(self._running_kl[env_index]))
                self._running_kl[env_index] = 0.0
                score = self.locals["infos"][env_index].get("score")
                if score is not None:
                    self._scores.append(float(score))
        return True

    def _on_rollout_end(self) -> None:
        row = {"timesteps": float(self.num_timesteps), "kl_coef": self.kl_coef}
        if self._token_kl:
            row["kl_per_token"] = float(np.mean(self._token_kl))
        if self._finished_kl:
            row["kl_per_episode"] = float(np.mean(self._finished_kl))
        if self._scores:
            row["score"] = float(np.mean(self._scores))
        for key in ("kl_per_token", "kl_per_episode", "score"):
            if key in row:
                self.logger.record(f"kl/{key.removeprefix('kl_')}", row[key])
        self.logger.record("kl/coef", self.kl_coef)
        self.history.append(row)
        if self.target_kl is not None and self._finished_kl:
            error = float(np.clip(row["kl_per_episode"] / self.target_kl - 1.0, -0.2, 0.2))
            self.kl_coef *= 1.0 + error * len(self._finished_kl) / self.horizon

    # ------------------------------------------------------------------ state, for exact resume
    def state_dict(self) -> dict[str, Any]:
        """The controller's state (``kl_coef``), to save beside a checkpoint."""
        return {"kl_coef": self.kl_coef}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.kl_coef = float(state["kl_coef"])


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
