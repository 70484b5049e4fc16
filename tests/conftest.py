"""Shared fixtures: small envs on the in-code character tokenizer, and tiny randomly initialised LMs."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing may download at test time

import numpy as np
import pytest
import torch

import text_env  # noqa: F401  (registers the envs)
from text_env import TextGenerationEnv

SHORT_PROMPTS = ["The movie", "A film about", "I watched", "Plot:"]


def count_a(prompts, completions):
    """Batched toy reward: number of 'a' characters in each completion."""
    return np.array([c.count("a") for c in completions], dtype=float)


@pytest.fixture
def char_env() -> TextGenerationEnv:
    return TextGenerationEnv(SHORT_PROMPTS, "char", count_a, max_prompt_tokens=16, max_new_tokens=6)


def tiny_gpt2_config(vocab_size: int = 100, **overrides):
    """A 2-layer GPT-2 config small enough for CPU tests in seconds."""
    from transformers import GPT2Config

    settings = dict(
        vocab_size=vocab_size, n_positions=64, n_embd=32, n_layer=2, n_head=2, bos_token_id=2, eos_token_id=1
    )
    settings.update(overrides)
    return GPT2Config(**settings)


@pytest.fixture
def tiny_config():
    return tiny_gpt2_config()


@pytest.fixture(autouse=True)
def _few_threads():
    torch.set_num_threads(2)
    yield
