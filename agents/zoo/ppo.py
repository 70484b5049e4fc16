"""RL Baselines3 Zoo hyperparameters for PPO with the LM policy (``--algo ppo --conf-file agents.zoo.ppo``).

- ``text_env/Vowels-v0``: the tiny character task, a 2-layer GPT-2 (64 wide, random init), the settings of the
  PPO learning test (``tests/test_learning.py``); trains in about a minute on 2 CPU cores.
- ``text_env/PositiveReview-v0``: the main job at a small budget: SmolLM2-135M-Instruct with LoRA r=16, the KL
  penalty against the initial policy (beta 0.1, fixed), the settings of ``agents/cli/config.py`` for the env as the
  zoo makes it, with its sparse reward (GAE lambda 1.0; the main job turns the dense reward on and uses 0.5).
  ``python -m agents.train`` is the fuller tool: held-out evaluation, time budget, export.
"""

from __future__ import annotations

from typing import Any

from agents import EpisodeRolloutBuffer, KLPenaltyCallback
from agents.testing import tiny_gpt2_config

hyperparams: dict[str, dict[str, Any]] = {
    "text_env/Vowels-v0": dict(
        n_timesteps=8192,
        n_envs=8,
        policy="agents.CausalLMPolicy",  # the zoo imports dotted names (a class object breaks its check)
        policy_kwargs=dict(model=tiny_gpt2_config(n_embd=64)),
        rollout_buffer_class=EpisodeRolloutBuffer,
        n_steps=64,
        batch_size=64,
        n_epochs=4,
        learning_rate=3e-3,
    ),
    "text_env/PositiveReview-v0": dict(
        n_timesteps=15_360,  # 10 rollouts of 32 completions x 48 tokens
        n_envs=32,
        policy="agents.CausalLMPolicy",  # the zoo imports dotted names (a class object breaks its check)
        policy_kwargs=dict(
            model="smollm2-135m-instruct",
            lora=dict(r=16, lora_alpha=32, target_modules="all-linear"),
        ),
        rollout_buffer_class=EpisodeRolloutBuffer,
        callback=KLPenaltyCallback(kl_coef=0.1),
        n_steps=48,
        batch_size=384,
        n_epochs=2,
        learning_rate=5e-4,
        gamma=1.0,
        gae_lambda=1.0,
        vf_coef=0.1,
        ent_coef=0.0,
        max_grad_norm=1.0,
    ),
}
