"""Every registered id passes Gymnasium's and SB3's env checkers and works in vector envs."""

from __future__ import annotations

import warnings

import gymnasium as gym
import pytest
from conftest import SHORT_PROMPTS, count_a
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

from text_env import ENV_IDS, TASKS

SMALL_SUITE = dict(num_prompts=16, num_eval_prompts=4)
MAKE_KWARGS = {
    "text_env/TextGeneration-v0": dict(prompts=SHORT_PROMPTS, tokenizer="char", reward_model=count_a, max_new_tokens=4),
    "text_env/PositiveReview-v0": {},
    "text_env/Vowels-v0": {},
    "text_env/Reverse-v0": SMALL_SUITE,
    "text_env/LetterCount-v0": SMALL_SUITE,
    "text_env/Arithmetic-v0": SMALL_SUITE,
    "text_env/Keywords-v0": SMALL_SUITE,
    "text_env/GuessNumber-v0": SMALL_SUITE,
    "text_env/Calculator-v0": SMALL_SUITE,
    "text_env/Calculator-v1": SMALL_SUITE,
}
#: The reasoning-gym bridge's ids need the [reasoning] extra: tests/test_reasoning_gym.py checks them.
BRIDGED = {env_id for env_id, task in TASKS.items() if "reasoning_gym" in task.entry_point}


def test_every_registered_id_is_covered():
    assert set(MAKE_KWARGS) == set(ENV_IDS) - BRIDGED
    assert set(ENV_IDS) <= set(gym.registry)


@pytest.mark.parametrize("env_id", sorted(MAKE_KWARGS))
def test_gymnasium_env_checker(env_id):
    env = gym.make(env_id, **MAKE_KWARGS[env_id])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a checker warning is a failure, not noise
        gym_check_env(env.unwrapped, skip_render_check=True)


@pytest.mark.parametrize("env_id", sorted(MAKE_KWARGS))
def test_sb3_env_checker(env_id):
    env = gym.make(env_id, **MAKE_KWARGS[env_id])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a checker warning is a failure, not noise
        sb3_check_env(env, warn=True)


def test_positive_review_is_the_embedded_default_task():
    env = gym.make("text_env/PositiveReview-v0").unwrapped
    assert env.max_new_tokens == 48 and env.action_space.n == 49152
    assert len(env.prompts) == 285
    assert type(env.reward_model).__name__ == "SentimentReward"
    test_env = gym.make("text_env/PositiveReview-v0", split="test").unwrapped
    assert not set(test_env.prompts) & set(env.prompts)


@pytest.mark.parametrize("vectorization_mode", ["sync", "async"])
def test_make_vec(vectorization_mode):
    envs = gym.make_vec("text_env/Vowels-v0", num_envs=4, vectorization_mode=vectorization_mode)
    obs, infos = envs.reset(seed=0)
    assert obs["input_ids"].shape == (4, 16)
    obs, rewards, terminated, truncated, infos = envs.step(envs.action_space.sample())
    assert rewards.shape == (4,)
    envs.close()


def test_sb3_make_vec_env_works_on_registered_ids():
    from stable_baselines3.common.env_util import make_vec_env

    venv = make_vec_env("text_env/Vowels-v0", n_envs=2, seed=0)
    obs = venv.reset()
    assert obs["input_ids"].shape == (2, 16)
