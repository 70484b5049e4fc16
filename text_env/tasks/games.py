"""Multi-turn tasks (:class:`~text_env.multi_turn.MultiTurnEnv`): a game and a tool, where the model's next turn
depends on what the environment said.

- ``text_env/GuessNumber-v0``: find a secret whole number in a range; after each guess the environment says
  "Higher.", "Lower." or "Correct!". Reward ``1 - 0.1 * (guesses - 1)`` on finding it (fewer turns better), 0
  otherwise; success when found.
- ``text_env/Calculator-v0``: compute a product of a 3-digit and a 2-digit number with a calculator the environment
  runs: ``CALC: <expression>`` gets ``= <value>`` back, ``ANSWER: <number>`` ends the episode. Reward 1 for the
  right answer, plus 0.2 for the first valid calculator call; success is the right answer. Its shaping reward is
  gamed: GRPO learned to call the prompt's worked example (``CALC: 12 * 34``) and never answer.
- ``text_env/Calculator-v1``: the same tool with that fixed: the prompt shows the syntax without numbers to copy,
  and the 0.2 is paid only for the first call that computes the product asked for.

Instances are drawn like the suite's (:func:`~text_env.tasks.base.generate_split`: a seeded generator, a held-out
split by a hash of the prompt), with the secret or the product as the record's reference.
"""

from __future__ import annotations

import ast
import functools
import operator
import re
from collections.abc import Callable
from typing import Any

import numpy as np

from text_env.multi_turn import MultiTurnEnv, Reply
from text_env.prompts import PromptRecord
from text_env.tasks.answers import extract_integer
from text_env.tasks.base import generate_split
from text_env.tokenizers import EMBEDDED_MODEL


# ---------------------------------------------------------------------------------------------------- GuessNumber
def guess_number_generator(high: int = 16) -> Callable[[np.random.Generator], PromptRecord]:
    """Instances of GuessNumber-v0: a secret from 1 to ``high`` (the reference), said in the prompt's range."""
    if high < 2:
        raise ValueError(f"high must be >= 2, got {high}.")

    def generate(rng: np.random.Generator) -> PromptRecord:
        secret = int(rng.integers(1, high + 1))
        # The secret is not in the prompt, and the split hashes the prompt: a game number makes each instance's
        # prompt its own.
        name = ["a number", "a whole number", "an integer"][int(rng.integers(3))]
        prompt = (
            f"I am thinking of {name} from 1 to {high}. Guess it in as few tries as you can. Answer with one "
            f"number only; after each guess I will say Higher, Lower or Correct. (Game {int(rng.integers(10**6))})"
        )
        return PromptRecord(prompt, secret, {"high": high})

    return generate


class GuessNumberResponder:
    """The game master of GuessNumber-v0: reads the last integer of the model's turn and answers."""

    def __call__(self, messages: list[dict[str, str]], reference: Any) -> Reply:
        guess = extract_integer(messages[-1]["content"])
        guesses = sum(message["role"] == "assistant" for message in messages)
        if guess is None:
            return Reply("Please answer with one number.", success=False)
        if guess == int(reference):
            return Reply("Correct!", reward=max(0.0, 1.0 - 0.1 * (guesses - 1)), done=True, success=True)
        return Reply("Higher." if guess < int(reference) else "Lower.", success=False)

    def __repr__(self) -> str:
        return "GuessNumberResponder()"


# ---------------------------------------------------------------------------------------------------- Calculator
def calculator_generator(worked_example: bool = True) -> Callable[[np.random.Generator], PromptRecord]:
    """Instances of Calculator: ``a * b`` with ``a`` of 3 digits and ``b`` of 2 (the product is the reference);
    ``worked_example`` (v0) shows a call with numbers, v1 the syntax only (no number but ``a`` and ``b``)."""

    def generate(rng: np.random.Generator) -> PromptRecord:
        a, b = int(rng.integers(100, 1000)), int(rng.integers(11, 100))
        example = (
            "Example: you write CALC: 12 * 34, I reply = 408, you write ANSWER: 408."
            if worked_example
            else "First write CALC: and the multiplication, then ANSWER: and the number I reply."
        )
        prompt = (
            f"What is {a} * {b}? You have a calculator: write CALC: followed by an expression and I will reply with "
            f"its value. When you know the result, write ANSWER: followed by the number. {example}"
        )
        return PromptRecord(prompt, a * b, {"a": a, "b": b})

    return generate


_OPERATORS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul}


def evaluate_expression(text: str) -> int | None:
    """The value of an integer expression of ``+``, ``-``, ``*`` and parentheses (``None`` for anything else, or a
    result beyond 10**12): the calculator's whole language, evaluated without ``eval``."""

    def value(node: ast.AST) -> int:
        if isinstance(node, ast.Constant) and type(node.value) is int:
            return node.value
        if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
            result = _OPERATORS[type(node.op)](value(node.left), value(node.right))
            if abs(result) > 10**12:
                raise ValueError("too large")
            return int(result)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -value(node.operand)
        raise ValueError("not an integer expression")

    try:
        return value(ast.parse(text.strip(), mode="eval").body)
    except (SyntaxError, ValueError, RecursionError):
        return None


_CALC = re.compile(r"CALC:\s*([0-9+\-*() ]+)", re.IGNORECASE)
_ANSWER = re.compile(r"ANSWER:\s*(-?[\d,]+)", re.IGNORECASE)


def _call_value(turn: str) -> int | None:
    """The value of the turn's calculator call (``None``: no call, or not an expression)."""
    call = _CALC.search(turn)
    return None if call is None else evaluate_expression(call.group(1))


def _valid_call(turn: str) -> bool:
    return _call_value(turn) is not None


#: Paid for the first calculator call of an episode that the calculator can evaluate: the base model almost never
#: answers right (0 of 256 on 2026-12-03), and a group algorithm needs some reward to differ within a group.
TOOL_USE_REWARD = 0.2


class CalculatorResponder:
    """The tool of Calculator: ``ANSWER: n`` ends the episode (reward 1 when right), ``CALC: expr`` gets the value
    back, anything else a reminder of the syntax. :data:`TOOL_USE_REWARD` is paid once: for the first valid call
    (v0), or with ``bonus_for_the_product`` (v1) for the first call whose value is the product asked for, the one
    call that helps (v0's bonus was gamed by calling anything).
    """

    def __init__(self, bonus_for_the_product: bool = False) -> None:
        self.bonus_for_the_product = bonus_for_the_product

    def __call__(self, messages: list[dict[str, str]], reference: Any) -> Reply:
        turn = messages[-1]["content"]
        answer = _ANSWER.search(turn)
        if answer is not None:
            right = int(answer.group(1).replace(",", "")) == int(reference)
            return Reply("Right." if right else "Wrong.", reward=float(right), done=True, success=right)
        call = _CALC.search(turn)
        if call is not None:
            result = evaluate_expression(call.group(1))
            if result is None:
                return Reply("Error: not an expression.", success=False)
            paying = (lambda turn: _call_value(turn) == int(reference)) if self.bonus_for_the_product else _valid_call
            earlier = any(paying(m["content"]) for m in messages[:-1] if m["role"] == "assistant")
            paid = paying(turn) and not earlier
            return Reply(f"= {result}", reward=TOOL_USE_REWARD if paid else 0.0, success=False)
        return Reply("Write CALC: <expression> or ANSWER: <number>.", success=False)

    def __repr__(self) -> str:
        return f"CalculatorResponder(bonus_for_the_product={self.bonus_for_the_product})"


# ---------------------------------------------------------------------------------------------------- factories
@functools.lru_cache(maxsize=16)
def _records(kind: str, split: str, num_prompts: int, seed: int, high: int) -> tuple[PromptRecord, ...]:
    generator = (
        guess_number_generator(high)
        if kind == "guess_number"
        else calculator_generator(worked_example=kind == "calculator")  # "calculator-v1": the syntax only
    )
    return tuple(generate_split(generator, split, num_prompts, seed))


def _make_game_env(
    kind: str,
    responder: Any,
    *,
    split: str,
    num_prompts: int,
    num_eval_prompts: int,
    seed: int,
    high: int = 0,
    tokenizer: Any = EMBEDDED_MODEL,
    chat_template: bool | None = None,
    **kwargs: Any,
) -> MultiTurnEnv:
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}.")
    records = _records(kind, split, num_prompts if split == "train" else num_eval_prompts, seed, high)
    if split == "train" and "eval_prompts" not in kwargs:
        kwargs["eval_prompts"] = _records(kind, "test", num_eval_prompts, seed + 1, high)
    if chat_template is None:
        from text_env.tokenizers import resolve_tokenizer

        tokenizer = resolve_tokenizer(tokenizer)
        chat_template = bool(getattr(tokenizer, "chat_template", None))
    return MultiTurnEnv(list(records), tokenizer, responder, chat_template=chat_template, **kwargs)


def make_guess_number_env(
    high: int = 16,
    max_turns: int = 6,
    max_turn_tokens: int = 6,
    max_new_tokens: int = 96,
    split: str = "train",
    num_prompts: int = 2000,
    num_eval_prompts: int = 200,
    seed: int = 0,
    **kwargs: Any,
) -> MultiTurnEnv:
    """``text_env/GuessNumber-v0``: find a secret from 1 to ``high`` in at most ``max_turns`` guesses."""
    kwargs.setdefault("max_prompt_tokens", 96)
    return _make_game_env(
        "guess_number", GuessNumberResponder(), split=split, num_prompts=num_prompts,
        num_eval_prompts=num_eval_prompts, seed=seed, high=high, max_turns=max_turns,
        max_turn_tokens=max_turn_tokens, max_new_tokens=max_new_tokens, **kwargs,
    )  # fmt: skip


def make_calculator_env(
    max_turns: int = 3,
    max_turn_tokens: int = 16,
    max_new_tokens: int = 96,
    split: str = "train",
    num_prompts: int = 2000,
    num_eval_prompts: int = 200,
    seed: int = 0,
    version: int = 0,
    **kwargs: Any,
) -> MultiTurnEnv:
    """``text_env/Calculator-v0``: a product with a calculator tool, in at most ``max_turns`` turns. ``version=1``
    (``text_env/Calculator-v1``): no worked example to copy, the tool-use reward paid only for the first call that
    computes the product asked for."""
    if version not in (0, 1):
        raise ValueError(f"Calculator has versions 0 and 1, got {version}.")
    kwargs.setdefault("max_prompt_tokens", 128)  # the prompt, its worked example and SmolLM2's system message: ~112
    return _make_game_env(
        "calculator" if version == 0 else "calculator-v1", CalculatorResponder(bonus_for_the_product=version == 1),
        split=split, num_prompts=num_prompts, num_eval_prompts=num_eval_prompts, seed=seed, max_turns=max_turns,
        max_turn_tokens=max_turn_tokens, max_new_tokens=max_new_tokens, **kwargs,
    )  # fmt: skip


def make_calculator_v1_env(**kwargs: Any) -> MultiTurnEnv:
    """``text_env/Calculator-v1``: :func:`make_calculator_env` with ``version=1``."""
    return make_calculator_env(version=1, **kwargs)
