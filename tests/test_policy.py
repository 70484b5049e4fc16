"""CausalLMPolicy: the traps of SB3 with a pretrained LM, one test each, and save/load."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from conftest import tiny_gpt2_config
from stable_baselines3 import PPO
from transformers import AutoModelForCausalLM

from agents import CausalLMPolicy


def make_ppo(env_id="text_env/Vowels-v0", **policy_kwargs):
    policy_kwargs.setdefault("model", tiny_gpt2_config())
    return PPO(CausalLMPolicy, gym.make(env_id), policy_kwargs=policy_kwargs, n_steps=16, batch_size=16, seed=0)


def sample_obs(n=3, seed=0):
    env = gym.make("text_env/Vowels-v0")
    obs, _ = env.reset(seed=seed)
    rows = [obs]
    for t in range(n - 1):
        obs, *_ = env.step(40 + t)
        rows.append(obs)
    return {k: torch.as_tensor(np.stack([r[k] for r in rows])) for k in obs}


def test_pretrained_weights_survive_construction():
    torch.manual_seed(1)
    lm = AutoModelForCausalLM.from_config(tiny_gpt2_config())
    original = {k: v.clone() for k, v in lm.state_dict().items()}
    policy = make_ppo(model=lm).policy
    for name, value in policy.lm.state_dict().items():
        assert torch.equal(value, original[name]), name


def test_value_head_is_zero_initialised():
    policy = make_ppo().policy
    assert torch.count_nonzero(policy.value_head.weight) == 0 and torch.count_nonzero(policy.value_head.bias) == 0
    _, values, _ = policy(sample_obs())
    assert torch.all(values == 0)


def test_dropout_is_off_even_in_training_mode():
    policy = make_ppo(model=tiny_gpt2_config(resid_pdrop=0.5, embd_pdrop=0.5, attn_pdrop=0.5)).policy
    policy.set_training_mode(True)
    obs, actions = sample_obs(), torch.tensor([40, 41, 42])
    first = policy.evaluate_actions(obs, actions)[1]
    second = policy.evaluate_actions(obs, actions)[1]
    assert torch.equal(first, second)


def test_float_token_ids_are_cast_to_integers():
    policy = make_ppo().policy
    obs, actions = sample_obs(), torch.tensor([40, 41, 42])
    as_float = {k: v.float() for k, v in obs.items()}
    torch.testing.assert_close(
        policy.evaluate_actions(obs, actions)[1], policy.evaluate_actions(as_float, actions.float())[1]
    )


def test_optimizer_covers_exactly_the_trainable_parameters_and_honours_its_settings():
    policy = make_ppo(optimizer_class=torch.optim.AdamW, optimizer_kwargs=dict(weight_decay=0.123)).policy
    assert isinstance(policy.optimizer, torch.optim.AdamW)
    assert policy.optimizer.param_groups[0]["weight_decay"] == 0.123
    in_optimizer = {id(p) for group in policy.optimizer.param_groups for p in group["params"]}
    trainable = {id(p) for p in policy.parameters() if p.requires_grad}
    assert in_optimizer == trainable and len(trainable) > 0


def test_adam_runs_fused_unless_the_caller_picks_an_implementation():
    default = make_ppo().policy.optimizer.param_groups[0]
    assert default["fused"] is True and default["eps"] == 1e-5  # SB3's Adam eps is kept
    chosen = make_ppo(optimizer_kwargs=dict(eps=1e-5, foreach=True)).policy.optimizer.param_groups[0]
    assert chosen["foreach"] is True and not chosen["fused"]
    sgd = make_ppo(optimizer_class=torch.optim.SGD, optimizer_kwargs=dict(momentum=0.9)).policy.optimizer
    assert "fused" not in sgd.defaults or not sgd.defaults["fused"]  # only Adam and AdamW are switched
    # A state saved before fused was the default (implementation unset) loads fused; a chosen one is kept.
    optimizer = make_ppo().policy.optimizer
    old = optimizer.state_dict()
    old["param_groups"][0] |= {"fused": None, "foreach": None}
    optimizer.load_state_dict(old)
    assert optimizer.param_groups[0]["fused"] is True
    old["param_groups"][0] |= {"fused": None, "foreach": False}
    optimizer.load_state_dict(old)
    assert not optimizer.param_groups[0]["fused"] and optimizer.param_groups[0]["foreach"] is False


def test_each_optimizer_step_releases_the_gradients_it_applied():
    model = make_ppo()
    before = [p.detach().clone() for p in model.policy.parameters()]
    steps = []
    model.policy.optimizer.register_step_pre_hook(
        lambda optimizer, args, kwargs: steps.append(sum(p.grad is not None for p in model.policy.parameters()))
    )
    model.learn(32)
    assert steps and all(count > 0 for count in steps)  # each step saw the gradients
    assert all(p.grad is None for p in model.policy.parameters())  # and none outlived it
    assert any(not torch.equal(a, b) for a, b in zip(before, model.policy.parameters(), strict=True))
    model.policy.gradient_release.remove()
    model.learn(32)
    assert any(p.grad is not None for p in model.policy.parameters())


def test_temperature_scales_sampling_and_log_probs_alike():
    obs, actions = sample_obs(), torch.tensor([40, 41, 42])
    cold = make_ppo(temperature=1.0).policy
    hot = make_ppo(temperature=2.5).policy
    hot.load_state_dict(cold.state_dict())
    base_logits = cold.next_token_logits(obs)  # temperature 1: the raw next-token logits
    expected = torch.log_softmax(base_logits / 2.5, -1).gather(1, actions[:, None]).squeeze(1)
    torch.testing.assert_close(hot.evaluate_actions(obs, actions)[1], expected)
    torch.testing.assert_close(hot.next_token_logits(obs), base_logits / 2.5)


def test_vocabulary_mismatch_names_the_fix():
    with pytest.raises(ValueError, match="vocab_size=128"):
        make_ppo(model=tiny_gpt2_config(vocab_size=128))


def test_non_text_observation_spaces_are_refused():
    with pytest.raises(TypeError, match="Dict observation space"):
        PPO(CausalLMPolicy, "CartPole-v1", policy_kwargs=dict(model=tiny_gpt2_config()))


def test_observations_of_the_wrong_shape_are_refused():
    policy = make_ppo().policy
    obs = sample_obs()
    with pytest.raises(ValueError, match=r"shape \(batch, 16\)"):
        policy({k: v[:, :10] for k, v in obs.items()})
    with pytest.raises(ValueError, match="contiguous"):
        policy({"input_ids": obs["input_ids"], "attention_mask": torch.zeros_like(obs["attention_mask"])})


def test_save_and_load_round_trip_to_identical_logits(tmp_path):
    model = make_ppo()
    model.learn(32)
    obs = sample_obs()
    before = model.policy.next_token_logits(obs)
    model.save(tmp_path / "ppo.zip")
    loaded = PPO.load(tmp_path / "ppo.zip")
    assert isinstance(loaded.policy, CausalLMPolicy)
    assert torch.equal(loaded.policy.next_token_logits(obs), before)


def test_lora_trains_only_adapters_and_the_value_head():
    policy = make_ppo(lora=dict(r=4, lora_alpha=8, target_modules=["c_attn"], fan_in_fan_out=True)).policy
    trainable = [name for name, p in policy.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in name or name.startswith("value_head") for name in trainable)
    in_optimizer = sum(p.numel() for g in policy.optimizer.param_groups for p in g["params"])
    assert in_optimizer == sum(p.numel() for p in policy.parameters() if p.requires_grad)


def test_separate_value_model():
    policy = make_ppo(value_model=tiny_gpt2_config(n_embd=16)).policy
    assert policy.value_trunk is not None and policy.value_head.in_features == 16
    _, values, _ = policy(sample_obs())
    assert values.shape == (3, 1)


def test_unknown_model_name_names_the_fix():
    with pytest.raises(ValueError, match=r"(?s)Unknown model 'no-such-model'.*save_pretrained"):
        make_ppo(model="no-such-model")


def test_normalised_observations_get_a_clear_error():
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecNormalize

    env = VecNormalize(make_vec_env("text_env/Vowels-v0", n_envs=2, seed=0))  # norm_obs=True by default
    model = PPO(CausalLMPolicy, env, policy_kwargs=dict(model=tiny_gpt2_config()), n_steps=8, batch_size=8)
    with pytest.raises(ValueError, match="VecNormalize\\(venv, norm_obs=False\\)"):
        model.learn(16)
    env = VecNormalize(make_vec_env("text_env/Vowels-v0", n_envs=2, seed=0), norm_obs=False)
    PPO(CausalLMPolicy, env, policy_kwargs=dict(model=tiny_gpt2_config()), n_steps=8, batch_size=8).learn(16)


def test_sampled_token_ids_follow_the_distribution_and_never_take_masked_tokens():
    from agents.common.policy import sample_token_ids

    probs = torch.tensor([[0.5, 0.0, 0.2, 0.15, 0.1, 0.05, 0.0], [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0]])
    torch.manual_seed(0)
    draws = torch.stack([sample_token_ids(probs) for _ in range(20000)])  # (N, 2)
    frequencies = torch.bincount(draws[:, 0], minlength=7).double() / len(draws)
    assert torch.allclose(frequencies, probs[0].double(), atol=0.01)  # binomial std <= 0.0036
    assert frequencies[1] == 0 and frequencies[6] == 0
    assert (draws[:, 1] == 6).all()
    torch.manual_seed(0)
    assert torch.equal(sample_token_ids(probs), draws[0])  # the global torch seed makes it reproducible


@pytest.mark.parametrize("lora", [None, dict(r=4, lora_alpha=8, target_modules="all-linear")])
def test_gradient_checkpointing_keeps_fewer_activations_with_the_same_values_and_gradients(lora):
    obs, actions = sample_obs(4), torch.tensor([40, 41, 42, 43])
    results = []
    for checkpointing in (False, True):
        policy = make_ppo(gradient_checkpointing=checkpointing, lora=lora).policy
        policy.set_training_mode(True)
        saved: list[int] = []  # elements of every tensor autograd keeps for the backward pass
        with torch.autograd.graph.saved_tensors_hooks(lambda t, saved=saved: saved.append(t.numel()) or t, lambda t: t):
            values, log_prob, entropy = policy.evaluate_actions(obs, actions)
        (values.sum() + log_prob.sum() + entropy.sum()).backward()  # recomputes the layers
        grads = {n: p.grad.clone() for n, p in policy.named_parameters() if p.grad is not None}
        results.append((values.detach(), log_prob.detach(), entropy.detach(), grads, sum(saved)))
    (*plain_outputs, plain_grads, plain_saved), (*outputs, grads, saved) = results
    assert saved < plain_saved / 3, (saved, plain_saved)
    for plain, checkpointed in zip(plain_outputs, outputs, strict=True):
        torch.testing.assert_close(checkpointed, plain)
    assert grads.keys() == plain_grads.keys() and grads
    for name in grads:
        torch.testing.assert_close(grads[name], plain_grads[name], msg=name)


def test_gradient_checkpointing_leaves_kv_cached_rollouts_alone():
    """Outside updates every module stays in eval mode: the trunk keeps its KV cache in rollouts."""
    model = tiny_gpt2_config(resid_pdrop=0.5)
    plain, checkpointed = make_ppo(model=model).policy, make_ppo(model=model, gradient_checkpointing=True).policy
    checkpointed.set_training_mode(True)
    obs, actions = sample_obs(4), torch.tensor([40, 41, 42, 43])
    checkpointed.evaluate_actions(obs, actions)[1].sum().backward()  # an update pass, then a rollout
    assert not any(module.training for module in checkpointed.lm.modules())
    with torch.no_grad():
        for t in range(4):  # one growing episode: each call extends the rollout cache by a token
            step = {k: v[t : t + 1] for k, v in obs.items()}
            expected, got = (p.cached_outputs(step, p.rollout_caches)[0] for p in (plain, checkpointed))
            torch.testing.assert_close(got, expected)
    assert checkpointed.rollout_caches.policy.extended_rows == 3


def test_dropout_a_layer_copied_from_its_config_stays_off_under_gradient_checkpointing():
    """OPT's decoder layers call F.dropout(p=self.dropout, training=self.training) on a copy of the config's value,
    and checkpointing puts layers in training mode during updates: the copy is zeroed too."""
    from transformers import OPTConfig

    config = OPTConfig(
        vocab_size=100, hidden_size=16, word_embed_proj_dim=16, ffn_dim=32, num_hidden_layers=2,
        num_attention_heads=2, max_position_embeddings=64, dropout=0.5, attention_dropout=0.5,
    )  # fmt: skip
    policy = make_ppo(model=config, gradient_checkpointing=True).policy
    policy.set_training_mode(True)
    obs, actions = sample_obs(), torch.tensor([40, 41, 42])
    assert torch.equal(policy.evaluate_actions(obs, actions)[1], policy.evaluate_actions(obs, actions)[1])


def test_gradient_checkpointing_on_an_unsupported_model_names_the_fix():
    lm = AutoModelForCausalLM.from_config(tiny_gpt2_config())
    lm.supports_gradient_checkpointing = False
    with pytest.raises(ValueError, match="gradient_checkpointing=False"):
        make_ppo(model=lm, gradient_checkpointing=True)


def test_one_implementation_with_the_mask_optional_serves_both_policies():
    from sb3_contrib import MaskablePPO

    from agents import MaskableCausalLMPolicy

    for name in ("forward", "evaluate_actions", "get_distribution", "_predict"):
        assert getattr(CausalLMPolicy, name) is getattr(MaskableCausalLMPolicy, name), name
    policy = make_ppo().policy
    maskable = MaskablePPO(
        MaskableCausalLMPolicy, gym.make("text_env/Vowels-v0"), policy_kwargs=dict(model=tiny_gpt2_config()),
        n_steps=16, batch_size=16, seed=0,
    ).policy  # fmt: skip
    maskable.load_state_dict(policy.state_dict())
    obs, actions = sample_obs(), torch.tensor([40, 41, 42])
    everything = np.ones((3, policy.action_count), dtype=bool)
    plain = policy.evaluate_actions(obs, actions)
    for masks in (None, everything):  # no mask, or one that allows every token: the plain policy's numbers
        for a, b in zip(maskable.evaluate_actions(obs, actions, action_masks=masks), plain, strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    only = np.zeros_like(everything)
    only[:, 41] = True
    sampled, _, _ = maskable(obs, action_masks=only)
    assert (sampled == 41).all()
    with pytest.raises(TypeError, match="CausalLMPolicy takes no action masks: use MaskableCausalLMPolicy"):
        policy.evaluate_actions(obs, actions, action_masks=everything)
    with pytest.raises(TypeError, match="takes no action masks"):
        policy(obs, action_masks=everything)
