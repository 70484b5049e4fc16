"""The LM policy under each stock algorithm: learn() runs on a registered env, parameters change, KL shaping works."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import tiny_gpt2_config
from stable_baselines3.common.callbacks import BaseCallback, CallbackList
from stable_baselines3.common.env_util import make_vec_env

from agents import KLPenaltyCallback
from agents.common.callbacks import RolloutHistoryCallback
from agents.common.kl import KLSettings
from agents.common.settings import CriticSettings
from agents.registry import ALGORITHMS, make_algorithm

#: Small rollouts per algorithm; everything else (classes, buffers, fixed settings) comes from the registry.
SETTINGS = {
    "ppo": dict(n_steps=16, batch_size=16, n_epochs=2),
    "a2c": dict(n_steps=8),
    "trpo": dict(n_steps=16, batch_size=16),  # stock call: no attention flags needed for its double backward
    "maskable_ppo": dict(n_steps=16, batch_size=16, n_epochs=2),
    "nlpo": dict(n_steps=16, batch_size=16, n_epochs=2, mask_update_interval=1),
    "grpo": dict(group_size=2, n_steps=8, batch_size=8, kl_coef=0.1),
    "dr_grpo": dict(group_size=2, n_steps=8, batch_size=8),
    "rloo": dict(group_size=2, n_steps=8, batch_size=8),
    "dapo": dict(group_size=2, n_steps=8, batch_size=8, resample_rounds=1),
    "gspo": dict(group_size=2, n_steps=8, batch_size=8),
    "cispo": dict(group_size=2, n_steps=8, batch_size=8),
    "reinforce_pp": dict(group_size=2, n_steps=8, batch_size=8),
    "reinforce_pp_baseline": dict(group_size=2, n_steps=8, batch_size=8),
    "raft": dict(group_size=2, n_steps=8, batch_size=8),
    "apo": dict(group_size=2, n_steps=8, batch_size=8, kl_coef=0.1),
}
CRITICS = sorted(name for name, spec in ALGORITHMS.items() if issubclass(spec.settings, CriticSettings))


def test_every_registered_algorithm_has_test_settings():
    assert set(SETTINGS) == set(ALGORITHMS)


def build(name, n_envs=2, **policy_kwargs):
    env = make_vec_env("text_env/Vowels-v0", n_envs=n_envs, seed=0)
    policy_kwargs = dict(model=tiny_gpt2_config(), **policy_kwargs)
    return make_algorithm(name, env, policy_kwargs=policy_kwargs, seed=0, **SETTINGS[name])


@pytest.mark.parametrize("name", sorted(ALGORITHMS))
def test_learn_changes_the_parameters(name):
    model = build(name)
    before = {n: p.detach().clone() for n, p in model.policy.named_parameters()}
    model.learn(64)
    changed = [n for n, p in model.policy.named_parameters() if not torch.equal(p, before[n])]
    assert any(n.startswith("lm.") for n in changed), changed
    if name in CRITICS:
        assert any(n.startswith("value_head") for n in changed), changed
    else:
        assert model.policy.value_head is None


@pytest.mark.parametrize("name", sorted(ALGORITHMS))
def test_every_algorithm_trains_with_gradient_checkpointing(name):
    """Each algorithm's update runs through the recomputed layers (TRPO: its double backward too). Same values and
    gradients as without: tests/test_policy.py (weights after Adam steps are no test: Adam divides near-zero
    gradients by their own size, which turns last-bit differences into visible ones)."""
    model = build(name, gradient_checkpointing=True)
    before = {n: p.detach().clone() for n, p in model.policy.named_parameters()}
    model.learn(32)
    changed = [n for n, p in model.policy.named_parameters() if not torch.equal(p, before[n])]
    assert any(n.startswith("lm.") for n in changed), changed
    assert all(torch.isfinite(p).all() for p in model.policy.parameters())


class RewardRecorder(BaseCallback):
    """Copies the environment's rewards at every step, before any shaping."""

    def __init__(self):
        super().__init__()
        self.rewards = []

    def _on_step(self):
        self.rewards.append(self.locals["rewards"].copy())
        return True


@pytest.mark.parametrize("name", CRITICS)
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


@pytest.mark.parametrize("name", sorted(ALGORITHMS))
def test_every_algorithm_logs_the_kl_under_the_same_names(name):
    """One KLSettings for every algorithm, applied by each entry's settings class (the critic algorithms through
    KLPenaltyCallback, the group ones through their own kl_coef): one set of names."""
    strategy, kl = ALGORITHMS[name].settings(), KLSettings(coef=0.1)
    env = make_vec_env("text_env/Vowels-v0", n_envs=2, seed=0)
    settings = {**SETTINGS[name], **strategy.kl_kwargs(kl)}
    model = make_algorithm(name, env, policy_kwargs=dict(model=tiny_gpt2_config()), seed=0, **settings)
    history = RolloutHistoryCallback()
    model.learn(64, callback=[*strategy.kl_callbacks(kl, reference=None), history])
    assert all({"kl/coef", "kl/k1"} <= set(row) for row in history.rows), history.rows
    assert {"kl/k1_per_episode", "rollout/score"} <= set().union(*history.rows)
    assert all(row["kl/coef"] == 0.1 for row in history.rows)


def test_maskable_ppo_never_samples_masked_tokens():
    model = build("maskable_ppo")
    model.learn(64)
    buffer = model.rollout_buffer
    assert buffer.action_masks.dtype == bool
    actions = buffer.actions.reshape(-1).astype(int)
    masks = buffer.action_masks.reshape(len(actions), -1)
    assert masks[range(len(actions)), actions].all()


def test_the_registry_refuses_settings_an_algorithm_does_not_take():
    env = make_vec_env("text_env/Vowels-v0", n_envs=2, seed=0)
    with pytest.raises(TypeError, match=r"a2c \(A2C\) does not take \['batch_size'\]"):
        make_algorithm("a2c", env, policy_kwargs=dict(model=tiny_gpt2_config()), batch_size=8)
    with pytest.raises(ValueError, match="Unknown algorithm 'sac'"):
        make_algorithm("sac", env)


@pytest.mark.parametrize("name", sorted(ALGORITHMS))
def test_each_settings_class_builds_its_algorithm(name):
    """An entry's settings (every option, resolved, with its KL term's arguments) are constructor arguments of its
    algorithm, and its KL term is applied once: as callbacks or as arguments."""
    spec = ALGORITHMS[name]
    settings, kl = spec.settings(), KLSettings(coef=0.05)
    kwargs = settings.algorithm_kwargs(kl, dense_reward=True)
    assert set(kwargs) <= spec.hyperparameters(), set(kwargs) - spec.hyperparameters()
    assert bool(settings.kl_callbacks(kl, reference=None)) != bool(settings.kl_kwargs(kl))
    assert settings.kl_problems(kl) == []  # a fixed coefficient with the algorithm's own estimator applies anywhere
