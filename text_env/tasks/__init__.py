"""The registered tasks: the sentiment task, the tiny character task, the verifiable suite, the reasoning-gym bridge.

:class:`Task` (``base.py``) is what a task owns beyond its env; ``answers.py`` what counts as the answer in a
completion; ``suite.py`` the generated verifiable tasks; ``review.py`` PositiveReview-v0 and Vowels-v0.
"""

from text_env.tasks.base import Task, generate_split, pass_at_k, split_of, success_metrics
from text_env.tasks.review import (
    VOWEL_TASK_PROMPTS,
    VowelFractionReward,
    make_positive_review_env,
    make_vowels_env,
)

__all__ = [
    "VOWEL_TASK_PROMPTS",
    "Task",
    "VowelFractionReward",
    "generate_split",
    "make_positive_review_env",
    "make_vowels_env",
    "pass_at_k",
    "split_of",
    "success_metrics",
]
