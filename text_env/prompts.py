"""Prompt sources: lists of strings, ``.txt`` / ``.jsonl`` files, iterables of ``{"prompt", "reference", "meta"}``
records (lists, generators, ``datasets.Dataset``), and the prompt sets shipped under ``text_env/data/``.

A task is more than a prompt: a :class:`PromptRecord` carries the prompt, an optional per-prompt ``reference`` (an
answer, a target string, a word list: what a verifiable reward checks the completion against) and free-form
``meta`` (e.g. the generator's difficulty). A plain string is a record without reference.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

PromptSource = str | os.PathLike[str] | Iterable[Any]


@dataclass(frozen=True)
class PromptRecord:
    """One prompt of a task, with what its reward needs to check a completion.

    :param prompt: the text the model completes (the user message when the env formats prompts as chat).
    :param reference: the per-prompt reference a reward checks against (an answer, a word list, a dataset entry);
        ``None`` when the prompt has none. Keep it JSON-serialisable: checkpoints store the episode's record.
    :param meta: free-form facts about the instance (difficulty, source, ids), returned in ``info["meta"]``.
    """

    prompt: str
    reference: Any = None
    meta: Mapping[str, Any] = field(default_factory=dict)

    @property
    def has_reference(self) -> bool:
        return self.reference is not None

    def to_dict(self) -> dict[str, Any]:
        """The record as the ``{"prompt", "reference", "meta"}`` mapping it can be read back from."""
        return {"prompt": self.prompt, "reference": self.reference, "meta": dict(self.meta)}


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


def as_record(record: Any, where: str = "prompts") -> PromptRecord:
    """A :class:`PromptRecord` from a string, a record, or a mapping with a ``"prompt"`` field and optional
    ``"reference"`` and ``"meta"``; other fields of the mapping (a dataset's ``"id"``) join ``meta``."""
    if isinstance(record, PromptRecord):
        return record
    if isinstance(record, str):
        return PromptRecord(record)
    if isinstance(record, Mapping):
        if "prompt" not in record:
            raise ValueError(
                f"{where}: a record has no 'prompt' field (keys: {sorted(record)}); each record is "
                '{"prompt": str, "reference": optional, "meta": optional dict}.'
            )
        prompt = record["prompt"]
        if not isinstance(prompt, str):
            raise TypeError(f"{where}: the 'prompt' field must be a string, got {type(prompt).__name__}.")
        meta = record.get("meta") or {}
        if not isinstance(meta, Mapping):
            raise TypeError(f"{where}: the 'meta' field must be a mapping, got {type(meta).__name__}.")
        # Other fields (a dataset's "id", "source", ...) are facts about the instance: kept in meta.
        meta = {**{k: v for k, v in record.items() if k not in ("prompt", "reference", "meta")}, **meta}
        return PromptRecord(prompt, record.get("reference"), dict(meta))
    raise TypeError(
        f"{where}: each prompt must be a string or a mapping with a 'prompt' field, got {type(record).__name__}."
    )


def load_prompts(source: PromptSource) -> list[str]:
    """The prompt strings of :func:`load_records` (references and meta dropped)."""
    return [record.prompt for record in load_records(source)]


def load_records(source: PromptSource) -> list[PromptRecord]:
    """Read prompt records from a list (of strings, records or ``{"prompt", "reference", "meta"}`` dicts), a
    ``.txt`` file (one prompt a line, blank lines skipped), a ``.jsonl`` file (one record a line), or any iterable of
    those (a generator, a ``datasets.Dataset``). Raises ``ValueError`` when the source holds no prompt."""
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
        prompts: list[PromptRecord] = []
        if path.suffix == ".txt":
            prompts = [PromptRecord(line.rstrip("\n")) for line in text.splitlines() if line.strip()]
        elif path.suffix == ".jsonl":
            for number, line in enumerate(text.splitlines(), start=1):
                if line.strip():
                    try:
                        record = json.loads(line)
                    except json.JSONDecodeError as error:
                        raise ValueError(f"{path}:{number}: not a JSON object ({error.msg}): {line[:60]!r}") from None
                    prompts.append(as_record(record, f"{path}:{number}"))
        else:
            raise ValueError(f"Prompt file {str(path)!r} must end in .txt (one prompt a line) or .jsonl.")
        where = str(path)
    elif isinstance(source, Iterable):
        prompts = [as_record(record, f"prompts[{index}]") for index, record in enumerate(source)]
        where = "the prompt list"
    else:
        raise TypeError(f"prompts must be a list, a file path or an iterable of records, got {type(source).__name__}.")
    if not prompts:
        raise ValueError(f"No prompts found in {where}: give at least one prompt.")
    return prompts
