"""The episode-major layouts (agents/common/episodes.py): each against an explicit loop."""

from __future__ import annotations

import numpy as np
import torch

from agents.common.episodes import env_major, episode_order, from_env_major, stack_steps


def test_env_major_puts_each_envs_steps_together_and_inverts():
    steps, envs = 3, 2
    array = np.arange(steps * envs * 4).reshape(steps, envs, 4)  # (S, E, L)
    rows = env_major(array)
    expected = np.stack([array[s, e] for e in range(envs) for s in range(steps)])
    np.testing.assert_array_equal(rows, expected)
    np.testing.assert_array_equal(from_env_major(rows, steps, envs), array)


def test_stack_steps_is_episode_after_episode():
    steps = [torch.tensor([[10 * t + b] for b in range(3)]) for t in range(4)]  # T=4 steps of (B=3, 1)
    stacked = stack_steps(steps)
    assert stacked.flatten().tolist() == [10 * t + b for b in range(3) for t in range(4)]


def test_episode_order_keeps_episodes_whole():
    starts = np.zeros((6, 2))
    starts[[0, 3], 0] = 1  # env 0: episodes of steps 0-2 and 3-5
    starts[[0, 2], 1] = 1  # env 1: steps 0-1 and 2-5
    np.random.seed(0)
    order = episode_order(starts)
    assert sorted(order.tolist()) == list(range(12))
    episode_of = np.repeat([0, 1, 2, 3], [3, 3, 2, 4])  # env-major rows -> episode id
    seen = episode_of[order]
    assert all(seen[i] == seen[i + 1] or seen[i + 1] not in seen[: i + 1] for i in range(11))  # contiguous
