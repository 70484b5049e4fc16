"""Property-based tests: arbitrary prompts and action sequences keep the environment's invariants."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from text_env import TextGenerationEnv, build_char_tokenizer

TOKENIZER = build_char_tokenizer()
MAX_PROMPT, MAX_NEW = 12, 6

prompts = st.one_of(
    st.just(""),
    st.text(alphabet=" \t\n", max_size=5),  # whitespace only
    st.text(max_size=40),  # any unicode, emoji included; often longer than MAX_PROMPT tokens
)
actions = st.lists(st.integers(min_value=0, max_value=len(TOKENIZER) - 1), min_size=1, max_size=3 * MAX_NEW)


def finite_length_reward(prompts, completions):
    return np.array([len(c) / 10 for c in completions])


def check_observation(env: TextGenerationEnv, obs: dict) -> None:
    assert obs in env.observation_space
    ids, mask = obs["input_ids"], obs["attention_mask"]
    real = np.flatnonzero(mask)
    assert real.size >= 1 and np.all(np.diff(real) == 1)  # one contiguous run of real tokens
    assert np.all(ids[mask == 0] == env.pad_token_id)  # padding everywhere else


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(prompt=prompts, action_sequence=actions, stop_on_eos=st.booleans())
def test_invariants_hold_for_any_prompt_and_actions(prompt, action_sequence, stop_on_eos):
    env = TextGenerationEnv(
        [prompt], TOKENIZER, finite_length_reward, max_prompt_tokens=MAX_PROMPT, max_new_tokens=MAX_NEW,
        stop_on_eos=stop_on_eos,
    )  # fmt: skip
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the one-time truncation warning
        obs, info = env.reset(seed=0)
    check_observation(env, obs)
    prompt_tokens = int(obs["attention_mask"].sum())
    steps, rewards, ended = 0, [], False
    for action in action_sequence:
        obs, reward, terminated, truncated, info = env.step(action)
        steps += 1
        check_observation(env, obs)
        assert int(obs["attention_mask"].sum()) == prompt_tokens + steps
        assert isinstance(reward, float) and np.isfinite(reward) and truncated is False
        rewards.append(reward)
        if terminated:
            ended = True
            assert "completion" in info
            break
    assert steps <= MAX_NEW
    if ended:
        assert all(r == 0.0 for r in rewards[:-1])
    else:
        assert all(r == 0.0 for r in rewards) and steps < MAX_NEW
    obs, _ = env.reset()  # reset always works afterwards
    check_observation(env, obs)
