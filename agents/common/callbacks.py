"""Callbacks: the per-token KL penalty against a frozen reference (Ziegler et al. 2019), and a wall-clock budget."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.utils import obs_as_tensor

from agents.common.distributed import all_reduce_sums, broadcast_flag, is_distributed
from agents.common.episodes import env_major, from_env_major
from agents.common.kl import KLController, shape_rewards
from agents.common.models import ModelSpec
from agents.common.policy import CausalLMPolicyBase
from agents.common.reference import ReferenceModel


class KLPenaltyCallback(BaseCallback):
    """Shape each token's reward with ``r_t -= kl_coef * (log pi(a_t|s_t) - log pi_ref(a_t|s_t))``.

    At the end of each rollout the reference scores all of its transitions at once (one forward pass per episode;
    with LoRA, one switch of the adapters), the penalty (:func:`~agents.common.kl.shape_rewards`) is subtracted from the
    rollout buffer's rewards, and the buffer's returns and advantages are recomputed with its own
    ``compute_returns_and_advantage`` (``agents/common/sb3_contract.py``, items 1-2). The policy's log-probabilities
    are the ones stored at sampling time. This works unchanged for PPO, A2C, TRPO and MaskablePPO (whose action
    masks apply to the reference too). The coefficient comes from a :class:`~agents.common.kl.KLController`: fixed,
    or adaptive with ``kl_target``.

    Logged each rollout, under the KL names the group algorithms use too: ``kl/k1`` (mean sampled KL per token,
    the ``k1`` estimate), ``kl/k1_per_episode`` (summed over each episode that ended), ``kl/coef``, and
    ``rollout/score``, the mean unshaped reward-model score of the episodes that ended. Data parallel (a
    ``torch.distributed`` process group), these are means over all ranks, and the adaptive controller steps on the
    global mean KL and episode count, identically on every rank.

    An algorithm whose KL term is its own declares ``owns_kl_penalty = True`` (:class:`~agents.GRPO` does): the
    callback refuses it.

    :param kl_coef: initial coefficient (beta). TRL's default is 0.2 (adaptive); Ziegler et al. start at 0.1-0.15.
    :param kl_target: target KL per episode for the adaptive controller (TRL: 6); ``None`` keeps ``kl_coef`` fixed.
        Not SB3 PPO's ``target_kl``, which stops an update early at a per-update KL of ~0.01.
    :param horizon: adaptation horizon in episodes (Ziegler et al. and TRL: 10,000).
    :param reference: a :class:`~agents.ReferenceModel` (e.g. the one the evaluation uses too: build it once), a
        model spec to load as the reference, or ``None`` for the policy's initial weights (LoRA: adapters disabled,
        no copy), made when training starts.
    """

    def __init__(
        self,
        kl_coef: float = 0.05,
        kl_target: float | None = None,
        horizon: int = 10_000,
        reference: ReferenceModel | ModelSpec | None = None,
        verbose: int = 0,
    ) -> None:
        super().__init__(verbose)
        self.controller = KLController(kl_coef, kl_target, horizon)
        self.reference: ReferenceModel | None = reference if isinstance(reference, ReferenceModel) else None
        self.reference_spec = None if isinstance(reference, ReferenceModel) else reference
        #: One row per rollout, of what is logged: timesteps, kl/k1, kl/k1_per_episode, rollout/score, kl/coef.
        self.history: list[dict[str, float]] = []
        self._running_kl: np.ndarray | None = None  # (n_envs,) KL so far of each env's current episode
        self._dones: list[np.ndarray] = []
        self._scores: list[float] = []

    @property
    def kl_coef(self) -> float:
        """The current coefficient (the controller's)."""
        return self.controller.coef

    @property
    def kl_target(self) -> float | None:
        return self.controller.target

    def _init_callback(self) -> None:
        if getattr(self.model, "owns_kl_penalty", False):
            name = type(self.model).__name__
            raise TypeError(
                f"KLPenaltyCallback shapes the rewards of the critic-based algorithms; {name} has its own kl_coef: "
                f"{name}(..., kl_coef=beta, kl_in='reward', kl_estimator='k1') applies the same per-token penalty."
            )
        policy = self.model.policy
        if not isinstance(policy, CausalLMPolicyBase):
            raise TypeError(
                f"KLPenaltyCallback needs a CausalLMPolicy or MaskableCausalLMPolicy, got {type(policy).__name__}."
            )
        if self.reference is None:  # made once: a second learn() call keeps the original reference
            self.reference = ReferenceModel(policy, self.reference_spec)
        elif self.reference.policy is not policy:
            raise ValueError(
                "This KLPenaltyCallback's reference belongs to another model's policy: make one callback (and one "
                "ReferenceModel) per model."
            )
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
        buffer = self.model.rollout_buffer  # type: ignore[attr-defined]
        n_steps, n_envs = buffer.rewards.shape  # not yet flattened: SB3 flattens in get()
        # Env-major rows keep each episode's transitions together for the reference's prefix sharing.
        device = self.model.device
        obs = {key: torch.as_tensor(env_major(value), device=device) for key, value in buffer.observations.items()}
        actions = torch.as_tensor(env_major(buffer.actions).reshape(-1), device=device)  # (E*S,)
        masks = getattr(buffer, "action_masks", None)
        masks = None if masks is None else env_major(masks)  # (E*S, V)
        reference = self.reference.log_probs(obs, actions, masks).double().cpu().numpy()  # (E*S,)
        buffer.rewards, kl = shape_rewards(
            buffer.rewards, buffer.log_probs, from_env_major(reference, n_steps, n_envs), self.kl_coef
        )  # (S, E) each
        with torch.no_grad():  # the bootstrap value of the last observation (MaskablePPO's locals lack it)
            policy = self.model.policy
            assert isinstance(policy, CausalLMPolicyBase)
            last_values = policy.predict_values(obs_as_tensor(self.locals["new_obs"], self.model.device))
        buffer.compute_returns_and_advantage(last_values=last_values, dones=self.locals["dones"])

        finished = []
        for step_kl, dones in zip(kl, self._dones, strict=True):
            self._running_kl += step_kl
            finished.extend(self._running_kl[dones].tolist())
            self._running_kl[dones] = 0.0
        row = {"kl/k1": float(kl.mean())}
        n_finished, n_scores = len(finished), len(self._scores)
        if is_distributed():  # global means over the ranks: every rank's controller takes the same step
            sums = [kl.sum(), kl.size, np.sum(finished), n_finished, np.sum(self._scores), n_scores]
            kl_sum, kl_count, finished_sum, n_finished_f, score_sum, n_scores_f = all_reduce_sums(sums, "the KL means")
            n_finished, n_scores = round(n_finished_f), round(n_scores_f)
            row["kl/k1"] = kl_sum / kl_count
            if n_finished:
                row["kl/k1_per_episode"] = finished_sum / n_finished
            if n_scores:
                row["rollout/score"] = score_sum / n_scores
        else:
            if finished:
                row["kl/k1_per_episode"] = float(np.mean(finished))
            if self._scores:
                row["rollout/score"] = float(np.mean(self._scores))
        row["kl/coef"] = self.kl_coef
        for key, value in row.items():
            self.logger.record(key, value)
        self.history.append({"timesteps": float(self.num_timesteps), **row})
        if n_finished:
            self.controller.update(row["kl/k1_per_episode"], n_finished)

    # ------------------------------------------------------------------ state, for exact resume
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly: the controller, per-env running KL, history, and the reference
        weights when they are a frozen copy (with LoRA the reference is the base model: nothing to save)."""
        reference_state = None
        if self.reference is not None and not self.reference.uses_disabled_adapters:
            reference_state = {k: v.detach().cpu().clone() for k, v in self.reference.lm.state_dict().items()}
        return {
            **self.controller.state_dict(),
            "running_kl": None if self._running_kl is None else self._running_kl.copy(),
            "history": list(self.history),
            "reference_state": reference_state,
        }

    @classmethod
    def from_state_dict(cls, state: dict[str, Any], policy: CausalLMPolicyBase) -> KLPenaltyCallback:
        """A callback that continues from :meth:`state_dict`, with its reference rebuilt on ``policy``."""
        callback = cls(reference=ReferenceModel(policy, reference_state=state["reference_state"]))
        callback.controller = KLController.from_state_dict(state)
        callback._running_kl = None if state["running_kl"] is None else np.array(state["running_kl"])
        callback.history = list(state["history"])
        return callback


class RolloutHistoryCallback(BaseCallback):
    """One row per rollout of what the algorithm and the KL callback logged, for plots.

    Reads SB3's logger at the end of each rollout (after the algorithm and any earlier callback recorded their
    values, before the logger is dumped) and keeps every value under ``rollout/`` and ``kl/`` by its logged name,
    the same for every algorithm: ``rollout/score`` (mean reward-model score), ``kl/k1_per_episode`` (summed sampled
    KL per episode), ``kl/coef``, ... Place it after :class:`KLPenaltyCallback` in a ``CallbackList``.
    """

    #: The logger sections a row keeps.
    SECTIONS = ("rollout/", "kl/")

    def __init__(self, verbose: int = 0) -> None:
        super().__init__(verbose)
        self.rows: list[dict[str, float]] = []

    def _on_rollout_end(self) -> None:
        logged = self.logger.name_to_value
        row = {"timesteps": float(self.num_timesteps)}
        row.update({key: float(value) for key, value in logged.items() if key.startswith(self.SECTIONS)})
        self.rows.append(row)

    def _on_step(self) -> bool:
        return True


class TimeBudgetCallback(BaseCallback):
    """Stop training before a wall-clock budget runs out, between rollouts (never in the middle of one), with a
    progress bar over the budget.

    The run stops when the time left is less than the slowest iteration (rollout + update) seen so far, so it ends
    within the budget rather than after it. Data parallel (a ``torch.distributed`` process group), rank 0's decision
    is broadcast at the first step of each rollout, so every rank stops at the same rollout.

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
        self._synced = True  # this rollout's decision is rank 0's (always, without a process group)
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
        self._synced = not is_distributed()

    def _on_step(self) -> bool:
        if not self._synced:  # data parallel: rank 0's decision, at the first step (see DataParallelCallback)
            self._stop, self._synced = broadcast_flag(self._stop, "the time budget's decision"), True
        if self._stop:
            self.stopped_early = True
            return False  # first step of a rollout: SB3 returns before training on it
        return True

    def _on_training_end(self) -> None:
        if self._bar is not None:
            self._bar.n = min(round(time.monotonic() - self._start), self._bar.total)
            self._bar.close()
