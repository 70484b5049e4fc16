"""export_pretrained: a plain Hugging Face directory that generates the same greedy text as the policy."""

from __future__ import annotations

import gymnasium as gym
import pytest
import torch
from conftest import tiny_gpt2_config
from stable_baselines3 import PPO
from transformers import AutoModelForCausalLM, AutoTokenizer

from agents import CausalLMPolicy, export_pretrained, generate_completions
from text_env.tasks import VOWEL_TASK_PROMPTS


def trained_model(**policy_kwargs):
    model = PPO(
        CausalLMPolicy,
        gym.make("text_env/Vowels-v0"),
        policy_kwargs=dict(model=tiny_gpt2_config(), **policy_kwargs),
        n_steps=64,
        batch_size=32,
        learning_rate=1e-2,
        seed=0,
    )
    model.learn(256)
    return model


def hf_greedy(directory, prompts, max_new_tokens):
    lm = AutoModelForCausalLM.from_pretrained(directory).eval()
    tokenizer = AutoTokenizer.from_pretrained(directory)
    texts = []
    for prompt in prompts:
        ids = torch.tensor([tokenizer(prompt, add_special_tokens=False)["input_ids"]])
        out = lm.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
        texts.append(tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True))
    return texts


@pytest.mark.parametrize(
    "lora", [None, dict(r=4, lora_alpha=8, target_modules=["c_attn"], fan_in_fan_out=True)], ids=["full", "lora"]
)
def test_export_generates_the_policys_greedy_text(tmp_path, lora):
    model = trained_model(lora=lora)
    env = gym.make("text_env/Vowels-v0")
    prompts = list(VOWEL_TASK_PROMPTS)
    ours = generate_completions(model, env, prompts, deterministic=True).completions
    export_pretrained(model, tmp_path / "export", tokenizer="char")
    assert hf_greedy(tmp_path / "export", prompts, env.unwrapped.max_new_tokens) == ours
    assert any(ours)  # non-trivial text


def test_export_replaces_a_previous_directory_and_leaves_no_staging(tmp_path):
    model = trained_model()
    target = tmp_path / "export"
    export_pretrained(model, target, tokenizer="char")
    export_pretrained(model.policy, target, tokenizer="char")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]
    assert (target / "config.json").is_file()


def test_a_failed_export_keeps_the_previous_one(tmp_path, monkeypatch):
    model = trained_model()
    target = tmp_path / "export"
    export_pretrained(model, target, tokenizer="char")
    before = (target / "model.safetensors").read_bytes()

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(type(model.policy.lm), "save_pretrained", crash)
    with pytest.raises(OSError, match="disk full"):
        export_pretrained(model, target, tokenizer="char")
    assert (target / "model.safetensors").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]


def test_export_needs_a_tokenizer_when_the_model_has_no_name():
    with pytest.raises(ValueError, match="needs a tokenizer"):
        export_pretrained(trained_model(), "/tmp/never-written")
