"""What the package relies on in SB3's call order and internals (agents/common/sb3_contract.py): each check fails loudly
when a release of stable-baselines3 or sb3-contrib changes it."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import tiny_gpt2_config
from sb3_contrib.common.maskable.buffers import MaskableDictRolloutBuffer
from stable_baselines3 import PPO
from stable_baselines3.common.buffers import DictRolloutBuffer
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env

from agents import CausalLMPolicy, EpisodeRolloutBuffer, MaskableEpisodeRolloutBuffer
from agents.common.sb3_contract import FLATTENED, FLATTENED_MASKABLE

N_STEPS, N_ENVS = 8, 2


class CallOrder(EpisodeRolloutBuffer):
    """Records when SB3 computes the advantages and samples minibatches."""

    events: list[str] = []

    def compute_returns_and_advantage(self, last_values, dones):
        CallOrder.events.append("advantages")
        super().compute_returns_and_advantage(last_values, dones)

    def get(self, batch_size=None):
        CallOrder.events.append("get")
        yield from super().get(batch_size)


class RolloutEnd(BaseCallback):
    def __init__(self):
        super().__init__()
        self.shapes, self.local_keys = None, None

    def _on_rollout_end(self):
        CallOrder.events.append("on_rollout_end")
        buffer = self.model.rollout_buffer
        self.shapes = {name: getattr(buffer, name).shape[:2] for name in ("rewards", "log_probs", "actions")}
        self.shapes["input_ids"] = buffer.observations["input_ids"].shape[:2]
        self.local_keys = set(self.locals)

    def _on_step(self):
        return True


def test_advantages_come_before_on_rollout_end_with_the_buffer_unflattened_and_the_locals_there():
    CallOrder.events = []
    env = make_vec_env("text_env/Vowels-v0", n_envs=N_ENVS, seed=0)
    model = PPO(
        CausalLMPolicy, env, policy_kwargs=dict(model=tiny_gpt2_config()),
        n_steps=N_STEPS, batch_size=N_STEPS, n_epochs=1, rollout_buffer_class=CallOrder, seed=0,
    )  # fmt: skip
    callback = RolloutEnd()
    model.learn(N_STEPS * N_ENVS, callback=callback)
    assert CallOrder.events[:3] == ["advantages", "on_rollout_end", "get"]  # contract items 1 and 2
    assert set(callback.shapes.values()) == {(N_STEPS, N_ENVS)}  # item 2
    assert {"dones", "infos", "new_obs"} <= callback.local_keys  # item 5


@pytest.mark.parametrize(
    ("stock", "flattened"), [(DictRolloutBuffer, FLATTENED), (MaskableDictRolloutBuffer, FLATTENED_MASKABLE)]
)
def test_the_stock_get_flattens_exactly_the_listed_arrays(stock, flattened):
    env = make_vec_env("text_env/Vowels-v0", n_envs=N_ENVS, seed=0)
    buffer = stock(N_STEPS, env.observation_space, env.action_space, n_envs=N_ENVS)
    buffer.full = True
    before = {name: value.shape for name, value in vars(buffer).items() if isinstance(value, np.ndarray)}
    next(buffer.get(batch_size=1))
    changed = {name for name, shape in before.items() if getattr(buffer, name).shape != shape}
    assert changed == set(flattened)  # item 3: episode_starts and rewards keep (n_steps, n_envs)
    assert all(value.shape[0] == N_STEPS * N_ENVS for value in buffer.observations.values())


def test_the_episode_buffers_flatten_like_the_stock_ones_and_the_maskable_one_keeps_bool_masks():
    env = make_vec_env("text_env/Vowels-v0", n_envs=N_ENVS, seed=0)
    for ours, stock in (
        (EpisodeRolloutBuffer, DictRolloutBuffer),
        (MaskableEpisodeRolloutBuffer, MaskableDictRolloutBuffer),
    ):
        a = ours(N_STEPS, env.observation_space, env.action_space, n_envs=N_ENVS)
        b = stock(N_STEPS, env.observation_space, env.action_space, n_envs=N_ENVS)
        a.full = b.full = True
        a.flatten()
        next(b.get(batch_size=1))
        for name, value in vars(b).items():
            if isinstance(value, np.ndarray):
                assert getattr(a, name).shape == value.shape, (ours.__name__, name)
    assert a.action_masks.dtype == bool  # item 4
