"""Shared fixtures: small envs on the in-code character tokenizer, and tiny randomly initialised LMs."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing may download at test time

import numpy as np
import pytest
import torch

import text_env  # noqa: F401  (registers the envs)
from agents.testing import tiny_gpt2_config  # noqa: F401  (tests import it from here)
from text_env import TextGenerationEnv

SHORT_PROMPTS = ["The movie", "A film about", "I watched", "Plot:"]


def count_a(prompts, completions):
    """Batched toy reward: number of 'a' characters in each completion."""
    return np.array([c.count("a") for c in completions], dtype=float)


@pytest.fixture
def char_env() -> TextGenerationEnv:
    return TextGenerationEnv(SHORT_PROMPTS, "char", count_a, max_prompt_tokens=16, max_new_tokens=6)


@pytest.fixture
def tiny_config():
    return tiny_gpt2_config()


@pytest.fixture(autouse=True)
def _few_threads():
    torch.set_num_threads(2)
    yield
