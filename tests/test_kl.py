"""The KL penalty: logged KL, the adaptive controller, and a policy held near its reference."""

from __future__ import annotations

import csv

import gymnasium as gym
import numpy as np
import pytest
import torch
from conftest import tiny_gpt2_config
from stable_baselines3 import PPO
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.logger import configure
from stable_baselines3.common.utils import obs_as_tensor

from agents import CausalLMPolicy, KLPenaltyCallback, generate_completions
from text_env.tasks import VOWEL_TASK_PROMPTS


def train(kl_coef, steps=4096, kl_target=None, logdir=None, **policy_kwargs):
    env = make_vec_env("text_env/Vowels-v0", n_envs=8, seed=0)
    model = PPO(
        CausalLMPolicy,
        env,
        policy_kwargs=dict(model=tiny_gpt2_config(), **policy_kwargs),
        n_steps=64,
        batch_size=64,
        n_epochs=4,
        learning_rate=3e-3,
        seed=0,
    )
    if logdir is not None:
        model.set_logger(configure(str(logdir), ["csv"]))
    callback = KLPenaltyCallback(kl_coef=kl_coef, kl_target=kl_target)
    model.learn(steps, callback=callback)
    return model, callback


def logged(logdir, key):
    with open(logdir / "progress.csv") as handle:
        return [float(row[key]) for row in csv.DictReader(handle) if row.get(key)]


def test_logged_kl_is_non_negative_on_average_and_the_score_is_logged(tmp_path):
    train(kl_coef=0.1, steps=2048, logdir=tmp_path)
    per_token = logged(tmp_path, "kl/k1")
    assert len(per_token) == 4 and per_token[0] == pytest.approx(0.0, abs=1e-6)  # policy == reference at first
    assert np.mean(per_token) >= 0 and per_token[-1] > 0
    assert len(logged(tmp_path, "rollout/score")) == 4 and logged(tmp_path, "kl/coef") == [0.1] * 4


def test_adaptive_coefficient_moves_towards_the_target(tmp_path):
    _, low_target = train(kl_coef=0.1, steps=2048, kl_target=1e-4)  # KL above target: raise the coefficient
    _, high_target = train(kl_coef=0.1, steps=2048, kl_target=100.0)  # KL below target: lower it
    assert low_target.kl_coef > 0.1 > high_target.kl_coef


def test_a_large_coefficient_keeps_the_policy_closer_to_the_reference():
    distances = {}
    for coef in (0.0, 2.0):
        model, callback = train(kl_coef=coef)
        result = generate_completions(
            model, gym.make("text_env/Vowels-v0"), list(VOWEL_TASK_PROMPTS) * 4, reference=callback.reference
        )
        distances[coef] = float(result.kl.mean())
    assert distances[0.0] > 0.5  # unpenalised PPO moves far from the start on this task
    assert distances[2.0] < 0.5 * distances[0.0], distances


def test_lora_reference_is_the_same_model_with_adapters_disabled():
    lora = dict(r=4, lora_alpha=8, target_modules=["c_attn"], fan_in_fan_out=True)
    env = make_vec_env("text_env/Vowels-v0", n_envs=2, seed=0)
    model = PPO(
        CausalLMPolicy,
        env,
        policy_kwargs=dict(model=tiny_gpt2_config(), lora=lora),
        n_steps=32,
        batch_size=32,
        learning_rate=1e-2,
        seed=0,
    )
    obs = obs_as_tensor(env.reset(), model.device)
    initial = model.policy.next_token_logits(obs)
    callback = KLPenaltyCallback(kl_coef=0.1)
    model.learn(128, callback=callback)
    reference = callback.reference
    assert reference.uses_disabled_adapters and reference.lm is model.policy.lm  # no second copy
    torch.testing.assert_close(reference.logits(obs), initial)  # the initial policy
    model.policy.reset_caches()
    assert not torch.allclose(model.policy.next_token_logits(obs), initial, atol=1e-4)  # while the policy moved


def test_exact_kl_of_generated_completions_matches_a_token_by_token_computation():
    from agents.common.reference import ReferenceModel
    from text_env import TextGenerationEnv

    prompts = ["The movie", "A film about", "I watched", "Plot:", "So", "Why"] * 2
    env = TextGenerationEnv(prompts, "char", lambda p, c: np.zeros(len(c)), max_prompt_tokens=16, max_new_tokens=6)
    model = PPO(CausalLMPolicy, env, policy_kwargs=dict(model=tiny_gpt2_config()), n_steps=6, batch_size=6, seed=0)
    reference = ReferenceModel(model.policy, chunk_rows=7)  # a frozen copy; one episode per reference pass
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():  # move the policy away from its reference
        for parameter in model.policy.lm.parameters():
            parameter.add_(0.1 * torch.randn(parameter.shape, generator=generator))
    model.policy.reset_caches()

    result = generate_completions(model, env, prompts, deterministic=True, reference=reference, batch_size=5)

    expected, likelihoods = [], []
    for prompt in prompts:  # the same greedy episodes, one token at a time, without caches or batching
        obs, _ = env.reset(options={"prompt": prompt})
        total, done, log_likelihood, n_tokens = 0.0, False, 0.0, 0
        while not done:
            obs_t = {key: torch.as_tensor(value)[None] for key, value in obs.items()}
            with torch.no_grad():  # a full forward pass, no cache (SB3's public API)
                log_p = model.policy.get_distribution(obs_t).distribution.logits[0]  # normalised log-probs
            log_q = torch.log_softmax(reference.logits(obs_t)[0], -1)
            total += float((log_p.exp() * (log_p - log_q)).sum())
            action = int(log_p.argmax())
            log_likelihood, n_tokens = log_likelihood + float(log_q[action]), n_tokens + 1
            obs, _, terminated, truncated, _ = env.step(action)
            done = terminated or truncated
        expected.append(total)
        likelihoods.append(log_likelihood / n_tokens)
    assert len(set(result.num_tokens.tolist())) > 1  # some episodes end early: their KL must stop there
    np.testing.assert_allclose(result.kl, expected, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(result.ref_log_likelihood, likelihoods, rtol=1e-4, atol=1e-6)
    assert min(expected) > 0.01


def test_the_adaptive_controller_moves_beta_by_the_clipped_error_and_the_fixed_one_does_not():
    from agents.common.kl import KLController

    adaptive = KLController(0.1, target=6.0, horizon=100)
    adaptive.update(kl_per_episode=12.0, n_episodes=10)  # error clipped to +0.2
    assert adaptive.coef == pytest.approx(0.1 * (1 + 0.2 * 10 / 100))
    adaptive.update(kl_per_episode=5.4, n_episodes=50)  # error -0.1
    assert adaptive.coef == pytest.approx(0.1 * 1.02 * (1 - 0.1 * 0.5))
    fixed = KLController(0.1)
    assert fixed.update(100.0, 1000) == 0.1 and not fixed.adaptive
    assert KLController.from_state_dict(adaptive.state_dict()).coef == adaptive.coef
    with pytest.raises(ValueError, match="kl_target must be > 0"):
        KLController(0.1, target=0)


def test_reward_shaping_is_the_per_token_log_ratio():
    from agents.common.kl import shape_rewards

    rewards = np.array([[0.0, 1.0], [0.5, 0.0]], dtype=np.float32)
    log_p = np.log(np.array([[0.5, 0.2], [0.9, 0.1]]))
    log_q = np.log(np.array([[0.25, 0.2], [0.3, 0.4]]))
    shaped, kl = shape_rewards(rewards, log_p, log_q, coef=2.0)
    np.testing.assert_allclose(kl, np.log([[2.0, 1.0], [3.0, 0.25]]))
    np.testing.assert_allclose(shaped, rewards - 2.0 * np.log([[2.0, 1.0], [3.0, 0.25]]), rtol=1e-6)
    assert shaped.dtype == np.float32


def test_a_callback_with_another_models_reference_is_refused():
    from agents import ReferenceModel

    first, _ = train(kl_coef=0.1, steps=64)
    callback = KLPenaltyCallback(reference=ReferenceModel(first.policy))
    env = make_vec_env("text_env/Vowels-v0", n_envs=2, seed=0)
    second = PPO(CausalLMPolicy, env, policy_kwargs=dict(model=tiny_gpt2_config()), n_steps=8, batch_size=8)
    with pytest.raises(ValueError, match="another model's policy"):
        second.learn(16, callback=callback)


def test_repetition_is_the_share_of_repeated_ngrams_within_each_completion():
    from agents.common.generation import GenerationResult

    result = GenerationResult(["p", "q"], ["great great great great", "a b c d"], np.zeros(2))
    assert result.repetition(2) == pytest.approx((2 / 3 + 0.0) / 2)  # bigrams: (g,g) x3, 1 distinct; all distinct


def test_positive_share_counts_completions_above_the_tasks_threshold():
    """PositiveReview-v0 owns its threshold (VADER's 0.05); a task without one reports no positive share."""
    from dataclasses import replace

    from agents.common.evaluation import summarize
    from agents.common.generation import GenerationResult
    from text_env import task_for

    scores = np.array([0.9, 0.05, 0.051, -0.4])  # 0.05 itself is neutral for VADER
    result = GenerationResult(["p"] * 4, ["good", "fine", "ok", "bad"], scores, num_tokens=np.ones(4, dtype=int))
    review = replace(task_for("text_env/PositiveReview-v0"), judge=None)  # the judge has its own tests
    assert summarize(result, review)["positive_share"] == 0.5
    assert "positive_share" not in summarize(result, task_for("text_env/Vowels-v0"))


def test_reference_log_probs_in_chunks_equal_those_of_one_pass():
    """log_probs never holds more than chunk_rows rows of logits, and gives what the full (B, V) logits give."""
    from agents.common.reference import ReferenceModel
    from text_env import TextGenerationEnv

    env = TextGenerationEnv(
        ["The movie", "Plot:"], "char", lambda p, c: np.zeros(len(c)), max_prompt_tokens=16, max_new_tokens=6
    )
    model = PPO(CausalLMPolicy, env, policy_kwargs=dict(model=tiny_gpt2_config()), n_steps=12, batch_size=12, seed=0)
    model.learn(12)  # one rollout: two 6-token episodes in the buffer
    buffer = model.rollout_buffer
    obs = {key: torch.as_tensor(value.reshape(12, -1)) for key, value in buffer.observations.items()}  # (12, L)
    actions = torch.as_tensor(buffer.actions.reshape(-1))  # (12,)
    whole = torch.log_softmax(ReferenceModel(model.policy, chunk_rows=100).logits(obs, actions), -1)
    expected = whole.gather(1, actions.long()[:, None]).squeeze(1)
    chunked = ReferenceModel(model.policy, chunk_rows=5).log_probs(obs, actions)  # 5 + 5 + 2 rows
    torch.testing.assert_close(chunked, expected, rtol=1e-5, atol=1e-5)


def test_held_out_scores_are_the_completions_scores_with_dense_reward_too():
    """generate_completions reports each completion's score, not its last step's reward (a dense env pays it out
    token by token)."""
    from text_env import TextGenerationEnv

    def count_a(prompts, completions):
        return np.array([c.count("a") for c in completions], dtype=float)

    prompts = ["The movie", "A film about", "I watched", "Plot:"]
    results = {}
    for dense in (False, True):
        env = TextGenerationEnv(prompts, "char", count_a, max_prompt_tokens=16, max_new_tokens=12, dense_reward=dense)
        model = PPO(CausalLMPolicy, env, policy_kwargs=dict(model=tiny_gpt2_config()), n_steps=12, seed=0)
        torch.manual_seed(0)
        results[dense] = generate_completions(model, env, prompts * 4)
    assert results[True].completions == results[False].completions
    np.testing.assert_array_equal(results[True].scores, count_a(None, results[True].completions))
    np.testing.assert_array_equal(results[True].scores, results[False].scores)
    assert results[True].scores.max() > 0  # some completions wrote an 'a'


@pytest.mark.parametrize("head_dtype", ["float32", "bfloat16"])
def test_a_bf16_reference_copy_stores_bf16_weights_and_gives_the_same_log_probs(head_dtype):
    """Under bf16 compute, the frozen copy keeps its trunk's linear weights in bf16: half their memory, the values
    autocast would compute with anyway, so bit-identical log-probabilities; its head runs in the policy's
    ``head_dtype``, so at the start it gives the policy's own log-probabilities."""
    from agents.common.reference import ReferenceModel
    from agents.testing import tiny_llama_config
    from text_env import TextGenerationEnv

    env = TextGenerationEnv(["The movie", "Plot:"], "char", lambda p, c: np.zeros(len(c)), max_prompt_tokens=16,
                            max_new_tokens=6)  # fmt: skip
    model = PPO(CausalLMPolicy, env, n_steps=12, batch_size=12, seed=0,
                policy_kwargs=dict(model=tiny_llama_config(vocab_size=100), compute_dtype="bfloat16",
                                   head_dtype=head_dtype))  # fmt: skip
    model.learn(12)
    buffer = model.rollout_buffer
    obs = {key: torch.as_tensor(value.reshape(12, -1)) for key, value in buffer.observations.items()}  # (12, L)
    actions = torch.as_tensor(buffer.actions.reshape(-1))  # (12,)
    compact = ReferenceModel(model.policy)
    full = ReferenceModel(model.policy)
    for parameter in full.lm.parameters():  # what the copy held before: float32, cast by autocast at each call
        parameter.data = parameter.data.float()
    linears = [m for m in compact.trunk.modules() if isinstance(m, torch.nn.Linear)]
    assert linears and {m.weight.dtype for m in linears} == {torch.bfloat16}
    assert compact.head.weight.dtype == torch.float32  # the LM head (and log-softmax) stay float32
    bytes_of = lambda lm: sum(p.numel() * p.element_size() for p in lm.parameters())  # noqa: E731
    assert bytes_of(compact.lm) < bytes_of(full.lm)
    assert torch.equal(compact.log_probs(obs, actions), full.log_probs(obs, actions))
    fresh = ReferenceModel(model.policy)  # a copy of the weights as they are now: the policy's own log-probs
    with torch.no_grad():
        policy_log_probs = model.policy.evaluate_actions(obs, actions)[1]
    torch.testing.assert_close(fresh.log_probs(obs, actions), policy_log_probs, atol=1e-5, rtol=0)
    if head_dtype == "bfloat16":  # the reference reads the policy's setting: a float32 head gives other log-probs
        model.policy.head_dtype = "float32"
        assert not torch.equal(fresh.log_probs(obs, actions), policy_log_probs)
