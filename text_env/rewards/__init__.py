"""Batched reward models: ``reward_model(prompts, completions) -> np.ndarray`` of floats, one per pair."""

from text_env.rewards.base import CombinedReward, FunctionReward, RewardModel, as_reward_model, check_scores
from text_env.rewards.judges import ReviewJudge
from text_env.rewards.lexical import KeywordReward, LengthReward, SentimentReward
from text_env.rewards.neural import ClassifierReward, EmbeddingSimilarityReward

__all__ = [
    "ClassifierReward",
    "CombinedReward",
    "EmbeddingSimilarityReward",
    "FunctionReward",
    "KeywordReward",
    "LengthReward",
    "ReviewJudge",
    "RewardModel",
    "SentimentReward",
    "as_reward_model",
    "check_scores",
]
