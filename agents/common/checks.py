"""Small helpers of the settings dataclasses: a field with its command-line help, and the one range check."""

from __future__ import annotations

from dataclasses import field
from typing import Any


def option(default: Any, help: str) -> Any:  # noqa: A002  (the name argparse gives it)
    """A dataclass field with its command-line help (``metadata["help"]``)."""
    return field(default=default, metadata={"help": help})


def at_least(settings: Any, minimums: dict[str, float], strict: tuple[str, ...] = ()) -> list[str]:
    """One line for each option of ``settings`` below its minimum (or equal to it, for the names in ``strict``);
    ``None`` (unset) passes."""
    problems = []
    for name, minimum in minimums.items():
        value = getattr(settings, name)
        if value is not None and (value < minimum or (name in strict and value == minimum)):
            problems.append(f"{name} must be {'>' if name in strict else '>='} {minimum:g}, got {value}")
    return problems


def raise_problems(problems: list[str]) -> None:
    """Raise one ``ValueError`` listing ``problems`` (none: return)."""
    if problems:
        raise ValueError("; ".join(problems))
