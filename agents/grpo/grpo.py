"""GRPO, Dr. GRPO and RLOO: critic-free, group-relative policy optimisation for text, as an SB3 on-policy algorithm.

Each rollout is ``rounds`` rounds of prompt groups: ``n_envs / group_size`` groups of consecutive envs, every env of
a group completing the same prompt (chosen through the env's public ``reset(options={"prompt_index": i})``, not by
re-seeding), every env completing exactly one episode per round. A completion's advantage is its reward against the
rest of its group (:mod:`agents.grpo.objective`), so there is no value head, no value loss and no value optimizer
state. The update is PPO's clipped ratio per token over minibatches of whole completions, with an optional KL term
against the frozen reference in the loss or in the reward.

This is an ``OnPolicyAlgorithm`` like sb3-contrib's algorithms: it writes its own ``collect_rollouts`` (rounds of
complete episodes instead of a fixed number of steps) and ``train``, and keeps SB3's ``learn``, callbacks, logger,
progress bar, ``save``/``load`` and ``reset_num_timesteps`` as they are.
"""

from __future__ import annotations

import functools
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.type_aliases import GymEnv, Schedule
from stable_baselines3.common.utils import FloatSchedule, obs_as_tensor
from stable_baselines3.common.vec_env import VecEnv

from agents.common.kl import KL_ESTIMATORS, kl_estimate
from agents.common.policy import CausalLMPolicy
from agents.common.reference import ReferenceModel
from agents.grpo.buffers import GroupRolloutBuffer, GroupSamples
from agents.grpo.objective import (
    ADVANTAGES,
    DEFAULT_AGGREGATION,
    LOSS_AGGREGATIONS,
    POLICY_LOSSES,
    aggregate_loss,
    group_size_problems,
    part_weight,
    policy_loss,
)

SelfGRPO = TypeVar("SelfGRPO", bound="GRPO")

__all__ = ["GRPO"]


class GRPO(OnPolicyAlgorithm):
    """Group Relative Policy Optimization (Shao et al. 2024), with Dr. GRPO's and RLOO's baselines.

    ``GRPO(CausalLMPolicy, env, group_size=4)``: ``env`` is a vector env of ``TextGenerationEnv`` (e.g.
    ``make_vec_env("text_env/PositiveReview-v0", n_envs=16)``) whose ``n_envs`` is a multiple of ``group_size``.

    :param policy: :class:`~agents.CausalLMPolicy` (built without a value head: ``value_head=False`` is set).
    :param env: the vector env (or an env id / env, which SB3 wraps into a one-env vector env: too few for a group).
    :param group_size: ``G``, completions per prompt: the baseline of each is the rest of its group (>= 2).
    :param advantage: ``"grpo"`` (mean/std baseline), ``"dr_grpo"`` (mean baseline, constant normalisation),
        ``"rloo"`` (leave-one-out baseline), ``"raft"`` (the best of the group), ``"reinforce_pp"`` /
        ``"reinforce_pp_baseline"`` (per-token returns) or ``"apo"`` (A*-PO's ``r - V*(x)``, with
        ``policy_loss="apo"`` and ``beta = kl_coef``); formulas in :mod:`agents.grpo.objective`.
    :param learning_rate: optimizer learning rate, or a schedule of the remaining progress (SB3).
    :param n_steps: steps per env per rollout, a multiple of the env's ``max_new_tokens`` ``T``: each env completes
        ``n_steps / T`` prompts per rollout (rounds). ``None``: ``T`` (one round).
    :param batch_size: transitions per minibatch, as in PPO, rounded down to whole completions of ``T`` slots (384
        with ``T = 48``: 8 completions). ``None``: every completion of the rollout in one minibatch.
    :param micro_batch_size: transitions per forward and backward pass, rounded down to whole completions: each
        minibatch's gradient is accumulated over micro-batches of this size before its one optimizer step, the
        same gradient (up to float summation order) with the activations of a micro-batch only: a memory knob, like
        TRL's ``per_device_train_batch_size`` under ``gradient_accumulation_steps``. A multiple of
        ``group_size * T`` keeps each prompt encoded once. ``None``: the whole minibatch in one pass.
    :param n_epochs: passes over the rollout (1: purely on-policy; the ratio stays 1 and clipping never acts).
    :param clip_range: PPO's clip of the probability ratio per token, below ``1 - clip_range``.
    :param clip_range_high: the upper clip ``1 + clip_range_high`` (DAPO's clip-higher, e.g. 0.28);
        ``None``: ``clip_range``.
    :param ent_coef: entropy bonus (0 in GRPO and RLOO).
    :param max_grad_norm: gradient clipping norm.
    :param kl_coef: strength ``beta`` of the KL to the frozen reference (the policy's initial weights; with LoRA the
        same model with adapters disabled). 0 without a penalty (TRL's default); DeepSeekMath used 0.04.
    :param kl_estimator: ``"k1"``, ``"k2"`` or ``"k3"``, the per-token estimator that is optimised.
    :param kl_in: ``"loss"`` (GRPO: ``beta * k`` added to each token's loss) or ``"reward"`` (``beta * sum_t k`` taken
        from each completion's reward before the group baseline, like :class:`~agents.KLPenaltyCallback`).
    :param loss_aggregation: ``"sequence"``, ``"constant"`` or ``"token"``; ``None``: the advantage type's own
        (``grpo``: sequence; ``dr_grpo`` and ``rloo``: constant).
    :param drop_all_equal_groups: leave out of the update the groups whose rewards are all equal (no signal).
    :param policy_loss: the per-token loss (:func:`~agents.grpo.objective.policy_loss`): ``"clip"`` (PPO's clipped
        ratio per token), ``"gspo"`` (clipped sequence ratio), ``"cispo"`` (REINFORCE with the detached ratio
        clipped from above at ``1 + clip_range_high``), ``"nll"`` (the LM loss, for ``advantage="raft"``) or ``"apo"``
        (A*-PO's squared error between ``kl_coef * log(pi / pi_ref)`` of each completion and its ``r - V*(x)``: the
        KL term itself, so no other is added and ``kl_estimator`` is unused).
    :param resample_rounds: DAPO's dynamic sampling: after the rollout's rounds, up to this many extra rounds are
        sampled and their groups with a learning signal replace the groups whose rewards are all equal (0: off).
    :param target_kl: stop the epochs of an update early when the approximate KL between the rollout policy and the
        current one exceeds ``1.5 * target_kl`` (PPO's rule); ``None``: never.

    Logged every rollout: ``rollout/score`` (mean reward-model score), ``rollout/group_reward_std`` (mean within-
    group standard deviation of the rewards the baseline uses), ``rollout/all_equal_groups`` (share of groups with
    no learning signal), ``rollout/completion_length``, ``rollout/optimal_value`` (A*-PO: the mean estimate of
    ``V*(x)``), and, with a reference, ``kl/k1``, ``kl/k2``, ``kl/k3`` (per
    token; ``kl/k*_per_episode`` summed over each completion: all three whatever is optimised, so a negative ``k1``
    shows for what it is, a noisy estimate) and ``kl/coef``, the names :class:`~agents.KLPenaltyCallback` logs too.
    Every update: ``train/loss``, ``train/policy_gradient_loss``, ``train/kl_loss``, ``train/entropy``,
    ``train/clip_fraction``, ``train/approx_kl``, ``train/first_ratio_deviation`` (max ``|ratio - 1|`` of the first
    minibatch, before any step: 0 up to float rounding, since the same model samples and scores).

    Per-rank state for checkpoints: :meth:`get_rank_state` / :meth:`set_rank_state` (the pass over the prompts),
    the hook of :class:`~agents.common.checkpoint.RankStateHook`.
    """

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {"CausalLMPolicy": CausalLMPolicy}
    #: The KL to the reference is the algorithm's own (``kl_coef``, ``kl_estimator``, ``kl_in``):
    #: :class:`~agents.KLPenaltyCallback`, which shapes the rewards of the critic-based algorithms, refuses it.
    owns_kl_penalty: ClassVar[bool] = True
    policy: CausalLMPolicy
    rollout_buffer: GroupRolloutBuffer  # type: ignore[assignment]

    def __init__(
        self,
        policy: str | type[CausalLMPolicy],
        env: GymEnv | str,
        group_size: int = 4,
        advantage: str = "grpo",
        learning_rate: float | Schedule = 1e-5,
        n_steps: int | None = None,
        batch_size: int | None = None,
        micro_batch_size: int | None = None,
        n_epochs: int = 1,
        clip_range: float | Schedule = 0.2,
        clip_range_high: float | None = None,
        ent_coef: float = 0.0,
        max_grad_norm: float = 1.0,
        kl_coef: float = 0.0,
        kl_estimator: str = "k3",
        kl_in: str = "loss",
        loss_aggregation: str | None = None,
        drop_all_equal_groups: bool = False,
        policy_loss: str = "clip",
        resample_rounds: int = 0,
        target_kl: float | None = None,
        stats_window_size: int = 100,
        tensorboard_log: str | None = None,
        policy_kwargs: dict[str, Any] | None = None,
        verbose: int = 0,
        seed: int | None = None,
        device: torch.device | str = "auto",
        _init_setup_model: bool = True,
    ) -> None:
        problems = []
        if advantage not in ADVANTAGES:
            problems.append(f"advantage must be one of {ADVANTAGES}, got {advantage!r}")
        if kl_estimator not in KL_ESTIMATORS:
            problems.append(f"kl_estimator must be one of {KL_ESTIMATORS}, got {kl_estimator!r}")
        if kl_in not in ("loss", "reward"):
            problems.append(f"kl_in must be 'loss' or 'reward', got {kl_in!r}")
        if policy_loss not in POLICY_LOSSES:
            problems.append(f"policy_loss must be one of {POLICY_LOSSES}, got {policy_loss!r}")
        if resample_rounds < 0:
            problems.append(f"resample_rounds must be >= 0, got {resample_rounds}")
        if loss_aggregation is not None and loss_aggregation not in LOSS_AGGREGATIONS:
            problems.append(f"loss_aggregation must be one of {LOSS_AGGREGATIONS} or None, got {loss_aggregation!r}")
        problems.extend(group_size_problems(group_size))
        if n_epochs < 1:
            problems.append(f"n_epochs must be >= 1, got {n_epochs}")
        if kl_coef < 0:
            problems.append(f"kl_coef must be >= 0, got {kl_coef}")
        if clip_range_high is not None and clip_range_high <= 0:
            problems.append(f"clip_range_high must be > 0 or None, got {clip_range_high}")
        if target_kl is not None and target_kl <= 0:
            problems.append(f"target_kl must be > 0 or None, got {target_kl}")
        if (advantage == "apo") != (policy_loss == "apo"):
            problems.append(f"advantage='apo' and policy_loss='apo' go together (A*-PO), got {advantage!r} and "
                            f"{policy_loss!r}")  # fmt: skip
        if policy_loss == "apo":
            if not kl_coef > 0:
                problems.append(f"A*-PO needs kl_coef > 0, the beta of the optimum it regresses on, got {kl_coef}")
            if kl_in != "loss":
                problems.append("A*-PO's KL term is its loss: kl_in must be 'loss'")
            if drop_all_equal_groups or resample_rounds:
                problems.append("A*-PO learns from groups of equal rewards too (r - V* is not 0 there): use "
                                "drop_all_equal_groups=False and resample_rounds=0")  # fmt: skip
            if loss_aggregation not in (None, "sequence"):
                problems.append("A*-PO's loss is a mean over completions: loss_aggregation must be 'sequence' or "
                                f"None, got {loss_aggregation!r}")  # fmt: skip
        if problems:
            raise ValueError("Invalid GRPO settings:\n  - " + "\n  - ".join(problems))
        policy_kwargs = dict(policy_kwargs or {})
        if policy_kwargs.get("value_head", False):
            raise ValueError("GRPO trains no value head: remove value_head=True from policy_kwargs.")
        if policy_kwargs.get("value_model") is not None:
            raise ValueError("GRPO trains no value model: remove value_model from policy_kwargs.")
        policy_kwargs["value_head"] = False
        super().__init__(
            policy,
            env,
            learning_rate=learning_rate,
            n_steps=n_steps or 1,  # resolved from the env in _setup_model
            gamma=1.0,
            gae_lambda=1.0,
            ent_coef=ent_coef,
            vf_coef=0.0,
            max_grad_norm=max_grad_norm,
            use_sde=False,
            sde_sample_freq=-1,
            stats_window_size=stats_window_size,
            tensorboard_log=tensorboard_log,
            policy_kwargs=policy_kwargs,
            verbose=verbose,
            seed=seed,
            device=device,
            _init_setup_model=False,
            supported_action_spaces=(spaces.Discrete,),
        )
        self.requested_n_steps = n_steps
        self.group_size = group_size
        self.advantage = advantage
        self.batch_size = batch_size
        self.micro_batch_size = micro_batch_size
        self.n_epochs = n_epochs
        self.clip_range = clip_range
        self.clip_range_high = clip_range_high
        self.kl_coef = float(kl_coef)
        self.kl_estimator = kl_estimator
        self.kl_in = kl_in
        self.loss_aggregation = loss_aggregation or DEFAULT_AGGREGATION[advantage]
        self.drop_all_equal_groups = drop_all_equal_groups
        self.policy_loss = policy_loss
        self.resample_rounds = resample_rounds
        self.target_kl = target_kl
        self.completion_length = 0  # T, read from the env in _setup_model
        self.num_prompts = 0
        self.reference: ReferenceModel | None = None
        self._prompt_order = np.zeros(0, dtype=np.int64)  # a shuffled pass over the prompts, consumed in order
        self._prompt_cursor = 0
        if _init_setup_model:
            self._setup_model()

    # ------------------------------------------------------------------ set-up
    def _setup_model(self) -> None:
        if self.env is not None:
            self._read_env(self.env)
        problems = group_size_problems(self.group_size, self.n_envs, name=type(self).__name__)
        if problems:
            raise ValueError(problems[0] + ".")
        self.rollout_buffer_class = GroupRolloutBuffer  # type: ignore[assignment]
        self.rollout_buffer_kwargs = dict(group_size=self.group_size, completion_length=self.completion_length)
        super()._setup_model()
        if not isinstance(self.policy, CausalLMPolicy):
            raise TypeError(f"GRPO needs a CausalLMPolicy, got {type(self.policy).__name__}.")
        self.clip_range = FloatSchedule(self.clip_range)
        if self.batch_size is not None and self.batch_size < self.completion_length:
            raise ValueError(
                f"batch_size={self.batch_size} transitions is less than one completion of "
                f"{self.completion_length} tokens: minibatches hold whole completions; use batch_size >= "
                f"{self.completion_length}."
            )
        if self.micro_batch_size is not None and self.micro_batch_size < self.completion_length:
            raise ValueError(
                f"micro_batch_size={self.micro_batch_size} transitions is less than one completion of "
                f"{self.completion_length} tokens: micro-batches hold whole completions; use micro_batch_size >= "
                f"{self.completion_length}, or None for one pass per minibatch."
            )
        # The reference: free with LoRA (adapters off); a frozen copy otherwise, only when the loss needs it.
        if self.kl_coef > 0 or self.policy.lora is not None:
            self.reference = ReferenceModel(self.policy)

    def _read_env(self, env: VecEnv) -> None:
        """Completion length and prompt count from the envs, checked to agree across envs."""
        try:
            lengths = env.get_attr("max_new_tokens")
            counts = env.get_attr("num_prompts")
        except AttributeError as error:
            raise TypeError(
                "GRPO needs text_env.TextGenerationEnv environments (max_new_tokens, num_prompts and "
                f"reset(options={{'prompt_index': i}})): {error}"
            ) from error
        if len(set(lengths)) != 1 or len(set(counts)) != 1:
            raise ValueError(
                f"All envs must share max_new_tokens and prompts; got max_new_tokens {sorted(set(lengths))} and "
                f"prompt counts {sorted(set(counts))}."
            )
        self.completion_length, self.num_prompts = int(lengths[0]), int(counts[0])
        n_steps = self.requested_n_steps or self.completion_length
        if n_steps % self.completion_length:
            raise ValueError(
                f"n_steps={n_steps} must be a multiple of the env's max_new_tokens={self.completion_length}: a "
                "rollout is made of rounds in which every env completes one episode."
            )
        self.n_steps = n_steps

    def _excluded_save_params(self) -> list[str]:
        return [*super()._excluded_save_params(), "reference"]

    def _get_torch_save_params(self) -> tuple[list[str], list[str]]:
        state_dicts, tensors = super()._get_torch_save_params()
        if self.reference is not None and not self.reference.uses_disabled_adapters:
            state_dicts.append("reference.lm")  # a frozen copy of the initial weights: saved with the model
        return state_dicts, tensors

    # ------------------------------------------------------------------ per-rank state (agents.common.checkpoint)
    def get_rank_state(self) -> dict[str, Any]:
        """This process's pass over the prompts (data parallel, each rank draws its own), for exact resume."""
        return {"prompt_order": self._prompt_order, "prompt_cursor": self._prompt_cursor}

    def set_rank_state(self, state: dict[str, Any] | None) -> None:
        """Continue the pass of :meth:`get_rank_state`; ``None``: start a new pass at the next rollout, drawn from
        numpy's global generator."""
        if state is None:
            self._prompt_order, self._prompt_cursor = np.zeros(0, dtype=np.int64), 0
        else:
            self._prompt_order, self._prompt_cursor = state["prompt_order"], state["prompt_cursor"]

    # ------------------------------------------------------------------ rollouts
    def _next_prompts(self, n_groups: int) -> np.ndarray:
        """Prompt indices for ``n_groups`` groups: successive shuffled passes over the prompts (each prompt once
        per pass, numpy's global generator that SB3 seeds)."""
        chosen: list[int] = []
        while len(chosen) < n_groups:
            if self._prompt_cursor >= len(self._prompt_order):
                self._prompt_order = np.random.permutation(self.num_prompts)
                self._prompt_cursor = 0
            take = min(n_groups - len(chosen), len(self._prompt_order) - self._prompt_cursor)
            chosen.extend(self._prompt_order[self._prompt_cursor : self._prompt_cursor + take].tolist())
            self._prompt_cursor += take
        return np.asarray(chosen, dtype=np.int64)

    def collect_rollouts(
        self,
        env: VecEnv,
        callback: BaseCallback,
        rollout_buffer: GroupRolloutBuffer,  # type: ignore[override]
        n_rollout_steps: int,
    ) -> bool:
        """Fill the buffer with ``rounds`` rounds of complete episodes, each group of envs on one prompt per round.

        Each round resets every env with its group's prompt (``VecEnv.set_options`` then ``reset``), then steps
        until every env has finished its episode. An env that finished early keeps being stepped with the others
        (a ``VecEnv`` steps all envs) into an episode that is discarded at the next reset: those steps are not
        stored, not paid into any completion and not counted in ``ep_info_buffer``.
        """
        assert self._last_obs is not None, "No previous observation was provided"
        self.policy.set_training_mode(False)
        rollout_buffer.reset()
        callback.on_rollout_start()
        for _ in range(rollout_buffer.rounds):
            if not self._collect_round(env, callback, rollout_buffer):
                return False
        if self.resample_rounds > 0:
            resampled = self._resample_all_equal_groups(env, callback, rollout_buffer)
            if resampled is None:
                return False
            self.logger.record("rollout/resampled_groups", resampled[0])
            self.logger.record("rollout/resample_rounds", resampled[1])

        stats = rollout_buffer.finish(
            self.advantage,
            ref_log_probs=self._reference_log_probs(rollout_buffer),
            kl_coef=self.kl_coef,
            kl_estimator=self.kl_estimator,
            kl_in_reward=self.kl_in == "reward",
            drop_all_equal_groups=self.drop_all_equal_groups,
        )
        for key in ("score", "group_reward_std", "all_equal_groups", "completion_length", "optimal_value"):
            if key in stats:
                self.logger.record(f"rollout/{key}", stats[key])
        for key, value in stats.items():
            if key.startswith("kl_"):
                self.logger.record(f"kl/{key.removeprefix('kl_')}", value)
        if self.reference is not None:
            self.logger.record("kl/coef", self.kl_coef)
        callback.update_locals(locals())
        callback.on_rollout_end()
        return True

    def _collect_round(self, env: VecEnv, callback: BaseCallback, buffer: GroupRolloutBuffer) -> bool:
        """One round into ``buffer``: every env completes one episode, each group of envs on one prompt. Returns
        False when a callback stopped training."""
        n_groups = env.num_envs // self.group_size
        prompts = np.repeat(self._next_prompts(n_groups), self.group_size)  # (E,) group-major
        env.set_options([{"prompt_index": int(index)} for index in prompts])
        obs = env.reset()
        writing = np.ones(env.num_envs, dtype=bool)  # (E,) the env's completion of this round is unfinished
        for _step in range(buffer.completion_length):
            with torch.no_grad():
                actions, _, log_probs = self.policy(obs_as_tensor(obs, self.device))  # type: ignore[arg-type]
            actions_np = actions.cpu().numpy()
            new_obs, rewards, dones, infos = env.step(actions_np)
            self.num_timesteps += env.num_envs
            callback.update_locals(locals())
            if not callback.on_step():
                return False
            finished = writing & dones
            self._update_info_buffer([infos[i] for i in np.flatnonzero(writing)], dones[writing])
            buffer.add(obs, actions_np, rewards * writing, log_probs, writing.copy())  # type: ignore[arg-type]
            writing &= ~finished
            obs = new_obs
            if not writing.any():
                break
        if writing.any():
            raise RuntimeError(
                f"Envs {np.flatnonzero(writing).tolist()} did not finish their episode within max_new_tokens="
                f"{buffer.completion_length} steps: GRPO needs every episode to end by then."
            )
        buffer.end_round()
        self._last_obs = obs  # type: ignore[assignment]
        return True

    def _resample_all_equal_groups(
        self, env: VecEnv, callback: BaseCallback, buffer: GroupRolloutBuffer
    ) -> tuple[int, int] | None:
        """DAPO's dynamic sampling: sample up to ``resample_rounds`` extra rounds and move their groups with a
        learning signal into the slots of the rollout's all-equal groups, until none is left. Returns (groups
        replaced, extra rounds sampled), or None when a callback stopped training. The extra rounds' tokens count
        as environment steps, and their all-equal groups are discarded."""
        empty = list(zip(*np.nonzero(buffer.all_equal_groups()), strict=True))  # [(round, group)] to replace
        if not empty:
            return 0, 0
        obs_space, action_space = buffer.observation_space, buffer.action_space
        assert isinstance(obs_space, spaces.Dict) and isinstance(action_space, spaces.Discrete)
        spare = GroupRolloutBuffer(
            buffer.completion_length, obs_space, action_space, buffer.device,
            n_envs=buffer.n_envs, group_size=self.group_size, completion_length=self.completion_length,
        )  # fmt: skip  # one round
        replaced, rounds = 0, 0
        while empty and rounds < self.resample_rounds:
            spare.reset()
            if not self._collect_round(env, callback, spare):
                return None
            rounds += 1
            for source_group in np.flatnonzero(~spare.all_equal_groups()[0]):
                if not empty:
                    break
                round_, group = empty.pop(0)
                buffer.copy_group(int(round_), int(group), spare, 0, int(source_group))
                replaced += 1
        return replaced, rounds

    def _reference_log_probs(self, buffer: GroupRolloutBuffer) -> np.ndarray | None:
        """``log pi_ref`` of every stored action, ``(S, E)`` (inactive rows 0): one reference pass per completion."""
        if self.reference is None:
            return None
        rows, cols, _ = buffer.transition_order()  # completion-major: each completion's tokens share one pass
        obs = {
            key: torch.as_tensor(value[rows, cols], device=self.device) for key, value in buffer.observations.items()
        }
        actions = torch.as_tensor(buffer.actions[rows, cols], device=self.device)  # (M,)
        reference = np.zeros(buffer.actions.shape, dtype=np.float64)  # (S, E)
        reference[rows, cols] = self.reference.log_probs(obs, actions).double().cpu().numpy()
        return reference

    # ------------------------------------------------------------------ update
    def train(self) -> None:
        """``n_epochs`` passes of clipped policy-gradient steps over minibatches of whole completions."""
        self.policy.set_training_mode(True)
        self._update_learning_rate(self.policy.optimizer)
        clip_low = float(self.clip_range(self._current_progress_remaining))  # type: ignore[operator]
        clip_high = clip_low if self.clip_range_high is None else float(self.clip_range_high)
        per_batch = None if self.batch_size is None else self.batch_size // self.completion_length
        per_micro_batch = None if self.micro_batch_size is None else self.micro_batch_size // self.completion_length
        # A*-PO's regression holds its KL term (beta log pi/pi_ref): no estimator is added to it.
        use_kl_loss = self.kl_in == "loss" and self.kl_coef > 0 and self.policy_loss != "apo"
        logs: dict[str, list[float]] = {  # logged as train/<key>
            k: [] for k in ("loss", "policy_gradient_loss", "kl_loss", "entropy", "clip_fraction", "approx_kl")
        }
        first_ratio_deviation = None
        continue_training = True
        for epoch in range(self.n_epochs):
            for batch in self.rollout_buffer.get(per_batch):
                self.policy.optimizer.zero_grad()
                # Gradient accumulation over micro-batches of whole completions: one part without micro_batch_size.
                sums: dict[str, float] = {}  # the minibatch's logged means, summed over its parts
                n_tokens = len(batch.actions)
                for part in batch.parts(per_micro_batch):
                    stats = self._backward_part(part, n_tokens, batch.n_completions, clip_low, clip_high, use_kl_loss)
                    for key, value in stats.items():
                        combine = max if key == "ratio_deviation" else sum
                        sums[key] = combine((sums.get(key, 0.0), value))
                if first_ratio_deviation is None:
                    first_ratio_deviation = sums["ratio_deviation"]
                for key, values in logs.items():
                    if key in sums:
                        values.append(sums[key])
                # Checked once the minibatch's parts are through (each part's backward frees its activations), so a
                # stopped minibatch has paid its backward passes; its gradients are dropped, with no step.
                if self.target_kl is not None and sums["approx_kl"] > 1.5 * self.target_kl:
                    self.policy.optimizer.zero_grad()
                    continue_training = False
                    if self.verbose >= 1:
                        print(f"Early stopping at epoch {epoch} due to reaching max kl: {sums['approx_kl']:.3f}")
                    break
                torch.nn.utils.clip_grad_norm_(self.policy.parameters(), self.max_grad_norm)
                self.policy.optimizer.step()
                self._n_updates += 1
            if not continue_training:
                break

        for key, values in logs.items():
            if values:
                self.logger.record(f"train/{key}", float(np.mean(values)))
        if first_ratio_deviation is not None:
            self.logger.record("train/first_ratio_deviation", first_ratio_deviation)
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        self.logger.record("train/clip_range", clip_low)

    def _backward_part(
        self,
        part: GroupSamples,
        batch_tokens: int,
        batch_completions: int,
        clip_low: float,
        clip_high: float,
        use_kl_loss: bool,
    ) -> dict[str, float]:
        """Forward and backward pass of one micro-batch, its loss weighted by its share of the minibatch's
        (:func:`~agents.grpo.objective.part_weight`); returns its weighted contributions to the minibatch's logged
        means (``ratio_deviation``: its max ``|ratio - 1|``)."""
        _, log_prob, entropy = self.policy.evaluate_actions(part.observations, part.actions)  # (N,) each
        log_ratio = log_prob - part.old_log_prob  # (N,)
        pg_per_token, clipped = policy_loss(
            self.policy_loss, log_prob, part.old_log_prob, part.advantages, part.completion,
            part.n_completions, clip_low, clip_high, ref_log_prob=part.ref_log_prob, beta=self.kl_coef,
        )  # fmt: skip  # (N,) each
        per_token = pg_per_token
        token_share = len(part.actions) / batch_tokens  # the weight of a token mean
        stats = {}
        if use_kl_loss:
            assert part.ref_log_prob is not None
            kl_per_token = kl_estimate(log_prob - part.ref_log_prob, self.kl_estimator)  # (N,)
            per_token = per_token + self.kl_coef * kl_per_token
            stats["kl_loss"] = float(kl_per_token.detach().mean()) * token_share
        if self.ent_coef and entropy is not None:
            per_token = per_token - self.ent_coef * entropy
        reduce = functools.partial(
            aggregate_loss,
            completion=part.completion,
            n_completions=part.n_completions,
            how=self.loss_aggregation,
            max_completion_length=self.completion_length,
        )
        weight = part_weight(
            self.loss_aggregation, len(part.actions), part.n_completions, batch_tokens, batch_completions
        )
        loss = weight * reduce(per_token)
        loss.backward()
        with torch.no_grad():
            stats["ratio_deviation"] = float((log_ratio.exp() - 1).abs().max())
            stats["approx_kl"] = float(kl_estimate(-log_ratio, "k3").mean()) * token_share  # KL(pi_old || pi)
            stats["policy_gradient_loss"] = float(reduce(pg_per_token)) * weight
            stats["clip_fraction"] = float(clipped.float().mean()) * token_share
            stats["loss"] = float(loss)
            if entropy is not None:
                stats["entropy"] = float(entropy.mean()) * token_share
        return stats

    def learn(
        self: SelfGRPO,
        total_timesteps: int,
        callback: Any = None,
        log_interval: int = 1,
        tb_log_name: str = "GRPO",
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> SelfGRPO:
        return super().learn(
            total_timesteps=total_timesteps,
            callback=callback,
            log_interval=log_interval,
            tb_log_name=tb_log_name,
            reset_num_timesteps=reset_num_timesteps,
            progress_bar=progress_bar,
        )
