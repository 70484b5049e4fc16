"""The environment contract: spaces, episodes, rewards, masks, rendering and errors."""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest
from conftest import SHORT_PROMPTS, count_a

from text_env import TextGenerationEnv, build_char_tokenizer


def test_spaces_have_the_documented_shapes(char_env):
    L = 16 + 6
    assert char_env.observation_space["input_ids"].shape == (L,)
    assert char_env.observation_space["attention_mask"].shape == (L,)
    assert char_env.observation_space["input_ids"].dtype == np.int64
    assert char_env.action_space.n == len(char_env.tokenizer) == 100


def test_reset_encodes_the_prompt_left_padded(char_env):
    obs, info = char_env.reset(options={"prompt": "abc"})
    ids, mask = obs["input_ids"], obs["attention_mask"]
    assert info["prompt"] == "abc"
    assert mask[:16].tolist() == [0] * 13 + [1, 1, 1]
    assert char_env.tokenizer.decode(ids[13:16].tolist()) == "abc"
    assert mask[16:].sum() == 0
    assert obs in char_env.observation_space


def test_step_appends_the_token_and_pays_only_at_the_end(char_env):
    tok = char_env.tokenizer
    a = tok.convert_tokens_to_ids("a")
    obs, _ = char_env.reset(seed=1)
    rewards = []
    for t in range(6):
        obs, reward, terminated, truncated, info = char_env.step(a)
        assert isinstance(reward, float) and truncated is False
        assert obs["input_ids"][16 + t] == a and obs["attention_mask"][16 + t] == 1
        rewards.append(reward)
        if t < 5:
            assert not terminated and "completion" not in info
    assert terminated and info["completion"] == "aaaaaa"
    assert rewards == [0.0] * 5 + [6.0]


def test_dense_reward_pays_the_change_of_the_score_and_sums_to_it():
    """reward_t = score(completion[:t]) - score(completion[:t-1]): the 'a' written at step t alone earns its point."""

    def last_char_is_a(prompts, completions):  # not additive: the potential rises and falls
        return np.array([float(c.endswith("a")) + c.count("b") for c in completions])

    env = TextGenerationEnv(SHORT_PROMPTS, "char", last_char_is_a, max_prompt_tokens=16, max_new_tokens=5,
                            dense_reward=True)  # fmt: skip
    env.reset(seed=0)
    rewards, infos = [], []
    for char in "xabab":
        _, reward, terminated, _, info = env.step(env.tokenizer.convert_tokens_to_ids(char))
        rewards.append(reward)
        infos.append(info)
    assert rewards == [0.0, 1.0, 0.0, 1.0, 0.0] and terminated  # "x" 0, "xa" 1, "xab" 1, "xaba" 2, "xabab" 2
    assert sum(rewards) == infos[-1]["score"] == last_char_is_a([""], ["xabab"])[0]
    assert "score" not in infos[0]
    env.reset(seed=0)  # the next episode starts from an unpaid score
    _, reward, *_ = env.step(env.tokenizer.convert_tokens_to_ids("a"))
    assert reward == 1.0


def test_dense_reward_state_survives_get_and_set_state():
    env = TextGenerationEnv(SHORT_PROMPTS, "char", count_a, max_prompt_tokens=16, max_new_tokens=4, dense_reward=True)
    env.reset(seed=0)
    env.step(env.tokenizer.convert_tokens_to_ids("a"))
    state = env.get_state()
    clone = TextGenerationEnv(SHORT_PROMPTS, "char", count_a, max_prompt_tokens=16, max_new_tokens=4, dense_reward=True)
    clone.set_state(state)
    _, reward, *_ = clone.step(env.tokenizer.convert_tokens_to_ids("a"))
    assert reward == 1.0  # not 2.0: the first 'a' was paid before the state was saved


def test_dense_reward_with_deferred_scoring_is_an_error():
    with pytest.raises(ValueError, match="pass one of them"):
        TextGenerationEnv(SHORT_PROMPTS, "char", count_a, dense_reward=True, defer_scoring=True)


def test_eos_ends_the_episode_when_stop_on_eos(char_env):
    char_env.reset(seed=0)
    char_env.step(char_env.tokenizer.convert_tokens_to_ids("a"))
    _, reward, terminated, _, info = char_env.step(char_env.tokenizer.eos_token_id)
    assert terminated and info["completion"] == "a" and reward == 1.0 and info["num_new_tokens"] == 2


def test_eos_is_an_ordinary_token_without_stop_on_eos():
    env = TextGenerationEnv(SHORT_PROMPTS, "char", count_a, max_prompt_tokens=16, max_new_tokens=3, stop_on_eos=False)
    env.reset(seed=0)
    _, _, terminated, _, _ = env.step(env.tokenizer.eos_token_id)
    assert not terminated


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_same_seed_gives_the_same_prompts_and_episode(seed):
    def run(seed):
        env = gym.make("text_env/Vowels-v0")
        env.action_space.seed(seed)
        obs, info = env.reset(seed=seed)
        trace = [info["prompt"], obs["input_ids"].tolist()]
        done = False
        while not done:
            obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
            trace.append((obs["input_ids"].tolist(), reward))
            done = terminated or truncated
        prompts = [env.reset()[1]["prompt"] for _ in range(5)]
        return trace, prompts

    assert run(seed) == run(seed)


def test_reset_draws_prompts_from_np_random():
    env = TextGenerationEnv([f"p{i}" for i in range(50)], "char", count_a, max_new_tokens=2)
    env.reset(seed=3)
    drawn = {env.reset()[1]["prompt"] for _ in range(60)}
    assert len(drawn) > 10


def test_episodes_never_exceed_max_new_tokens():
    env = gym.make("text_env/Vowels-v0")
    env.reset(seed=0)
    env.action_space.seed(0)
    for _ in range(20):
        env.reset()
        steps = 0
        while True:
            steps += 1
            *_, terminated, truncated, _ = env.step(env.action_space.sample())
            if terminated or truncated:
                break
        assert 1 <= steps <= env.unwrapped.max_new_tokens


def test_long_prompts_are_left_truncated_with_one_warning():
    env = TextGenerationEnv(["abcdefghij"], "char", count_a, max_prompt_tokens=4, max_new_tokens=2)
    with pytest.warns(UserWarning, match="left truncation"):
        obs, _ = env.reset(seed=0)
    assert env.tokenizer.decode(obs["input_ids"][:4].tolist()) == "ghij"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        env.reset()  # warned once only


def test_long_prompts_are_refused_with_truncation_error():
    env = TextGenerationEnv(["abcdefghij"], "char", count_a, max_prompt_tokens=4, max_new_tokens=2, truncation="error")
    with pytest.raises(ValueError, match="more than max_prompt_tokens=4"):
        env.reset(seed=0)


def test_empty_prompt_uses_bos():
    env = TextGenerationEnv([""], "char", count_a, max_prompt_tokens=4, max_new_tokens=2)
    obs, _ = env.reset(seed=0)
    assert obs["attention_mask"][:4].tolist() == [0, 0, 0, 1]
    assert obs["input_ids"][3] == env.tokenizer.bos_token_id


def test_render_modes(capsys):
    env = TextGenerationEnv(["Hi "], "char", count_a, max_new_tokens=3, render_mode="ansi")
    env.reset(seed=0)
    env.step(env.tokenizer.convert_tokens_to_ids("y"))
    assert env.render() == "Hi y"
    human = TextGenerationEnv(["Hi "], "char", count_a, max_new_tokens=3, render_mode="human")
    human.reset(seed=0)
    human.step(human.tokenizer.convert_tokens_to_ids("o"))
    assert capsys.readouterr().out.strip() == "Hi o"


def test_action_masks_hide_special_tokens_but_eos(char_env):
    mask = char_env.action_masks()
    tok = char_env.tokenizer
    assert mask.dtype == bool and mask.shape == (100,)
    assert mask[tok.eos_token_id] and not mask[tok.pad_token_id] and not mask[tok.bos_token_id]
    assert not mask[tok.unk_token_id]
    assert mask.sum() == 100 - 3


def test_action_masks_with_allowed_tokens_and_padded_vocabulary():
    tok = build_char_tokenizer()
    allowed = tok.convert_tokens_to_ids(["a", "b"])
    env = TextGenerationEnv(SHORT_PROMPTS, tok, count_a, vocab_size=128, allowed_token_ids=allowed)
    mask = env.action_masks()
    assert mask.shape == (128,) and set(np.flatnonzero(mask)) == set(allowed) | {tok.eos_token_id}
    padded = TextGenerationEnv(SHORT_PROMPTS, tok, count_a, vocab_size=128)
    assert not padded.action_masks()[100:].any()


def test_info_carries_prompt_and_completion(char_env):
    _, info = char_env.reset(options={"prompt": "xyz"})
    assert info == {"prompt": "xyz", "reference": None, "meta": {}}
    for _ in range(6):
        _, _, terminated, _, info = char_env.step(char_env.tokenizer.convert_tokens_to_ids("b"))
    assert info["prompt"] == "xyz" and info["completion"] == "bbbbbb"


def test_numpy_scalars_and_zero_d_arrays_are_accepted_as_actions(char_env):
    char_env.reset(seed=0)
    char_env.step(np.int64(40))
    char_env.step(np.array(41))
    char_env.step(np.array([42]))
    assert char_env.completion_ids().tolist() == [40, 41, 42]


# ---------------------------------------------------------------- bad input
def test_no_prompts_is_an_error():
    with pytest.raises(ValueError, match="No prompts"):
        TextGenerationEnv([], "char", count_a)


@pytest.mark.parametrize("action", [100, -1, 10**9])
def test_action_outside_the_vocabulary_is_an_error(char_env, action):
    char_env.reset(seed=0)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        char_env.step(action)


@pytest.mark.parametrize("action", [3.0, "a", None, True, np.float32(2.0)])
def test_action_of_the_wrong_type_is_an_error(char_env, action):
    char_env.reset(seed=0)
    with pytest.raises(TypeError, match="integer token id"):
        char_env.step(action)


def test_step_after_the_end_without_reset_is_an_error(char_env):
    char_env.reset(seed=0)
    char_env.step(char_env.tokenizer.eos_token_id)
    with pytest.raises(RuntimeError, match="after the episode ended"):
        char_env.step(40)


def test_step_before_reset_is_an_error(char_env):
    with pytest.raises(RuntimeError, match="before reset"):
        char_env.step(40)


def test_vocab_smaller_than_the_tokenizer_is_an_error():
    with pytest.raises(ValueError, match="smaller than the tokenizer"):
        TextGenerationEnv(SHORT_PROMPTS, "char", count_a, vocab_size=50)


@pytest.mark.parametrize(
    ("reward_fn", "message"),
    [
        (lambda p, c: [1.0, 2.0], "shape"),
        (lambda p, c: [float("nan")], "non-finite"),
        (lambda p, c: [float("inf")], "non-finite"),
    ],
)
def test_bad_reward_model_output_is_an_error(reward_fn, message):
    env = TextGenerationEnv(SHORT_PROMPTS, "char", reward_fn, max_new_tokens=1)
    env.reset(seed=0)
    with pytest.raises(ValueError, match=message):
        env.step(40)


def test_a_reward_model_that_raises_names_prompt_and_completion():
    def broken(prompts, completions):
        raise KeyError("boom")

    env = TextGenerationEnv(["Hello"], "char", broken, max_new_tokens=1)
    env.reset(seed=0)
    with pytest.raises(RuntimeError, match=r"prompt='Hello', completion='\$'"):
        env.step(env.tokenizer.convert_tokens_to_ids("$"))


def test_a_nan_score_names_prompt_and_completion():
    env = TextGenerationEnv(["Hello"], "char", lambda p, c: [float("nan")], max_new_tokens=1)
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"non-finite scores \[nan\].*prompt='Hello', completion='\$'"):
        env.step(env.tokenizer.convert_tokens_to_ids("$"))


@pytest.mark.parametrize("kwargs", [{"max_new_tokens": 0}, {"max_prompt_tokens": 0}, {"render_mode": "rgb_array"}])
def test_bad_constructor_arguments_are_errors(kwargs):
    with pytest.raises(ValueError):
        TextGenerationEnv(SHORT_PROMPTS, "char", count_a, **kwargs)


def test_bad_tokenizer_objects_and_names_are_errors():
    with pytest.raises(TypeError, match="tokenizer must be"):
        TextGenerationEnv(SHORT_PROMPTS, 42, count_a)
    with pytest.raises(ValueError, match="Unknown tokenizer"):
        TextGenerationEnv(SHORT_PROMPTS, "/no/such/tokenizer-dir", count_a)


def test_a_prompt_that_encodes_to_nothing_without_bos_is_an_error():
    tokenizer = build_char_tokenizer()
    tokenizer.bos_token = None
    env = TextGenerationEnv([""], tokenizer, count_a)
    with pytest.raises(ValueError, match="encodes to no token"):
        env.reset(seed=0)


def test_fresh_copy_is_an_independent_episode_sharing_the_heavy_parts(char_env):
    char_env.reset(seed=0, options={"prompt": "The movie"})
    char_env.step(40)
    clone = char_env.fresh_copy()
    assert clone.tokenizer is char_env.tokenizer and clone.reward_model is char_env.reward_model
    with pytest.raises(RuntimeError, match="before reset"):
        clone.step(41)
    clone.reset(options={"prompt": "Plot:"})
    clone.step(42)
    assert char_env.completion_ids().tolist() == [40] and clone.completion_ids().tolist() == [42]
