"""Prompt sources and the shipped prompt sets."""

from __future__ import annotations

import json

import pytest

from text_env import load_prompts, shipped_prompts


def test_list_of_strings():
    assert load_prompts(["a", "b"]) == ["a", "b"]


def test_txt_file_one_prompt_a_line(tmp_path):
    path = tmp_path / "p.txt"
    path.write_text("first\n\nsecond line\n", encoding="utf-8")
    assert load_prompts(path) == ["first", "second line"]


def test_jsonl_file(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text("\n".join(json.dumps({"prompt": p, "id": i}) for i, p in enumerate(["x", "y"])), encoding="utf-8")
    assert load_prompts(str(path)) == ["x", "y"]


def test_iterable_of_records_like_a_dataset():
    records = ({"prompt": f"p{i}", "label": i} for i in range(3))
    assert load_prompts(records) == ["p0", "p1", "p2"]


@pytest.mark.parametrize(
    ("source", "error", "match"),
    [
        ([], ValueError, "No prompts"),
        ([{"text": "x"}], ValueError, "no 'prompt' field"),
        ([3], TypeError, "must be a string"),
        ("/no/such/file.txt", FileNotFoundError, "does not exist"),
    ],
)
def test_bad_sources(source, error, match):
    with pytest.raises(error, match=match):
        load_prompts(source)


def test_wrong_file_suffix(tmp_path):
    path = tmp_path / "p.csv"
    path.write_text("a\n")
    with pytest.raises(ValueError, match=r"\.txt"):
        load_prompts(path)


def test_shipped_movie_review_openings():
    train, test = shipped_prompts(split="train"), shipped_prompts(split="test")
    assert len(train) + len(test) >= 300 and len(test) >= 50
    assert not set(train) & set(test)
    assert len(set(train)) == len(train)
    with pytest.raises(ValueError, match="no split"):
        shipped_prompts(split="validation")
