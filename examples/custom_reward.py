"""A custom reward function: any ``fn(prompt, completion) -> float`` becomes a reward model.

    python examples/custom_reward.py         # ~2 minutes on CPU

Here the reward counts "ha" in the completion (a two-token pattern, hard to find by chance) plus a small bonus for
8-character completions. In 20,000 steps the tiny randomly initialised GPT-2 reliably learns the length bonus
(mean reward 0.2 on 2026-11-24) but not yet the laugh: a fair picture of sparse rewards. Try more steps or a
denser reward.
"""

import gymnasium as gym
import numpy as np
from stable_baselines3 import PPO
from stable_baselines3.common.env_util import make_vec_env
from transformers import GPT2Config

import text_env  # noqa: F401
from agents import CausalLMPolicy, EpisodeRolloutBuffer, generate_completions
from text_env.rewards import CombinedReward, FunctionReward, LengthReward


def laughs(prompt: str, completion: str) -> float:
    return completion.count("ha") / 4.0


reward = CombinedReward([(FunctionReward(laughs), 1.0), (LengthReward(8, unit="chars"), 0.2)])
env_kwargs = dict(prompts=["Joke: ", "Funny: ", "Heh "], tokenizer="char", reward_model=reward, max_new_tokens=8)
venv = make_vec_env("text_env/TextGeneration-v0", n_envs=8, seed=0, env_kwargs=env_kwargs)
tiny = GPT2Config(vocab_size=100, n_positions=64, n_embd=64, n_layer=2, n_head=2, bos_token_id=2, eos_token_id=1)
model = PPO(
    CausalLMPolicy,
    venv,
    policy_kwargs=dict(model=tiny),
    n_steps=64,
    batch_size=64,
    learning_rate=3e-3,
    rollout_buffer_class=EpisodeRolloutBuffer,
    seed=0,
)
model.learn(20_000)
result = generate_completions(model, gym.make("text_env/TextGeneration-v0", **env_kwargs), ["Joke: "] * 4)
print(result.completions, "mean reward", np.mean(result.scores))
