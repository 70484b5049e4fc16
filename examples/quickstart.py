"""Quick start: PPO fine-tunes SmolLM2-135M-Instruct to write positive movie reviews, with a KL penalty.

    python examples/quickstart.py            # ~3 minutes on 2 CPU cores (10 PPO iterations of one episode)

For the full main job (held-out evaluation, plots, export) run ``make train``.
"""

import gymnasium as gym
from stable_baselines3 import PPO

import text_env  # noqa: F401  (registers text_env/*)
from agents import CausalLMPolicy, EpisodeRolloutBuffer, KLPenaltyCallback, generate_completions

env = gym.make("text_env/PositiveReview-v0")  # shipped prompts, SmolLM2 tokenizer, VADER reward, 48 new tokens
model = PPO(
    CausalLMPolicy,
    env,
    policy_kwargs=dict(model="smollm2-135m-instruct"),  # the embedded default, read offline
    n_steps=48,  # one episode per rollout
    batch_size=48,
    learning_rate=5e-5,
    rollout_buffer_class=EpisodeRolloutBuffer,  # minibatches of whole episodes: one forward pass per episode
    verbose=1,
)
model.learn(480, callback=KLPenaltyCallback(kl_coef=0.05))
result = generate_completions(model, env, ["The film opens with a long shot of the sea, and"])
print(result.completions[0], result.scores[0])
