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


def _gpt2_classifier_without_pad(directory):
    """A tiny GPT-2 classifier whose tokenizer has EOS but no pad token, as GPT-2's own does."""
    from transformers import GPT2Config, GPT2ForSequenceClassification, PreTrainedTokenizerFast

    from text_env import build_char_tokenizer

    char = build_char_tokenizer()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=char.backend_tokenizer, eos_token="<eos>")
    config = GPT2Config(vocab_size=len(char), n_embd=8, n_layer=1, n_head=1, num_labels=2, n_positions=64)
    GPT2ForSequenceClassification(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)


def test_a_classifier_tokenizer_without_pad_scores_batches_of_different_lengths(tmp_path):
    from text_env.rewards import ClassifierReward

    _gpt2_classifier_without_pad(tmp_path)
    reward = ClassifierReward(tmp_path, label=1)
    together = reward(["", ""], ["a long completion", "short"])
    alone = [reward([""], [text])[0] for text in ("a long completion", "short")]
    np.testing.assert_allclose(together, alone, atol=1e-6)  # padding found by the pad id, not scored


def test_a_missing_classifier_is_named_with_the_fix(tmp_path):
    from text_env.rewards import ClassifierReward

    with pytest.raises(ValueError, match="cannot load a sequence classifier .* saved with save_pretrained"):
        ClassifierReward(tmp_path / "no-such-classifier")


def test_a_reward_model_that_cannot_be_pickled_names_the_fix_for_subprocess_envs():
    import pickle
    import threading

    from text_env.rewards import RewardModel

    class Locked(RewardModel):
        def __init__(self):
            self.lock = threading.Lock()

        def score(self, prompts, completions):
            return np.zeros(len(prompts))

    with pytest.raises(TypeError, match="attribute 'lock'.*DummyVecEnv / vectorization_mode='sync'"):
        pickle.dumps(Locked())


def test_a_time_limit_below_the_completion_length_warns_that_no_reward_is_paid():
    env = gym.make("text_env/Vowels-v0", max_episode_steps=3)  # Vowels completes 8 characters
    for episode in range(3):  # cut, cut, cut: counted at the next resets
        env.reset(seed=episode)
        for _ in range(3):
            *_, terminated, truncated, _ = env.step(40)
        assert truncated and not terminated  # cut by the TimeLimit, unpaid
    with pytest.warns(UserWarning, match="reset after 3 of max_new_tokens=8 tokens.*max_episode_steps"):
        env.reset()  # the third cut in a row at the same length: said once


def test_episodes_that_end_on_their_own_reset_silently(recwarn):
    env = gym.make("text_env/Vowels-v0")
    for _ in range(2):
        env.reset(seed=0)
        terminated = False
        while not terminated:
            *_, terminated, _, _ = env.step(40)
    assert not [w for w in recwarn if "before its completion was scored" in str(w.message)]


def test_tokenizer_and_model_names_are_read_from_local_files_only(monkeypatch):
    """No Hub download and no ~30 s of retries on an offline machine, with or without HF_HUB_OFFLINE: both loaders
    ask transformers for local files (a directory or the Hugging Face cache) only, and name the fix."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from agents.common.models import load_causal_lm
    from text_env.tokenizers import resolve_tokenizer

    calls = []

    def local_only(name, *args, **kwargs):
        calls.append(kwargs.get("local_files_only"))
        raise OSError(f"{name} is not in the local cache")

    monkeypatch.setattr(AutoTokenizer, "from_pretrained", local_only)
    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", local_only)
    with pytest.raises(ValueError, match="Unknown tokenizer 'no-such-org/no-such-tokenizer'.*local directory"):
        resolve_tokenizer("no-such-org/no-such-tokenizer")
    with pytest.raises(ValueError, match="Unknown model 'no-such-org/no-such-model'.*save_pretrained"):
        load_causal_lm("no-such-org/no-such-model")
    assert calls == [True, True]
