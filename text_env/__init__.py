"""Text generation as a Gymnasium environment: prompts, tokenizers, reward models and the registered tasks.

``import text_env`` registers ``text_env/TextGeneration-v0``, ``text_env/PositiveReview-v0`` and
``text_env/Vowels-v0`` with Gymnasium.
"""

from text_env.embedded import EMBEDDED_MODEL
from text_env.env import TextGenerationEnv
from text_env.prompts import load_prompts, shipped_prompts, shipped_prompts_path
from text_env.registration import ENV_IDS, register_envs
from text_env.tokenizers import CHAR_TOKENIZER, build_char_tokenizer, resolve_tokenizer

register_envs()

__all__ = [
    "CHAR_TOKENIZER",
    "EMBEDDED_MODEL",
    "ENV_IDS",
    "TextGenerationEnv",
    "build_char_tokenizer",
    "load_prompts",
    "register_envs",
    "resolve_tokenizer",
    "shipped_prompts",
    "shipped_prompts_path",
]
