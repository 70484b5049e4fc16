"""Prompt records with references, reward models that take them, and chat formatting (issue 21, items 1, 2, 8)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import chat_char_tokenizer

from text_env import PromptRecord, TextGenerationEnv, load_records
from text_env.rewards import RewardModel
from text_env.tokenizers import end_of_turn_token_id

RECORDS = [
    {"prompt": "2+2=", "reference": "4", "meta": {"level": 1}},
    {"prompt": "3+4=", "reference": "7"},
    "no reference",
]


def exact(prompts, completions, references):
    """A TRL-style three-argument reward: 1.0 when the completion equals the reference."""
    return np.array([float(c == r) for c, r in zip(completions, references, strict=True)])


def write(env: TextGenerationEnv, text: str, stop: int | None = None):
    """Step the characters of ``text`` (then ``stop``, if given); the last step's return."""
    ids = env.tokenizer(text, add_special_tokens=False)["input_ids"] + ([stop] if stop is not None else [])
    for token in ids:
        result = env.step(token)
        if result[2]:
            return result
    return result


# ---------------------------------------------------------------------------------------------------- records
def test_records_from_strings_dicts_jsonl_and_generators(tmp_path):
    path = tmp_path / "tasks.jsonl"
    path.write_text("\n".join(json.dumps(r) if isinstance(r, dict) else json.dumps({"prompt": r}) for r in RECORDS))
    for source in (RECORDS, path, (r for r in RECORDS)):
        records = load_records(source)
        assert [r.prompt for r in records] == ["2+2=", "3+4=", "no reference"]
        assert [r.reference for r in records] == ["4", "7", None]
        assert records[0].meta == {"level": 1} and records[1].meta == {}
        assert not records[2].has_reference


@pytest.mark.parametrize(
    ("record", "error", "words"),
    [
        ({"reference": "4"}, ValueError, "no 'prompt' field"),
        ({"prompt": 4}, TypeError, "must be a string"),
        ({"prompt": "x", "meta": [1]}, TypeError, "'meta' field must be a mapping"),
    ],
)
def test_bad_records_are_named(record, error, words):
    with pytest.raises(error, match=None) as caught:
        load_records([record])
    assert words in str(caught.value)


def test_other_fields_of_a_record_join_its_meta():
    (record,) = load_records([{"prompt": "x", "id": 7, "meta": {"level": 2}}])
    assert record.meta == {"id": 7, "level": 2} and record.reference is None


def test_env_keeps_the_record_of_its_episode_in_info():
    env = TextGenerationEnv(RECORDS[:2], "char", exact, max_new_tokens=2, max_prompt_tokens=8)
    _, info = env.reset(options={"prompt_index": 1})
    assert (info["prompt"], info["reference"], info["meta"]) == ("3+4=", "7", {})
    _, reward, terminated, _, info = write(env, "7", env.eos_token_id)
    assert terminated and reward == 1.0 and info["reference"] == "7" and info["score"] == 1.0
    _, info = env.reset(options={"record": PromptRecord("9+0=", "9", {"k": 2})})
    assert (info["reference"], info["meta"]) == ("9", {"k": 2})
    assert env.step(env.tokenizer("8", add_special_tokens=False)["input_ids"][0])[4]["reference"] == "9"


def test_two_argument_rewards_and_callables_keep_working():
    class Length(RewardModel):
        def score(self, prompts, completions):
            return np.array([len(c) for c in completions], dtype=float)

    for reward in (Length(), lambda prompts, completions: [len(c) for c in completions]):
        env = TextGenerationEnv(RECORDS, "char", reward, max_new_tokens=3, max_prompt_tokens=16)
        env.reset(seed=0)
        assert write(env, "abc")[1] == 3.0  # the record's reference is there, and not passed


def test_reward_models_that_take_references_get_them():
    class Exact(RewardModel):
        uses_references = True

        def score(self, prompts, completions, references=None):
            return exact(prompts, completions, references)

        def success(self, prompts, completions, references):
            return exact(prompts, completions, references) == 1.0

    for reward, has_success in ((Exact(), True), (exact, False)):
        env = TextGenerationEnv(RECORDS[:1], "char", reward, max_new_tokens=1, max_prompt_tokens=8)
        env.reset(seed=0)
        _, r, _, _, info = write(env, "4")
        assert r == 1.0 and info.get("success", None) is (True if has_success else None)
        env.reset(seed=0)
        assert write(env, "5")[1] == 0.0


def test_a_reward_that_needs_references_names_the_prompt_without_one():
    env = TextGenerationEnv(["no reference"], "char", exact, max_new_tokens=1, max_prompt_tokens=16)
    env.reset(seed=0)
    with pytest.raises(ValueError, match="prompt 'no reference' has none"):
        env.step(5)


def test_dense_reward_pays_reference_scores_token_by_token():
    def prefix(prompts, completions, references):
        return [sum(a == b for a, b in zip(c, r, strict=False)) for c, r in zip(completions, references, strict=True)]

    env = TextGenerationEnv([{"prompt": "p", "reference": "abc"}], "char", prefix, max_new_tokens=3, dense_reward=True)
    env.reset(seed=0)
    rewards = [env.step(t)[1] for t in env.tokenizer("abx", add_special_tokens=False)["input_ids"]]
    assert rewards == [1.0, 1.0, 0.0]


def test_checkpoint_state_round_trips_the_record_and_refuses_non_json_references():
    env = TextGenerationEnv(RECORDS[:1], "char", exact, max_new_tokens=2, max_prompt_tokens=8)
    env.reset(seed=0)
    state = env.get_state()
    other = TextGenerationEnv(["x"], "char", exact, max_new_tokens=2, max_prompt_tokens=8)
    other.set_state(state)
    assert other.record == env.record and other.record.meta == {"level": 1}
    env.reset(options={"record": {"prompt": "p", "reference": {1, 2}}})
    with pytest.raises(TypeError, match="reference or meta of prompt 'p' is not JSON-serialisable"):
        env.get_state()


# ---------------------------------------------------------------------------------------------------- chat
def test_chat_template_formats_the_prompt_and_its_end_of_turn_ends_the_episode():
    tokenizer = chat_char_tokenizer()
    eot = end_of_turn_token_id(tokenizer)
    assert eot == tokenizer.convert_tokens_to_ids("<eot>") != tokenizer.eos_token_id
    env = TextGenerationEnv(["hi"], tokenizer, exact, chat_template=True, max_new_tokens=8, max_prompt_tokens=32)
    assert env.stop_token_ids == {eot, tokenizer.eos_token_id}
    assert env.action_masks()[eot]  # the end-of-turn token may be written
    obs, _ = env.reset(options={"record": {"prompt": "hi", "reference": "yo"}})
    seen = tokenizer.decode(obs["input_ids"][obs["attention_mask"] == 1])
    assert seen == "<bos>user: hi<eot>\n<bos>assistant: "
    _, reward, terminated, _, info = write(env, "yo", eot)
    assert terminated and info["num_new_tokens"] == 3
    assert info["completion"] == "yo" and reward == 1.0  # the assistant's text only


def test_system_prompt_and_a_template_closed_by_eos():
    tokenizer = chat_char_tokenizer(end_of_turn=None)
    assert end_of_turn_token_id(tokenizer) == tokenizer.eos_token_id
    env = TextGenerationEnv(
        ["hi"], tokenizer, exact, chat_template=True, system_prompt="Be brief.", max_prompt_tokens=48
    )
    assert env.format_prompt("hi").startswith("<bos>system: Be brief.<eos>\n<bos>user: hi")


def test_chat_template_errors():
    with pytest.raises(ValueError, match="has no chat template"):
        TextGenerationEnv(["hi"], "char", exact, chat_template=True)
    with pytest.raises(ValueError, match="pass chat_template=True"):
        TextGenerationEnv(["hi"], "char", exact, system_prompt="x")
