"""Each reward model against a known answer."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import tiny_gpt2_config  # noqa: F401

from text_env.rewards import (
    ClassifierReward,
    CombinedReward,
    EmbeddingSimilarityReward,
    FunctionReward,
    KeywordReward,
    LengthReward,
    RewardModel,
    SentimentReward,
    as_reward_model,
)


def test_sentiment_ranks_positive_above_negative():
    scores = SentimentReward()(["", ""], ["a wonderful, moving film", "a dull, awful film"])
    assert scores.dtype == np.float64 and scores.shape == (2,)
    assert scores[0] > 0.5 > -0.5 > scores[1]


def test_sentiment_can_include_the_prompt():
    assert SentimentReward(include_prompt=True)(["I loved it. "], ["The end."])[0] > 0.5
    assert SentimentReward()(["I loved it. "], ["The end."])[0] == 0.0


def test_function_reward_applies_per_pair():
    reward = FunctionReward(lambda p, c: len(p) + len(c))
    assert reward(["ab", "c"], ["d", ""]).tolist() == [3.0, 1.0]


def test_keyword_reward_counts_whole_words_with_a_cap():
    reward = KeywordReward(["great", "fun"], max_reward=2.0)
    assert reward(["", "", ""], ["Great fun, great!", "greatness", "fun"]).tolist() == [2.0, 0.0, 1.0]
    with pytest.raises(ValueError):
        KeywordReward([])


def test_length_reward_peaks_at_the_target():
    reward = LengthReward(4)
    assert reward(["", "", ""], ["one two three four", "one two", "a b c d e f g h i"]).tolist() == [1.0, 0.5, 0.0]


def test_combined_reward_is_the_weighted_sum():
    combined = CombinedReward([(LengthReward(2), 2.0), (lambda p, c: np.ones(len(c)), -1.0)])
    assert combined(["", ""], ["a b", "a"]).tolist() == [1.0, 0.0]


def test_plain_callables_are_checked():
    model = as_reward_model(lambda p, c: [1.0])
    assert isinstance(model, RewardModel)
    with pytest.raises(ValueError, match="shape"):
        model(["a", "b"], ["c", "d"])


def test_mismatched_batch_is_an_error():
    with pytest.raises(ValueError, match="2 prompts but 1 completions"):
        SentimentReward()(["a", "b"], ["c"])


def test_embedding_similarity_prefers_the_paraphrase():
    reward = EmbeddingSimilarityReward(["a great movie that I enjoyed"])
    scores = reward(["", ""], ["an excellent film, I loved it", "the stock market fell sharply today"])
    assert scores[0] > scores[1] + 0.3
    assert np.all(scores <= 1.0 + 1e-6)


@pytest.fixture
def tiny_classifier_dir(tmp_path):
    """A tiny randomly initialised 2-label BERT classifier saved with its tokenizer, as a user's checkpoint would be."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    from text_env import build_char_tokenizer

    tok = build_char_tokenizer()
    config = BertConfig(
        vocab_size=len(tok),
        hidden_size=8,
        num_hidden_layers=1,
        num_attention_heads=1,
        intermediate_size=8,
        num_labels=2,
        id2label={0: "NEG", 1: "POS"},
        label2id={"NEG": 0, "POS": 1},
        pad_token_id=tok.pad_token_id,
    )
    torch.manual_seed(0)
    model = BertForSequenceClassification(config)
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    return tmp_path


def test_classifier_reward_reads_a_label_logit_or_probability(tiny_classifier_dir):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    texts = ["good", "bad bad"]
    reference = AutoModelForSequenceClassification.from_pretrained(tiny_classifier_dir).eval()
    batch = AutoTokenizer.from_pretrained(tiny_classifier_dir)(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = reference(**batch).logits
    by_name = ClassifierReward(tiny_classifier_dir, label="POS", output="logit")(["", ""], texts)
    np.testing.assert_allclose(by_name, logits[:, 1].numpy(), atol=1e-5)
    probs = ClassifierReward(tiny_classifier_dir, label=0)(["", ""], texts)
    np.testing.assert_allclose(probs, logits.softmax(-1)[:, 0].numpy(), atol=1e-5)
    with pytest.raises(ValueError, match="not one of the classifier's labels"):
        ClassifierReward(tiny_classifier_dir, label="MAYBE")


def test_a_single_target_string_gets_a_clear_error():
    from text_env.rewards import EmbeddingSimilarityReward

    with pytest.raises(TypeError, match=r"wrap it in a list"):
        EmbeddingSimilarityReward("a wonderful film")


def test_reward_specs_build_the_models_they_name():
    from text_env.rewards import CombinedReward, KeywordReward, LengthReward, SentimentReward
    from text_env.rewards.spec import reward_from_spec

    assert isinstance(reward_from_spec("sentiment"), SentimentReward)
    keyword = reward_from_spec("keyword:good,great")
    assert isinstance(keyword, KeywordReward) and keyword.score(["p"], ["a good, great day"])[0] > 0
    combined = reward_from_spec("keyword:good + 0.5*length:2")
    assert isinstance(combined, CombinedReward)
    expected = KeywordReward(["good"]).score(["p"], ["good day"]) + 0.5 * LengthReward(2).score(["p"], ["good day"])
    np.testing.assert_allclose(combined.score(["p"], ["good day"]), expected)
    python = reward_from_spec("python:conftest:count_a")
    assert python.score(["p"], ["banana"])[0] == 3
    with pytest.raises(ValueError, match="needs an argument"):
        reward_from_spec("keyword")
    with pytest.raises(ValueError, match="weight before"):
        reward_from_spec("x*sentiment")
