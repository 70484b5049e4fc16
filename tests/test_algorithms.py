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
    """Copies the environment's rewards at every step, before any shaping."""

    def __init__(self):
        super().__init__()
        self.rewards = []

    def _on_step(self):
        self.rewards.append(self.locals["rewards"].copy())
        return True


@pytest.mark.parametrize("name", sorted(ALGORITHMS))
def test_kl_penalty_shapes_the_stored_rewards(name):
    model = build(name)
    untrained = build(name)  # same seed: the reference's weights, scored independently (naive path)
    untrained.policy.share_prefixes = False
    raw = RewardRecorder()
    coef = 5.0
    model.learn(64, callback=CallbackList([raw, KLPenaltyCallback(kl_coef=coef)]))

    buffer = model.rollout_buffer  # the last rollout, flattened env-major by train(); rewards keep (S, E)
    n_steps, n_envs = buffer.rewards.shape
    obs = {k: torch.as_tensor(v) for k, v in buffer.observations.items()}
    actions = torch.as_tensor(buffer.actions).flatten()
    masks = getattr(buffer, "action_masks", None)
    with torch.no_grad():
        args = (obs, actions) if masks is None else (obs, actions, torch.as_tensor(masks))
        reference = untrained.policy.evaluate_actions(*args)[1].numpy().reshape(n_envs, n_steps).T  # (S, E)
    policy = buffer.log_probs.reshape(n_envs, n_steps).T  # (S, E) stored at sampling time
    env_rewards = np.array(raw.rewards[-n_steps:])  # (S, E)
    expected = env_rewards - coef * (policy - reference)
    assert not np.allclose(expected, env_rewards)  # the policy moved away from the reference: penalised
    np.testing.assert_allclose(buffer.rewards, expected, atol=1e-4)


def test_maskable_ppo_never_samples_masked_tokens():
    model = build("maskable_ppo")
    model.learn(64)
    buffer = model.rollout_buffer
    assert buffer.action_masks.dtype == bool
    actions = buffer.actions.reshape(-1).astype(int)
    masks = buffer.action_masks.reshape(len(actions), -1)
    assert masks[range(len(actions)), actions].all()
