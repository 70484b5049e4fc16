"""GRPO, Dr. GRPO and RLOO: the formulas on hand-made numbers, prompt groups, complete episodes, the first ratio,
save/load, SB3's machinery (callbacks, progress bar, resumed learn), errors, and learning on the Vowels task."""

from __future__ import annotations

import csv
import math
import statistics

import numpy as np
import pytest
import torch
from conftest import FirstRolloutReward, count_a, tiny_gpt2_config
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.logger import configure
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv

from agents import GRPO, CausalLMPolicy, ReferenceModel
from agents.common.kl import kl_estimate
from agents.grpo import aggregate_loss, group_advantages, group_size_problems
from text_env import TextGenerationEnv

OPTIMUM = 1.0
EOS = 1  # the char tokenizer's EOS id (tiny_gpt2_config's eos_token_id)


def make_grpo(n_envs=4, group_size=2, env_id="text_env/Vowels-v0", vec_env_cls=None, **kwargs):
    env = make_vec_env(env_id, n_envs=n_envs, seed=0, vec_env_cls=vec_env_cls)
    kwargs.setdefault("policy_kwargs", dict(model=tiny_gpt2_config()))
    kwargs.setdefault("learning_rate", 3e-3)
    return GRPO(CausalLMPolicy, env, group_size=group_size, seed=0, **kwargs)


# ---------------------------------------------------------------------------- the formulas, by hand
def test_grpo_advantage_is_the_group_z_score():
    rewards = [1.0, 2.0, 3.0, 6.0]
    mean, std = statistics.mean(rewards), statistics.stdev(rewards)  # sample std (ddof 1), as TRL
    expected = [(r - mean) / (std + 1e-4) for r in rewards]
    np.testing.assert_allclose(group_advantages(np.array([rewards]), "grpo")[0], expected, rtol=1e-12)


def test_dr_grpo_advantage_is_the_reward_minus_the_group_mean():
    rewards = np.array([[0.0, 1.0, 1.0, 0.0], [5.0, 5.0, 5.0, 9.0]])
    expected = [[-0.5, 0.5, 0.5, -0.5], [-1.0, -1.0, -1.0, 3.0]]
    np.testing.assert_allclose(group_advantages(rewards, "dr_grpo"), expected)


def test_rloo_advantage_leaves_the_completion_out_of_its_baseline():
    rewards = [1.0, 2.0, 3.0, 6.0]
    expected = [r - statistics.mean(rewards[:i] + rewards[i + 1 :]) for i, r in enumerate(rewards)]
    np.testing.assert_allclose(group_advantages(np.array(rewards), "rloo"), expected, rtol=1e-12)


def test_groups_of_equal_rewards_have_zero_advantage_and_one_completion_is_no_group():
    for kind in ("grpo", "dr_grpo", "rloo"):
        np.testing.assert_array_equal(group_advantages(np.full((2, 3), 0.7), kind), np.zeros((2, 3)))
    with pytest.raises(ValueError, match="at least 2"):
        group_advantages(np.ones((4, 1)))
    with pytest.raises(ValueError, match="advantage must be one of"):
        group_advantages(np.ones((1, 4)), "ppo")


def test_kl_estimators_match_their_definitions():
    pi = torch.tensor([0.5, 0.1, 0.9, 0.3], dtype=torch.float64)
    pi_ref = torch.tensor([0.25, 0.4, 0.9, 0.6], dtype=torch.float64)
    log_ratio = pi.log() - pi_ref.log()
    torch.testing.assert_close(kl_estimate(log_ratio, "k1"), torch.log(pi) - torch.log(pi_ref))
    torch.testing.assert_close(kl_estimate(log_ratio, "k2"), 0.5 * (torch.log(pi) - torch.log(pi_ref)) ** 2)
    torch.testing.assert_close(kl_estimate(log_ratio, "k3"), pi_ref / pi - torch.log(pi_ref / pi) - 1)
    assert kl_estimate(log_ratio, "k1").min() < 0 <= kl_estimate(log_ratio, "k3").min()
    with pytest.raises(ValueError, match="kl_estimator"):
        kl_estimate(log_ratio, "k4")


def test_loss_aggregations():
    per_token = torch.tensor([1.0, 2.0, 3.0, 10.0])  # completion 0 has 3 tokens, completion 1 has 1
    completion = torch.tensor([0, 0, 0, 1])
    kwargs = dict(completion=completion, n_completions=2, max_completion_length=5)
    assert aggregate_loss(per_token, how="sequence", **kwargs) == pytest.approx((2.0 + 10.0) / 2)
    assert aggregate_loss(per_token, how="constant", **kwargs) == pytest.approx(16.0 / (5 * 2))
    assert aggregate_loss(per_token, how="token", **kwargs) == pytest.approx(16.0 / 4)


# ---------------------------------------------------------------------------- rollouts
class RoundRecorder(BaseCallback):
    """The prompt each env completed in each round, and the info of each finished completion, from GRPO's locals."""

    def __init__(self):
        super().__init__()
        self.prompts, self.finished = [], []

    def _on_step(self):
        writing, infos, dones = self.locals["writing"], self.locals["infos"], self.locals["dones"]
        if self.locals["_step"] == 0:
            self.prompts.append([info["prompt"] for info in infos])
        for env in np.flatnonzero(writing & dones):
            self.finished.append((len(self.prompts) - 1, env, infos[env]))
        return True


def eos_prone(model, eos_logit=2.5):
    """Make the tiny LM write EOS with probability ~12% per token: hidden states become a constant vector whose
    product with EOS's embedding is ``eos_logit`` and with every other token's is 0."""
    lm = model.policy.lm
    with torch.no_grad():
        lm.transformer.ln_f.weight.zero_()
        lm.transformer.ln_f.bias.zero_()
        lm.transformer.ln_f.bias[0] = 1.0
        lm.transformer.wte.weight[:, 0] = 0.0
        lm.transformer.wte.weight[EOS, 0] = eos_logit
    model.policy.reset_caches()


@pytest.mark.parametrize("vec_env_cls", [DummyVecEnv, SubprocVecEnv], ids=["dummy", "subproc"])
def test_each_group_completes_one_prompt_and_only_complete_episodes_are_stored(vec_env_cls):
    # "module:id" lets each SubprocVecEnv worker import text_env (which registers the ids) before gymnasium.make.
    env_id = "text_env:text_env/Vowels-v0"
    model = make_grpo(n_envs=6, group_size=3, n_steps=16, env_id=env_id, vec_env_cls=vec_env_cls)  # 2 rounds x 8
    eos_prone(model)
    recorder = RoundRecorder()
    model.learn(1, callback=recorder)  # one rollout and one update
    buffer = model.rollout_buffer

    assert len(recorder.prompts) == 2
    for prompts in recorder.prompts:
        assert prompts[0:3] == [prompts[0]] * 3 and prompts[3:6] == [prompts[3]] * 3
    assert recorder.prompts[0][0] != recorder.prompts[0][3] or recorder.prompts[1][0] != recorder.prompts[1][3]

    lengths = buffer.completion_lengths()  # (rounds, envs)
    assert len(recorder.finished) == lengths.size  # each env finished exactly one completion per round
    assert 0 < (lengths < 8).sum() < lengths.size  # some ended early with EOS, some ran to max_new_tokens
    for round_index, env, info in recorder.finished:
        length = lengths[round_index, env]
        assert info["num_new_tokens"] == length
        assert buffer.completion_rewards[round_index, env] == pytest.approx(info["score"])
        rows = round_index * 8 + np.arange(8)
        assert buffer.active[rows, env].tolist() == [True] * length + [False] * (8 - length)
        if length < 8:
            assert buffer.actions[rows[length - 1], env] == EOS
    # Finished episodes only: Monitor saw the discarded ones too, the info buffer did not.
    assert len(model.ep_info_buffer) == lengths.size


def test_minibatches_hold_whole_groups_in_a_random_order():
    """Each group's completions stay together (one pass over their prompt in the update), the groups shuffled."""
    model = make_grpo(n_envs=6, group_size=3, n_steps=16)  # 2 rounds x 2 groups of 3
    model.learn(1)
    orders = []
    for _ in range(8):
        batches = list(model.rollout_buffer.get(3))  # one group's worth of completions per minibatch
        prompts = []
        for batch in batches:
            starts = torch.cat([torch.ones(1, dtype=torch.bool), batch.completion[1:] != batch.completion[:-1]])
            ids, mask = batch.observations["input_ids"][starts], batch.observations["attention_mask"][starts]
            same = [torch.equal(ids[0], row) and torch.equal(mask[0], m) for row, m in zip(ids, mask, strict=True)]
            assert all(same), "a minibatch of one group: one prompt"
            prompts.append(ids[0].tolist())
        orders.append(tuple(map(tuple, prompts)))
    assert len(batches) == 4 and len(set(orders)) > 1  # four groups, not always in the same order


class FirstEpochLogProbs(BaseCallback):
    """At the end of the first rollout (before any update), every stored token's log-probability as the update
    path recomputes it (one full forward pass per completion), next to the one stored at sampling time."""

    def __init__(self):
        super().__init__()
        self.pairs = None

    def _on_rollout_end(self):
        if self.pairs is None:
            with torch.no_grad():  # one completion per minibatch
                batches = list(self.model.rollout_buffer.get(1))
                self.pairs = [
                    (self.model.policy.evaluate_actions(b.observations, b.actions)[1], b.old_log_prob) for b in batches
                ]

    def _on_step(self):
        return True


def test_the_first_epoch_ratio_is_one_for_every_token():
    model = make_grpo(n_envs=4, group_size=2, n_steps=16, batch_size=8)
    eos_prone(model, eos_logit=1.0)
    recorder = FirstEpochLogProbs()
    model.learn(1, callback=recorder)
    for update_log_prob, sampled_log_prob in recorder.pairs:
        torch.testing.assert_close(update_log_prob, sampled_log_prob, rtol=0, atol=1e-5)
    assert sum(len(pair[0]) for pair in recorder.pairs) == model.rollout_buffer.active.sum()


@pytest.mark.parametrize(
    "settings",
    [dict(advantage="grpo"), dict(advantage="dr_grpo"), dict(loss_aggregation="token", kl_coef=0.5),
     dict(policy_loss="gspo", clip_range=0.01), dict(policy_loss="cispo", clip_range_high=0.05),
     dict(advantage="apo", policy_loss="apo", kl_coef=0.5)],
    ids=["sequence", "constant", "token-with-kl", "gspo", "cispo", "apo"],
)  # fmt: skip
def test_micro_batches_accumulate_the_minibatch_gradient(settings, monkeypatch):
    """``micro_batch_size`` changes memory, not the update: with SGD (a step is the clipped gradient) the same
    parameters after two epochs of two minibatches, and the same logged means, whatever the parts."""
    passes: list[int] = []  # completions of each forward+backward pass
    real = GRPO._backward_part
    monkeypatch.setattr(
        GRPO, "_backward_part", lambda self, part, *args: passes.append(part.n_completions) or real(self, part, *args)
    )
    results, parts = {}, {}
    for micro_batch_size in (None, 8, 24):  # one pass per minibatch of 4 completions; 4 parts of 1; 3 + 1
        passes.clear()
        model = make_grpo(
            n_envs=8, group_size=4, n_steps=8, batch_size=32, micro_batch_size=micro_batch_size, n_epochs=2,
            learning_rate=0.5, policy_kwargs=dict(model=tiny_gpt2_config(), optimizer_class=torch.optim.SGD),
            **settings,
        )  # fmt: skip
        eos_prone(model, eos_logit=1.0)  # completions of different lengths
        before = [p.detach().clone() for p in model.policy.parameters()]
        model.learn(1)  # one rollout and its update, whose means stay in the logger (SB3 dumps before train())
        row = dict(model.logger.name_to_value)
        results[micro_batch_size] = [p.detach().clone() for p in model.policy.parameters()], row
        parts[micro_batch_size] = list(passes)
    assert parts == {None: [4] * 4, 8: [1] * 16, 24: [3, 1] * 4}  # 2 epochs x 2 minibatches, cut as asked
    whole, whole_row = results[None]
    assert any(not torch.equal(a, b) for a, b in zip(before, whole, strict=True)), "the update moved the weights"
    assert whole_row["train/n_updates"] == 4
    logged = ["loss", "policy_gradient_loss", "entropy", "clip_fraction", "approx_kl", "first_ratio_deviation"]
    logged += ["kl_loss"] if settings.get("kl_coef") and settings.get("policy_loss") != "apo" else []
    for micro_batch_size in (8, 24):
        params, row = results[micro_batch_size]
        for a, b in zip(whole, params, strict=True):
            torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)
        for key in logged:
            assert row[f"train/{key}"] == pytest.approx(whole_row[f"train/{key}"], rel=1e-4, abs=1e-7), key


def test_all_three_kl_estimates_are_logged_and_the_reward_can_carry_the_penalty(tmp_path):
    model = make_grpo(n_envs=4, group_size=2, n_steps=8, kl_coef=0.5, kl_estimator="k2", kl_in="reward")
    model.set_logger(configure(str(tmp_path), ["csv"]))
    model.learn(64)  # 2 rollouts: the second one's policy differs from the reference
    with open(tmp_path / "progress.csv") as handle:
        rows = list(csv.DictReader(handle))
    estimates = [f"kl/k{i}{per}" for i in (1, 2, 3) for per in ("", "_per_episode")]  # KLPenaltyCallback's names
    for key in (*estimates, "kl/coef", "rollout/score", "rollout/group_reward_std", "rollout/all_equal_groups"):
        assert all(row[key] != "" for row in rows), key
    assert float(rows[0]["kl/k3"]) == pytest.approx(0.0, abs=1e-6)  # the policy is the reference at first
    assert float(rows[-1]["kl/k2"]) > 0

    buffer = model.rollout_buffer
    log_ratio = torch.as_tensor(buffer.log_probs.astype(np.float64) - buffer.ref_log_probs)
    penalty = (kl_estimate(log_ratio, "k2").numpy() * buffer.active).sum(0)  # (E,) one round of 8 tokens
    scores = (buffer.rewards * buffer.active).sum(0)
    np.testing.assert_allclose(buffer.completion_rewards[0], scores - 0.5 * penalty, rtol=1e-6)


def test_kl_in_the_loss_holds_the_policy_near_its_reference():
    distances = {}
    for kl_coef in (0.0, 1.0):
        model = make_grpo(n_envs=8, group_size=4, n_steps=8, batch_size=32, kl_coef=kl_coef, n_epochs=2)
        model.reference = model.reference or ReferenceModel(model.policy)  # to measure the KL at beta = 0 too
        model.learn(1536)
        buffer = model.rollout_buffer
        distances[kl_coef] = float(buffer.log_probs[buffer.active].mean() - buffer.ref_log_probs[buffer.active].mean())
    assert distances[0.0] > 0.3
    assert distances[1.0] < 0.5 * distances[0.0], distances


# ---------------------------------------------------------------------------- SB3 machinery
def test_save_load_round_trip_is_exact_including_the_reference(tmp_path):
    model = make_grpo(n_envs=4, group_size=2, n_steps=8, kl_coef=0.1)
    model.learn(64)
    reference_before = {k: v.clone() for k, v in model.reference.lm.state_dict().items()}
    assert any(not torch.equal(v, model.policy.lm.state_dict()[k]) for k, v in reference_before.items())
    model.save(tmp_path / "grpo.zip")
    loaded = GRPO.load(tmp_path / "grpo.zip", env=model.get_env())
    for (name, p), q in zip(model.policy.state_dict().items(), loaded.policy.state_dict().values(), strict=True):
        assert torch.equal(p, q), name
    for key, value in reference_before.items():
        assert torch.equal(loaded.reference.lm.state_dict()[key], value), key
    optimizer_a, optimizer_b = model.policy.optimizer.state_dict(), loaded.policy.optimizer.state_dict()
    for key, value in optimizer_a["state"].items():
        for field, tensor in value.items():
            assert torch.equal(tensor, optimizer_b["state"][key][field]), (key, field)
    assert (loaded.group_size, loaded.advantage, loaded.kl_coef, loaded.completion_length) == (2, "grpo", 0.1, 8)
    assert loaded.policy.value_head is None


def test_no_value_head_is_allocated_or_optimised():
    model = make_grpo()
    assert model.policy.value_head is None
    optimised = {id(p) for group in model.policy.optimizer.param_groups for p in group["params"]}
    assert optimised == {id(p) for p in model.policy.lm.parameters()}


def test_progress_bar_and_continued_learning_work_as_in_sb3():
    model = make_grpo(n_envs=4, group_size=2, n_steps=8)
    model.learn(64, progress_bar=True)
    assert model.num_timesteps == 64
    model.learn(32, reset_num_timesteps=False)
    assert model.num_timesteps == 96


def test_bad_settings_get_clear_errors():
    with pytest.raises(ValueError, match="not a multiple of group_size"):
        make_grpo(n_envs=5, group_size=2)
    with pytest.raises(ValueError, match="multiple of the env's max_new_tokens=8"):
        make_grpo(n_steps=12)
    with pytest.raises(ValueError, match="less than one completion"):
        make_grpo(batch_size=4)
    with pytest.raises(ValueError, match="micro_batch_size=4 transitions is less than one completion"):
        make_grpo(micro_batch_size=4)
    with pytest.raises(ValueError, match="kl_estimator must be one of"):
        make_grpo(kl_estimator="k5")
    with pytest.raises(ValueError, match="group_size must be >= 2"):
        make_grpo(group_size=1)
    with pytest.raises(ValueError, match="trains no value head"):
        make_grpo(policy_kwargs=dict(model=tiny_gpt2_config(), value_head=True))
    with pytest.raises(TypeError, match="TextGenerationEnv"):
        from stable_baselines3.common.envs import IdentityEnv

        GRPO(CausalLMPolicy, DummyVecEnv([lambda: IdentityEnv(4)] * 2), group_size=2)


def test_one_rule_for_group_sizes():
    assert group_size_problems(2) == group_size_problems(4, 8) == group_size_problems(2, 8, world_size=2) == []
    assert group_size_problems(1, 8) == ["group_size must be >= 2 (a baseline needs other completions), got 1"]
    (problem,) = group_size_problems(4, 6, name="rloo")
    assert problem.startswith("rloo needs group_size >= 2 dividing n_envs: n_envs=6 is not a multiple of group_size=4")
    assert group_size_problems(8, 8, world_size=2) == [
        "n_envs=8 gives each of the 2 ranks 4 envs, not whole groups of group_size=8: use a multiple of 16"
    ]
    with pytest.raises(ValueError, match="needs group_size >= 2 dividing n_envs: n_envs=3 is not a multiple of"):
        from agents.grpo import GroupRolloutBuffer

        env = make_vec_env("text_env/Vowels-v0", n_envs=1)
        GroupRolloutBuffer(8, env.observation_space, env.action_space, n_envs=3, group_size=2, completion_length=8)


def test_the_kl_callback_points_grpo_users_to_kl_coef():
    from agents import KLPenaltyCallback

    with pytest.raises(TypeError, match="GRPO has its own kl_coef"):
        make_grpo(n_steps=8).learn(8, callback=KLPenaltyCallback())


def test_prompt_index_reset_option():
    env = TextGenerationEnv(["ab", "cd", "ef"], "char", count_a, max_new_tokens=2)
    assert env.num_prompts == 3
    assert env.reset(options={"prompt_index": 2})[1]["prompt"] == "ef"
    with pytest.raises(IndexError, match="outside the 3 prompts"):
        env.reset(options={"prompt_index": 3})
    with pytest.raises(ValueError, match="one of 'prompt'"):
        env.reset(options={"prompt_index": 0, "prompt": "x"})


# ---------------------------------------------------------------------------- learning
@pytest.mark.parametrize(
    ("advantage", "compute_dtype"),
    [("grpo", "float32"), ("dr_grpo", "float32"), ("rloo", "float32"), ("grpo", "bfloat16")],
)
def test_group_algorithms_learn_the_vowels_task(advantage, compute_dtype):
    """The PPO learning test's threshold and budget (tests/test_learning.py): 10,240 env steps, 8 envs."""
    model = make_grpo(
        n_envs=8, group_size=4, advantage=advantage, n_steps=64, batch_size=64, n_epochs=4, learning_rate=3e-3,
        policy_kwargs=dict(model=tiny_gpt2_config(), compute_dtype=compute_dtype),
    )  # fmt: skip
    first = FirstRolloutReward()
    model.learn(10_240, callback=first)
    final = float(np.mean([info["r"] for info in model.ep_info_buffer]))
    assert first.initial is not None and first.initial < 0.2  # random-like start
    assert final >= first.initial + 0.5 * (OPTIMUM - first.initial), (first.initial, final)
    assert not math.isnan(final)
