"""Learning tests: PPO with the LM policy raises the reward on the tiny Vowels task, where a random policy scores
about 0.1 and the optimum is 1.0."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import FirstRolloutReward, tiny_gpt2_config
from stable_baselines3 import PPO
from stable_baselines3.common.env_util import make_vec_env

from agents import CausalLMPolicy, EpisodeRolloutBuffer

OPTIMUM = 1.0


@pytest.mark.parametrize(
    ("buffer_class", "compute_dtype"),
    [(None, "float32"), (EpisodeRolloutBuffer, "float32"), (EpisodeRolloutBuffer, "bfloat16")],
    ids=["stock-buffer", "episode-buffer", "episode-buffer-bf16"],
)
def test_ppo_learns_the_vowels_task(buffer_class, compute_dtype):
    env = make_vec_env("text_env/Vowels-v0", n_envs=8, seed=0)
    model = PPO(
        CausalLMPolicy,
        env,
        policy_kwargs=dict(model=tiny_gpt2_config(), compute_dtype=compute_dtype),
        n_steps=64,
        batch_size=64,
        n_epochs=4,
        learning_rate=3e-3,
        rollout_buffer_class=buffer_class,
        seed=0,
    )
    first = FirstRolloutReward()
    model.learn(10_240, callback=first)
    final = float(np.mean([info["r"] for info in model.ep_info_buffer]))
    assert first.initial is not None and first.initial < 0.2  # random-like start
    assert final >= first.initial + 0.5 * (OPTIMUM - first.initial), (first.initial, final)


def test_grpo_learns_a_tiny_verifiable_chat_task():
    """Prompt records with references, chat formatting with an end-of-turn token distinct from EOS, a verifiable
    reward with partial credit: GRPO raises held-out accuracy from ~0 (a random policy rarely writes the exact answer
    and stops) on the tiny model."""
    from conftest import chat_char_tokenizer

    from agents import GRPO
    from agents.common.evaluation import summarize
    from agents.common.generation import generate_completions
    from text_env import TextGenerationEnv
    from text_env.tasks.suite import ReversalReward

    tokenizer = chat_char_tokenizer()
    records = [{"prompt": word, "reference": "a"} for word in ("cat", "dog", "sun", "hat", "pen", "cup")]
    make = lambda: TextGenerationEnv(  # noqa: E731
        records, tokenizer, ReversalReward(), chat_template=True, max_prompt_tokens=32, max_new_tokens=2,
        vocab_size=len(tokenizer),
    )  # fmt: skip
    env = make_vec_env(make, n_envs=8, seed=0)
    model = GRPO(
        CausalLMPolicy, env, group_size=4, learning_rate=1e-3, n_steps=4, batch_size=16, n_epochs=2, seed=0,
        policy_kwargs=dict(model=tiny_gpt2_config(vocab_size=len(tokenizer), n_positions=64)),
    )  # fmt: skip

    def accuracy() -> float:
        result = generate_completions(model, make(), records * 4)
        return summarize(result)["accuracy"]

    before = accuracy()
    model.learn(6_000)
    after = accuracy()
    assert before < 0.2 and after >= 0.8, (before, after)  # 0.0 -> 1.0 on two seeds and two learning rates
