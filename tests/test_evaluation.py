"""TextEvalCallback evaluates the policy after the updates it claims: every N rollouts and once at the end."""

from __future__ import annotations

from conftest import SHORT_PROMPTS, tiny_gpt2_config
from stable_baselines3 import PPO
from stable_baselines3.common.env_util import make_vec_env

from agents import CausalLMPolicy
from agents.common.evaluation import TextEvalCallback


class RecordingEval(TextEvalCallback):
    """Remembers a fingerprint of the weights each evaluation saw."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fingerprints: list[float] = []

    def evaluate(self):
        self.fingerprints.append(fingerprint(self.model))
        return super().evaluate()


def fingerprint(model) -> float:
    return float(sum(p.detach().double().sum() for p in model.policy.parameters()))


def test_evaluations_see_the_updates_of_the_rollouts_they_are_labelled_with():
    env = make_vec_env("text_env/Vowels-v0", n_envs=2, seed=0)
    model = PPO(CausalLMPolicy, env, policy_kwargs=dict(model=tiny_gpt2_config()), n_steps=8, batch_size=16, seed=0)
    evaluation = RecordingEval(env.envs[0].unwrapped.fresh_copy(), SHORT_PROMPTS[:2], every_n_rollouts=2, verbose=0)
    model.learn(4 * 16, callback=evaluation)  # 4 rollouts of 2 envs x 8 steps
    assert [row["timesteps"] for row in evaluation.history] == [0, 32, 64]
    assert len(set(evaluation.fingerprints)) == 3  # each after more updates than the one before
    assert evaluation.fingerprints[-1] == fingerprint(model)  # the last one saw the final weights
