"""The registered tasks (run on ``import text_env``): each one :class:`~text_env.tasks.base.Task` entry.

A task entry is its Gymnasium id and entry point plus what differs about it: recommended training settings, dense
reward, evaluation metrics. ``agents.train`` and ``agents.evaluate`` ask :func:`task_for` and never match ids.
"""

from __future__ import annotations

from gymnasium.envs.registration import register, registry

from text_env.tasks.base import Task
from text_env.tasks.review import review_judge

#: Settings of the verifiable suite's tasks for ``python -m agents.train`` (GRPO with groups of 4; sparse reward).
SUITE_TRAINING = {
    "algorithm": "grpo",
    "kl_coef": 0.02,
    "learning_rate": 3e-4,
    "n_epochs": 1,
    "eval_samples": 4,
    "eval_prompts": 64,
    "eval_every": 10,
}


def _suite_training(max_new_tokens: int) -> dict[str, object]:
    """Two rounds of completions per rollout, minibatches of 16 completions (both in token slots)."""
    return {**SUITE_TRAINING, "n_steps": 2 * max_new_tokens, "batch_size": 16 * max_new_tokens}


#: Every registered task, by id.
TASKS: dict[str, Task] = {
    task.env_id: task
    for task in (
        Task(
            "text_env/TextGeneration-v0",
            "text_env.env:TextGenerationEnv",
            "generic: prompts, tokenizer and reward_model come through gymnasium.make kwargs",
        ),
        Task(
            "text_env/PositiveReview-v0",
            "text_env.tasks.review:make_positive_review_env",
            "continue a movie-review opening; VADER compound of the completion (the main job)",
            dense_reward=True,
            positive_threshold=0.05,  # VADER's threshold of a positive text
            judge=review_judge,
        ),
        Task(
            "text_env/Vowels-v0",
            "text_env.tasks.review:make_vowels_env",
            "tiny character-level task: write vowels (optimum 1.0, random ~0.1)",
            training={"kl_coef": 0.0, "gae_lambda": 1.0, "lora_r": 0},
            dense_reward=True,
        ),
        Task(
            "text_env/Reverse-v0",
            "text_env.tasks.suite:make_reverse_env",
            "spell a word backwards; edit-similarity credit, exact-match success",
            training=_suite_training(10),
            verifiable=True,
        ),
        Task(
            "text_env/LetterCount-v0",
            "text_env.tasks.suite:make_letter_count_env",
            "count a letter in one to three words; exact count succeeds, close counts earn a little",
            training=_suite_training(10),
            verifiable=True,
        ),
        Task(
            "text_env/Arithmetic-v0",
            "text_env.tasks.suite:make_arithmetic_env",
            "sums and differences of small integers; exact value succeeds",
            training=_suite_training(12),
            verifiable=True,
        ),
        Task(
            "text_env/Keywords-v0",
            "text_env.tasks.suite:make_keywords_env",
            "one sentence using every given word (CommonGen-style); share of words used x length window",
            training=_suite_training(24),
            verifiable=True,
        ),
        # Multi-turn (text_env.multi_turn.MultiTurnEnv): the environment answers each turn. One round of
        # conversations per rollout (n_steps = max_new_tokens, the conversation's token slots).
        Task(
            "text_env/GuessNumber-v0",
            "text_env.tasks.games:make_guess_number_env",
            "multi-turn: find a secret from 1 to 16; the env says Higher, Lower or Correct (fewer guesses pay more)",
            training={**SUITE_TRAINING, "n_steps": 96, "batch_size": 16 * 96},
            verifiable=True,
        ),
        Task(
            "text_env/Calculator-v0",
            "text_env.tasks.games:make_calculator_env",
            "multi-turn tool use: a 3-digit x 2-digit product with a calculator the env runs (CALC: / ANSWER:)",
            training={**SUITE_TRAINING, "n_steps": 96, "batch_size": 16 * 96},
            verifiable=True,
        ),
        Task(
            "text_env/Calculator-v1",
            "text_env.tasks.games:make_calculator_v1_env",
            "Calculator-v0 without a worked example to copy; the tool-use reward only for computing the product",
            training={**SUITE_TRAINING, "n_steps": 96, "batch_size": 16 * 96},
            verifiable=True,
        ),
        # The reasoning-gym bridge (the 'reasoning' extra): any dataset, and three whose smallest instances a 135M
        # chat model answers sometimes. n_steps and batch_size are multiples of max_new_tokens (32; 8).
        Task(
            "text_env/ReasoningGym-v0",
            "text_env.tasks.reasoning_gym:make_reasoning_gym_env",
            "any reasoning-gym dataset (dataset=NAME, **config; the 'reasoning' extra); its own score_answer",
            training=_suite_training(32),
            verifiable=True,
        ),
        Task(
            "text_env/ReasoningGym-BasicArithmetic-v0",
            "text_env.tasks.reasoning_gym:make_basic_arithmetic_env",
            "reasoning-gym basic_arithmetic: a sum or difference of two numbers from 0 to 10",
            training=_suite_training(8),
            verifiable=True,
        ),
        Task(
            "text_env/ReasoningGym-LetterCounting-v0",
            "text_env.tasks.reasoning_gym:make_letter_counting_env",
            "reasoning-gym letter_counting: how many times a letter occurs in one word",
            training=_suite_training(8),
            verifiable=True,
        ),
        Task(
            "text_env/ReasoningGym-SpellBackward-v0",
            "text_env.tasks.reasoning_gym:make_spell_backward_env",
            "reasoning-gym spell_backward: a three-letter word backwards; credit per letter in place",
            training=_suite_training(8),
            verifiable=True,
        ),
    )
}

#: Registered ids, with their entry points.
ENV_IDS = {env_id: task.entry_point for env_id, task in TASKS.items()}


def task_for(env_id: str) -> Task | None:
    """The :class:`Task` registered as ``env_id``, or ``None`` for an id registered elsewhere."""
    return TASKS.get(env_id)


def register_envs() -> None:
    """Register every id once (idempotent, so re-imports do not warn)."""
    for env_id, entry_point in ENV_IDS.items():
        if env_id not in registry:
            # No max_episode_steps: the env ends its own episodes (terminated=True at max_new_tokens).
            register(id=env_id, entry_point=entry_point, disable_env_checker=False)
