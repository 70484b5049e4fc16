"""What counts as "the answer" in a completion, and how close it is to the reference.

Small instruction-tuned models answer in many shapes: ``"7"``, ``"The answer is 7."``, ``"**tac**"``,
``"3 + 4 = 7"``, sometimes followed by an explanation on the next lines. The rules, applied by every task of the
suite and tested in ``tests/test_tasks.py``:

1. :func:`extract_answer`: the first non-empty line of the completion; from it, Markdown emphasis and backticks,
   surrounding quotes, a leading label (``answer:``, ``the answer is``, ``the reversed word is``, ...) and
   trailing punctuation are removed. An empty completion has no answer (``None``).
2. :func:`extract_integer`: the last integer of that answer line (``"3 + 4 = 7"`` -> 7), or a number word from
   zero to twenty, or none/never/once/twice/thrice (``"three"`` -> 3, ``"only once"`` -> 1), when the line has no
   digits; ``None`` when there is none.

A completion with no answer scores 0: never an error.
"""

from __future__ import annotations

import re

_LABEL = re.compile(
    r"^(?:so,?\s+)?(?:the\s+)?(?:final\s+)?(?:answer|result|reversed word|reversed phrase|reversal|count|sum|"
    r"total|output|solution)\b(?:\s+is)?\s*[:=]?\s*",
    re.IGNORECASE,
)
_INTEGER = re.compile(r"(?<![\w.])[-+−]?\d+(?![\d.]*\d)")
NUMBER_WORDS = {
    word: value
    for value, word in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
        "seventeen eighteen nineteen twenty".split()
    )
} | {"none": 0, "never": 0, "once": 1, "twice": 2, "thrice": 3}


def extract_answer(completion: str) -> str | None:
    """The answer line of a completion (rule 1 of the module docstring), or ``None`` if it is empty."""
    for line in completion.splitlines():
        answer = line.strip()
        if answer:
            break
    else:
        return None
    answer = answer.replace("**", "").replace("`", "").strip()
    answer = _LABEL.sub("", answer).strip()
    answer = answer.strip("\"'“”‘’ ").rstrip(".!,;:").strip("\"'“”‘’ ")
    return answer or None


def extract_integer(completion: str) -> int | None:
    """The integer answer of a completion (rule 2 of the module docstring), or ``None``."""
    answer = extract_answer(completion)
    if answer is None:
        return None
    numbers = _INTEGER.findall(answer.replace(",", ""))
    if numbers:
        return int(numbers[-1].replace("−", "-"))
    words = re.findall(r"[a-z]+", answer.lower())
    values = [NUMBER_WORDS[w] for w in words if w in NUMBER_WORDS]
    return values[-1] if values else None


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance: insertions, deletions and substitutions to turn ``a`` into ``b``."""
    previous = list(range(len(b) + 1))
    for i, char_a in enumerate(a, start=1):
        current = [i]
        for j, char_b in enumerate(b, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (char_a != char_b)))
        previous = current
    return previous[-1]


def similarity(a: str, b: str) -> float:
    """``1 - edit_distance(a, b) / max(len(a), len(b))``: 1.0 for equal strings, 0.0 for nothing in common (two
    empty strings are equal)."""
    longest = max(len(a), len(b))
    return 1.0 if longest == 0 else 1.0 - edit_distance(a, b) / longest


def number_credit(answer: int | None, target: int) -> float:
    """Credit of a numeric answer: 1.0 when exact, ``0.5 / (1 + |error|)`` when off (0.25 off by one: a close
    count earns a little, never as much as the right one), 0.0 without a number."""
    if answer is None:
        return 0.0
    if answer == target:
        return 1.0
    return 0.5 / (1 + abs(answer - target))
