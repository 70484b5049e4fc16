"""The rollout buffer of the group algorithms: rounds of complete episodes, one per env, grouped by prompt.

Layout: ``n_steps = rounds * completion_length`` rows by ``n_envs`` columns. Round ``r`` occupies rows
``[r * T, (r + 1) * T)`` with ``T = completion_length`` (the env's ``max_new_tokens``); env ``e``'s completion of
that round is the rows where ``active[:, e]`` is True, from the round's first row on. Rows after a completion ended
(EOS) are *inactive*: the vector env kept stepping that env (an SB3 ``VecEnv`` steps all envs together) into an
episode that is never paid, stored or trained on. Consecutive envs ``[g * G, (g + 1) * G)`` form group ``g`` and
completed the same prompt in each round.

Completions are the unit of everything downstream: advantages are per completion (shared by its tokens), and
minibatches hold whole completions, so the policy scores each with one forward pass.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import NamedTuple

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.buffers import BaseBuffer

from agents.common.kl import kl_estimate
from agents.grpo.objective import (
    OPTIMAL_ADVANTAGES,
    TOKEN_ADVANTAGES,
    group_advantages,
    group_size_problems,
    optimal_advantages,
    reinforce_pp_advantages,
)


class GroupSamples(NamedTuple):
    """A minibatch of whole completions: their tokens as transitions, completion after completion.

    ``N`` transitions of ``n_completions`` completions; each transition's observation is its context.
    """

    observations: dict[str, torch.Tensor]  # (N, L) each
    actions: torch.Tensor  # (N,) token ids
    old_log_prob: torch.Tensor  # (N,) log pi_old(a_t | s_t) at sampling time
    ref_log_prob: torch.Tensor | None  # (N,) log pi_ref(a_t | s_t), None without a reference
    advantages: torch.Tensor  # (N,) the advantage of the transition's completion
    completion: torch.Tensor  # (N,) index in [0, n_completions) of the transition's completion
    n_completions: int

    def parts(self, completions_per_part: int | None) -> list[GroupSamples]:
        """This minibatch cut into micro-batches of ``completions_per_part`` whole completions, in order (the last
        may hold fewer; ``None`` or at least ``n_completions``: ``[self]``). Each part's ``completion`` counts from 0
        again; gradient accumulation weighs each part's loss by its share (:func:`agents.grpo.objective.part_weight`).
        """
        if completions_per_part is None or completions_per_part >= self.n_completions:
            return [self]
        if completions_per_part < 1:
            raise ValueError(f"completions_per_part must be >= 1 or None, got {completions_per_part}.")
        firsts = torch.arange(0, self.n_completions, completions_per_part, device=self.completion.device)  # (P,)
        cuts = torch.searchsorted(self.completion, firsts).tolist() + [len(self.completion)]  # (P + 1,) into (N,)
        parts = []
        for first, start, end in zip(firsts.tolist(), cuts[:-1], cuts[1:], strict=True):
            part = slice(start, end)
            parts.append(
                GroupSamples(
                    observations={key: value[part] for key, value in self.observations.items()},
                    actions=self.actions[part],
                    old_log_prob=self.old_log_prob[part],
                    ref_log_prob=None if self.ref_log_prob is None else self.ref_log_prob[part],
                    advantages=self.advantages[part],
                    completion=self.completion[part] - first,
                    n_completions=min(completions_per_part, self.n_completions - first),
                )
            )
        return parts


class GroupRolloutBuffer(BaseBuffer):
    """Complete episodes of prompt groups, with per-completion advantages from the group baseline.

    Filled by :class:`~agents.grpo.GRPO`'s rollout: :meth:`add` once per vector step, :meth:`end_round` after the
    round's last step; then :meth:`finish` computes the advantages and :meth:`get` yields minibatches of whole
    completions.

    :param buffer_size: ``n_steps``, a multiple of ``completion_length``.
    :param group_size: ``G``, consecutive envs that complete the same prompt; divides ``n_envs``.
    :param completion_length: ``T``, the most tokens a completion can have (the env's ``max_new_tokens``).
    """

    observations: dict[str, np.ndarray]

    def __init__(
        self,
        buffer_size: int,
        observation_space: spaces.Dict,
        action_space: spaces.Discrete,
        device: torch.device | str = "auto",
        gamma: float = 1.0,
        gae_lambda: float = 1.0,
        n_envs: int = 1,
        *,
        group_size: int,
        completion_length: int,
    ) -> None:
        super().__init__(buffer_size, observation_space, action_space, device, n_envs=n_envs)
        if completion_length < 1 or buffer_size % completion_length:
            raise ValueError(
                f"The buffer holds rounds of {completion_length}-token completions: buffer_size={buffer_size} must be "
                "a positive multiple of it."
            )
        problems = group_size_problems(group_size, n_envs)
        if problems:
            raise ValueError(problems[0] + ".")
        self.group_size = group_size
        self.completion_length = completion_length
        self.rounds = buffer_size // completion_length
        self.reset()

    def reset(self) -> None:
        shape = (self.buffer_size, self.n_envs)
        self.observations = {
            key: np.zeros((*shape, *space.shape), dtype=space.dtype)  # type: ignore[misc]
            for key, space in self.observation_space.spaces.items()  # type: ignore[attr-defined]
        }
        self.actions = np.zeros(shape, dtype=np.int64)
        self.log_probs = np.zeros(shape, dtype=np.float32)
        self.rewards = np.zeros(shape, dtype=np.float32)
        self.active = np.zeros(shape, dtype=bool)
        self.ref_log_probs: np.ndarray | None = None  # (S, E) set by finish()
        self.completion_rewards = np.zeros((self.rounds, self.n_envs))  # (R, E) set by finish()
        self.completion_advantages = np.zeros((self.rounds, self.n_envs))  # (R, E)
        self.token_advantages: np.ndarray | None = None  # (S, E) per-token advantages (REINFORCE++), else None
        self.keep_completion = np.ones((self.rounds, self.n_envs), dtype=bool)  # (R, E)
        self.round = 0
        super().reset()

    # ------------------------------------------------------------------ filling
    def add(  # type: ignore[override]
        self,
        obs: dict[str, np.ndarray],
        action: np.ndarray,
        reward: np.ndarray,
        log_prob: torch.Tensor,
        active: np.ndarray,
    ) -> None:
        """Store one vector step: ``obs`` the envs' observations before it, ``active`` ``(E,)`` True for envs whose
        completion of this round was still being written (their step belongs to it)."""
        if self.round >= self.rounds or self.pos >= (self.round + 1) * self.completion_length:
            raise RuntimeError(
                f"A round holds at most {self.completion_length} steps per env: an episode ran longer than the "
                "env's max_new_tokens."
            )
        for key in self.observations:
            self.observations[key][self.pos] = np.asarray(obs[key])
        self.actions[self.pos] = np.asarray(action).reshape(self.n_envs)
        self.rewards[self.pos] = np.asarray(reward).reshape(self.n_envs)
        self.log_probs[self.pos] = log_prob.detach().cpu().numpy().reshape(self.n_envs)
        self.active[self.pos] = active
        self.pos += 1

    def end_round(self) -> None:
        """Close the current round (its envs all finished); the next :meth:`add` starts the next round."""
        self.round += 1
        self.pos = self.round * self.completion_length
        self.full = self.round == self.rounds

    # ------------------------------------------------------------------ views
    def transition_order(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every stored transition, completion after completion, each completion's tokens in order.

        :return: ``rows`` ``(M,)`` and ``cols`` ``(M,)`` indices into the ``(S, E)`` arrays, and ``completion``
            ``(M,)`` the completion's flat index ``round * n_envs + env``.
        """
        active = self.active.reshape(self.rounds, self.completion_length, self.n_envs)  # (R, T, E)
        rounds, envs, times = np.nonzero(active.transpose(0, 2, 1))  # row-major over (R, E, T): completion-major
        rows = rounds * self.completion_length + times
        return rows, envs, rounds * self.n_envs + envs

    def completion_lengths(self) -> np.ndarray:
        """``(R, E)`` tokens in each completion."""
        return self.active.reshape(self.rounds, self.completion_length, self.n_envs).sum(1)

    def group_view(self, values: np.ndarray) -> np.ndarray:
        """``(R, E)`` per-completion values as ``(R, n_groups, G)``."""
        return values.reshape(self.rounds, self.n_envs // self.group_size, self.group_size)

    def all_equal_groups(self) -> np.ndarray:
        """``(R, n_groups)`` True for the groups of the rounds stored so far whose rewards are all equal (no
        learning signal), from the stored per-token rewards."""
        active = self.active.reshape(self.rounds, self.completion_length, self.n_envs)  # (R, T, E)
        rewards = self.group_view((self.rewards.reshape(active.shape) * active).sum(1, dtype=np.float64))
        return (rewards == rewards[..., :1]).all(-1)  # (R, g)

    def copy_group(
        self, round_: int, group: int, source: GroupRolloutBuffer, source_round: int, source_group: int
    ) -> None:
        """Replace group ``group`` of round ``round_`` by ``source``'s group ``source_group`` of ``source_round``
        (every stored array: the transitions, log-probabilities, rewards and active slots)."""
        T, G = self.completion_length, self.group_size
        rows, cols = slice(round_ * T, (round_ + 1) * T), slice(group * G, (group + 1) * G)
        source_rows, source_cols = (
            slice(source_round * T, (source_round + 1) * T),
            slice(source_group * G, (source_group + 1) * G),
        )
        for key, value in self.observations.items():
            value[rows, cols] = source.observations[key][source_rows, source_cols]
        for name in ("actions", "log_probs", "rewards", "active"):
            getattr(self, name)[rows, cols] = getattr(source, name)[source_rows, source_cols]

    # ------------------------------------------------------------------ advantages
    def finish(
        self,
        advantage: str,
        ref_log_probs: np.ndarray | None = None,
        kl_coef: float = 0.0,
        kl_estimator: str = "k1",
        kl_in_reward: bool = False,
        drop_all_equal_groups: bool = False,
    ) -> dict[str, float]:
        """Compute each completion's reward and group-relative advantage; return rollout statistics.

        :param ref_log_probs: ``(S, E)`` reference log-probabilities of the stored actions (inactive rows ignored).
        :param advantage: a group advantage (:data:`~agents.grpo.objective.GROUP_ADVANTAGES`: one per completion),
            a per-token one (:data:`~agents.grpo.objective.TOKEN_ADVANTAGES`: REINFORCE++, whose KL term is
            ``-kl_coef * k1`` in each token's reward when ``kl_in_reward``) or ``"apo"`` (A*-PO's ``r - V*(x)``
            with ``beta = kl_coef``, from the group and ``ref_log_probs``).
        :param kl_in_reward: subtract ``kl_coef * sum_t k(t)`` from each completion's reward before the baseline.
        :param drop_all_equal_groups: leave groups whose rewards are all equal (advantage 0 for every member, no
            learning signal) out of the minibatches (DAPO's dynamic-sampling filter, without re-sampling).
        """
        if not self.full:
            raise RuntimeError(f"finish() needs {self.rounds} complete rounds, got {self.round}.")
        active = self.active.reshape(self.rounds, self.completion_length, self.n_envs)  # (R, T, E)
        rewards = (self.rewards.reshape(active.shape) * active).sum(1, dtype=np.float64)  # (R, E)
        stats: dict[str, float] = {"score": float(rewards.mean())}
        self.ref_log_probs = ref_log_probs
        self.token_advantages = None
        log_ratio = None  # (R, T, E) log pi_old - log pi_ref of every slot, with a reference
        if ref_log_probs is not None:
            log_ratio = (self.log_probs.astype(np.float64) - ref_log_probs).reshape(active.shape)
        elif advantage in OPTIMAL_ADVANTAGES:
            raise ValueError(f"advantage={advantage!r} needs the reference's log-probabilities (ref_log_probs).")
        if advantage in TOKEN_ADVANTAGES:
            token_kl = log_ratio if kl_in_reward else None  # k1 per token
            group = self.group_size if advantage == "reinforce_pp_baseline" else None
            per_token = reinforce_pp_advantages(rewards, active, token_kl, kl_coef, group)  # (R, T, E)
            self.token_advantages = per_token.reshape(self.rewards.shape)  # (S, E)
            kl_in_reward = False  # paid per token above, not from the completion's reward
        if log_ratio is not None:
            for name in ("k1", "k2", "k3"):
                per_token = kl_estimate(torch.as_tensor(log_ratio), name).numpy()  # (R, T, E)
                per_completion = (per_token * active).sum(1)  # (R, E)
                stats[f"kl_{name}"] = float(per_token[active].mean())
                stats[f"kl_{name}_per_episode"] = float(per_completion.mean())  # a completion is an episode
                if kl_in_reward and name == kl_estimator:
                    rewards = rewards - kl_coef * per_completion
        groups = self.group_view(rewards)  # (R, g, G)
        all_equal = (groups == groups[..., :1]).all(-1)  # (R, g)
        self.completion_rewards = rewards
        if advantage in OPTIMAL_ADVANTAGES:
            assert log_ratio is not None
            sequence_log_ratio = self.group_view((log_ratio * active).sum(1))  # (R, g, G) log pi_old/pi_ref
            targets = optimal_advantages(groups, sequence_log_ratio, kl_coef)  # (R, g, G) r - V*
            stats["optimal_value"] = float((groups - targets).mean())  # V*(x), averaged over the groups
            self.completion_advantages = targets.reshape(rewards.shape)
        else:
            group_kind = "grpo" if advantage in TOKEN_ADVANTAGES else advantage  # (unused then: per-token ones)
            self.completion_advantages = group_advantages(groups, group_kind).reshape(rewards.shape)
        keep = ~all_equal if drop_all_equal_groups else np.ones_like(all_equal)
        self.keep_completion = np.repeat(keep, self.group_size, axis=-1).reshape(rewards.shape)
        if advantage == "raft":  # rejection sampling: only the chosen completions are trained on
            self.keep_completion &= self.completion_advantages > 0
        stats.update(
            group_reward_std=float(groups.std(-1, ddof=1).mean()),
            all_equal_groups=float(all_equal.mean()),
            completion_length=float(self.completion_lengths().mean()),
        )
        return stats

    # ------------------------------------------------------------------ sampling
    def get(self, completions_per_batch: int | None = None) -> Generator[GroupSamples, None, None]:  # type: ignore[override]
        """Minibatches of ``completions_per_batch`` whole completions (all of them if None): the groups in a random
        order (numpy's global generator, seeded by SB3 as for the stock buffers), each group's completions together,
        so that a minibatch of a multiple of ``group_size`` completions holds whole groups and encodes each prompt
        once (the policy's ``share_prompts``)."""
        if not self.full:
            raise RuntimeError("The rollout buffer must be full before sampling.")
        rows, cols, completion = self.transition_order()  # (M,) each
        kept = np.flatnonzero(self.keep_completion.reshape(-1))  # flat completion ids with a learning signal
        groups, group_of = np.unique(kept // self.group_size, return_inverse=True)  # a group: G consecutive envs
        place = np.argsort(np.random.permutation(len(groups)))  # (n_groups,) each group's place in the new order
        order = kept[np.argsort(place[group_of], kind="stable")]  # (K,) completion ids, group after group
        size = max(1, len(order) if completions_per_batch is None else completions_per_batch)  # no groups kept: none
        starts = np.searchsorted(completion, np.arange(self.rounds * self.n_envs))  # first transition of each
        ends = np.searchsorted(completion, np.arange(self.rounds * self.n_envs), side="right")
        flat_advantages = self.completion_advantages.reshape(-1)
        tokens = self.token_advantages  # (S, E) or None
        for start in range(0, len(order), size):
            chosen = order[start : start + size]  # (C,) flat completion ids
            picks = np.concatenate([np.arange(starts[c], ends[c]) for c in chosen])  # (N,) into rows/cols
            local = np.repeat(np.arange(len(chosen)), ends[chosen] - starts[chosen])  # (N,)
            r, c = rows[picks], cols[picks]
            yield GroupSamples(
                observations={key: self.to_torch(value[r, c]) for key, value in self.observations.items()},
                actions=self.to_torch(self.actions[r, c]),
                old_log_prob=self.to_torch(self.log_probs[r, c]),
                ref_log_prob=None if self.ref_log_probs is None else self.to_torch(self.ref_log_probs[r, c]).float(),
                advantages=self.to_torch(flat_advantages[chosen][local] if tokens is None else tokens[r, c]).float(),
                completion=self.to_torch(local),
                n_completions=len(chosen),
            )

    def _get_samples(self, batch_inds: np.ndarray, env=None):  # type: ignore[no-untyped-def, override]
        raise NotImplementedError("GroupRolloutBuffer yields whole completions through get().")
