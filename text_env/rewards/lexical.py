"""Reward models that read the text directly: VADER sentiment, keywords, length."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import numpy as np

from text_env.rewards.base import RewardModel


class SentimentReward(RewardModel):
    """VADER compound sentiment in [-1, 1] (Hutto & Gilbert 2014), a lexicon scorer: fast, no model weights.

    :param include_prompt: score ``prompt + completion`` instead of the completion alone.
    """

    def __init__(self, include_prompt: bool = False) -> None:
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

        self.include_prompt = include_prompt
        self._analyzer = SentimentIntensityAnalyzer()

    def score(self, prompts: Sequence[str], completions: Sequence[str]) -> np.ndarray:
        texts = [p + c for p, c in zip(prompts, completions, strict=True)] if self.include_prompt else completions
        return np.array([self._analyzer.polarity_scores(text)["compound"] for text in texts])

    def __repr__(self) -> str:
        return f"SentimentReward(include_prompt={self.include_prompt})"


class KeywordReward(RewardModel):
    """Count whole-word occurrences of keywords in the completion, ``per_occurrence`` each, capped at ``max_reward``.

    :param keywords: words or phrases to reward.
    :param case_sensitive: match case exactly.
    """

    def __init__(
        self,
        keywords: Iterable[str],
        *,
        per_occurrence: float = 1.0,
        max_reward: float | None = None,
        case_sensitive: bool = False,
    ) -> None:
        self.keywords = [k for k in keywords]
        if not self.keywords or not all(isinstance(k, str) and k.strip() for k in self.keywords):
            raise ValueError(f"KeywordReward needs at least one non-empty keyword string, got {self.keywords!r}.")
        flags = 0 if case_sensitive else re.IGNORECASE
        self._pattern = re.compile(r"\b(?:" + "|".join(re.escape(k) for k in self.keywords) + r")\b", flags)
        self.per_occurrence = per_occurrence
        self.max_reward = max_reward

    def score(self, prompts: Sequence[str], completions: Sequence[str]) -> np.ndarray:
        scores = np.array([self.per_occurrence * len(self._pattern.findall(c)) for c in completions], dtype=np.float64)
        return scores if self.max_reward is None else np.minimum(scores, self.max_reward)

    def __repr__(self) -> str:
        return f"KeywordReward({self.keywords!r})"


class LengthReward(RewardModel):
    """``1 - |n - target| / target``, clipped at 0, where ``n`` counts the completion's words (or characters).

    Peaks at 1.0 when the completion has exactly ``target`` units.
    """

    def __init__(self, target: int, unit: str = "words") -> None:
        if target < 1:
            raise ValueError(f"LengthReward target must be >= 1, got {target}.")
        if unit not in ("words", "chars"):
            raise ValueError(f"LengthReward unit must be 'words' or 'chars', got {unit!r}.")
        self.target = target
        self.unit = unit

    def score(self, prompts: Sequence[str], completions: Sequence[str]) -> np.ndarray:
        lengths = np.array([len(c.split()) if self.unit == "words" else len(c) for c in completions], dtype=np.float64)
        return np.clip(1.0 - np.abs(lengths - self.target) / self.target, 0.0, 1.0)

    def __repr__(self) -> str:
        return f"LengthReward(target={self.target}, unit={self.unit!r})"
