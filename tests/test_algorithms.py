"""The LM policy under each stock algorithm: learn() runs on a registered env, parameters change, KL shaping works."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import tiny_gpt2_config
from sb3_contrib import TRPO, MaskablePPO
from stable_baselines3 import A2C, PPO
from stable_baselines3.common.callbacks import BaseCallback, CallbackList
from stable_baselines3.common.env_util import make_vec_env

from agents import (
    CausalLMPolicy,
    EpisodeRolloutBuffer,
    KLPenaltyCallback,
    MaskableCausalLMPolicy,
    MaskableEpisodeRolloutBuffer,
)

ALGORITHMS = {
    "ppo": (
        PPO,
        CausalLMPolicy,
        dict(n_steps=16, batch_size=16, n_epochs=2, rollout_buffer_class=EpisodeRolloutBuffer),
    ),
    "a2c": (A2C, CausalLMPolicy, dict(n_steps=8)),
    # TRPO differentiates twice through attention: CPU SDPA has no double backward, eager attention does.
    "trpo": (TRPO, CausalLMPolicy, dict(n_steps=16, batch_size=16, model_kwargs=dict(attn_implementation="eager"))),
    "maskable_ppo": (
        MaskablePPO,
        MaskableCausalLMPolicy,
        dict(n_steps=16, batch_size=16, n_epochs=2, rollout_buffer_class=MaskableEpisodeRolloutBuffer),
    ),
}


def build(name, n_envs=2):
    algorithm, policy, kwargs = ALGORITHMS[name]
    kwargs = dict(kwargs)
    policy_kwargs = dict(model=tiny_gpt2_config(), model_kwargs=kwargs.pop("model_kwargs", {}))
    env = make_vec_env("text_env/Vowels-v0", n_envs=n_envs, seed=0)
    return algorithm(policy, env, policy_kwargs=policy_kwargs, seed=0, **kwargs)


@pytest.mark.parametrize("name", sorted(ALGORITHMS))
def test_learn_changes_the_parameters(name):
    model = build(name)
    before = {n: p.detach().clone() for n, p in model.policy.named_parameters()}
    model.learn(64)
    changed = [n for n, p in model.policy.named_parameters() if not torch.equal(p, before[n])]
    assert any(n.startswith("lm.") for n in changed), changed
    assert any(n.startswith("value_head") for n in changed), changed


class RewardRecorder(BaseCallback):
    """Copies the step's rewards as they are when this callback runs."""

    def __init__(self):
        super().__init__()
        self.rewards = []

    def _on_step(self):
        self.rewards.append(self.locals["rewards"].copy())
        return True


@pytest.mark.parametrize("name", sorted(ALGORITHMS))
def test_kl_penalty_shapes_the_stored_rewards(name):
    model = build(name)
    raw, shaped = RewardRecorder(), RewardRecorder()
    kl = KLPenaltyCallback(kl_coef=5.0)
    model.learn(64, callback=CallbackList([raw, kl, shaped]))
    raw_rewards, shaped_rewards = np.array(raw.rewards), np.array(shaped.rewards)  # (steps, n_envs)
    assert not np.allclose(raw_rewards, shaped_rewards)  # the policy moved away from the reference: penalised
    n_steps = model.rollout_buffer.buffer_size
    np.testing.assert_allclose(model.rollout_buffer.rewards, shaped_rewards[-n_steps:])  # the buffer got them


def test_maskable_ppo_never_samples_masked_tokens():
    model = build("maskable_ppo")
    model.learn(64)
    buffer = model.rollout_buffer
    assert buffer.action_masks.dtype == bool
    actions = buffer.actions.reshape(-1).astype(int)
    masks = buffer.action_masks.reshape(len(actions), -1)
    assert masks[range(len(actions)), actions].all()
