"""The fast paths equal the naive path: KV-cached rollouts and one forward pass per episode in updates."""

from __future__ import annotations

import copy
import functools

import numpy as np
import pytest
import torch
from conftest import tiny_gpt2_config
from stable_baselines3 import PPO
from stable_baselines3.common.vec_env import DummyVecEnv
from torch import nn
from transformers import DynamicCache
from transformers.modeling_outputs import BaseModelOutputWithPast

from agents import CausalLMPolicy, EpisodeRolloutBuffer
from agents.common.kv_cache import RowKVCache, run_with_cache
from agents.common.sequences import group_by_prefix
from text_env import TextGenerationEnv

PROMPTS = ["Hi", "The movie was", "A", "Plot twist: the"]
TOLERANCE = dict(atol=1e-5, rtol=1e-5)


def vec_env(n_envs=4):
    """Envs whose episodes end at random times (EOS), so rows reset mid-rollout at different steps."""
    return DummyVecEnv(
        [
            lambda: TextGenerationEnv(
                PROMPTS, "char", lambda p, c: np.zeros(len(c)), max_prompt_tokens=16, max_new_tokens=7
            )
        ]
        * n_envs
    )


def policy_pair(**overrides):
    """Two policies with the same weights: the fast one, and the naive one (no cache, per-transition updates)."""
    envs = vec_env()
    kwargs = dict(model=tiny_gpt2_config(), **overrides)
    fast = PPO(CausalLMPolicy, envs, policy_kwargs=kwargs, seed=0).policy
    naive = PPO(CausalLMPolicy, envs, policy_kwargs=dict(kwargs, kv_cache=False, share_prefixes=False), seed=0).policy
    naive.load_state_dict(fast.state_dict())
    with torch.no_grad():  # a non-zero value head, so values are compared too
        for policy in (fast, naive):
            policy.value_head.weight.copy_(torch.linspace(-1, 1, policy.value_head.in_features))
    return envs, fast, naive


def random_trajectory(envs, steps=40, seed=0):
    """Observations and actions of a random rollout with EOS at random (resets at different steps per row)."""
    rng = np.random.default_rng(seed)
    envs.seed(seed)
    obs = envs.reset()
    observations, actions = [], []
    for _ in range(steps):
        action = rng.integers(4, 100, size=envs.num_envs)
        action[rng.random(envs.num_envs) < 0.15] = 1  # EOS
        observations.append({k: v.copy() for k, v in obs.items()})
        actions.append(action)
        obs, *_ = envs.step(action)
    return observations, actions


@pytest.mark.parametrize(
    "overrides", [{}, {"value_model": tiny_gpt2_config(n_embd=16)}], ids=["shared", "separate-value"]
)
def test_cached_rollout_matches_full_reencoding(overrides):
    envs, fast, naive = policy_pair(**overrides)
    observations, actions = random_trajectory(envs)
    fast.set_training_mode(False)
    with torch.no_grad():
        for obs in observations:
            obs_t = {k: torch.as_tensor(v) for k, v in obs.items()}
            fast_logits, fast_values = fast.cached_outputs(obs_t, fast.rollout_caches)
            naive_logits, naive_values = naive.cached_outputs(obs_t, naive.rollout_caches)
            torch.testing.assert_close(fast_logits, naive_logits, **TOLERANCE)
            torch.testing.assert_close(fast_values, naive_values, **TOLERANCE)
    cache = fast.rollout_caches.policy
    assert cache.extended_rows > cache.reencoded_rows  # the cache was used, not bypassed


def test_prediction_cache_follows_a_new_batch_size_and_the_rollout_cache_keeps_its_rows():
    envs, fast, naive = policy_pair()
    observations, _ = random_trajectory(envs, steps=12)
    fast.set_training_mode(False)
    with torch.no_grad():
        for rows in (slice(0, 4), slice(0, 2)):  # e.g. generate_completions with batch_size 4, then 2
            predict = fast.prediction_caches.policy
            extended_before = predict.extended_rows
            for obs in observations:
                obs_t = {k: torch.as_tensor(v[rows]) for k, v in obs.items()}
                logits = fast.next_token_logits(obs_t)
                torch.testing.assert_close(logits, naive.next_token_logits(obs_t), **TOLERANCE)
            assert predict.batch_size == rows.stop
            assert predict.extended_rows - extended_before > predict.reencoded_rows // 2  # used, not bypassed

        rollout = fast.rollout_caches.policy
        obs_t = {k: torch.as_tensor(v) for k, v in observations[0].items()}
        fast.predict_values(obs_t)  # the rollout's batch of 4 envs
        odd = {k: v[:3] for k, v in obs_t.items()}
        torch.testing.assert_close(fast.predict_values(odd), naive.predict_values(odd), **TOLERANCE)
        assert rollout.batch_size == 4  # a call with another batch size did not take the rollout cache over


def test_prefix_shared_updates_match_per_transition_updates():
    envs, fast, naive = policy_pair()
    observations, actions = random_trajectory(envs, steps=30, seed=1)
    obs = {k: torch.as_tensor(np.concatenate([o[k] for o in observations])) for k in observations[0]}  # (N, L)
    act = torch.as_tensor(np.concatenate(actions))  # (N,)
    fast_values, fast_logp, fast_entropy = fast.evaluate_actions(obs, act)
    naive_values, naive_logp, naive_entropy = naive.evaluate_actions(obs, act)
    torch.testing.assert_close(fast_values, naive_values, **TOLERANCE)
    torch.testing.assert_close(fast_logp, naive_logp, **TOLERANCE)
    torch.testing.assert_close(fast_entropy, naive_entropy, **TOLERANCE)
    roots, _ = group_by_prefix(obs["input_ids"], obs["attention_mask"], act)
    assert len(torch.unique(roots)) < len(act) // 2  # episodes really were shared


def test_prefix_grouping_covers_only_true_prefixes():
    ids = torch.tensor([[0, 5, 6, 0, 0], [0, 5, 6, 7, 0], [0, 5, 9, 0, 0], [0, 5, 6, 7, 8]])
    mask = (torch.arange(5) >= 1).long().expand(4, 5) * torch.tensor(
        [[1, 1, 1, 0, 0], [1, 1, 1, 1, 0], [1, 1, 1, 0, 0], [1] * 5]
    )
    root, position = group_by_prefix(ids, mask, torch.tensor([7, 8, 3, 2]))
    assert root.tolist() == [3, 3, 2, 3]  # row 2 diverges at its second token
    assert position.tolist() == [2, 3, 2, 4]
    root, _ = group_by_prefix(ids, mask, torch.tensor([9, 8, 3, 2]))  # row 0's action no longer matches row 3
    assert root[0] == 0


def test_episode_buffer_yields_whole_episodes_in_exact_minibatches():
    envs = vec_env()
    model = PPO(
        CausalLMPolicy,
        envs,
        policy_kwargs=dict(model=tiny_gpt2_config()),
        n_steps=24,
        batch_size=16,
        rollout_buffer_class=EpisodeRolloutBuffer,
        seed=0,
    )
    model.learn(96)  # fills the buffer (and trains on it)
    seen, roots_per_batch = [], []
    for batch in model.rollout_buffer.get(16):
        assert batch.actions.shape[0] == 16
        obs = batch.observations
        seen.extend(batch.observations["input_ids"].sum(1).tolist())
        roots, _ = group_by_prefix(obs["input_ids"], obs["attention_mask"], batch.actions.flatten())
        roots_per_batch.append(len(torch.unique(roots)))
    assert len(seen) == 24 * 4
    assert np.mean(roots_per_batch) <= 16 / 3  # ~4-token episodes: far fewer forward passes than transitions


# bf16 (autocast) against the same path in float32. Measured on this tiny GPT-2 (2026-11-24, x86_64 CPU): max
# |log-prob difference| 4.0e-4 (bf16 update vs bf16 cached rollout) to 6.7e-4 (bf16 vs fp32); 7x room.
BF16_LOGPROB_ATOL = 5e-3


def log_probs_of(logits, actions):
    return torch.log_softmax(logits, -1).gather(1, torch.as_tensor(actions).long().reshape(-1, 1)).squeeze(1)


def test_bf16_rollouts_and_updates_stay_close_to_float32_and_to_each_other():
    envs, fp32, _ = policy_pair()
    _, bf16, _ = policy_pair(compute_dtype="bfloat16")
    bf16.load_state_dict(fp32.state_dict())
    observations, actions = random_trajectory(envs, steps=30, seed=2)
    rollout = {"fp32": [], "bf16": []}
    with torch.no_grad():
        for obs, action in zip(observations, actions, strict=True):
            obs_t = {k: torch.as_tensor(v) for k, v in obs.items()}
            for name, policy in (("fp32", fp32), ("bf16", bf16)):
                rollout[name].append(log_probs_of(policy.cached_outputs(obs_t, policy.rollout_caches)[0], action))
        obs = {k: torch.as_tensor(np.concatenate([o[k] for o in observations])) for k in observations[0]}
        act = torch.as_tensor(np.concatenate(actions))
        update_bf16 = bf16.evaluate_actions(obs, act)[1]
        update_fp32 = fp32.evaluate_actions(obs, act)[1]
    rollout_bf16, rollout_fp32 = torch.cat(rollout["bf16"]), torch.cat(rollout["fp32"])
    # The first-epoch ratio under bf16: KV-cached rollout log-probs against full-sequence update log-probs.
    torch.testing.assert_close(update_bf16, rollout_bf16, atol=BF16_LOGPROB_ATOL, rtol=0)
    torch.testing.assert_close(rollout_bf16, rollout_fp32, atol=BF16_LOGPROB_ATOL, rtol=0)
    torch.testing.assert_close(update_bf16, update_fp32, atol=BF16_LOGPROB_ATOL, rtol=0)
    assert not torch.equal(update_bf16, update_fp32)  # bf16 really ran


@pytest.mark.parametrize("config", ["gpt2", "llama"])
def test_bf16_head_keeps_rollouts_and_updates_together_and_rounds_the_logits(config, tmp_path):
    """``head_dtype="bfloat16"``: the head's matmul runs in bf16 in rollouts (a weight cast once per update) and in
    updates (autocast) alike: rollout and update log-probs stay within the bf16 tolerance of each other, and both
    differ from the float32 head's; the cast weight goes with the caches at the next update, and the setting with
    a saved model."""
    from agents.common.policy import head_logits, head_weight_cast
    from agents.testing import tiny_llama_config

    model = (
        tiny_gpt2_config()
        if config == "gpt2"
        else tiny_llama_config(vocab_size=100, bos_token_id=2, eos_token_id=1, pad_token_id=1)
    )
    envs = vec_env()
    models = {
        head: PPO(
            CausalLMPolicy, envs, seed=0, policy_kwargs=dict(model=model, compute_dtype="bfloat16", head_dtype=head)
        )
        for head in ("float32", "bfloat16")
    }
    policies = {head: algorithm.policy for head, algorithm in models.items()}
    policies["bfloat16"].load_state_dict(policies["float32"].state_dict())
    observations, actions = random_trajectory(envs, steps=20, seed=3)
    rollout: dict[str, list[torch.Tensor]] = {"float32": [], "bfloat16": []}
    with torch.no_grad():
        for obs, action in zip(observations, actions, strict=True):
            obs_t = {k: torch.as_tensor(v) for k, v in obs.items()}
            for head, policy in policies.items():
                rollout[head].append(log_probs_of(policy.cached_outputs(obs_t, policy.rollout_caches)[0], action))
        obs = {k: torch.as_tensor(np.concatenate([o[k] for o in observations])) for k in observations[0]}
        act = torch.as_tensor(np.concatenate(actions))
        update = {head: policy.evaluate_actions(obs, act)[1] for head, policy in policies.items()}
        bf16 = policies["bfloat16"]
        hidden = torch.randn(7, bf16.lm_head.in_features)
        cast = head_weight_cast(bf16.lm_head, "bfloat16")
        assert cast is not None and cast.dtype == torch.bfloat16
        # The decode steps' cast weight gives autocast's logits bit for bit.
        assert torch.equal(
            head_logits(bf16.lm_head, hidden, "bfloat16", cast), head_logits(bf16.lm_head, hidden, "bfloat16")
        )
    assert bf16.__dict__["_decode_head_weight_cast"] is not None  # the rollout used the cast weight
    for head in policies:
        torch.testing.assert_close(update[head], torch.cat(rollout[head]), atol=BF16_LOGPROB_ATOL, rtol=0)
    torch.testing.assert_close(update["bfloat16"], update["float32"], atol=BF16_LOGPROB_ATOL, rtol=0)
    assert not torch.equal(update["bfloat16"], update["float32"])  # the head really ran in bf16, in updates ...
    assert not torch.equal(torch.cat(rollout["bfloat16"]), torch.cat(rollout["float32"]))  # ... and in rollouts
    bf16.set_training_mode(True)  # an update changes the weights: the cast goes
    assert bf16.__dict__["_decode_head_weight_cast"] is None
    models["bfloat16"].save(tmp_path / "model.zip")
    assert PPO.load(tmp_path / "model.zip").policy.head_dtype == "bfloat16"
    with pytest.raises(ValueError, match="head_dtype must be one of"):
        PPO(CausalLMPolicy, envs, policy_kwargs=dict(model=model, head_dtype="float16"))


def test_head_logits_cast_weight_path_equals_autocast_with_a_bias():
    """A head with a bias (neither test model's has one): the cast-once weight and bias give autocast's logits bit for
    bit, float32 output; the float32 setting is the plain head."""
    from agents.common.policy import head_logits, head_weight_cast

    torch.manual_seed(0)
    head = torch.nn.Linear(24, 50)
    hidden = torch.randn(5, 24)
    cast = head_weight_cast(head, "bfloat16")
    fast, autocast = head_logits(head, hidden, "bfloat16", cast), head_logits(head, hidden, "bfloat16")
    assert fast.dtype == autocast.dtype == torch.float32 and torch.equal(fast, autocast)
    with torch.no_grad():
        assert torch.equal(head_logits(head, hidden, "float32"), head(hidden))
        assert not torch.equal(fast, head(hidden))  # rounded in bf16
    assert head_weight_cast(head, "float32") is None


class _NewNameTrunk(torch.nn.Module):  # transformers >= 5.2x
    def forward(self, input_ids, attention_mask=None, cache=None, use_cache=False):
        self.received = {"cache": cache}
        return BaseModelOutputWithPast(last_hidden_state=input_ids.float()[..., None], cache=cache)


class _OldNameTrunk(torch.nn.Module):  # earlier transformers 5.x
    def forward(self, input_ids, attention_mask=None, past_key_values=None, use_cache=False):
        self.received = {"past_key_values": past_key_values}
        return BaseModelOutputWithPast(last_hidden_state=input_ids.float()[..., None], past_key_values=past_key_values)


@pytest.mark.parametrize("trunk_class", [_NewNameTrunk, _OldNameTrunk])
def test_the_kv_cache_goes_by_the_name_the_trunk_takes(trunk_class):
    """transformers 5.2x renamed ``past_key_values`` to ``cache`` (the old name warns at every call and goes in
    5.40): the cache is passed, and read back, under the name the trunk's forward declares."""
    trunk, cache = trunk_class(), DynamicCache()
    hidden, returned = run_with_cache(trunk, cache, input_ids=torch.ones(2, 3), attention_mask=torch.ones(2, 3))
    assert list(trunk.received.values()) == [cache] and returned is cache and hidden.shape == (2, 3, 1)


# ---------------------------------------------------------------------------- one pass per shared prompt
def test_shared_prompt_clusters_choose_the_groups_that_save_the_most():
    from agents.common.sequences import shared_prompt_clusters

    system = list(range(40, 50))  # a shared system prompt of 10 tokens, then two prompts of 9 more
    first, second = [*system, *range(60, 69)], [*system, *range(70, 79)]
    rows = [[*first, 5, 6], [*first, 7], [*first, 8, 9, 10], [*second, 5], [*second, 6, 6], [9] * 12, [*system, 3]]
    width = max(map(len, rows))
    ids = torch.tensor([[0] * (width - len(r)) + r for r in rows])  # left padding, as observations
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    cluster, prefix = shared_prompt_clusters(ids, mask)
    groups = {tuple(sorted((cluster == c).nonzero().flatten().tolist())): int(prefix[c]) for c in cluster.unique()}
    # each prompt's completions share the whole prompt (19 tokens, one before the shortest row's end), not just the
    # system prompt; the row that is the system prompt alone is too short to join, the unrelated row stays alone
    assert groups == {(0, 1, 2): 19, (3, 4): 19, (5,): 0, (6,): 0}
    cluster, prefix = shared_prompt_clusters(ids, mask, min_shared=20)
    assert prefix.tolist() == [0] * len(prefix)  # nothing long enough to share

    # 1,500 rows, each the previous one plus a token: a chain of nested prefixes 1,500 links deep, decided
    # without recursion (a recursive split would pass Python's limit)
    chain = torch.arange(10, 1510).repeat(1500, 1)  # (1500, 1500)
    chain_mask = (torch.arange(1500)[None, :] < torch.arange(20, 1520)[:, None]).long()  # row i: its first 20 + i
    _, prefix = shared_prompt_clusters(chain * chain_mask, chain_mask)
    assert int(prefix.max()) >= 19


def group_envs(prompts, group_size):
    """One env per (prompt, member): every prompt's episodes start identically, as GRPO's groups do."""
    return DummyVecEnv(
        [
            (lambda p=prompt: TextGenerationEnv(
                [p], "char", lambda p, c: np.zeros(len(c)), max_prompt_tokens=40, max_new_tokens=7
            ))
            for prompt in prompts
            for _ in range(group_size)
        ]
    )  # fmt: skip


@pytest.mark.parametrize("config", ["gpt2", "llama"])
def test_one_pass_per_shared_prompt_matches_one_pass_per_episode(config):
    """Log-probs, values and entropies within 1e-5 (float32), gradients within 1e-5 relative, against episodes
    encoded whole; two prompts that share a system prompt, four completions each, rows ending at random."""
    from agents.testing import tiny_llama_config

    model = (
        tiny_gpt2_config()
        if config == "gpt2"
        else tiny_llama_config(vocab_size=100, bos_token_id=2, eos_token_id=1, pad_token_id=1)
    )
    envs = group_envs(["You are kind. The movie was", "You are kind. Plot twist: the", "Hi"], group_size=4)
    shared = PPO(CausalLMPolicy, envs, policy_kwargs=dict(model=model), seed=0).policy
    whole = PPO(CausalLMPolicy, envs, policy_kwargs=dict(model=model, share_prompts=False), seed=0).policy
    whole.load_state_dict(shared.state_dict())
    with torch.no_grad():
        for policy in (shared, whole):
            policy.value_head.weight.copy_(torch.linspace(-1, 1, policy.value_head.in_features))
    observations, actions = random_trajectory(envs, steps=14, seed=2)
    obs = {k: torch.as_tensor(np.concatenate([o[k] for o in observations])) for k in observations[0]}  # (N, L)
    act = torch.as_tensor(np.concatenate(actions))  # (N,)
    outputs = {}
    for name, policy in (("shared", shared), ("whole", whole)):
        policy.optimizer.zero_grad()
        values, log_prob, entropy = policy.evaluate_actions(obs, act)
        (log_prob.mean() + values.mean() + 0.1 * entropy.mean()).backward()
        grads = {n: p.grad.clone() for n, p in policy.named_parameters() if p.grad is not None}
        outputs[name] = (values.detach(), log_prob.detach(), entropy.detach(), grads)
    for a, b in zip(outputs["shared"][:3], outputs["whole"][:3], strict=True):
        torch.testing.assert_close(a, b, **TOLERANCE)
    grads_shared, grads_whole = outputs["shared"][3], outputs["whole"][3]
    assert grads_shared.keys() == grads_whole.keys() and grads_shared
    for name, grad in grads_whole.items():
        torch.testing.assert_close(grads_shared[name], grad, rtol=1e-5, atol=1e-6 * float(grad.abs().max()) + 1e-9)

    from agents.common.sequences import shared_prompt_clusters  # the prompts really were shared

    roots, _ = group_by_prefix(obs["input_ids"], obs["attention_mask"], act)
    ids, mask = obs["input_ids"][roots.unique()], obs["attention_mask"][roots.unique()]
    _, prefix = shared_prompt_clusters(ids, mask)
    # one cluster per long prompt, sharing the prompt but its last token (an episode that just began is the prompt
    # alone, and every row keeps a token of its own); the episodes of "Hi" are too short to share: alone, each
    # attending to a masked cached prefix
    shared_prefixes = sorted(p for p in prefix.tolist() if p)
    assert shared_prefixes == [len("You are kind. The movie was") - 1, len("You are kind. Plot twist: the") - 1]
    assert (prefix == 0).any()


def test_the_reference_shares_prompts_too():
    from agents import ReferenceModel

    envs = group_envs(["You are kind. The movie was"], group_size=4)
    policies = [
        PPO(CausalLMPolicy, envs, policy_kwargs=dict(model=tiny_gpt2_config(), share_prompts=flag), seed=0).policy
        for flag in (True, False)
    ]
    observations, actions = random_trajectory(envs, steps=10, seed=3)
    obs = {k: torch.as_tensor(np.concatenate([o[k] for o in observations])) for k in observations[0]}
    act = torch.as_tensor(np.concatenate(actions))
    shared, whole = (ReferenceModel(policy).log_probs(obs, act) for policy in policies)
    torch.testing.assert_close(shared, whole, **TOLERANCE)


def test_the_rollout_cache_encodes_a_groups_prompt_once():
    envs = group_envs(["You are kind. The movie was", "You are kind. Plot twist: the"], group_size=4)
    fast = PPO(CausalLMPolicy, envs, policy_kwargs=dict(model=tiny_gpt2_config()), seed=0).policy
    naive = PPO(CausalLMPolicy, envs, policy_kwargs=dict(model=tiny_gpt2_config(), kv_cache=False), seed=0).policy
    naive.load_state_dict(fast.state_dict())
    observations, _ = random_trajectory(envs, steps=12, seed=4)
    fast.set_training_mode(False)
    with torch.no_grad():
        for obs in observations:
            obs_t = {k: torch.as_tensor(v) for k, v in obs.items()}
            fast_logits, _ = fast.cached_outputs(obs_t, fast.rollout_caches)
            naive_logits, _ = naive.cached_outputs(obs_t, naive.rollout_caches)
            torch.testing.assert_close(fast_logits, naive_logits, **TOLERANCE)
    stats = fast.rollout_caches.stats()
    assert stats["reencoded_rows"] >= 8  # the first step: all 8 envs start
    assert stats["encoded_rows"] < stats["reencoded_rows"]  # identical starts were encoded once


@pytest.mark.parametrize("config", ["gpt2", "llama", "llama-lora"])
def test_bf16_decode_steps_with_cast_weights_equal_autocast_casting_at_every_call(config):
    """The bf16 rollout runs a twin of the trunk whose matmul weights are already bf16: the same logits as the trunk
    under autocast, which casts them at every call, bit for bit; the twin shares every other tensor."""
    from agents.common.models import low_precision_twin
    from agents.testing import tiny_llama_config

    model = (
        tiny_gpt2_config()
        if config == "gpt2"
        else tiny_llama_config(vocab_size=100, bos_token_id=2, eos_token_id=1, pad_token_id=1)
    )
    lora = dict(r=4) if config == "llama-lora" else None
    envs = vec_env()
    policy = PPO(
        CausalLMPolicy, envs, policy_kwargs=dict(model=model, compute_dtype="bfloat16", lora=lora), seed=0
    ).policy
    if lora:  # trained adapters: peft starts B at zero, which would make them add nothing
        with torch.no_grad():
            for name, parameter in policy.lm.named_parameters():
                if "lora_B" in name:
                    parameter.normal_(0.0, 0.1)
    twin = low_precision_twin(policy.trunk, torch.bfloat16)
    if config != "gpt2" and _packs_bf16():  # GPT-2's matmuls are Conv1D, not nn.Linear
        assert any(isinstance(m.forward, functools.partial) for m in twin.modules()), "oneDNN pre-packed layers"
    casted = [p for p in twin.parameters() if p.dtype == torch.bfloat16]
    shared = {id(p) for p in policy.trunk.parameters()} & {id(p) for p in twin.parameters()}
    assert casted and shared and all(p.dtype == torch.float32 for p in policy.trunk.parameters())
    assert any(p.requires_grad for p in policy.trunk.parameters())  # the original keeps its trainable weights
    observations, _ = random_trajectory(envs, steps=6, seed=5)
    policy.set_training_mode(False)
    casting = RowKVCache()  # the same cached decode steps through the trunk itself, autocast casting every call
    with torch.no_grad():
        for obs in observations:
            ids, mask = policy.obs_tokens({k: torch.as_tensor(v) for k, v in obs.items()})
            with policy.trunk_precision():
                positions = (mask.cumsum(1) - 1).clamp(min=0)
                reference = policy.trunk(input_ids=ids, attention_mask=mask, position_ids=positions).last_hidden_state
                fast = twin(input_ids=ids, attention_mask=mask, position_ids=positions).last_hidden_state
                hidden = casting.step(policy.trunk, ids, mask)
            assert torch.equal(reference, fast)
            logits, _ = policy.cached_outputs({"input_ids": ids, "attention_mask": mask}, policy.rollout_caches)
            assert torch.equal(logits, policy._head_outputs(hidden, hidden)[0])
    assert policy._decode_trunks  # the rollout ran through a twin
    policy.set_training_mode(True)  # an update is coming: the twin is dropped, made again at the next decode step
    assert not policy._decode_trunks


def _packs_bf16() -> bool:
    from agents.common.models import onednn_packs_bf16

    return onednn_packs_bf16()


@pytest.mark.skipif(not _packs_bf16(), reason="no oneDNN bf16 kernels on this CPU (or no oneDNN)")
def test_prepacked_bf16_linears_equal_f_linear_under_autocast():
    """A pre-packed bf16 ``nn.Linear`` (the decode twin's) computes what ``F.linear`` under CPU autocast does, bit for
    bit, for any number of rows (one decode token, a prefill of many), with and without a bias, from float32 or bf16
    inputs; layers of other dtypes are left alone."""
    from agents.common.models import prepack_linears

    torch.manual_seed(0)
    layers = nn.Sequential(nn.Linear(96, 160), nn.Linear(160, 96, bias=False)).to(torch.bfloat16)
    plain = nn.Sequential(*(copy.deepcopy(layer) for layer in layers))
    float_layer = nn.Linear(8, 8)
    assert prepack_linears(layers) == 2 and prepack_linears(float_layer) == 0
    for rows in (1, 7, 32, 200):
        for dtype in (torch.float32, torch.bfloat16):
            x = torch.randn(rows, 3, 96).to(dtype)  # (rows, 3, in)
            with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
                expected, got = plain(x), layers(x)
            assert got.shape == expected.shape == (rows, 3, 96) and got.dtype == expected.dtype == torch.bfloat16
            assert torch.equal(got, expected), (rows, dtype)
