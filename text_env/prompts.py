"""Prompt sources: lists of strings, ``.txt`` / ``.jsonl`` files, iterables of ``{"prompt": ...}`` records, and
the prompt sets shipped under ``text_env/data/``."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

PromptSource = str | os.PathLike[str] | Iterable[Any]

#: Shipped prompt sets: name -> split -> file name under ``text_env/data/``.
SHIPPED_PROMPT_SETS: dict[str, dict[str, str]] = {
    "movie_reviews": {"train": "movie_reviews_train.txt", "test": "movie_reviews_test.txt"},
}


def shipped_prompts_path(name: str = "movie_reviews", split: str = "train") -> Path:
    """Path of a shipped prompt file, e.g. the movie-review openings' ``"train"`` or ``"test"`` split."""
    if name not in SHIPPED_PROMPT_SETS:
        raise ValueError(f"Unknown prompt set {name!r}; shipped sets are {sorted(SHIPPED_PROMPT_SETS)}.")
    splits = SHIPPED_PROMPT_SETS[name]
    if split not in splits:
        raise ValueError(f"Prompt set {name!r} has no split {split!r}; choose one of {sorted(splits)}.")
    return Path(str(resources.files("text_env") / "data" / splits[split]))


def shipped_prompts(name: str = "movie_reviews", split: str = "train") -> list[str]:
    """The prompts of a shipped set, one string each."""
    return load_prompts(shipped_prompts_path(name, split))


def _prompt_from_record(record: Any, where: str) -> str:
    if isinstance(record, str):
        return record
    if isinstance(record, Mapping):
        if "prompt" not in record:
            raise ValueError(f"{where}: a record has no 'prompt' field (keys: {sorted(record)}).")
        prompt = record["prompt"]
        if not isinstance(prompt, str):
            raise TypeError(f"{where}: the 'prompt' field must be a string, got {type(prompt).__name__}.")
        return prompt
    raise TypeError(
        f"{where}: each prompt must be a string or a mapping with a 'prompt' field, got {type(record).__name__}."
    )


def load_prompts(source: PromptSource) -> list[str]:
    """Read prompts from a list of strings, a ``.txt`` file (one prompt a line, blank lines skipped), a ``.jsonl``
    file (a ``"prompt"`` field per line), or any iterable of strings or dicts with ``"prompt"`` (e.g. a
    ``datasets.Dataset``). Raises ``ValueError`` when the source holds no prompt."""
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if path.is_dir():
            raise IsADirectoryError(f"Prompt path {str(path)!r} is a directory: give a .txt or .jsonl file inside it.")
        if not path.is_file():
            raise FileNotFoundError(
                f"Prompt file {str(path)!r} does not exist. To pass prompts directly, give a list of strings."
            )
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as error:
            raise ValueError(
                f"Prompt file {str(path)!r} is not UTF-8 text ({error.reason} at byte {error.start}): save it as UTF-8."
            ) from None
        if path.suffix == ".txt":
            prompts = [line.rstrip("\n") for line in text.splitlines() if line.strip()]
        elif path.suffix == ".jsonl":
            prompts = []
            for number, line in enumerate(text.splitlines(), start=1):
                if line.strip():
                    try:
                        record = json.loads(line)
                    except json.JSONDecodeError as error:
                        raise ValueError(f"{path}:{number}: not a JSON object ({error.msg}): {line[:60]!r}") from None
                    prompts.append(_prompt_from_record(record, f"{path}:{number}"))
        else:
            raise ValueError(f"Prompt file {str(path)!r} must end in .txt (one prompt a line) or .jsonl.")
        where = str(path)
    elif isinstance(source, Iterable):
        prompts = [_prompt_from_record(record, "prompts") for record in source]
        where = "the prompt list"
    else:
        raise TypeError(f"prompts must be a list, a file path or an iterable of records, got {type(source).__name__}.")
    if not prompts:
        raise ValueError(f"No prompts found in {where}: give at least one prompt.")
    return prompts
