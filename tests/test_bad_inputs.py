"""Bad inputs found by trying the package as a new user: each gets a clear error naming the fix
(docs/errors.md has a row for each)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from conftest import SHORT_PROMPTS, tiny_gpt2_config
from stable_baselines3 import PPO

from agents import CausalLMPolicy, generate_completions
from agents.common.evaluation import TextEvalCallback
from text_env import TextGenerationEnv, load_prompts


def make_env(reward, **kwargs):
    return TextGenerationEnv(SHORT_PROMPTS, "char", reward, max_prompt_tokens=16, max_new_tokens=2, **kwargs)


def finish_episode(env):
    env.reset(seed=0)
    env.step(40)
    return env.step(41)


def test_a_reward_tensor_that_requires_grad_is_refused_with_the_fix():
    env = make_env(lambda p, c: torch.ones(len(c), requires_grad=True))
    with pytest.raises(TypeError, match=r"requires grad: return scores.detach\(\).cpu\(\).numpy\(\)"):
        finish_episode(env)


def test_a_plain_cpu_tensor_reward_is_fine():
    env = make_env(lambda p, c: torch.ones(len(c)))
    assert finish_episode(env)[1] == 1.0


def test_float_lengths_from_a_config_get_a_clear_error():
    with pytest.raises(TypeError, match=r"max_new_tokens must be an int, got float 48.0 .* pass max_new_tokens=48"):
        TextGenerationEnv(SHORT_PROMPTS, "char", lambda p, c: np.zeros(len(c)), max_new_tokens=48.0)


def test_prompt_files_bad_json_line_not_utf8_and_directories(tmp_path):
    bad_json = tmp_path / "p.jsonl"
    bad_json.write_text('{"prompt": "ok"}\n{"prompt": "unterminated\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"p.jsonl:2: not a JSON object"):
        load_prompts(bad_json)
    latin1 = tmp_path / "p.txt"
    latin1.write_bytes("café crème\n".encode("latin-1"))
    with pytest.raises(ValueError, match="is not UTF-8 text"):
        load_prompts(latin1)
    with pytest.raises(IsADirectoryError, match="is a directory"):
        load_prompts(tmp_path)


def test_a_single_prompt_string_is_refused_where_a_list_is_expected():
    env = gym.make("text_env/Vowels-v0")
    model = PPO(CausalLMPolicy, env, policy_kwargs=dict(model=tiny_gpt2_config()), n_steps=8, batch_size=8)
    with pytest.raises(TypeError, match=r"pass \[prompt\]"):
        generate_completions(model, env, "The ")
    with pytest.raises(TypeError, match=r"pass \[prompt\]"):
        TextEvalCallback(env, "The ")


def test_observations_longer_than_the_models_positions_are_refused_when_the_policy_is_built():
    env = gym.make("text_env/Vowels-v0", max_prompt_tokens=60, max_new_tokens=8)  # 68 > n_positions=64
    with pytest.raises(ValueError, match="at most 64 positions: lower max_prompt_tokens or max_new_tokens"):
        PPO(CausalLMPolicy, env, policy_kwargs=dict(model=tiny_gpt2_config()))


def test_lora_task_type_and_mlp_options():
    env = gym.make("text_env/Vowels-v0")
    lora = dict(r=2, target_modules=["c_attn"], fan_in_fan_out=True)
    ok = PPO(CausalLMPolicy, env, policy_kwargs=dict(model=tiny_gpt2_config(), lora={**lora, "task_type": "CAUSAL_LM"}))
    assert ok.policy.lora is not None
    with pytest.raises(ValueError, match="task_type must be CAUSAL_LM"):
        PPO(CausalLMPolicy, env, policy_kwargs=dict(model=tiny_gpt2_config(), lora={**lora, "task_type": "SEQ_CLS"}))
    with pytest.warns(UserWarning, match=r"\['net_arch', 'ortho_init'\] do not apply"):
        PPO(CausalLMPolicy, env, policy_kwargs=dict(model=tiny_gpt2_config(), net_arch=[64], ortho_init=True))
