"""The verifiable suite (issue 21, item 3): generators, answer extraction, partial credit, success, splits, and the
Gymnasium / SB3 contracts of every registered id."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import text_env
from text_env import TASKS, task_for
from text_env.tasks.answers import edit_distance, extract_answer, extract_integer, number_credit, similarity
from text_env.tasks.base import pass_at_k, split_of, success_metrics
from text_env.tasks.suite import IntegerAnswerReward, KeywordsReward, ReversalReward

SUITE = ("text_env/Reverse-v0", "text_env/LetterCount-v0", "text_env/Arithmetic-v0", "text_env/Keywords-v0")
SMALL = {"num_prompts": 40, "num_eval_prompts": 10}


@pytest.mark.parametrize(
    ("completion", "answer", "integer"),
    [
        ("7", "7", 7),
        ("The answer is 7.", "7", 7),
        ("**Answer:** `12`", "12", 12),
        ("3 + 4 = 7\nBecause three plus four...", "3 + 4 = 7", 7),
        ('"tac"', "tac", None),
        ("  \n  -5 ", "-5", -5),
        ("Only once", "Only once", 1),
        ("three", "three", 3),
        ("1,024 apples", "1,024 apples", 1024),
        ("", None, None),
        ("no number here", "no number here", None),
        ("totally 4", "totally 4", 4),  # a label is a whole word: "total" does not eat "totally"
        ("Counting: 2", "Counting: 2", 2),
    ],
)
def test_answer_extraction(completion, answer, integer):
    assert extract_answer(completion) == answer
    assert extract_integer(completion) == integer


def test_similarity_and_number_credit():
    assert edit_distance("kitten", "sitting") == 3
    assert similarity("tac", "tac") == 1.0 and similarity("", "") == 1.0
    assert similarity("tca", "tac") == pytest.approx(1 / 3)
    assert (number_credit(7, 7), number_credit(8, 7), number_credit(None, 7)) == (1.0, 0.25, 0.0)


def test_rewards_give_partial_credit_and_exact_success():
    reverse = ReversalReward()
    completions = ["tac", "T-A-C.", "tca", "", "The reversed word is: tac"]
    scores = reverse.score(["p"] * 5, completions, ["tac"] * 5)
    np.testing.assert_allclose(scores, [1.0, 1.0, 1 / 3, 0.0, 1.0])
    assert reverse.success(["p"] * 5, completions, ["tac"] * 5).tolist() == [True, True, False, False, True]
    assert ReversalReward().score(["p"], ["tac god"], ["tac god"])[0] == 1.0  # phrases keep their space

    numbers = IntegerAnswerReward()
    np.testing.assert_allclose(numbers.score(["p"] * 3, ["5", "6", "five?"], [5, 5, 5]), [1.0, 0.25, 1.0])

    words = ["dog", "throw", "ball"]
    keywords = KeywordsReward()
    sentence = "The boy throws a ball to his dog in the park."
    assert keywords.score(["p"], [sentence], [words])[0] == 1.0 and keywords.success(["p"], [sentence], [words])[0]
    assert keywords.score(["p"], ["dog, throw, ball"], [words])[0] == 0.5  # a bare word list: half
    assert keywords.score(["p"], ["The dog sleeps all day long."], [words])[0] == pytest.approx(1 / 3)


def test_pass_at_k_on_hand_made_numbers():
    assert pass_at_k(8, 0, 8) == 0.0 and pass_at_k(8, 1, 8) == 1.0
    assert pass_at_k(4, 1, 1) == 0.25
    assert pass_at_k(4, 2, 2) == pytest.approx(1 - 1 / 6)  # 1 - C(2,2)/C(4,2)
    metrics = success_metrics(["a", "a", "b", "b"], np.array([True, False, False, False]))
    half_width = 1.96 * np.std([0.5, 0.0], ddof=1) / np.sqrt(2)
    assert metrics == pytest.approx({"accuracy": 0.25, "accuracy_ci95": half_width, "pass@1": 0.25, "pass@2": 0.5})


@pytest.mark.parametrize("env_id", SUITE)
def test_suite_splits_are_disjoint_and_seeded(env_id):
    env = gym.make(env_id, **SMALL).unwrapped
    train, test = {r.prompt for r in env.records}, {r.prompt for r in env.eval_records}
    assert len(train) == 40 and not train & test
    assert all(split_of(p) == "train" for p in train) and all(split_of(p) == "test" for p in test)
    again = gym.make(env_id, **SMALL).unwrapped
    assert [r.to_dict() for r in again.records] == [r.to_dict() for r in env.records]
    other = gym.make(env_id, seed=1, **SMALL).unwrapped
    assert [r.prompt for r in other.records] != [r.prompt for r in env.records]


@pytest.mark.parametrize("env_id", SUITE)
def test_the_reference_answer_succeeds_through_the_env(env_id):
    env = gym.make(env_id, **SMALL)
    _, info = env.reset(seed=3)
    reference = info["reference"]
    answer = f"I {' '.join(reference)} today." if isinstance(reference, list) else str(reference)
    tokenizer = env.unwrapped.tokenizer
    assert env.unwrapped.chat_template  # SmolLM2's tokenizer has one
    for token in [*tokenizer(answer, add_special_tokens=False)["input_ids"], tokenizer.eos_token_id]:
        _, reward, terminated, truncated, info = env.step(token)
        if terminated:
            break
    assert terminated and not truncated and info["success"] is True and reward == 1.0


@pytest.mark.parametrize("env_id", SUITE)
def test_suite_ids_pass_the_gymnasium_and_sb3_checkers(env_id):
    from gymnasium.utils.env_checker import check_env
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    env = gym.make(env_id, **SMALL)
    check_env(env.unwrapped, skip_render_check=True)
    sb3_check_env(env.unwrapped, warn=False)


@pytest.mark.parametrize("env_id", SUITE)
def test_same_seed_same_rollout(env_id):
    def rollout() -> list:
        env = gym.make(env_id, **SMALL)
        env.action_space.seed(7)
        obs, _ = env.reset(seed=5)
        trace = [obs["input_ids"].tolist()]
        for _ in range(40):
            obs, reward, terminated, _, _ = env.step(env.action_space.sample())
            trace.append((obs["input_ids"].tolist(), reward))
            if terminated:
                obs, _ = env.reset()
                trace.append(obs["input_ids"].tolist())
        return trace

    assert rollout() == rollout()


@pytest.mark.parametrize(("env_id", "levels"), [(SUITE[0], 4), (SUITE[1], 3), (SUITE[2], 4), (SUITE[3], 3)])
def test_difficulty_knob(env_id, levels):
    sizes = [np.mean([len(r.prompt) for r in gym.make(env_id, difficulty=d, **SMALL).unwrapped.records])
             for d in (1, levels)]  # fmt: skip
    assert sizes[0] != sizes[1]
    with pytest.raises(ValueError, match=f"difficulty must be an int from 1 to {levels}"):
        gym.make(env_id, difficulty=levels + 1)


def test_every_registered_task_is_registered_with_gymnasium():
    assert set(TASKS) == set(text_env.ENV_IDS) and all(env_id in gym.registry for env_id in TASKS)
    assert all(task_for(env_id).verifiable for env_id in SUITE)
    assert task_for("gym/CartPole-v1") is None
