"""Multi-turn episodes: the environment's replies join the observation as several tokens at once; the policy's
cache prefills them in one pass, updates score the model's tokens only, and PPO and GRPO train on conversations."""

from __future__ import annotations

import re

import gymnasium as gym
import numpy as np
import pytest
import torch
from conftest import FirstRolloutReward, chat_char_tokenizer, tiny_gpt2_config
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3 import PPO
from stable_baselines3.common.env_checker import check_env as sb3_check_env
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import DummyVecEnv

from agents import CausalLMPolicy, EpisodeRolloutBuffer
from agents.common.callbacks import RolloutHistoryCallback
from agents.registry import make_algorithm
from text_env import MultiTurnEnv, Reply
from text_env.tasks.games import CalculatorResponder, GuessNumberResponder, evaluate_expression

TOLERANCE = dict(atol=1e-5, rtol=1e-5)


def echo_responder(messages, reference):
    """Pays 1 when the model's turn is the letter the environment (or the prompt) said last, then says the next
    letter of the reference; done after the reference's letters."""
    said = messages[-2]["content"][-1]
    turn = sum(m["role"] == "assistant" for m in messages)
    reward = float(messages[-1]["content"] == said)
    if turn >= len(reference):
        return Reply("", reward, True, reward == 1.0)
    return Reply(reference[turn], reward, False, None)


def echo_env(**kwargs):
    """A conversation of single-letter turns: copy the letter the other side said last (random policy: ~1/30)."""
    records = [{"prompt": p, "reference": r} for p, r in (("a", "abc"), ("e", "eio"), ("o", "oua"), ("u", "uae"))]
    kwargs = {"max_prompt_tokens": 4, "max_new_tokens": 16, "max_turns": 3, "max_turn_tokens": 1, **kwargs}
    return MultiTurnEnv(records, "char", echo_responder, reply_format="{text}", **kwargs)


def play(env, turns, stop_token=None):
    """Write each turn's text (then ``stop_token``) until the episode ends; the last step's outputs."""
    ids = env.unwrapped.tokenizer
    out = None
    for text in turns:
        tokens = list(ids(text, add_special_tokens=False)["input_ids"]) + ([stop_token] if stop_token else [])
        for token in tokens:
            out = env.step(token)
            if out[2] or out[3]:
                return out
    return out


# ---------------------------------------------------------------------------- the environment
def test_replies_join_the_observation_and_are_marked_as_the_environments():
    env = echo_env()
    obs, info = env.reset(options={"record": {"prompt": "a", "reference": "abc"}})
    before = int(obs["attention_mask"].sum())
    obs, reward, terminated, truncated, info = play(env, ["a"])
    assert (reward, terminated, truncated, info["reply"], info["turn"]) == (1.0, False, False, "b", 1)
    assert int(obs["attention_mask"].sum()) == before + 2  # the model's token and the reply's
    assert env.environment_token_mask()[:3].tolist() == [False, True, False]
    obs, reward, terminated, truncated, info = play(env, ["x"])  # wrong: the env said "b"
    assert reward == 0.0 and info["reply"] == "c"
    obs, reward, terminated, truncated, info = play(env, ["c"])
    assert terminated and not truncated and reward == 1.0 and info["score"] == 2.0
    assert info["success"] is True and info["completion"] == "a\nx\nc"
    assert [m["role"] for m in info["transcript"]] == ["user", "assistant", "user", "assistant", "user", "assistant"]


def test_a_limit_that_cuts_a_game_truncates_it():
    env = echo_env(max_turns=2)  # the reference has three letters: the game could go on
    env.reset(options={"record": {"prompt": "a", "reference": "abc"}})
    *_, terminated, truncated, info = play(env, ["a", "b"])
    assert truncated and not terminated and info["turn"] == 2
    room = echo_env(max_new_tokens=3)  # a reply and a next turn no longer fit
    room.reset(options={"record": {"prompt": "a", "reference": "abc"}})
    *_, terminated, truncated, info = play(room, ["a", "b"])
    assert truncated and not terminated


def test_the_chat_template_renders_the_whole_conversation():
    tokenizer = chat_char_tokenizer()
    eot = tokenizer.convert_tokens_to_ids("<eot>")
    env = MultiTurnEnv(
        [{"prompt": "hi", "reference": "ab"}], tokenizer, echo_responder, chat_template=True, max_prompt_tokens=32,
        max_new_tokens=64, max_turns=2, max_turn_tokens=4,
    )  # fmt: skip
    env.reset(seed=0)
    obs, *_, info = play(env, ["i"], stop_token=eot)
    shown = tokenizer.decode(obs["input_ids"][obs["attention_mask"].astype(bool)])
    expected = tokenizer.apply_chat_template(
        [*env.transcript()], add_generation_prompt=True, tokenize=False
    )  # the model's turn, closed as the template closes it, the reply, and the next assistant header
    assert shown == expected, (shown, expected)


def test_checkers_state_and_bad_inputs():
    env = echo_env()
    gym_check_env(env, skip_render_check=True)
    sb3_check_env(echo_env(), warn=False)
    env.reset(options={"record": {"prompt": "a", "reference": "abc"}})
    play(env, ["a"])
    copy = echo_env()
    copy.set_state(env.get_state())
    assert play(copy, ["b", "c"])[4]["transcript"] == play(env, ["b", "c"])[4]["transcript"]
    with pytest.raises(TypeError, match="no reward_model"):
        MultiTurnEnv(["a"], "char", echo_responder, reward_model=lambda p, c: [0.0])
    with pytest.raises(ValueError, match="max_turns must be >= 1"):
        echo_env(max_turns=0)
    broken = MultiTurnEnv(["a"], "char", lambda messages, reference: 1 / 0, max_turn_tokens=1)
    broken.reset(seed=0)
    with pytest.raises(RuntimeError, match="responder .* raised ZeroDivisionError"):
        broken.step(5)
    for answer, error, words in (((3, 0.0, False), TypeError, "text must be a string"),
                                 (("x", float("nan"), False), ValueError, "must be a finite number")):  # fmt: skip
        bad = MultiTurnEnv(["a"], "char", lambda messages, reference, answer=answer: answer, max_turn_tokens=1)
        bad.reset(seed=0)
        with pytest.raises(error, match=words):
            bad.step(5)
    finished = echo_env(max_turns=1)
    finished.reset(seed=0)
    finished.step(5)
    with pytest.raises(RuntimeError, match="after the episode ended: call env.reset"):
        finished.step(5)


def ask(*turns):
    """A conversation whose assistant turns are ``turns``, the last one last."""
    messages = [{"role": "user", "content": "?"}]
    for turn in turns:
        messages += [{"role": "assistant", "content": turn}, {"role": "user", "content": "..."}]
    return messages[:-1]


def test_the_games_answer_as_documented():
    guess = GuessNumberResponder()

    assert guess(ask("8"), 5) == Reply("Lower.", success=False)
    assert guess(ask("2"), 5).text == "Higher." and guess(ask("x"), 5).text == "Please answer with one number."
    assert guess(ask("8", "4", "5"), 5) == Reply("Correct!", 0.8, True, True)  # third guess: 1 - 0.1 * 2
    tool = CalculatorResponder()
    assert tool(ask("CALC: 12 * (3 + 4)"), 0) == Reply("= 84", 0.2, False, False)  # a first valid call pays
    assert tool(ask("CALC: 1+1", "CALC: 2*3"), 0).reward == 0.0 and tool(ask("CALC: (1+"), 0).reward == 0.0
    assert tool(ask("ANSWER: 1,234"), 1234) == Reply("Right.", 1.0, True, True)
    assert tool(ask("ANSWER: 7"), 1234).reward == 0.0 and tool(ask("hmm"), 1).text.startswith("Write CALC")
    assert evaluate_expression("__import__('os')") is None and evaluate_expression("2**100") is None


def test_calculator_v1_pays_the_tool_reward_only_for_computing_the_product():
    """Calculator-v0's bonus was gamed by calling the prompt's example; v1 pays it for the call that helps, once."""
    tool = CalculatorResponder(bonus_for_the_product=True)
    product = 123 * 45
    assert tool(ask("CALC: 12 * 34"), product) == Reply("= 408", 0.0, False, False)  # valid, but not the product
    assert tool(ask("CALC: 123 * 45"), product) == Reply(f"= {product}", 0.2, False, False)
    assert tool(ask("CALC: 12 * 34", "CALC: 45*123"), product).reward == 0.2  # the first call of the product
    assert tool(ask("CALC: 123*45", "CALC: 123 * 45"), product).reward == 0.0  # paid once
    assert tool(ask("CALC: 123*45", f"ANSWER: {product}"), product) == Reply("Right.", 1.0, True, True)
    from text_env.tasks.games import calculator_generator

    rng = np.random.default_rng(0)
    for _ in range(20):  # nothing to copy: the only numbers in the prompt are the two factors
        record = calculator_generator(worked_example=False)(rng)
        numbers = {int(n) for n in re.findall(r"\d+", record.prompt)}
        a, b = record.meta["a"], record.meta["b"]
        assert numbers == {a, b} and record.reference == a * b


@pytest.mark.parametrize("env_id", ["text_env/GuessNumber-v0", "text_env/Calculator-v0", "text_env/Calculator-v1"])
def test_registered_multi_turn_tasks_have_held_out_instances(env_id):
    env = gym.make(env_id).unwrapped
    assert isinstance(env, MultiTurnEnv) and env.chat_template
    assert not {r.prompt for r in env.records} & {r.prompt for r in env.eval_records}


# ---------------------------------------------------------------------------- policy, cache and updates
def scripted_conversations(n_envs=3, steps=30, seed=0):
    """Observations and actions of random conversations, and how many episodes started in the observations."""
    envs = DummyVecEnv([echo_env] * n_envs)
    envs.seed(seed)
    rng = np.random.default_rng(seed)
    obs = envs.reset()
    observations, actions, starts = [], [], n_envs
    for step in range(steps):
        action = rng.choice([4, 5, 6, 7], size=n_envs)  # a few letters: some turns right, some wrong
        observations.append({k: v.copy() for k, v in obs.items()})
        actions.append(action)
        obs, _, dones, _ = envs.step(action)
        starts += int(dones.sum()) if step < steps - 1 else 0
    return envs, observations, actions, starts


def replies_in(observations):
    """Environment tokens seen: each step's growth of an observation beyond the model's one token."""
    lengths = np.stack([o["attention_mask"].sum(1) for o in observations])  # (S, E)
    growth = np.diff(lengths, axis=0)  # (S-1, E); negative at a reset
    return int(np.clip(growth - 1, 0, None).sum())


def test_cached_rollouts_prefill_replies_and_match_full_recomputation():
    envs, observations, actions, starts = scripted_conversations()
    kwargs = dict(model=tiny_gpt2_config())
    fast = PPO(CausalLMPolicy, envs, policy_kwargs=kwargs, seed=0).policy
    naive = PPO(CausalLMPolicy, envs, policy_kwargs=dict(kwargs, kv_cache=False, share_prefixes=False), seed=0).policy
    naive.load_state_dict(fast.state_dict())
    fast.set_training_mode(False)
    with torch.no_grad():
        for obs in observations:
            obs_t = {k: torch.as_tensor(v) for k, v in obs.items()}
            torch.testing.assert_close(fast.cached_outputs(obs_t, fast.rollout_caches)[0],
                                       naive.cached_outputs(obs_t, naive.rollout_caches)[0], **TOLERANCE)  # fmt: skip
    cache = fast.rollout_caches.policy
    assert replies_in(observations) > 0
    assert cache.extended_tokens == cache.extended_rows + replies_in(observations)  # replies prefilled in one pass
    assert cache.reencoded_rows == starts  # a new episode only: no reply made a row start over


def test_updates_score_the_models_tokens_only_in_one_forward_per_episode():
    envs, observations, actions, _ = scripted_conversations(steps=24, seed=1)
    kwargs = dict(model=tiny_gpt2_config())
    fast = PPO(CausalLMPolicy, envs, policy_kwargs=kwargs, seed=0).policy
    naive = PPO(CausalLMPolicy, envs, policy_kwargs=dict(kwargs, kv_cache=False, share_prefixes=False), seed=0).policy
    naive.load_state_dict(fast.state_dict())
    obs = {k: torch.as_tensor(np.concatenate([o[k] for o in observations])) for k in observations[0]}  # (N, L)
    act = torch.as_tensor(np.concatenate(actions))  # (N,) the model's tokens: one transition each
    _, fast_logp, _ = fast.evaluate_actions(obs, act)
    _, naive_logp, _ = naive.evaluate_actions(obs, act)
    torch.testing.assert_close(fast_logp, naive_logp, **TOLERANCE)
    # The loss is a sum over transitions, whose actions are the model's tokens: an environment token is never an
    # action, so no log-probability of one is in the loss. Its gradient flows to the model only as context.
    assert replies_in(observations) > 0 and len(act) == 24 * 3


def test_ppo_on_conversations_keeps_whole_episodes_and_learns_to_answer():
    """A learning test: copy the other side's last letter (3 turns, 1 a turn). Measured 2026-12-03: 0.05 in the
    first rollout, 2.15 after 12,288 steps."""
    envs = make_vec_env(echo_env, n_envs=8, seed=0)
    model = PPO(
        CausalLMPolicy, envs, policy_kwargs=dict(model=tiny_gpt2_config()), n_steps=32, batch_size=64, n_epochs=4,
        learning_rate=3e-3, gae_lambda=1.0, rollout_buffer_class=EpisodeRolloutBuffer, seed=0,
    )  # fmt: skip
    first = FirstRolloutReward()
    model.learn(12_288, callback=first)
    final = float(np.mean([info["r"] for info in model.ep_info_buffer]))
    assert first.initial is not None and first.initial < 0.5 and final >= 1.5, (first.initial, final)  # of 3


def test_grpo_groups_are_conversations_from_the_same_prompt():
    model = make_algorithm(
        "grpo", DummyVecEnv([echo_env] * 4), policy_kwargs=dict(model=tiny_gpt2_config()), seed=0, group_size=2,
        n_steps=16, batch_size=16,
    )  # fmt: skip
    history = RolloutHistoryCallback()
    model.learn(64 * 2, callback=history)
    buffer = model.rollout_buffer
    first_tokens = buffer.observations["input_ids"][0]  # (E, L) the prompts of the last round's first step
    assert (first_tokens[0] == first_tokens[1]).all() and (first_tokens[2] == first_tokens[3]).all()
    assert buffer.completion_lengths().max() <= 3  # three model turns of one token: replies are not actions


def test_maskable_ppo_trains_on_conversations_within_the_action_masks():
    model = make_algorithm(
        "maskable_ppo", make_vec_env(echo_env, n_envs=2, seed=0), policy_kwargs=dict(model=tiny_gpt2_config()),
        seed=0, n_steps=12, batch_size=12,
    )  # fmt: skip
    before = {n: p.detach().clone() for n, p in model.policy.named_parameters()}
    model.learn(48)
    assert any(not torch.equal(p, before[n]) for n, p in model.policy.named_parameters())
    buffer = model.rollout_buffer
    actions = buffer.actions.reshape(-1).astype(int)
    masks = buffer.action_masks.reshape(len(actions), -1)
    assert masks[range(len(actions)), actions].all()
