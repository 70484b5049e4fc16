"""The reasoning-gym bridge (text_env/tasks/reasoning_gym.py): records, the dataset's own scoring through the env,
splits, determinism, the registered ids, clear errors, pickling and checkpoints. Skipped without the extra."""

from __future__ import annotations

import json
import pickle
import warnings

import cloudpickle
import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env

pytest.importorskip("reasoning_gym")

from text_env.tasks import reasoning_gym as rg  # noqa: E402
from text_env.tasks.reasoning_gym import (  # noqa: E402
    CONVENIENCE_IDS,
    LINE_INSTRUCTION,
    TAGS_INSTRUCTION,
    ReasoningGymReward,
    extract_reasoning_gym_answer,
    make_reasoning_gym_env,
)

#: Sums and differences of two numbers from 0 to 10: 242 instances, fast to generate.
TINY = dict(min_terms=2, max_terms=2, max_digits=1, operators=("+", "-"), allow_parentheses=False, allow_negation=False)


def char_env(dataset: str = "basic_arithmetic", **kwargs):
    kwargs = {"size": 30, "eval_size": 10, "max_prompt_tokens": 128, "max_new_tokens": 40, **kwargs}
    config = TINY if dataset == "basic_arithmetic" else {}
    return make_reasoning_gym_env(dataset, tokenizer="char", chat_template=False, **{**config, **kwargs})


def write(env, text: str, index: int = 0, stop: bool = True):
    """Reset on prompt ``index`` and write ``text`` (then EOS): the last step's reward and info."""
    env.reset(options={"prompt_index": index})
    ids = env.tokenizer.encode(text, add_special_tokens=False)
    stop_id = next(iter(env.stop_token_ids))
    reward, info = 0.0, {}
    for token in [*ids, stop_id] if stop else ids:
        _, reward, terminated, _, info = env.step(token)
        if terminated:
            break
    assert terminated
    return reward, info


def test_records_hold_the_question_the_entry_and_where_it_came_from():
    env = char_env()
    assert len(env.records) == 30 and len(env.eval_records) == 10
    for record in env.records:
        entry = record.reference
        assert set(entry) == {"question", "answer", "metadata"}
        assert record.prompt == f"{entry['question']} {LINE_INSTRUCTION}"
        assert json.loads(json.dumps(entry)) == entry  # what a checkpoint stores is what the reward scores
        assert record.meta["dataset"] == "basic_arithmetic" and record.meta["seed"] == 0
        regenerated = rg.create_dataset("basic_arithmetic", TINY, seed=0, size=1000)[record.meta["index"]]
        assert rg.json_entry(regenerated) == entry
    assert {record.meta["seed"] for record in env.eval_records} == {rg.EVAL_SEED_OFFSET}
    assert len(set(env.prompts)) == len(env.prompts)


def test_a_right_answer_scores_one_and_succeeds_through_step():
    env = char_env()
    answer = env.records[0].reference["answer"]
    for text in (answer, f"The answer is {answer}.", f"**{answer}**\nsince ...", f"I think <answer>{answer}</answer>"):
        reward, info = write(env, text)
        assert reward == 1.0 and info["success"] is True, text
        assert info["reference"] == env.records[0].reference and info["meta"]["index"] == env.records[0].meta["index"]


def test_wrong_and_empty_answers_score_as_score_answer_says_without_crashing():
    env = char_env()
    entry = env.records[0].reference
    scorer = rg.create_dataset("basic_arithmetic", TINY, seed=0, size=1)
    wrong = str(int(entry["answer"]) + 1)
    reward, info = write(env, wrong)
    assert reward == scorer.score_answer(wrong, entry) == 0.0 and info["success"] is False
    reward, info = write(env, f"{entry['answer']} apples")  # partial credit: the answer inside a longer one
    assert reward == pytest.approx(scorer.score_answer(f"{entry['answer']} apples", entry)) and 0 < reward < 1
    assert info["success"] is False
    for text in ("", "   \n", "<answer></answer>", "((((", "\x7f"):
        reward, info = write(env, text)
        assert reward == 0.0 and info["success"] is False


def test_spell_backward_keeps_its_per_letter_partial_credit():
    env = make_reasoning_gym_env(
        "spell_backward", size=5, eval_size=2, tokenizer="char", chat_template=False, max_new_tokens=12,
        min_word_len=3, max_word_len=3, max_prompt_tokens=128,
    )  # fmt: skip
    target = env.records[0].reference["answer"]
    reward, _ = write(env, target[:2] + "#")
    assert reward == pytest.approx(2 / 3)
    assert write(env, target.upper())[0] == 1.0  # its score_answer ignores case


def test_multiline_answers_ask_for_tags_and_are_read_from_them():
    instances = rg.draw_instances("rotate_matrix", {"min_n": 2, "max_n": 2}, "train", 2, 0)
    assert rg.default_instruction(instances) == TAGS_INSTRUCTION
    records = rg.to_records("rotate_matrix", instances, rg.default_instruction(instances))
    assert records[0].prompt.endswith("\n\n" + TAGS_INSTRUCTION)
    reward = ReasoningGymReward("rotate_matrix", {"min_n": 2, "max_n": 2})
    entry = records[0].reference
    assert "\n" in entry["answer"]
    completion = f"Rotating gives\n<answer>\n{entry['answer']}\n</answer>"
    assert reward([records[0].prompt], [completion], [entry])[0] == 1.0
    assert reward([records[0].prompt], [entry["answer"]], [entry])[0] < 1.0  # the first line alone


def test_answer_extraction():
    assert extract_reasoning_gym_answer("**7**.") == ["7", "**7**."]
    assert extract_reasoning_gym_answer("The answer is -4.\nBecause 1 - 5 = -4") == ["-4", "The answer is -4."]
    assert extract_reasoning_gym_answer("a <answer>1</answer> b <answer> 2 </answer>") == ["2"]
    assert extract_reasoning_gym_answer("\n\n  \n") == [] and extract_reasoning_gym_answer("") == []
    assert extract_reasoning_gym_answer("yes.") == ["yes", "yes."]  # an answer that ends in '.' keeps a reading


def test_train_and_held_out_are_disjoint_and_the_test_split_is_the_held_out_one():
    env = char_env(size=100, eval_size=40)
    train = {r.reference["question"] for r in env.records}
    held_out = {r.reference["question"] for r in env.eval_records}
    assert len(train) == 100 and len(held_out) == 40 and not train & held_out
    test_env = char_env(split="test", size=100, eval_size=40)
    assert test_env.prompts == env.eval_prompts and test_env.eval_records is None
    small = char_env(size=1000, eval_size=1000)  # the instance space holds fewer: all there are, still disjoint
    assert 150 < len(small.records) < 242 and 20 < len(small.eval_records) < 92
    assert len(small.records) + len(small.eval_records) <= 242
    assert not set(small.prompts) & set(small.eval_prompts)


def test_same_seed_same_instances_and_episodes():
    first, second, other = char_env(seed=3), char_env(seed=3), char_env(seed=4)
    assert [r.to_dict() for r in first.records] == [r.to_dict() for r in second.records]
    assert [r.to_dict() for r in first.eval_records] == [r.to_dict() for r in second.eval_records]
    assert first.prompts != other.prompts
    for env in (first, second):
        env.reset(seed=11)
    assert [first.reset()[1]["prompt"] for _ in range(5)] == [second.reset()[1]["prompt"] for _ in range(5)]


@pytest.mark.parametrize("env_id", sorted(CONVENIENCE_IDS))
def test_registered_ids_pass_the_env_checkers(env_id):
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    env = gym.make(env_id, size=20, eval_size=8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a checker warning is a failure
        gym_check_env(env.unwrapped, skip_render_check=True)
        sb3_check_env(env, warn=True)
    assert env.unwrapped.chat_template  # SmolLM2's tokenizer: its chat template by default
    base = env.unwrapped
    assert max(len(base._encode_prompt(p)) for p in base.prompts + base.eval_prompts) <= base.max_prompt_tokens


def test_the_generic_id_takes_any_dataset_and_its_config():
    env = gym.make(
        "text_env/ReasoningGym-v0", dataset="letter_counting", size=10, eval_size=4, min_words=1, max_words=2
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gym_check_env(env.unwrapped, skip_render_check=True)
    assert env.unwrapped.reward_model.config == {"min_words": 1, "max_words": 2}
    assert all(len(r.reference["metadata"]["span"]) <= 2 for r in env.unwrapped.records)


def test_a_right_answer_through_smollm2_chat_template_and_end_of_turn():
    env = gym.make("text_env/ReasoningGym-BasicArithmetic-v0", size=10, eval_size=4).unwrapped
    env.reset(options={"prompt_index": 0})
    assert env.format_prompt(env.prompts[0]).endswith("<|im_start|>assistant\n")
    answer = env.records[0].reference["answer"]
    ids = env.tokenizer.encode(answer, add_special_tokens=False) + env.tokenizer.encode("<|im_end|>")
    for token in ids:
        _, reward, terminated, _, info = env.step(token)
    assert terminated and info["completion"] == answer and reward == 1.0 and info["success"] is True


def test_env_keywords_reach_the_env_and_the_rest_the_dataset_config():
    env = char_env(dense_reward=True, min_digits=1)
    assert env.dense_reward and env.reward_model.config == {**TINY, "min_digits": 1}
    env = char_env(instruction="")
    assert env.prompts[0] == env.records[0].reference["question"]


def test_clear_errors(monkeypatch):
    with pytest.raises(ValueError, match=r"did you mean 'basic_arithmetic'.*dataset_names\(\)"):
        char_env("basic_arithmetc")
    with pytest.raises(
        ValueError, match=r"no config field 'max_term' \(did you mean 'max_terms'.*its fields are \['min_terms'"
    ):
        make_reasoning_gym_env("basic_arithmetic", tokenizer="char", chat_template=False, max_term=2)
    with pytest.raises(ValueError, match="Invalid config.*max_terms must be >= min_terms"):
        char_env(min_terms=3)
    with pytest.raises(TypeError, match="needs a dataset"):
        gym.make("text_env/ReasoningGym-v0")
    with pytest.raises(ValueError, match="generates its prompts"):
        char_env(prompts=["hi"])
    with pytest.raises(ValueError, match="through JSON"):  # arc_agi compares tuple grids a checkpoint cannot keep
        rg.draw_instances("arc_agi", {}, "train", 1, 0)
    with pytest.raises(TypeError, match="reasoning-gym entry"):
        ReasoningGymReward("basic_arithmetic")(["p"], ["1"], ["1"])
    monkeypatch.setitem(__import__("sys").modules, "reasoning_gym", None)
    with pytest.raises(ModuleNotFoundError, match=r"pip install 'text-env-rl\[reasoning\]'"):
        char_env()


def test_the_reward_survives_pickling():
    env = char_env()
    reward = env.reward_model
    entry, answer = env.records[0].reference, env.records[0].reference["answer"]
    before = reward(["p", "p"], [answer, "nope"], [entry, entry])  # builds its scorer
    for dumps, loads in ((cloudpickle.dumps, cloudpickle.loads), (pickle.dumps, pickle.loads)):
        copy = loads(dumps(reward))
        assert copy._scorer is None and repr(copy) == repr(reward)
        np.testing.assert_array_equal(copy(["p", "p"], [answer, "nope"], [entry, entry]), before)
    assert before.tolist() == [1.0, 0.0]


def test_checkpoint_state_round_trip():
    env = char_env()
    env.reset(options={"prompt_index": 2})
    answer = env.records[2].reference["answer"]
    ids = env.tokenizer.encode(answer, add_special_tokens=False)
    env.step(ids[0])
    state = json.loads(json.dumps({**env.get_state(), "input_ids": None, "attention_mask": None}))  # JSON-able
    state.update(input_ids=env.get_state()["input_ids"], attention_mask=env.get_state()["attention_mask"])
    resumed = char_env()
    resumed.set_state(state)
    assert resumed.record == env.record and resumed.record.reference == env.records[2].reference
    for token in [*ids[1:], next(iter(env.stop_token_ids))]:
        _, reward, terminated, _, info = resumed.step(token)
    assert terminated and reward == 1.0 and info["success"] is True


def test_prompts_longer_than_max_prompt_tokens_are_announced_with_the_fix():
    with pytest.warns(UserWarning, match=r"of 40 prompts have more than max_prompt_tokens=20 .*max_prompt_tokens=\d+"):
        char_env(max_prompt_tokens=20)
