"""BatchedRewardVecEnv: the same rewards, scores and episode returns as per-env scoring, in one call per step."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import SHORT_PROMPTS
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import DummyVecEnv

from agents.common.vec_env import BatchedRewardVecEnv
from text_env import TextGenerationEnv
from text_env.rewards import RewardModel


class CountingReward(RewardModel):
    """Counts 'a' characters, and records the size of every call."""

    def __init__(self):
        self.call_sizes = []

    def score(self, prompts, completions):
        self.call_sizes.append(len(completions))
        return np.array([c.count("a") + 0.5 * len(p) for p, c in zip(prompts, completions, strict=True)])


def run(batched: bool, steps: int = 40, n_envs: int = 6):
    reward = CountingReward()
    make = lambda: TextGenerationEnv(SHORT_PROMPTS, "char", reward, max_prompt_tokens=16, max_new_tokens=5)  # noqa: E731
    venv = make_vec_env(make, n_envs=n_envs, seed=0)
    if batched:
        venv = BatchedRewardVecEnv(venv)
    venv.reset()
    rng = np.random.default_rng(0)
    rewards, scores, returns = [], [], []
    for _ in range(steps):
        actions = rng.integers(3, 100, size=n_envs)
        actions[rng.random(n_envs) < 0.2] = 1  # EOS: episodes end at different steps
        _, step_rewards, dones, infos = venv.step(actions)
        rewards.append(step_rewards.copy())
        scores.extend(info["score"] for info, done in zip(infos, dones, strict=True) if done)
        returns.extend(info["episode"]["r"] for info, done in zip(infos, dones, strict=True) if done)
    return np.array(rewards), scores, returns, reward.call_sizes


def test_batched_scoring_gives_the_same_rewards_in_one_call_per_step():
    per_env = run(batched=False)
    batched = run(batched=True)
    np.testing.assert_allclose(batched[0], per_env[0], rtol=1e-6)
    assert batched[1] == pytest.approx(per_env[1]) and batched[2] == pytest.approx(per_env[2])
    assert set(per_env[3]) == {1}  # one pair per call without the wrapper
    assert sum(batched[3]) == sum(per_env[3]) and len(batched[3]) < len(per_env[3])
    assert max(batched[3]) > 1  # several completions finished in the same step and shared a call


def test_the_wrapper_needs_text_envs():
    from stable_baselines3.common.envs import IdentityEnv

    with pytest.raises(TypeError, match="TextGenerationEnv"):
        BatchedRewardVecEnv(DummyVecEnv([lambda: IdentityEnv(3)]))


def test_the_wrapper_refuses_dense_reward_envs():
    make = lambda: TextGenerationEnv(SHORT_PROMPTS, "char", CountingReward(), dense_reward=True)  # noqa: E731
    with pytest.raises(ValueError, match="dense_reward"):
        BatchedRewardVecEnv(make_vec_env(make, n_envs=2, seed=0))


def test_a_nan_score_in_a_batch_names_its_pair():
    class NanForB(RewardModel):
        def score(self, prompts, completions):
            return np.array([np.nan if p == "B" else 1.0 for p in prompts])

    make = lambda: TextGenerationEnv(["A", "B"], "char", NanForB(), max_prompt_tokens=4, max_new_tokens=1)  # noqa: E731
    venv = BatchedRewardVecEnv(make_vec_env(make, n_envs=4, seed=0))
    venv.reset()
    for _ in range(20):  # random prompts: some step scores a batch holding "B"
        try:
            venv.step(np.full(4, 40))
        except ValueError as error:
            assert "non-finite" in str(error) and "First bad pair: prompt='B'" in str(error)
            return
    pytest.fail("no batch held prompt B")


class StartsWithReference(RewardModel):
    """1.0 when the completion starts with its prompt's reference; success the same."""

    uses_references = True

    def score(self, prompts, completions, references=None):
        return np.array([float(c.startswith(r)) for c, r in zip(completions, references, strict=True)])

    def success(self, prompts, completions, references):
        return self.score(prompts, completions, references) == 1.0


@pytest.mark.parametrize("vec_env", ["dummy", "batched", "subproc"])
def test_references_and_success_reach_the_reward_in_every_vector_env(vec_env):
    """Each env's record goes with its episode: deferred batched scoring and subprocess envs pass references too."""
    from stable_baselines3.common.vec_env import SubprocVecEnv

    records = [{"prompt": "a?", "reference": "a"}, {"prompt": "b?", "reference": "b"}]
    make = lambda: TextGenerationEnv(records, "char", StartsWithReference(), max_new_tokens=2)  # noqa: E731
    kind = SubprocVecEnv if vec_env == "subproc" else DummyVecEnv
    venv = make_vec_env(make, n_envs=4, seed=0, vec_env_cls=kind)
    if vec_env == "batched":
        venv = BatchedRewardVecEnv(venv)
    venv.reset()
    references = venv.env_method("get_wrapper_attr", "record")
    tokenizer = venv.get_attr("tokenizer", indices=0)[0]
    char = {c: tokenizer.convert_tokens_to_ids(c) for c in "ab"}
    first = np.array([char[r.reference] for r in references])
    second = np.array([char["a"]] * 4)
    venv.step(first)
    _, rewards, dones, infos = venv.step(second)
    assert dones.all() and rewards.tolist() == [1.0] * 4
    assert [info["reference"] for info in infos] == [r.reference for r in references]
    assert all(info["success"] is True and info["is_success"] is True for info in infos)
    venv.close()
