"""The suite of verifiable tasks: a seeded offline generator, a checker with partial credit, exact-match success.

Each task draws instances from ``np.random.default_rng(seed)``; an instance belongs to the train or the held-out
split by a hash of its prompt (:func:`~text_env.tasks.base.split_of`), so the splits never share an instance. A
``difficulty`` knob (1 = easiest) sets the instance size. Prompts ask for the answer alone; what counts as the
answer in a completion is :mod:`text_env.tasks.answers`. With SmolLM2-135M-Instruct every task formats its prompts
with the tokenizer's chat template (the end-of-turn token ends the episode).

- ``text_env/Reverse-v0``: spell a word backwards (spelled out letter by letter at difficulties 1-2, a two-word
  phrase at 4); credit is the similarity of the answer to the reversed text (1 - normalised edit distance), success
  an exact match.
- ``text_env/LetterCount-v0``: how many times a letter occurs in a word (two or three words at difficulties 2-3);
  the count is drawn uniformly among those the text allows, so no constant answer solves it.
- ``text_env/Arithmetic-v0``: sums and differences of small integers (difficulty: number of terms and digits).
- ``text_env/Keywords-v0``: one sentence using every given word (CommonGen-style); credit is the share of words
  used times a length window (a bare word list earns half), success all words in a sentence of fitting length.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Sequence
from importlib import resources
from typing import Any

import numpy as np

from text_env.env import TextGenerationEnv
from text_env.prompts import PromptRecord
from text_env.rewards.base import RewardModel
from text_env.tasks.answers import extract_answer, extract_integer, number_credit, similarity
from text_env.tasks.base import generate_split
from text_env.tokenizers import EMBEDDED_MODEL

Generator = Callable[[np.random.Generator], PromptRecord]


@functools.cache
def word_list() -> tuple[str, ...]:
    """The shipped vocabulary of the generated tasks (``text_env/data/words.txt``): nouns, then verbs."""
    text = (resources.files("text_env") / "data" / "words.txt").read_text(encoding="utf-8")
    return tuple(text.split())


#: The last words of :func:`word_list` are verbs (Keywords-v0 asks for nouns and a verb together).
NUM_VERBS = 20


def _nouns(min_len: int = 1, max_len: int = 99) -> list[str]:
    return [w for w in word_list()[:-NUM_VERBS] if min_len <= len(w) <= max_len]


def _check_difficulty(difficulty: int, levels: int) -> int:
    if isinstance(difficulty, bool) or not isinstance(difficulty, (int, np.integer)) or not 1 <= difficulty <= levels:
        raise ValueError(f"difficulty must be an int from 1 to {levels}, got {difficulty!r}.")
    return int(difficulty)


# ---------------------------------------------------------------------------------------------------- generators
#: difficulty -> (word lengths, words, letters shown one by one): a 135M model cannot see the letters inside a
#: word's tokens, so the easy levels spell the word out ("c a t" -> "t a c").
REVERSE_LEVELS = {1: ((3, 3), 1, True), 2: ((4, 5), 1, True), 3: ((3, 4), 1, False), 4: ((3, 4), 2, False)}


def reverse_generator(difficulty: int = 1) -> Generator:
    """Instances of Reverse-v0: ``reference`` is the reversed text. Difficulty: 1 a spelled-out 3-letter word, 2 a
    spelled-out word of 4-5 letters, 3 a plain word of 3-4 letters, 4 a phrase of two such words."""
    (shortest, longest), count, spelled = REVERSE_LEVELS[_check_difficulty(difficulty, 4)]
    words = _nouns(shortest, longest)

    def generate(rng: np.random.Generator) -> PromptRecord:
        text = " ".join(words[i] for i in rng.choice(len(words), size=count, replace=False))
        if spelled:  # one worked example: without it SmolLM2-135M-Instruct's base pass@8 is 0
            prompt = (
                "Write the letters in reverse order. Example: d o g -> g o d. "
                f"Now: {' '.join(text)} -> ? Answer with the reversed letters only."
            )
        else:
            kind = "phrase" if count > 1 else "word"
            prompt = f'Spell the {kind} "{text}" backwards. Answer with the reversed {kind} only.'
        return PromptRecord(prompt, text[::-1], {"difficulty": difficulty, "text": text})

    return generate


def letter_count_generator(difficulty: int = 1) -> Generator:
    """Instances of LetterCount-v0: ``reference`` is the count (an int). Difficulty: 1 one word, 2 two words, 3
    three words.

    The count is drawn first, uniformly among those the text allows (0 for a letter it lacks, 1, 2, ...), then a
    letter with that count: most letters of a short word occur once, and a task whose answer is usually 1 is solved
    by answering 1 (an earlier version's held-out split was 83% ones, and GRPO learned exactly that).
    """
    difficulty = _check_difficulty(difficulty, 3)
    words = _nouns()

    def generate(rng: np.random.Generator) -> PromptRecord:
        text = " ".join(words[i] for i in rng.choice(len(words), size=difficulty, replace=False))
        letters = text.replace(" ", "")
        by_count: dict[int, list[str]] = {0: [c for c in "abcdefghijklmnopqrstuvwxyz" if c not in letters]}
        for letter in sorted(set(letters)):
            by_count.setdefault(letters.count(letter), []).append(letter)
        count = sorted(by_count)[int(rng.integers(len(by_count)))]
        letter = by_count[count][int(rng.integers(len(by_count[count])))]
        prompt = f'How many times does the letter "{letter}" appear in "{text}"? Answer with a number only.'
        return PromptRecord(prompt, count, {"difficulty": difficulty, "text": text, "letter": letter})

    return generate


ARITHMETIC_LEVELS = {1: (2, 9, False), 2: (2, 20, False), 3: (2, 20, True), 4: (3, 20, True)}  # terms, max, minus


def arithmetic_generator(difficulty: int = 2) -> Generator:
    """Instances of Arithmetic-v0: ``reference`` is the value (an int). Difficulty: 1 sums of two one-digit numbers,
    2 sums of two numbers up to 20, 3 sums or differences of two, 4 of three."""
    terms, largest, minus = ARITHMETIC_LEVELS[_check_difficulty(difficulty, 4)]

    def generate(rng: np.random.Generator) -> PromptRecord:
        numbers = [int(n) for n in rng.integers(1, largest + 1, size=terms)]
        expression, value = str(numbers[0]), numbers[0]
        for n in numbers[1:]:
            if minus and rng.random() < 0.5:
                expression, value = f"{expression} - {n}", value - n
            else:
                expression, value = f"{expression} + {n}", value + n
        prompt = f"What is {expression}? Answer with a number only."
        return PromptRecord(prompt, value, {"difficulty": difficulty, "expression": expression})

    return generate


def keywords_generator(difficulty: int = 2) -> Generator:
    """Instances of Keywords-v0: ``reference`` is the word list (``difficulty + 1`` words: nouns and one verb)."""
    difficulty = _check_difficulty(difficulty, 3)
    nouns, verbs = list(word_list()[:-NUM_VERBS]), list(word_list()[-NUM_VERBS:])

    def generate(rng: np.random.Generator) -> PromptRecord:
        picked = [nouns[i] for i in rng.choice(len(nouns), size=difficulty, replace=False)]
        picked.insert(int(rng.integers(difficulty + 1)), verbs[int(rng.integers(len(verbs)))])
        prompt = f"Write one short sentence that uses all of these words: {', '.join(picked)}."
        return PromptRecord(prompt, picked, {"difficulty": difficulty})

    return generate


# ---------------------------------------------------------------------------------------------------- rewards
class VerifiableReward(RewardModel):
    """A reward that checks each completion against its prompt's reference: per-pair :meth:`credit` (partial
    credit in [0, 1]) and :meth:`solved` (exact success). A completion with no extractable answer earns 0."""

    uses_references = True

    def credit(self, completion: str, reference: Any) -> float:
        raise NotImplementedError

    def solved(self, completion: str, reference: Any) -> bool:
        raise NotImplementedError

    def score(
        self, prompts: Sequence[str], completions: Sequence[str], references: Sequence[Any] | None = None
    ) -> np.ndarray:
        refs = references if references is not None else [None] * len(completions)
        return np.array([self.credit(c, r) for c, r in zip(completions, refs, strict=True)], dtype=np.float64)

    def success(self, prompts: Sequence[str], completions: Sequence[str], references: Sequence[Any]) -> np.ndarray:
        return np.array([self.solved(c, r) for c, r in zip(completions, references, strict=True)], dtype=bool)


def _normalise_reversal(text: str) -> str:
    return " ".join(re.sub(r"[^a-z ]", "", text.lower()).split())


class ReversalReward(VerifiableReward):
    """Reverse-v0: similarity of the answer to the reversed text (lower case, letters and single spaces kept;
    ``"t-a-c"`` and ``"TAC"`` both read as ``"tac"`` for a single word), exact match for success."""

    def _answer(self, completion: str, reference: str) -> str:
        answer = _normalise_reversal(extract_answer(completion) or "")
        return answer.replace(" ", "") if " " not in reference else answer

    def credit(self, completion: str, reference: Any) -> float:
        answer = self._answer(completion, str(reference))
        return similarity(answer, str(reference)) if answer else 0.0

    def solved(self, completion: str, reference: Any) -> bool:
        return self._answer(completion, str(reference)) == str(reference)


class IntegerAnswerReward(VerifiableReward):
    """LetterCount-v0 and Arithmetic-v0: :func:`~text_env.tasks.answers.number_credit` of the extracted integer
    (1.0 exact, 0.5 / (1 + |error|) off, 0 without a number), exact match for success."""

    def credit(self, completion: str, reference: Any) -> float:
        return number_credit(extract_integer(completion), int(reference))

    def solved(self, completion: str, reference: Any) -> bool:
        return extract_integer(completion) == int(reference)


def _uses(word: str, tokens: set[str]) -> bool:
    """``word`` or a regular inflection of it (``-s``, ``-es``, ``-ed``, ``-d``, ``-ing``, a dropped final e)."""
    stem = word[:-1] if word.endswith("e") else word
    forms = {word, word + "s", word + "es", word + "ed", word + "d", stem + "ing", word + word[-1] + "ing"}
    forms |= {word + word[-1] + "ed", word[:-1] + "ies" if word.endswith("y") else word}
    return bool(forms & tokens)


class KeywordsReward(VerifiableReward):
    """Keywords-v0: the share of the words used (with regular inflections), times a length window: 1.0 for a
    sentence of ``len(words) + 2`` to ``max_words`` words, 0.5 outside it (a bare word list or a ramble). Success:
    every word used, inside the window. The first line of the completion is the sentence."""

    def __init__(self, max_words: int = 25) -> None:
        self.max_words = max_words

    def _parts(self, completion: str, words: Sequence[str]) -> tuple[float, bool]:
        sentence = (extract_answer(completion) or "").lower()
        tokens = re.findall(r"[a-z]+", sentence)
        coverage = sum(_uses(w, set(tokens)) for w in words) / len(words)
        return coverage, len(words) + 2 <= len(tokens) <= self.max_words

    def credit(self, completion: str, reference: Any) -> float:
        coverage, fits = self._parts(completion, reference)
        return coverage * (1.0 if fits else 0.5)

    def solved(self, completion: str, reference: Any) -> bool:
        coverage, fits = self._parts(completion, reference)
        return coverage == 1.0 and fits

    def __repr__(self) -> str:
        return f"KeywordsReward(max_words={self.max_words})"


# ---------------------------------------------------------------------------------------------------- factories
GENERATORS: dict[str, Callable[[int], Generator]] = {}  # filled below: task name -> generator factory


@functools.lru_cache(maxsize=64)
def split_records(kind: str, difficulty: int, split: str, num_prompts: int, seed: int) -> tuple[PromptRecord, ...]:
    """The instances of one split, generated once per process (``make_vec_env`` builds the same task 32 times)."""
    return tuple(generate_split(GENERATORS[kind](difficulty), split, num_prompts, seed))


def make_suite_env(
    kind: str,
    reward_model: RewardModel,
    *,
    difficulty: int,
    split: str = "train",
    num_prompts: int = 2000,
    num_eval_prompts: int = 200,
    seed: int = 0,
    tokenizer: Any = EMBEDDED_MODEL,
    chat_template: bool | None = None,
    max_prompt_tokens: int = 96,
    max_new_tokens: int = 12,
    **kwargs: Any,
) -> TextGenerationEnv:
    """A suite env of task ``kind`` (a key of :data:`GENERATORS`): ``split`` ``"train"`` (whose held-out prompts are
    the ``"test"`` split's, ``env.eval_records``, drawn with ``seed + 1``) or ``"test"``. ``chat_template=None``
    uses the chat template when the tokenizer has one."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}.")
    records = split_records(kind, difficulty, split, num_prompts if split == "train" else num_eval_prompts, seed)
    if split == "train" and "eval_prompts" not in kwargs:
        kwargs["eval_prompts"] = split_records(kind, difficulty, "test", num_eval_prompts, seed + 1)
    if chat_template is None:
        from text_env.tokenizers import resolve_tokenizer

        tokenizer = resolve_tokenizer(tokenizer)
        chat_template = bool(getattr(tokenizer, "chat_template", None))
    kwargs.setdefault("reward_model", reward_model)
    return TextGenerationEnv(
        list(records),
        tokenizer,
        chat_template=chat_template,
        max_prompt_tokens=max_prompt_tokens,
        max_new_tokens=max_new_tokens,
        **kwargs,
    )


GENERATORS.update(
    reverse=reverse_generator,
    letter_count=letter_count_generator,
    arithmetic=arithmetic_generator,
    keywords=keywords_generator,
)


def make_reverse_env(difficulty: int = 1, max_new_tokens: int = 10, **kwargs: Any) -> TextGenerationEnv:
    """``text_env/Reverse-v0``: spell a word backwards (``difficulty`` 1-4, see :func:`reverse_generator`)."""
    return make_suite_env("reverse", ReversalReward(), difficulty=difficulty, max_new_tokens=max_new_tokens, **kwargs)


def make_letter_count_env(difficulty: int = 2, max_new_tokens: int = 10, **kwargs: Any) -> TextGenerationEnv:
    """``text_env/LetterCount-v0``: count a letter in one, two or three words (``difficulty`` 1-3)."""
    reward = IntegerAnswerReward()
    return make_suite_env("letter_count", reward, difficulty=difficulty, max_new_tokens=max_new_tokens, **kwargs)


def make_arithmetic_env(difficulty: int = 2, max_new_tokens: int = 12, **kwargs: Any) -> TextGenerationEnv:
    """``text_env/Arithmetic-v0``: evaluate a small sum (``difficulty`` 1-4, see :func:`arithmetic_generator`)."""
    reward = IntegerAnswerReward()
    return make_suite_env("arithmetic", reward, difficulty=difficulty, max_new_tokens=max_new_tokens, **kwargs)


def make_keywords_env(difficulty: int = 2, max_new_tokens: int = 24, **kwargs: Any) -> TextGenerationEnv:
    """``text_env/Keywords-v0``: one sentence using ``difficulty + 1`` given words."""
    return make_suite_env("keywords", KeywordsReward(), difficulty=difficulty, max_new_tokens=max_new_tokens, **kwargs)
