"""Rollout buffers that hand PPO minibatches made of whole episodes, and store action masks compactly.

SB3's stock buffers shuffle single transitions, so a minibatch of 64 tokens touches ~64 different episodes and the
policy needs ~64 forward passes. These buffers shuffle *episodes* instead and cut the concatenated transitions into
minibatches of exactly ``batch_size``: each minibatch covers a handful of episodes, and the policy scores each with
one forward pass (see :func:`agents.common.sequences.group_by_prefix`). Everything else (GAE, returns, sample types) is
the stock buffer's.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import numpy as np
from sb3_contrib.common.maskable.buffers import MaskableDictRolloutBuffer
from stable_baselines3.common.buffers import DictRolloutBuffer

from agents.common.episodes import episode_order
from agents.common.sb3_contract import FLATTENED, FLATTENED_MASKABLE


class _EpisodeMinibatches:
    """``get`` for rollout buffers: minibatches of exactly ``batch_size`` transitions, cut from a random order of
    whole episodes (at most two episodes per minibatch are split across a cut)."""

    buffer_size: int
    n_envs: int
    full: bool
    generator_ready: bool
    episode_starts: np.ndarray
    #: The arrays the stock ``get()`` flattens (agents.common.sb3_contract, item 3).
    flattened: tuple[str, ...] = FLATTENED

    def flatten(self) -> None:
        """Flatten the arrays env-major once, as the stock ``get()`` does on its first call, so that
        ``_get_samples`` indexes them; ``episode_starts`` and ``rewards`` keep their ``(n_steps, n_envs)`` shape."""
        if self.generator_ready:
            return
        observations: dict[str, np.ndarray] = getattr(self, "observations")  # noqa: B009  (Dict buffers' attribute)
        for key, obs in observations.items():
            observations[key] = self.swap_and_flatten(obs)  # type: ignore[attr-defined]
        for name in self.flattened:
            setattr(self, name, self.swap_and_flatten(getattr(self, name)))  # type: ignore[attr-defined]
        self.generator_ready = True

    def get(self, batch_size: int | None = None) -> Generator[Any, None, None]:
        assert self.full, "the rollout buffer must be full before sampling"
        order = episode_order(self.episode_starts)  # episode_starts is never flattened by SB3
        self.flatten()
        total = self.buffer_size * self.n_envs
        batch_size = total if batch_size is None else batch_size
        for start in range(0, total, batch_size):
            yield self._get_samples(order[start : start + batch_size])  # type: ignore[attr-defined]


class EpisodeRolloutBuffer(_EpisodeMinibatches, DictRolloutBuffer):
    """``DictRolloutBuffer`` with whole-episode minibatches: ``PPO(..., rollout_buffer_class=EpisodeRolloutBuffer)``."""


class MaskableEpisodeRolloutBuffer(_EpisodeMinibatches, MaskableDictRolloutBuffer):
    """``MaskableDictRolloutBuffer`` with whole-episode minibatches and action masks stored as ``bool``.

    The stock buffer keeps masks as float32: 4096 transitions x 49,152 tokens = 805 MB. One byte per entry is 4x
    smaller; masks go to the policy as bool tensors, which sb3-contrib's masking takes as they are.
    """

    flattened = FLATTENED_MASKABLE

    def reset(self) -> None:
        # The parent allocates float32 masks, then resets the rest: allocate bool masks without its float32 copy.
        if not hasattr(self.action_space, "n"):
            raise TypeError(f"MaskableEpisodeRolloutBuffer supports Discrete action spaces, got {self.action_space}.")
        self.mask_dims = int(self.action_space.n)
        self.action_masks = np.ones((self.buffer_size, self.n_envs, self.mask_dims), dtype=bool)
        DictRolloutBuffer.reset(self)
