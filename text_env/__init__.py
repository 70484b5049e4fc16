"""Text generation as a Gymnasium environment: prompt records, tokenizers, reward models and the registered tasks.

``import text_env`` registers every id of :data:`ENV_IDS` with Gymnasium (``text_env/PositiveReview-v0``, the
verifiable suite ``Reverse-v0``, ``LetterCount-v0``, ``Arithmetic-v0``, ``Keywords-v0``, the multi-turn
``GuessNumber-v0`` and ``Calculator-v0``, ...); :func:`task_for`
gives what a registered task owns (evaluation, recommended training settings).
"""

from text_env.embedded import EMBEDDED_MODEL
from text_env.env import TextGenerationEnv
from text_env.multi_turn import MultiTurnEnv, Reply
from text_env.prompts import PromptRecord, load_prompts, load_records, shipped_prompts, shipped_prompts_path
from text_env.registration import ENV_IDS, TASKS, register_envs, task_for
from text_env.tasks.base import Task
from text_env.tokenizers import CHAR_TOKENIZER, build_char_tokenizer, resolve_tokenizer
from text_env.turn_level import TurnLevelEnv

register_envs()

__all__ = [
    "CHAR_TOKENIZER",
    "EMBEDDED_MODEL",
    "ENV_IDS",
    "MultiTurnEnv",
    "TASKS",
    "PromptRecord",
    "Reply",
    "Task",
    "TextGenerationEnv",
    "TurnLevelEnv",
    "build_char_tokenizer",
    "load_prompts",
    "load_records",
    "register_envs",
    "resolve_tokenizer",
    "shipped_prompts",
    "shipped_prompts_path",
    "task_for",
]
