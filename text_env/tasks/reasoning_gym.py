"""The reasoning-gym bridge: any of reasoning-gym's procedural datasets as a verifiable text env.

``pip install 'text-env-rl[reasoning]'`` adds `reasoning-gym <https://github.com/open-thought/reasoning-gym>`_
(0.1.x), whose ~100 datasets each generate instances ``{"question", "answer", "metadata"}`` from a seed and score an
answer with their own ``score_answer(answer, entry) -> float`` (1.0 for a right answer, some give partial credit).

>>> env = gym.make("text_env/ReasoningGym-v0", dataset="basic_arithmetic", size=500, seed=0, max_terms=2)

- **Records.** Each instance is a :class:`~text_env.prompts.PromptRecord` whose ``prompt`` is the entry's question
  followed by a short instruction (``"Answer with the answer only."``; for datasets whose answers span several
  lines, ``"Put the final answer between <answer> and </answer>."``), whose ``reference`` is the entry itself and
  whose ``meta`` is ``{"dataset", "seed", "index"}`` (where it came from). The entry is made JSON-serialisable
  (checkpoints store the episode's record as JSON): tuples become lists, sets sorted lists, numpy scalars numbers,
  other objects their ``str``; the reward scores with this converted entry, so a resumed run scores as the original
  one. A dataset whose scoring changes under that conversion (``arc_agi`` and ``rearc`` compare tuple grids) is
  refused with an error.
- **Splits.** Training instances are drawn from ``create_dataset(name, seed=seed)``, held-out ones from
  ``seed + 1_000_003``; an instance belongs to one split by a hash of its question
  (:func:`~text_env.tasks.base.split_of`, as in the suite), so the splits never share a question, and questions are
  distinct within each. ``size`` and ``eval_size`` count distinct instances (fewer when the dataset has fewer).
- **Reward.** :class:`ReasoningGymReward`: the dataset's own ``score_answer`` on the extracted answer
  (:func:`extract_reasoning_gym_answer`); ``info["success"]`` is a score of 1.0. A completion without an answer,
  or one that ``score_answer`` cannot parse, scores 0: never an error.

  An instance is its question text: a dataset that words one problem several ways (``basic_arithmetic`` with
  ``format_style="natural"``) can put two wordings of it in different splits.
- **Registered ids** (:data:`CONVENIENCE_IDS`): ``text_env/ReasoningGym-BasicArithmetic-v0``,
  ``-LetterCounting-v0`` and ``-SpellBackward-v0``, the smallest instances of three datasets.

``dataset_names()`` lists the datasets; a wrong name or config field is a ``ValueError`` naming the choices. Every
dataset generates offline (those with data ship it inside the package).
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import inspect
import json
import re
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from text_env.env import TextGenerationEnv
from text_env.prompts import PromptRecord
from text_env.tasks.answers import extract_answer
from text_env.tasks.base import split_of
from text_env.tasks.suite import VerifiableReward
from text_env.tokenizers import EMBEDDED_MODEL

#: The held-out split's dataset seed is the training seed plus this (a prime far beyond any ``size``: reasoning-gym
#: seeds instance ``i`` with ``seed + i``, so nearby seeds would share instances).
EVAL_SEED_OFFSET = 1_000_003

#: The instruction after each question, for one-line answers and for answers that span lines.
LINE_INSTRUCTION = "Answer with the answer only."
TAGS_INSTRUCTION = "Put the final answer between <answer> and </answer>."

INSTALL_HINT = "pip install 'text-env-rl[reasoning]' (or pip install 'reasoning-gym>=0.1.20,<0.2')"

_TAGGED = re.compile(r"<answer>\s?(.*?)\s?</answer>", re.DOTALL)


def _reasoning_gym() -> Any:
    """The ``reasoning_gym`` module, or a ``ModuleNotFoundError`` naming the extra that installs it."""
    try:
        import reasoning_gym
    except ModuleNotFoundError as error:
        raise ModuleNotFoundError(
            f"The reasoning-gym bridge needs the reasoning-gym package ({error}): {INSTALL_HINT}."
        ) from None
    return reasoning_gym


def _registry() -> dict[str, tuple[type, type]]:
    _reasoning_gym()
    from reasoning_gym.factory import DATASETS

    return DATASETS


def dataset_names() -> list[str]:
    """The names of reasoning-gym's datasets (``reasoning_gym.factory.DATASETS``), sorted."""
    return sorted(_registry())


def dataset_config_fields(dataset: str) -> list[str]:
    """The config fields a dataset takes as ``**dataset_config`` (its config dataclass's fields but ``seed`` and
    ``size``, which the bridge sets)."""
    config_cls = _registry()[_check_name(dataset)][1]
    return [f.name for f in dataclasses.fields(config_cls) if f.name not in ("seed", "size")]


def _check_name(dataset: Any) -> str:
    names = _registry()
    if isinstance(dataset, str) and dataset in names:
        return dataset
    close = difflib.get_close_matches(str(dataset), list(names), n=5, cutoff=0.5)
    hint = f"did you mean {', '.join(map(repr, close))}? " if close else ""
    raise ValueError(
        f"Unknown reasoning-gym dataset {dataset!r}: {hint}List all {len(names)} with "
        "text_env.tasks.reasoning_gym.dataset_names() (or sorted(reasoning_gym.factory.DATASETS))."
    )


def create_dataset(dataset: str, config: Mapping[str, Any], seed: int, size: int) -> Any:
    """``reasoning_gym.create_dataset(dataset, seed=seed, size=size, **config)``, with clear errors for an unknown
    name, an unknown config field and a config that fails the dataset's own validation."""
    name = _check_name(dataset)
    fields = dataset_config_fields(name)
    for key in config:
        if key not in fields:
            close = difflib.get_close_matches(key, fields, n=3, cutoff=0.5)
            hint = f" (did you mean {', '.join(map(repr, close))}?)" if close else ""
            raise ValueError(
                f"reasoning-gym dataset {name!r} has no config field {key!r}{hint}; its fields are {fields}."
            )
    config_cls = _registry()[name][1]
    try:
        return _reasoning_gym().create_dataset(name, **{**config, "seed": seed, "size": size})
    except AssertionError as error:  # reasoning-gym configs validate with asserts
        raise ValueError(
            f"Invalid config {dict(config)} for reasoning-gym dataset {name!r}: {error}. Its defaults: "
            f"{ {f.name: f.default for f in dataclasses.fields(config_cls) if f.name not in ('seed', 'size')} }."
        ) from None


def _jsonable(value: Any) -> Any:
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=repr)
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def json_entry(entry: Mapping[str, Any]) -> dict[str, Any]:
    """A dataset entry as the JSON a checkpoint stores and reads back: tuples as lists, sets as sorted lists, numpy
    values as numbers and lists, other objects as their ``str``; keys as strings."""
    return json.loads(json.dumps(entry, default=_jsonable))


# ---------------------------------------------------------------------------------------------------- answers
def extract_reasoning_gym_answer(completion: str) -> list[str]:
    """The answer candidates of a completion, best first; empty when it has none.

    - With ``<answer>...</answer>`` tags (reasoning-gym's own convention): the content of the last pair, stripped.
    - Otherwise the first non-empty line, in two readings: as cleaned by
      :func:`~text_env.tasks.answers.extract_answer` (Markdown, quotes, a leading ``"The answer is"`` label and
      trailing punctuation removed: ``"**7**."`` -> ``"7"``) and as written (stripped), for answers that end in
      punctuation or are cut by the cleaning. The reward takes the better-scoring reading.
    """
    tagged = _TAGGED.findall(completion)
    if tagged:
        answer = tagged[-1].strip()
        return [answer] if answer else []
    candidates: list[str] = []
    cleaned = extract_answer(completion)
    if cleaned:
        candidates.append(cleaned)
    raw = next((line.strip() for line in completion.splitlines() if line.strip()), None)
    if raw and raw not in candidates:
        candidates.append(raw)
    return candidates


# ---------------------------------------------------------------------------------------------------- reward
class ReasoningGymReward(VerifiableReward):
    """The dataset's own ``score_answer(answer, entry)`` on the answer of each completion, the reference being the
    entry (:func:`extract_reasoning_gym_answer`: the better of the answer line's readings, or the tagged answer);
    success is a score of 1.0. No answer, or an answer ``score_answer`` raises on, scores 0.

    Picklable for subprocess vector envs: it holds the dataset's name and config and rebuilds the dataset object
    (only its ``score_answer`` is used) lazily in each process.
    """

    def __init__(self, dataset: str, config: Mapping[str, Any] | None = None) -> None:
        self.dataset = dataset
        self.config = dict(config or {})
        self._scorer: Any = None

    def _score_answer(self, answer: str, entry: Mapping[str, Any]) -> float:
        if self._scorer is None:
            self._scorer = create_dataset(self.dataset, self.config, seed=0, size=1)
        try:
            return float(self._scorer.score_answer(answer, copy.deepcopy(dict(entry))))  # it may not mutate ours
        except Exception:  # an answer the dataset's parser chokes on: no credit, never a crash mid-training
            return 0.0

    def credit(self, completion: str, reference: Any) -> float:
        if not isinstance(reference, Mapping) or "answer" not in reference:
            raise TypeError(
                f"{self!r} needs each reference to be its reasoning-gym entry {{'question', 'answer', 'metadata'}}, "
                f"got {type(reference).__name__} {str(reference)[:80]!r}."
            )
        scores = [self._score_answer(answer, reference) for answer in extract_reasoning_gym_answer(completion)]
        return max(scores, default=0.0)

    def solved(self, completion: str, reference: Any) -> bool:
        return self.credit(completion, reference) == 1.0

    def __getstate__(self) -> dict[str, object]:
        return {"dataset": self.dataset, "config": self.config, "_scorer": None}

    def __repr__(self) -> str:
        config = "".join(f", {key}={value!r}" for key, value in self.config.items())
        return f"ReasoningGymReward({self.dataset!r}{config})"


# ---------------------------------------------------------------------------------------------------- records
def _prompt(question: str, instruction: str) -> str:
    question = question.strip()
    if not instruction:
        return question
    return f"{question}{' ' if chr(10) not in question else chr(10) * 2}{instruction}"


Instance = tuple[int, int, Mapping[str, Any]]  # (index, dataset seed, entry)


def draw_instances(dataset: str, config: Mapping[str, Any], split: str, count: int, seed: int) -> list[Instance]:
    """``count`` distinct instances of one split (fewer when the dataset has fewer), drawn in index order from the
    dataset seeded ``seed`` (``"train"``) or ``seed + EVAL_SEED_OFFSET`` (``"test"``); an instance belongs to the
    split :func:`~text_env.tasks.base.split_of` gives its question."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}.")
    for name, value in (("size", count), ("seed", seed)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}.")
    if count < 1:
        raise ValueError(f"The number of {split!r} instances must be >= 1, got {count}.")
    dataset_seed = int(seed) + (EVAL_SEED_OFFSET if split == "test" else 0)
    max_draws = 20 * int(count) + 100  # a held-out instance takes ~5 draws (split_of's share)
    source = create_dataset(dataset, config, seed=dataset_seed, size=max_draws)
    instances: dict[str, Instance] = {}
    since_new = 0
    for index in range(max_draws):
        entry = source[index]
        question = str(entry["question"])
        since_new += 1
        if split_of(question) == split and question not in instances:
            instances[question], since_new = (index, dataset_seed, entry), 0
            if len(instances) == count:
                break
        if since_new > 200 + 2 * count:  # the dataset has no more distinct instances of this split
            break
    if not instances:
        raise ValueError(
            f"reasoning-gym dataset {dataset!r} with config {dict(config)} produced no {split!r} instance in "
            f"{max_draws} draws: widen its config."
        )
    _check_json_round_trip(source, dataset, [entry for _, _, entry in list(instances.values())[:8]])
    return list(instances.values())


def default_instruction(instances: Sequence[Instance]) -> str:
    """:data:`TAGS_INSTRUCTION` when an instance's answer spans lines (the answer line cannot hold it), else
    :data:`LINE_INSTRUCTION`."""
    multiline = any("\n" in str(entry.get("answer") or "").strip() for _, _, entry in instances)
    return TAGS_INSTRUCTION if multiline else LINE_INSTRUCTION


def to_records(dataset: str, instances: Sequence[Instance], instruction: str) -> list[PromptRecord]:
    """The prompt records of instances: the question and ``instruction`` (``""``: the question alone), the entry
    (:func:`json_entry`) as reference, ``{"dataset", "seed", "index"}`` as meta."""
    return [
        PromptRecord(
            _prompt(str(entry["question"]), instruction),
            json_entry(entry),
            {"dataset": dataset, "seed": dataset_seed, "index": index},
        )
        for index, dataset_seed, entry in instances
    ]


def _check_json_round_trip(source: Any, dataset: str, entries: Sequence[Mapping[str, Any]]) -> None:
    """Refuse a dataset whose ``score_answer`` of its own answer changes when the entry goes through JSON (as a
    checkpoint stores it): a resumed run would score differently."""
    for entry in entries:
        converted = json_entry(entry)
        answer = entry.get("answer")
        if converted == entry or not isinstance(answer, str):
            continue
        before, after = source.score_answer(answer, entry), source.score_answer(answer, converted)
        if before != after:
            raise ValueError(
                f"reasoning-gym dataset {dataset!r} scores its own answer {before} but {after} once its entry goes "
                "through JSON (tuples become lists), as checkpoints store it: the bridge does not support it."
            )


# ---------------------------------------------------------------------------------------------------- factory
#: Keyword arguments of :class:`~text_env.env.TextGenerationEnv` that the factory passes through; every other
#: keyword is a field of the dataset's config.
ENV_KWARGS = frozenset(inspect.signature(TextGenerationEnv.__init__).parameters) - {"self", "prompts", "tokenizer"}


def _warn_if_prompts_are_cut(env: TextGenerationEnv) -> None:
    prompts = [*env.prompts, *(env.eval_prompts or [])]
    lengths = [len(env.tokenizer(env.format_prompt(p), add_special_tokens=False)["input_ids"]) for p in prompts]
    longest = max(lengths)
    if longest > env.max_prompt_tokens:
        cut = sum(length > env.max_prompt_tokens for length in lengths)
        warnings.warn(
            f"{cut} of {len(lengths)} prompts have more than max_prompt_tokens={env.max_prompt_tokens} tokens (the "
            f"longest {longest}): their beginnings will be cut. Pass max_prompt_tokens={longest}.",
            stacklevel=3,
        )


def make_reasoning_gym_env(
    dataset: str | None = None,
    size: int = 1000,
    seed: int = 0,
    split: str = "train",
    eval_size: int = 100,
    tokenizer: Any = EMBEDDED_MODEL,
    chat_template: bool | None = None,
    max_prompt_tokens: int = 128,
    max_new_tokens: int = 32,
    instruction: str | None = None,
    **dataset_config: Any,
) -> TextGenerationEnv:
    """``text_env/ReasoningGym-v0``: the reasoning-gym dataset ``dataset`` as a verifiable env.

    :param dataset: a reasoning-gym dataset name (:func:`dataset_names`).
    :param size: distinct training instances (``split="train"``), drawn with ``seed``.
    :param seed: the training instances' dataset seed; held-out ones use ``seed + EVAL_SEED_OFFSET``.
    :param split: ``"train"`` (whose held-out records are ``env.eval_records``) or ``"test"`` (``eval_size``
        held-out instances).
    :param eval_size: distinct held-out instances.
    :param chat_template: ``None`` uses the tokenizer's chat template when it has one.
    :param instruction: the text after each question: ``None`` :func:`default_instruction`, ``""`` none.
    :param dataset_config: fields of the dataset's config (e.g. ``max_terms=2``), and keyword arguments of
        :class:`~text_env.env.TextGenerationEnv` (``reward_model``, ``system_prompt``, ``dense_reward``, ...).
    """
    env_kwargs = {key: dataset_config.pop(key) for key in list(dataset_config) if key in ENV_KWARGS}
    if "prompts" in dataset_config:
        raise ValueError(
            "ReasoningGym-v0 generates its prompts from the dataset: drop prompts= (use text_env/TextGeneration-v0 "
            "with a ReasoningGymReward for prompts of your own)."
        )
    if dataset is None:
        raise TypeError(
            "text_env/ReasoningGym-v0 needs a dataset: gym.make('text_env/ReasoningGym-v0', "
            "dataset='basic_arithmetic', **config) (names: text_env.tasks.reasoning_gym.dataset_names()), or a "
            "registered id such as "
            f"{sorted(CONVENIENCE_IDS)[0]!r}."
        )
    name = _check_name(dataset)
    instances = draw_instances(name, dataset_config, split, size if split == "train" else eval_size, seed)
    held_out = None
    if split == "train" and "eval_prompts" not in env_kwargs:
        held_out = draw_instances(name, dataset_config, "test", eval_size, seed)
    if instruction is None:  # from the held-out instances, which the "train" and "test" envs both draw
        instruction = default_instruction(held_out if held_out is not None else instances)
    records = to_records(name, instances, instruction)
    if held_out is not None:
        env_kwargs["eval_prompts"] = to_records(name, held_out, instruction)
    if chat_template is None:
        from text_env.tokenizers import resolve_tokenizer

        tokenizer = resolve_tokenizer(tokenizer)
        chat_template = bool(getattr(tokenizer, "chat_template", None))
    env_kwargs.setdefault("reward_model", ReasoningGymReward(name, dataset_config))
    env = TextGenerationEnv(
        records,
        tokenizer,
        chat_template=chat_template,
        max_prompt_tokens=max_prompt_tokens,
        max_new_tokens=max_new_tokens,
        **env_kwargs,
    )
    if env_kwargs.get("truncation", "left") == "left":
        _warn_if_prompts_are_cut(env)
    return env


# ---------------------------------------------------------------------------------------------------- registered ids
NUMBER_INSTRUCTION = "Answer with a number only."

#: The registered convenience ids: datasets whose smallest instances a 135M chat model answers sometimes, as
#: ``gym.make`` kwargs of :func:`make_reasoning_gym_env` (each overridable).
CONVENIENCE_IDS: dict[str, dict[str, Any]] = {
    "text_env/ReasoningGym-BasicArithmetic-v0": dict(
        dataset="basic_arithmetic",
        min_terms=2,
        max_terms=2,
        min_digits=1,
        max_digits=1,
        operators=("+", "-"),
        allow_parentheses=False,
        allow_negation=False,
        instruction=NUMBER_INSTRUCTION,
        max_prompt_tokens=64,
        max_new_tokens=8,
    ),
    "text_env/ReasoningGym-LetterCounting-v0": dict(
        dataset="letter_counting",
        min_words=1,
        max_words=1,
        instruction=NUMBER_INSTRUCTION,
        max_prompt_tokens=80,
        max_new_tokens=8,
    ),
    "text_env/ReasoningGym-SpellBackward-v0": dict(
        dataset="spell_backward",
        min_word_len=3,
        max_word_len=3,
        instruction="Answer with the reversed word only.",
        max_prompt_tokens=64,
        max_new_tokens=8,
    ),
}


def make_basic_arithmetic_env(**kwargs: Any) -> TextGenerationEnv:
    """``text_env/ReasoningGym-BasicArithmetic-v0``: ``basic_arithmetic``, sums and differences of two numbers from
    0 to 10 (``"Calculate 7 - 3."``; 242 instances, ~190 training and ~50 held-out)."""
    return make_reasoning_gym_env(**{**CONVENIENCE_IDS["text_env/ReasoningGym-BasicArithmetic-v0"], **kwargs})


def make_letter_counting_env(**kwargs: Any) -> TextGenerationEnv:
    """``text_env/ReasoningGym-LetterCounting-v0``: ``letter_counting`` in a single word."""
    return make_reasoning_gym_env(**{**CONVENIENCE_IDS["text_env/ReasoningGym-LetterCounting-v0"], **kwargs})


def make_spell_backward_env(**kwargs: Any) -> TextGenerationEnv:
    """``text_env/ReasoningGym-SpellBackward-v0``: ``spell_backward`` of three-letter words (its ``score_answer``
    credits each letter in place)."""
    return make_reasoning_gym_env(**{**CONVENIENCE_IDS["text_env/ReasoningGym-SpellBackward-v0"], **kwargs})
