"""The GRPO family of 2025: GSPO, CISPO, DAPO (dynamic sampling), REINFORCE++, RAFT and A*-PO. Each formula on
hand-made numbers or a closed form, dynamic sampling on a task where most groups carry no signal, and each entry
learning the tiny task."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import tiny_gpt2_config
from stable_baselines3.common.env_util import make_vec_env

from agents import GRPO, CausalLMPolicy
from agents.cli.config import TrainConfig
from agents.common.callbacks import RolloutHistoryCallback
from agents.common.kl import KLSettings
from agents.grpo.buffers import GroupRolloutBuffer
from agents.grpo.objective import group_advantages, optimal_advantages, policy_loss, reinforce_pp_advantages
from agents.registry import ALGORITHMS, make_algorithm
from text_env import TextGenerationEnv

NEW_ENTRIES = ("dapo", "gspo", "cispo", "reinforce_pp", "reinforce_pp_baseline", "raft", "apo")


# ---------------------------------------------------------------------------- the formulas, by hand
def test_gspo_clips_the_sequence_ratio_and_every_token_carries_its_sequences_loss():
    log_prob = torch.tensor([0.1, -0.3, 0.5], dtype=torch.float64, requires_grad=True)
    old = torch.zeros(3, dtype=torch.float64)
    completion = torch.tensor([0, 0, 1])
    advantages = torch.tensor([1.0, 1.0, -1.0], dtype=torch.float64)
    loss, clipped = policy_loss("gspo", log_prob, old, advantages, completion, 2, 0.2, 0.2)
    s0, s1 = math.exp(-0.1), math.exp(0.5)  # exp of the mean log-ratio of each sequence
    torch.testing.assert_close(loss.detach(), torch.tensor([-s0, -s0, s1], dtype=torch.float64))
    assert clipped.tolist() == [False, False, True]  # s1 = 1.65 > 1.2, and min() keeps the unclipped -s1
    loss[0].backward()  # d(-s0)/d log_prob_t = -s0 / 2 for each token of sequence 0, 0 elsewhere
    torch.testing.assert_close(log_prob.grad, torch.tensor([-s0 / 2, -s0 / 2, 0.0], dtype=torch.float64))


def test_cispo_keeps_the_gradient_of_a_token_whose_ratio_is_clipped():
    log_prob = torch.tensor([math.log(3.0), math.log(0.5)], dtype=torch.float64, requires_grad=True)
    old = torch.zeros(2, dtype=torch.float64)
    advantages = torch.tensor([1.0, 2.0], dtype=torch.float64)
    loss, clipped = policy_loss("cispo", log_prob, old, advantages, torch.tensor([0, 1]), 2, 0.2, 1.0)
    loss.sum().backward()  # weights min(3, 2) = 2 and min(0.5, 2) = 0.5, detached: gradient -w * A
    torch.testing.assert_close(log_prob.grad, torch.tensor([-2.0, -1.0], dtype=torch.float64))
    assert clipped.tolist() == [True, False]
    ppo_log_prob = log_prob.detach().clone().requires_grad_(True)
    ppo_loss, _ = policy_loss("clip", ppo_log_prob, old, advantages, torch.tensor([0, 1]), 2, 0.2, 1.0)
    ppo_loss[0].backward()  # PPO's clip: the same token (ratio 3 > 2, A > 0) gets no gradient
    assert ppo_log_prob.grad[0] == 0


def test_nll_is_the_language_model_loss_weighted_by_the_advantage():
    log_prob = torch.tensor([-0.5, -2.0])
    loss, _ = policy_loss("nll", log_prob, torch.zeros(2), torch.tensor([1.0, 0.0]), torch.tensor([0, 1]), 2, 0.2, 0.2)
    torch.testing.assert_close(loss, torch.tensor([0.5, 0.0]))


def test_raft_chooses_the_best_completion_of_each_group_with_a_signal():
    rewards = np.array([[1.0, 3.0, 3.0, 0.0], [2.0, 2.0, 2.0, 2.0], [-1.0, -3.0, -2.0, -4.0]])
    expected = [[0, 1, 0, 0], [0, 0, 0, 0], [1, 0, 0, 0]]  # ties: the first; all equal: none
    np.testing.assert_array_equal(group_advantages(rewards, "raft"), expected)


def test_reinforce_pp_advantages_are_whitened_returns_to_go_with_the_kl_per_token():
    # One round, T = 3 slots, 2 completions (env 1 has 2 tokens); per-token k1 KL, beta = 0.5.
    active = np.array([[[1, 1], [1, 1], [1, 0]]], dtype=bool)  # (R, T, E)
    kl = np.array([[[0.1, 0.5], [0.2, -0.5], [0.3, 9.9]]])  # (R, T, E); 9.9 is an inactive slot
    rewards = np.array([[1.0, 0.0]])  # (R, E)
    # env 0: token rewards -0.05, -0.1, -0.15 + 1 -> returns 0.7, 0.75, 0.85; env 1: -0.25, 0.25 -> 0.0, 0.25
    returns = np.array([0.7, 0.75, 0.85, 0.0, 0.25])
    whitened = (returns - returns.mean()) / returns.std()
    out = reinforce_pp_advantages(rewards, active, kl, kl_coef=0.5)
    np.testing.assert_allclose(out[0, :, 0], whitened[:3], atol=1e-7)
    np.testing.assert_allclose(out[0, :2, 1], whitened[3:], atol=1e-7)
    assert out[0, 2, 1] == 0
    # The group-baseline variant: rewards minus their group's mean (1, 0 -> 0.5, -0.5) first.
    returns = np.array([0.2, 0.25, 0.35, -0.5, -0.25])  # env 1: -0.25, 0.25 - 0.5 -> -0.5, -0.25
    baseline = reinforce_pp_advantages(rewards, active, kl, kl_coef=0.5, group_size=2)
    np.testing.assert_allclose(baseline[0][active[0]], ((returns - returns.mean()) / returns.std())[[0, 3, 1, 4, 2]])


# ---------------------------------------------------------------------------- A*-PO
#: A categorical reference over four outcomes (one-token completions) with their rewards, and beta.
REFERENCE, REWARDS, BETA = np.array([0.4, 0.3, 0.2, 0.1]), np.array([0.0, 0.5, 1.0, -1.0]), 0.25
V_STAR = BETA * math.log(float((REFERENCE * np.exp(REWARDS / BETA)).sum()))  # beta log E_ref[exp(r / beta)]
OPTIMUM = REFERENCE * np.exp((REWARDS - V_STAR) / BETA)  # pi* = pi_ref exp((r - V*) / beta), sums to 1


def test_the_optimal_value_is_exact_from_a_proposal_that_covers_every_outcome_once():
    """Each outcome sampled once from a uniform pi_old: the importance-weighted mean is the expectation itself."""
    log_ratio = np.log(0.25 / REFERENCE)  # log pi_old(y) / pi_ref(y) per outcome
    targets = optimal_advantages(REWARDS, log_ratio, BETA)
    np.testing.assert_allclose(REWARDS - targets, V_STAR, rtol=1e-12)


def test_the_optimal_value_is_exact_from_any_samples_of_the_optimum():
    """At pi_old = pi*, every weighted term is exp(V* / beta): two samples, even the same one twice, give V*."""
    for picks in ([0, 2], [3, 3], [1, 2]):
        log_ratio = np.log(OPTIMUM[picks] / REFERENCE[picks])
        np.testing.assert_allclose(REWARDS[picks] - optimal_advantages(REWARDS[picks], log_ratio, BETA), V_STAR)


def test_the_optimal_value_from_reference_samples_is_a_log_mean_exp_biased_low():
    """From samples of pi_ref (A*-PO's first stage): close to V* with many, lower on average with few (Jensen)."""
    rng = np.random.default_rng(0)
    many = rng.choice(4, size=(1, 200_000), p=REFERENCE)
    v_many = (REWARDS[many] - optimal_advantages(REWARDS[many], np.zeros(many.shape), BETA))[0, 0]
    assert abs(v_many - V_STAR) < 0.01, (v_many, V_STAR)
    few = rng.choice(4, size=(20_000, 4), p=REFERENCE)  # 20,000 groups of 4
    v_few = (REWARDS[few] - optimal_advantages(REWARDS[few], np.zeros(few.shape), BETA))[:, 0]
    assert v_few.mean() < V_STAR - 0.02, (v_few.mean(), V_STAR)
    with pytest.raises(ValueError, match="beta must be > 0"):
        optimal_advantages(REWARDS, np.zeros(4), 0.0)


def test_the_apo_loss_is_the_squared_error_of_each_completions_log_ratio():
    log_prob = torch.tensor([-1.0, -2.0, -0.5], dtype=torch.float64, requires_grad=True)
    ref = torch.tensor([-1.5, -1.0, -0.5], dtype=torch.float64)
    completion, targets = torch.tensor([0, 0, 1]), torch.tensor([0.3, 0.3, -0.2], dtype=torch.float64)
    loss, clipped = policy_loss("apo", log_prob, torch.zeros(3), targets, completion, 2, 0.2, 0.2, ref, beta=0.2)
    # completion 0: log ratio 0.5 - 1.0 = -0.5, 0.2 * -0.5 - 0.3 = -0.4; completion 1: 0 - (-0.2) = 0.2
    torch.testing.assert_close(loss.detach(), torch.tensor([0.16, 0.16, 0.04], dtype=torch.float64))
    assert not clipped.any()
    loss[0].backward()  # d/d log_prob_t of (beta * S - A)^2 = 2 beta (beta S - A), each token of completion 0
    torch.testing.assert_close(log_prob.grad, torch.tensor([-0.16, -0.16, 0.0], dtype=torch.float64))
    with pytest.raises(ValueError, match="needs the reference"):
        policy_loss("apo", log_prob, torch.zeros(3), targets, completion, 2, 0.2, 0.2)


def test_the_buffer_regresses_each_completion_on_its_reward_minus_the_groups_optimal_value():
    """One round of one group of 2 completions of up to 3 tokens; the second ends after 2 (its third slot holds a
    stored log-prob that belongs to no completion and must not count)."""
    env = make_vec_env("text_env/Vowels-v0", n_envs=1)
    buffer = GroupRolloutBuffer(3, env.observation_space, env.action_space, n_envs=2, group_size=2, completion_length=3)
    buffer.active[:] = [[True, True], [True, True], [True, False]]  # (T, E)
    buffer.log_probs[:] = [[-1.0, -0.3], [-2.0, -0.7], [-0.5, -5.0]]
    buffer.rewards[:] = [[0.0, 0.0], [0.0, 0.2], [0.8, 0.0]]  # each completion paid at its last token
    reference = np.array([[-1.5, -0.3], [-1.0, -0.2], [-0.5, 0.0]])
    buffer.end_round()
    stats = buffer.finish("apo", ref_log_probs=reference, kl_coef=0.25)
    # log pi_old - log pi_ref summed over each completion's tokens: 0.5 - 1.0 + 0 = -0.5 and 0 - 0.5 = -0.5
    v_star = 0.25 * math.log((math.exp(0.8 / 0.25 + 0.5) + math.exp(0.2 / 0.25 + 0.5)) / 2)
    np.testing.assert_allclose(buffer.completion_advantages, [[0.8 - v_star, 0.2 - v_star]])
    assert stats["optimal_value"] == pytest.approx(v_star)
    assert buffer.keep_completion.all()  # every completion is regressed on, the group's best and worst alike
    with pytest.raises(ValueError, match="needs the reference"):
        buffer.finish("apo", ref_log_probs=None, kl_coef=0.25)


def test_minimising_the_apo_loss_gives_the_optimum():
    """A policy over the four outcomes regressed on r - V* (each outcome a one-token completion) reaches
    pi* = pi_ref exp((r - V*) / beta): the loss aims at the KL-regularised optimum, not at the best outcome."""
    logits = torch.zeros(4, dtype=torch.float64, requires_grad=True)
    ref = torch.as_tensor(np.log(REFERENCE))
    targets = torch.as_tensor(REWARDS - V_STAR)
    optimizer = torch.optim.Adam([logits], lr=0.05)
    for _ in range(2000):
        optimizer.zero_grad()
        loss, _ = policy_loss("apo", logits.log_softmax(0), ref, targets, torch.arange(4), 4, 0.2, 0.2, ref, BETA)
        loss.mean().backward()
        optimizer.step()
    np.testing.assert_allclose(logits.softmax(0).detach().numpy(), OPTIMUM, atol=1e-4)
    assert OPTIMUM.argmax() == REWARDS.argmax() and OPTIMUM.max() < 0.9  # the optimum keeps the other outcomes


def test_apo_refuses_settings_that_do_not_define_an_optimum():
    env = make_vec_env("text_env/Vowels-v0", n_envs=2, seed=0)
    with pytest.raises(ValueError, match="A\\*-PO needs kl_coef > 0"):
        make_algorithm("apo", env, policy_kwargs=dict(model=tiny_gpt2_config()), group_size=2)
    with pytest.raises(ValueError, match="kl_in must be 'loss'"):
        make_algorithm("apo", env, policy_kwargs=dict(model=tiny_gpt2_config()), group_size=2, kl_coef=0.1,
                       kl_in="reward")  # fmt: skip
    apo = dict(advantage="apo", policy_loss="apo", kl_coef=0.1, group_size=2)
    for wrong, match in [(dict(policy_loss="clip"), "go together"), (dict(resample_rounds=1), "equal rewards too"),
                         (dict(loss_aggregation="token"), "mean over completions")]:  # fmt: skip
        with pytest.raises(ValueError, match=match):
            GRPO(CausalLMPolicy, env, policy_kwargs=dict(model=tiny_gpt2_config()), **(apo | wrong))
    with pytest.raises(ValueError, match=r"--kl-coef 0.0 is invalid for apo: .* pass one > 0"):
        TrainConfig.from_values(dict(algorithm="apo", kl_coef=0.0))  # a value of an option it takes: no "used by"
    with pytest.raises(ValueError, match=r"--kl-estimator does not apply to apo: .*; it is used by grpo"):
        TrainConfig.from_values(dict(algorithm="apo", kl_estimator="k3"))
    settings = ALGORITHMS["apo"].settings()
    assert [o for o, _ in settings.kl_problems(KLSettings(coef=0.0, estimator="k3"))] == ["kl_coef", "kl_estimator"]
    assert [o for o, _ in settings.kl_problems(KLSettings(placement="reward"))] == ["kl_in"]
    assert settings.kl_kwargs(KLSettings(coef=0.05)) == {"kl_coef": 0.05, "kl_in": "loss"}


# ---------------------------------------------------------------------------- dynamic sampling
def test_copy_group_moves_a_whole_group_between_buffers():
    env = make_vec_env("text_env/Vowels-v0", n_envs=1)
    make = lambda rounds: GroupRolloutBuffer(  # noqa: E731
        2 * rounds, env.observation_space, env.action_space, n_envs=4, group_size=2, completion_length=2
    )
    target, source = make(2), make(1)
    source.rewards[:] = np.arange(8).reshape(2, 4)
    source.active[:] = True
    source.actions[:] = 7
    target.copy_group(1, 0, source, 0, 1)  # round 1, group 0 <- the source's group 1 (envs 2, 3)
    np.testing.assert_array_equal(target.rewards[2:4, 0:2], [[2, 3], [6, 7]])
    assert target.actions[2:4, 0:2].tolist() == [[7, 7], [7, 7]] and target.actions.sum() == 28
    target.active[:2] = True
    target.rewards[:2] = [[1, 1, 0, 2], [0, 0, 0, 0]]  # round 0: group 0 sums 1, 1 (equal), group 1: 0, 2
    assert target.all_equal_groups()[0].tolist() == [True, False]


def rare_success_env(n_envs: int):
    """A task where most groups of a random policy are all zeros: reward 1 for a completion starting with 'a'."""
    from stable_baselines3.common.vec_env import DummyVecEnv

    def reward(prompts, completions):
        return [float(c.startswith("a")) for c in completions]

    env = lambda: TextGenerationEnv(["x", "y"], "char", reward, max_prompt_tokens=4, max_new_tokens=2)  # noqa: E731
    return DummyVecEnv([env] * n_envs)


def test_dapo_replaces_groups_without_signal_by_resampled_ones():
    def run(resample_rounds):
        model = make_algorithm(
            "dapo", rare_success_env(8), policy_kwargs=dict(model=tiny_gpt2_config()), seed=0, group_size=4,
            n_steps=2, batch_size=8, resample_rounds=resample_rounds,
        )  # fmt: skip
        history = RolloutHistoryCallback()
        model.learn(16 * 4, callback=history)  # about four rollouts of 16 tokens
        return model, history.rows

    plain, plain_rows = run(0)
    dapo, rows = run(8)
    assert all(row["rollout/all_equal_groups"] == 1.0 for row in plain_rows[:1])  # the random policy: no signal
    replaced = sum(row["rollout/resampled_groups"] for row in rows)
    assert replaced > 0 and all(row["rollout/resample_rounds"] <= 8 for row in rows)
    # A replaced group is a group with a signal; the extra rounds count as environment steps.
    assert np.mean([r["rollout/all_equal_groups"] for r in rows]) < np.mean(
        [r["rollout/all_equal_groups"] for r in plain_rows]
    )
    assert dapo.num_timesteps > plain.num_timesteps


# ---------------------------------------------------------------------------- the entries
def test_the_new_entries_are_registered_with_their_papers_settings():
    assert set(NEW_ENTRIES) <= set(ALGORITHMS)
    gspo = ALGORITHMS["gspo"].settings()
    assert (gspo.clip_range, gspo.clip_range_high) == (3e-4, 4e-4)
    assert ALGORITHMS["dapo"].settings().clip_range_high == 0.28
    assert ALGORITHMS["cispo"].settings().clip_range_high == 5.0
    reinforce_pp = ALGORITHMS["reinforce_pp"].settings()
    assert reinforce_pp.kl_kwargs(KLSettings(coef=0.01)) == {"kl_coef": 0.01, "kl_estimator": "k1", "kl_in": "reward"}
    assert [option for option, _ in reinforce_pp.kl_problems(KLSettings(placement="loss"))] == ["kl_in"]
    assert ALGORITHMS["apo"].fixed == {"advantage": "apo", "policy_loss": "apo", "loss_aggregation": "sequence"}


@pytest.mark.parametrize("name", NEW_ENTRIES)
def test_each_new_entry_learns_the_vowels_task(name):
    """The learning threshold and budget of the other algorithms (tests/test_learning.py): 10,240 env steps."""
    overrides = {"gspo": dict(n_epochs=1), "apo": dict(kl_coef=0.05)}.get(name, {})
    model = make_algorithm(
        name, make_vec_env("text_env/Vowels-v0", n_envs=8, seed=0), policy_kwargs=dict(model=tiny_gpt2_config()),
        seed=0, group_size=4, n_steps=64, batch_size=64, learning_rate=3e-3, **{"n_epochs": 4, **overrides},
    )  # fmt: skip
    history = RolloutHistoryCallback()
    model.learn(10_240, callback=history)
    first, final = history.rows[0]["rollout/score"], float(np.mean([info["r"] for info in model.ep_info_buffer]))
    assert first < 0.2 and final >= first + 0.5 * (1.0 - first), (first, final)
