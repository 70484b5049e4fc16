"""NLPO: the top-p mask on hand-made logits, the masks a rollout stores (the env's own AND the mask model's nucleus,
recomputed here without the KV cache), the refresh schedule, checkpoints that keep the mask model (only the trained
weights), learning the tiny task, and bad settings."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import FirstRolloutReward, tiny_gpt2_config
from stable_baselines3.common.env_util import make_vec_env

from agents.common.callbacks import RolloutHistoryCallback
from agents.nlpo import NLPO, TopPMaskVecEnv, top_p_mask
from agents.registry import make_algorithm


def test_top_p_mask_keeps_the_smallest_nucleus_reaching_p():
    probs = torch.tensor([[0.05, 0.5, 0.15, 0.3]])  # ranked: 0.5, 0.3, 0.15, 0.05
    logits = probs.log()
    assert top_p_mask(logits, 0.9).tolist() == [[False, True, True, True]]  # 0.5 + 0.3 < 0.9: needs 0.15 too
    assert top_p_mask(logits, 0.8).tolist() == [[False, True, False, True]]  # 0.5 + 0.3 reaches 0.8
    assert top_p_mask(logits, 0.1).tolist() == [[False, True, False, False]]  # the top token always stays
    assert top_p_mask(logits, 1.0).all()
    rows = torch.randn(5, 50)
    mask = top_p_mask(rows, 0.9)
    probs = rows.softmax(-1)
    assert ((probs * mask).sum(-1) >= 0.9 - 1e-6).all()  # every nucleus reaches p ...
    smallest_kept = torch.where(mask, probs, torch.inf).min(-1).values  # ... and is minimal: without its least
    assert ((probs * mask).sum(-1) - smallest_kept < 0.9).all()  # likely token it falls below p


def build(n_envs=2, **kwargs):
    env = make_vec_env("text_env/Vowels-v0", n_envs=n_envs, seed=0)
    settings = {"n_steps": 16, "batch_size": 16, "n_epochs": 2, "top_p": 0.5, **kwargs}
    return make_algorithm("nlpo", env, policy_kwargs=dict(model=tiny_gpt2_config()), seed=0, **settings)


def test_rollouts_sample_within_the_env_mask_and_the_frozen_models_nucleus():
    """With no refresh after the first, the mask model is the initial policy: the stored masks are the env's own
    AND the initial policy's top-p set, recomputed here by full forwards of an untrained twin (same seed)."""
    model = build(mask_update_interval=1000)
    twin = build()
    assert isinstance(model.env, TopPMaskVecEnv)
    history = RolloutHistoryCallback()
    model.learn(64, callback=history)  # two rollouts, one update after each
    buffer = model.rollout_buffer  # the last rollout, flattened env-major by train(): one row per transition
    actions = buffer.actions.reshape(-1).astype(int)  # (T,)
    obs = {key: torch.as_tensor(value).reshape(len(actions), -1) for key, value in buffer.observations.items()}
    with torch.no_grad():
        ids, mask = twin.policy.obs_tokens(obs)
        logits = twin.policy._sequence_outputs(ids, mask)[0]  # (T, V) full forwards, no KV cache
    nucleus = top_p_mask(logits, 0.5).numpy()  # (T, V)
    stored = buffer.action_masks.reshape(len(actions), -1).astype(bool)  # (T, V)
    own = np.stack(model.env.venv.env_method("action_masks"))[:1].astype(bool)  # (1, V) the Vowels env's own: fixed
    assert 0 < own.sum() < own.shape[1]
    np.testing.assert_array_equal(stored, own & nucleus)
    assert stored.sum(-1).mean() < 0.5 * stored.shape[1]  # the mask restricts: far from the whole vocabulary
    assert stored[np.arange(len(actions)), actions].all()
    logged = [row["rollout/top_p_tokens"] for row in history.rows]
    assert len(logged) == 2 and logged[-1] == pytest.approx(stored.sum(-1).mean())


def test_the_mask_model_runs_its_head_as_the_policy_does():
    """With ``head_dtype="bfloat16"`` the mask model casts its head once (again at each refresh) and gives the top-p
    set of the policy's own next-token logits at the start (the same weights, the same bf16 head)."""
    env = make_vec_env("text_env/Vowels-v0", n_envs=2, seed=0)
    model = make_algorithm(
        "nlpo", env, policy_kwargs=dict(model=tiny_gpt2_config(), head_dtype="bfloat16"), seed=0, n_steps=16,
        batch_size=16, top_p=0.5,
    )  # fmt: skip
    mask_model = model.mask_model
    assert mask_model is not None and mask_model.head_weight is not None
    assert mask_model.head_weight.dtype == torch.bfloat16
    obs = {key: torch.as_tensor(value) for key, value in env.reset().items()}
    expected = top_p_mask(model.policy.next_token_logits(obs), 0.5)
    assert torch.equal(mask_model.masks(obs), expected)
    before = mask_model.head_weight
    mask_model.refresh(model.policy)
    assert mask_model.head_weight is not before


def test_the_mask_model_is_refreshed_every_interval_rollouts(monkeypatch):
    model = build(mask_update_interval=2)
    refreshes = []
    original = model.mask_model.refresh
    monkeypatch.setattr(model.mask_model, "refresh", lambda policy: (refreshes.append(model.num_timesteps),
                                                                     original(policy)))  # fmt: skip
    model.learn(5 * 32)  # five rollouts of 2 envs x 16 steps
    assert refreshes == [0, 64, 128]
    trained = dict(model.policy.lm.named_parameters())
    copied = dict(model.mask_model.lm.named_parameters())
    assert any(not torch.equal(trained[name], copied[name]) for name in model.mask_model.trained)  # updated since


@pytest.mark.parametrize("lora_r", [0, 4])
def test_checkpoints_keep_the_mask_model_with_only_the_trained_weights(tmp_path, lora_r):
    env = make_vec_env("text_env/Vowels-v0", n_envs=2, seed=0)
    policy_kwargs = dict(model=tiny_gpt2_config(), lora=dict(r=lora_r) if lora_r else None)
    model = make_algorithm("nlpo", env, policy_kwargs=policy_kwargs, seed=0, n_steps=16, batch_size=16,
                           mask_update_interval=3)  # fmt: skip
    model.learn(96)  # three rollouts: the mask model is the policy as it was at the first (a refresh every 3)
    saved = model.mask_model.state_dict()
    trained = [name for name, p in model.policy.lm.named_parameters() if p.requires_grad]
    assert sorted(saved) == sorted(trained)
    if lora_r:
        assert all("lora" in name for name in saved) and len(saved) < len(list(model.policy.lm.parameters()))
    model.save(tmp_path / "nlpo.zip")
    loaded = NLPO.load(tmp_path / "nlpo.zip", env=make_vec_env("text_env/Vowels-v0", n_envs=2, seed=0))
    assert isinstance(loaded.env, TopPMaskVecEnv)
    assert (loaded.top_p, loaded.mask_update_interval, loaded.rollouts_done) == (0.9, 3, 3)
    for name, tensor in loaded.mask_model.state_dict().items():
        torch.testing.assert_close(tensor, saved[name], rtol=0, atol=0)
    loaded.learn(32, reset_num_timesteps=False)


def test_nlpo_learns_the_vowels_task():
    """The learning threshold and budget of the other algorithms (tests/test_learning.py): 10,240 env steps."""
    model = make_algorithm(
        "nlpo", make_vec_env("text_env/Vowels-v0", n_envs=8, seed=0), policy_kwargs=dict(model=tiny_gpt2_config()),
        seed=0, n_steps=64, batch_size=64, n_epochs=4, learning_rate=3e-3, gae_lambda=1.0, mask_update_interval=4,
    )  # fmt: skip
    first = FirstRolloutReward()
    model.learn(10_240, callback=first)
    final = float(np.mean([info["r"] for info in model.ep_info_buffer]))
    assert first.initial is not None and first.initial < 0.2
    assert final >= first.initial + 0.5 * (1.0 - first.initial), (first.initial, final)


@pytest.mark.parametrize(
    ("settings", "message"),
    [(dict(top_p=0.0), r"top_p must be in \(0, 1\]"), (dict(mask_update_interval=0), "mask_update_interval must")],
)
def test_bad_settings_are_refused(settings, message):
    with pytest.raises(ValueError, match=message):
        build(**settings)
