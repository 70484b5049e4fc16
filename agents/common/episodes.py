"""Episode-major row layouts: the one place that knows how a rollout's transitions are ordered so that each
episode's transitions are contiguous.

The policy scores a batch of transitions with one forward pass per episode when an episode's transitions are
prefixes of one another (:func:`agents.common.sequences.group_by_prefix`). SB3 stores rollouts step-major, ``(n_steps,
n_envs, ...)``; each consumer that hands transitions to the policy or the reference reorders them here first:

- :func:`env_major` / :func:`from_env_major`: ``(S, E, ...)`` <-> ``(E * S, ...)``, SB3's own flattening order
  (``RolloutBuffer.swap_and_flatten``): env ``e``'s steps are rows ``e * S .. e * S + S - 1`` (the KL callback);
- :func:`stack_steps`: a list of ``T`` per-step batches ``(B, ...)`` -> ``(B * T, ...)``, episode after episode
  (generation);
- :func:`episode_order`: a random order of whole episodes over the env-major rows (the episode buffers);
- the group algorithms' completion-major order is :meth:`agents.grpo.GroupRolloutBuffer.transition_order`.

The policy still finds the episodes again by hashing the tokens (``group_by_prefix``): SB3's
``evaluate_actions(obs, actions)`` carries no episode ids, so the grouping cannot be passed along.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


def env_major(array: np.ndarray) -> np.ndarray:
    """``(S, E, ...)`` step-major buffer array -> ``(E * S, ...)`` rows, each env's steps contiguous."""
    n_steps, n_envs = array.shape[:2]
    return array.swapaxes(0, 1).reshape(n_envs * n_steps, *array.shape[2:])


def from_env_major(rows: np.ndarray, n_steps: int, n_envs: int) -> np.ndarray:
    """Inverse of :func:`env_major`: ``(E * S, ...)`` -> ``(S, E, ...)``."""
    return rows.reshape(n_envs, n_steps, *rows.shape[1:]).swapaxes(0, 1)


def stack_steps(steps: Sequence[torch.Tensor]) -> torch.Tensor:
    """``T`` per-step batches ``(B, ...)`` -> ``(B * T, ...)``: row ``b * T + t`` is episode ``b``'s step ``t``."""
    return torch.stack(list(steps), 1).flatten(0, 1)


def episode_order(episode_starts: np.ndarray) -> np.ndarray:
    """A random order of the env-major row indices in which each episode's transitions stay together.

    :param episode_starts: ``(n_steps, n_envs)`` 1.0 where an episode begins (SB3's buffer field).
    :return: ``(n_steps * n_envs,)`` indices into the env-major rows (index = env * n_steps + step).
    """
    n_steps, _ = episode_starts.shape
    starts = env_major(episode_starts).astype(bool)  # (E * S,)
    starts[::n_steps] = True  # each env's first stored step begins a (possibly partial) episode
    episode_id = np.cumsum(starts) - 1  # (N,)
    shuffled = np.random.permutation(episode_id[-1] + 1)  # global numpy RNG, seeded by SB3 like the stock buffers
    rank = np.empty_like(shuffled)
    rank[shuffled] = np.arange(shuffled.size)
    return np.argsort(rank[episode_id], kind="stable")
