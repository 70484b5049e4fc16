"""Atomic checkpoints, exact resume and determinism."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_gpt2_config
from stable_baselines3 import PPO
from stable_baselines3.common.env_util import make_vec_env

from agents import GRPO, CausalLMPolicy, EpisodeRolloutBuffer, KLPenaltyCallback
from agents.common.checkpoint import (
    CheckpointCallback,
    RankStateHook,
    load_checkpoint,
    load_checkpoint_state,
    rank_state,
    save_checkpoint,
)

N = 256  # steps per half: 4 rollouts of 2 envs x 32 steps


def make_env():
    # EOS stays possible, so episodes end at different times and span rollouts and the checkpoint.
    return make_vec_env("text_env/Vowels-v0", n_envs=2, seed=0)


def make_model(env):
    return PPO(
        CausalLMPolicy, env, policy_kwargs=dict(model=tiny_gpt2_config()), n_steps=32, batch_size=16, n_epochs=2,
        learning_rate=3e-3, rollout_buffer_class=EpisodeRolloutBuffer, seed=0,
    )  # fmt: skip


def assert_same_training_state(a, b, kl_a, kl_b):
    for (name, p), q in zip(a.policy.state_dict().items(), b.policy.state_dict().values(), strict=True):
        assert torch.equal(p, q), name
    state_a, state_b = a.policy.optimizer.state_dict(), b.policy.optimizer.state_dict()
    for key, value in state_a["state"].items():
        for field, tensor in value.items():
            assert torch.equal(tensor, state_b["state"][key][field]), (key, field)
    assert kl_a.kl_coef == kl_b.kl_coef
    assert a.num_timesteps == b.num_timesteps


def test_resume_is_exact(tmp_path):
    straight = make_model(make_env())
    straight_kl = KLPenaltyCallback(kl_coef=0.1, kl_target=0.5, horizon=50)
    straight.learn(2 * N, callback=straight_kl)

    first = make_model(make_env())
    first_kl = KLPenaltyCallback(kl_coef=0.1, kl_target=0.5, horizon=50)
    first.learn(N, callback=first_kl)
    save_checkpoint(first, tmp_path / "checkpoint.zip", first_kl)
    del first
    resumed, resumed_kl = load_checkpoint(PPO, tmp_path / "checkpoint.zip", make_env())
    resumed.learn(N, callback=resumed_kl, reset_num_timesteps=False)

    assert straight_kl.kl_coef != 0.1  # the adaptive controller moved, so the comparison means something
    assert_same_training_state(straight, resumed, straight_kl, resumed_kl)


def test_same_seed_gives_identical_rollouts_and_curves():
    runs = []
    for _ in range(2):
        model = make_model(make_env())
        kl = KLPenaltyCallback(kl_coef=0.1)
        model.learn(128, callback=kl)  # two PPO iterations
        runs.append((model, kl))
    (a, kl_a), (b, kl_b) = runs
    for key in ("actions", "rewards", "values", "log_probs", "advantages"):
        assert (getattr(a.rollout_buffer, key) == getattr(b.rollout_buffer, key)).all(), key
    assert kl_a.history == kl_b.history
    assert a.logger.name_to_value == b.logger.name_to_value
    assert_same_training_state(a, b, kl_a, kl_b)


def test_an_interrupted_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    model = make_model(make_env())
    model.learn(64)
    path = save_checkpoint(model, tmp_path / "checkpoint.zip")
    before = path.read_bytes()

    def killed_mid_write(*args, **kwargs):
        with open(args[0] if args else kwargs["save_path"], "wb") as handle:  # half a file, then death
            handle.write(b"PK\x03\x04 partial")
        raise KeyboardInterrupt

    monkeypatch.setattr("stable_baselines3.common.base_class.save_to_zip_file", killed_mid_write)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(model, path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.zip"]  # no staging file left
    loaded, _ = load_checkpoint(PPO, path, make_env())
    assert loaded.num_timesteps == model.num_timesteps


def test_periodic_checkpoints_keep_the_last_k(tmp_path):
    model = make_model(make_env())
    callback = CheckpointCallback(tmp_path, every_n_rollouts=1, keep_last=2)
    model.learn(5 * 64, callback=callback)
    assert len(callback.saved) == 4  # at the start of rollouts 2..5
    assert sorted(p.name for p in tmp_path.iterdir()) == [p.name for p in callback.saved[-2:]]


def test_a_plain_sb3_save_is_refused_with_a_hint(tmp_path):
    model = make_model(make_env())
    model.save(tmp_path / "plain.zip")
    with pytest.raises(ValueError, match="save_checkpoint"):
        load_checkpoint(PPO, tmp_path / "plain.zip", make_env())


def make_grpo(env):
    return GRPO(
        CausalLMPolicy, env, group_size=2, n_steps=16, batch_size=16, kl_coef=0.1, learning_rate=3e-3,
        policy_kwargs=dict(model=tiny_gpt2_config()), seed=0,
    )  # fmt: skip


def test_grpo_resumes_exactly_with_its_own_per_rank_state(tmp_path):
    """GRPO's pass over the prompts goes through the public hook (get_rank_state / set_rank_state) and each rank's
    state in the checkpoint, not through attributes that the checkpoint names."""
    straight = make_grpo(make_env())
    straight.learn(128)  # 4 rollouts of 2 envs x 16 (2 rounds of one group each: one prompt per round)
    first = make_grpo(make_env())
    first.learn(64)
    assert isinstance(first, RankStateHook)
    assert 0 < first.get_rank_state()["prompt_cursor"] < first.num_prompts  # the checkpoint falls inside a pass
    save_checkpoint(first, tmp_path / "grpo.zip")
    resumed, _ = load_checkpoint(GRPO, tmp_path / "grpo.zip", make_env())
    resumed.learn(64, reset_num_timesteps=False)
    for (name, p), q in zip(straight.policy.state_dict().items(), resumed.policy.state_dict().values(), strict=True):
        assert torch.equal(p, q), name
    assert straight.get_rank_state()["prompt_cursor"] == resumed.get_rank_state()["prompt_cursor"]

    # The rank's own state is what the hook restores (SB3's save holds the saving rank's only).
    own = rank_state(first)
    own["algorithm"] = {"prompt_order": own["algorithm"]["prompt_order"][::-1].copy(), "prompt_cursor": 1}
    save_checkpoint(first, tmp_path / "edited.zip", rank_states=[own])
    edited, _, _ = load_checkpoint_state(GRPO, tmp_path / "edited.zip", make_env())
    assert edited.get_rank_state()["prompt_cursor"] == 1
    assert list(edited.get_rank_state()["prompt_order"]) == list(own["algorithm"]["prompt_order"])


def test_nlpo_resumes_exactly_with_its_mask_model(tmp_path):
    """The checkpoint falls between two refreshes of NLPO's mask model (every 3 rollouts): the resumed run masks
    with the saved copy, refreshes on the same schedule and ends on the straight run's weights."""
    from agents.nlpo import NLPO
    from agents.registry import make_algorithm

    def make_nlpo():
        return make_algorithm(
            "nlpo", make_env(), policy_kwargs=dict(model=tiny_gpt2_config()), n_steps=16, batch_size=16, n_epochs=2,
            learning_rate=3e-3, top_p=0.5, mask_update_interval=3, seed=0,
        )  # fmt: skip

    straight = make_nlpo()
    straight.learn(6 * 32)  # six rollouts of 2 envs x 16: refreshes before the 1st and the 4th
    first = make_nlpo()
    first.learn(2 * 32)
    save_checkpoint(first, tmp_path / "nlpo.zip")
    resumed, _ = load_checkpoint(NLPO, tmp_path / "nlpo.zip", make_env())
    resumed.learn(4 * 32, reset_num_timesteps=False)
    for (name, p), q in zip(straight.policy.state_dict().items(), resumed.policy.state_dict().values(), strict=True):
        assert torch.equal(p, q), name
    for name, tensor in straight.mask_model.state_dict().items():
        assert torch.equal(tensor, resumed.mask_model.state_dict()[name]), name
