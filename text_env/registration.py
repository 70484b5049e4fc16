"""Gymnasium registration of the ``text_env/*`` ids (run on ``import text_env``)."""

from __future__ import annotations

from gymnasium.envs.registration import register, registry

#: Registered ids, with their entry points.
ENV_IDS = {
    # Generic: prompts, tokenizer and reward_model all come through gymnasium.make kwargs.
    "text_env/TextGeneration-v0": "text_env.env:TextGenerationEnv",
    # The embedded default task: shipped train prompts, SmolLM2 tokenizer, VADER reward, 48 new tokens.
    "text_env/PositiveReview-v0": "text_env.tasks:make_positive_review_env",
    # Tiny synthetic task on the "char" tokenizer: optimum 1.0, a random policy scores ~0.1.
    "text_env/Vowels-v0": "text_env.tasks:make_vowels_env",
}


def register_envs() -> None:
    """Register every id once (idempotent, so re-imports do not warn)."""
    for env_id, entry_point in ENV_IDS.items():
        if env_id not in registry:
            # No max_episode_steps: the env ends its own episodes (terminated=True at max_new_tokens).
            register(id=env_id, entry_point=entry_point, disable_env_checker=False)
