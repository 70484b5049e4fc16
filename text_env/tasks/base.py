"""What a registered task owns beyond its environment: its evaluation, its recommended training settings, its splits.

Generic code (``agents.train``, ``agents.evaluate``, the in-run evaluation) asks the :class:`Task` of an env id
(:func:`text_env.registration.task_for`) and never matches ids: adding a task is one :class:`Task` entry.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from math import comb
from typing import Any

import numpy as np

from text_env.prompts import PromptRecord

#: A judge: extra per-completion views of a task's completions, ``(prompts, completions) -> {name: (N,) array}``.
Judge = Callable[[Sequence[str], Sequence[str]], Mapping[str, np.ndarray]]


@dataclass(frozen=True)
class Task:
    """A registered task: its id and entry point, and what differs about it from other tasks.

    :param env_id: the Gymnasium id (``text_env/Name-vN``).
    :param entry_point: ``"module:factory"`` building its env.
    :param summary: one line for the README's task table and ``--help``.
    :param training: recommended settings of ``python -m agents.train`` (its option names), applied over the
        main job's defaults when this task is chosen; options given in YAML or flags win.
    :param dense_reward: its own reward is cheap enough to call at every token (``dense_reward=True`` by default).
    :param positive_threshold: evaluations report ``positive_share``, the share of completions scoring above it
        (VADER's 0.05 for the sentiment task); ``None``: not reported.
    :param verifiable: its reward reports success (``info["success"]``): evaluations report ``accuracy`` (mean
        success) and ``pass@k`` (k = 1 and the samples per prompt).
    :param judge: extra views of the completions, reported by evaluations as ``<name>`` means (e.g. an independent
        judge beside a gameable proxy reward); ``None``: none.
    """

    env_id: str
    entry_point: str
    summary: str
    training: Mapping[str, Any] = field(default_factory=dict)
    dense_reward: bool = False
    positive_threshold: float | None = None
    verifiable: bool = False
    judge: Judge | None = None

    def evaluate(
        self,
        prompts: Sequence[str],
        completions: Sequence[str],
        scores: np.ndarray,
        successes: np.ndarray | None,
    ) -> dict[str, float]:
        """The task's own evaluation metrics of a batch of completions (``prompts`` repeated once per sample)."""
        metrics: dict[str, float] = {}
        if self.positive_threshold is not None:
            metrics["positive_share"] = float(np.mean(np.asarray(scores) > self.positive_threshold))
        if self.verifiable and successes is not None:
            metrics.update(success_metrics(prompts, successes))
        if self.judge is not None and len(completions):
            for name, values in self.judge(prompts, completions).items():
                metrics[name] = float(np.mean(values))
        return metrics


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k of one prompt with ``c`` successes among ``n`` samples (Chen et al. 2021, the HumanEval
    estimator): the probability that at least one of ``k`` samples drawn without replacement succeeds."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}.")
    if n - c < k:
        return 1.0
    return 1.0 - comb(n - c, k) / comb(n, k)


def success_metrics(prompts: Sequence[str], successes: np.ndarray) -> dict[str, float]:
    """``accuracy`` (mean success over completions), ``accuracy_ci95`` (half width of its normal 95% interval over
    prompts), and ``pass@1`` / ``pass@n`` averaged over distinct prompts, with ``n`` the smallest number of samples
    any prompt has (``prompts`` holds one entry per completion)."""
    per_prompt: dict[str, list[bool]] = {}
    for prompt, success in zip(prompts, np.asarray(successes, dtype=bool), strict=True):
        per_prompt.setdefault(prompt, []).append(bool(success))
    metrics = {"accuracy": float(np.mean(successes))}
    # Half width of a normal 95% interval of the accuracy over prompts (prompts are the independent draws).
    per_prompt_accuracy = np.array([np.mean(v) for v in per_prompt.values()])  # (P,)
    spread = per_prompt_accuracy.std(ddof=1) if len(per_prompt_accuracy) > 1 else 0.0
    metrics["accuracy_ci95"] = float(1.96 * spread / np.sqrt(len(per_prompt_accuracy)))
    n = min(len(v) for v in per_prompt.values())
    for k in sorted({1, n}):
        metrics[f"pass@{k}"] = float(np.mean([pass_at_k(len(v), sum(v), k) for v in per_prompt.values()]))
    return metrics


#: Share of a generator's instances that belong to the held-out split (by a hash of the prompt).
HELD_OUT_SHARE = 0.2


def split_of(prompt: str) -> str:
    """``"test"`` or ``"train"``, from a stable hash of the prompt text (CRC-32): an instance belongs to one split
    whatever seed or order drew it, so the splits are disjoint by construction."""
    return "test" if zlib.crc32(prompt.encode("utf-8")) % 1000 < HELD_OUT_SHARE * 1000 else "train"


def generate_split(
    generate: Callable[[np.random.Generator], PromptRecord],
    split: str,
    num_prompts: int,
    seed: int,
    max_draws_per_prompt: int = 200,
    max_misses: int = 5000,
) -> list[PromptRecord]:
    """``num_prompts`` distinct instances of one split, drawn with ``np.random.default_rng(seed)``.

    Instances are assigned to splits by :func:`split_of`, so ``"train"`` and ``"test"`` never share one. A small
    instance space gives fewer than ``num_prompts``: drawing stops after ``max_misses`` draws in a row without a new
    instance of the split (what exists, or nearly: Arithmetic-v0's 400 sums are all found well before). None is an
    error.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}.")
    if num_prompts < 1:
        raise ValueError(f"num_prompts must be >= 1, got {num_prompts}.")
    rng = np.random.default_rng(seed)
    records: dict[str, PromptRecord] = {}
    misses = 0  # draws in a row that found no new instance: a small instance space is exhausted
    for _ in range(num_prompts * max_draws_per_prompt):
        record = generate(rng)
        if split_of(record.prompt) == split and record.prompt not in records:
            records[record.prompt] = record
            misses = 0
            if len(records) == num_prompts:
                break
        else:
            misses += 1
            if misses >= max_misses:
                break
    if not records:
        raise ValueError(f"The generator produced no {split!r} instance: raise its difficulty or check it.")
    return list(records.values())
