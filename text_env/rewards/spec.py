"""Reward models from a one-line spec, for the command line: ``--reward "sentiment+0.2*length:40"``.

Terms are joined by ``+``; a term may start with a weight ``W*``. Each term is one of:

| spec | reward model |
| --- | --- |
| ``sentiment`` | :class:`SentimentReward` (VADER compound) |
| ``keyword:good,great`` | :class:`KeywordReward` over the comma-separated words |
| ``length:40`` | :class:`LengthReward` with a target of 40 words |
| ``classifier:DIR[:LABEL]`` | :class:`ClassifierReward` on a saved classifier (label name or index) |
| ``embedding:target text`` | :class:`EmbeddingSimilarityReward` to the text (all-MiniLM-L6-v2) |
| ``python:module:function`` | a batched function ``(prompts, completions) -> scores`` imported from ``module`` |

:func:`check_reward_spec` validates a spec without building anything (no model loads), so the command line can
refuse a bad one before it loads weights.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from text_env.rewards.base import CombinedReward, RewardModel, as_reward_model

KINDS = ("sentiment", "keyword", "length", "classifier", "embedding", "python")
#: Kinds cheap enough to call at every token (``dense_reward``): a lexicon or a rule, microseconds a call.
CHEAP_KINDS = ("sentiment", "keyword", "length")


def _terms(spec: str) -> list[tuple[float, str, str]]:
    """``(weight, kind, argument)`` per term; raises ``ValueError`` naming the bad part."""
    if not spec or not spec.strip():
        raise ValueError("The reward spec is empty: use e.g. 'sentiment' or 'keyword:good,great'.")
    terms = []
    for raw in spec.split("+"):
        term, weight = raw.strip(), 1.0
        head, star, rest = term.partition("*")
        if star:
            try:
                weight = float(head)
            except ValueError:
                raise ValueError(f"Reward term {term!r}: the weight before '*' must be a number.") from None
            term = rest.strip()
        kind, _, argument = term.partition(":")
        if kind not in KINDS:
            raise ValueError(f"Unknown reward {kind!r} in {spec!r}; use one of {KINDS} (see --help).")
        if kind != "sentiment" and not argument:
            raise ValueError(f"Reward term {term!r} needs an argument, e.g. {_EXAMPLES[kind]!r}.")
        if kind == "length" and not argument.isdigit():
            raise ValueError(f"Reward term {term!r}: the length target must be a whole number of words.")
        if kind == "classifier" and not Path(argument.split(":")[0]).is_dir():
            raise ValueError(f"Reward term {term!r}: {argument.split(':')[0]!r} is not a classifier directory.")
        if kind == "python" and argument.count(":") != 1:
            raise ValueError(f"Reward term {term!r}: write python:module:function.")
        terms.append((weight, kind, argument))
    return terms


_EXAMPLES = {
    "keyword": "keyword:good,great",
    "length": "length:40",
    "classifier": "classifier:models/sst2:POSITIVE",
    "embedding": "embedding:a wonderful film",
    "python": "python:my_rewards:score",
}


def is_cheap_reward_spec(spec: str) -> bool:
    """Whether every term of ``spec`` is a lexicon or rule reward (:data:`CHEAP_KINDS`), not a neural model or
    an unknown Python function."""
    return all(kind in CHEAP_KINDS for _, kind, _ in _terms(spec))


def check_reward_spec(spec: str) -> None:
    """Raise ``ValueError`` for a malformed spec, without loading any model."""
    _terms(spec)


def _build(kind: str, argument: str) -> RewardModel:
    from text_env.rewards import (
        ClassifierReward,
        EmbeddingSimilarityReward,
        KeywordReward,
        LengthReward,
        SentimentReward,
    )

    if kind == "sentiment":
        return SentimentReward()
    if kind == "keyword":
        return KeywordReward([word.strip() for word in argument.split(",") if word.strip()])
    if kind == "length":
        return LengthReward(int(argument))
    if kind == "classifier":
        directory, _, label = argument.partition(":")
        return ClassifierReward(directory, int(label) if label.isdigit() else (label or 1))
    if kind == "embedding":
        return EmbeddingSimilarityReward([argument])
    module_name, function_name = argument.split(":")
    function = getattr(importlib.import_module(module_name), function_name)
    return as_reward_model(function)


def reward_from_spec(spec: str) -> RewardModel:
    """The reward model a spec describes (a :class:`CombinedReward` for several terms or a weight)."""
    terms = _terms(spec)
    if len(terms) == 1 and terms[0][0] == 1.0:
        return _build(terms[0][1], terms[0][2])
    return CombinedReward([(_build(kind, argument), weight) for weight, kind, argument in terms])
