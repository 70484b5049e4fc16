"""Evaluation on held-out prompts: mean reward, KL to the reference, distinct-n and sample texts."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3.common.callbacks import BaseCallback

from agents.common.generation import GenerationResult, generate_completions
from agents.common.reference import ReferenceModel
from text_env.prompts import PromptRecord
from text_env.tasks.base import Task, success_metrics


def summarize(result: GenerationResult, task: Task | None = None) -> dict[str, float]:
    """The evaluation metrics of a batch of completions.

    - ``score``: mean reward-model score (unshaped);
    - ``accuracy``, ``pass@1``, ``pass@k`` (k: samples per prompt): when the reward knows success (verifiable
      tasks, :func:`text_env.tasks.base.success_metrics`);
    - the task's own metrics (:meth:`text_env.tasks.base.Task.evaluate`): ``positive_share`` (share of completions
      above the task's threshold, VADER's 0.05 for PositiveReview-v0) and its judge's views (``judge_*``);
    - ``kl``: mean over completions of the summed per-token KL(pi || pi_ref) (absent without a reference);
    - ``distinct_1`` / ``distinct_2``: distinct word uni-/bigrams over all (Li et al. 2016), low when the policy
      collapses onto a few phrases;
    - ``length``: mean number of generated tokens;
    - ``repetition``: mean share of word trigrams that repeat within a completion (reward hacking by stuffing
      words shows here first);
    - ``ref_log_likelihood``: mean per-token log-likelihood of the completions under the reference model (fluency
      as the base model sees it; absent without a reference).
    """
    metrics = {"score": float(np.mean(result.scores))}
    if result.successes is not None:
        metrics.update(success_metrics(result.prompts, result.successes))
    if task is not None:
        metrics.update(task.evaluate(result.prompts, result.completions, result.scores, result.successes))
    metrics |= {
        "distinct_1": result.distinct_n(1),
        "distinct_2": result.distinct_n(2),
        "length": float(np.mean(result.num_tokens)),
        "repetition": result.repetition(3),
    }
    if result.kl is not None:
        metrics["kl"] = float(np.mean(result.kl))
    if result.ref_log_likelihood is not None:
        metrics["ref_log_likelihood"] = float(np.mean(result.ref_log_likelihood))
    return metrics


def majority_answer_accuracy(records: Sequence[PromptRecord]) -> float | None:
    """Accuracy of always giving the most common reference (``None`` without references): what a constant answer
    scores on these records. A policy at this accuracy may have learned the answer, not the task."""
    import json
    from collections import Counter

    if not records or any(record.reference is None for record in records):
        return None
    counts = Counter(json.dumps(record.reference, sort_keys=True, default=str) for record in records)
    return counts.most_common(1)[0][1] / len(records)


def task_of(env: gym.Env) -> Task | None:
    """The registered :class:`~text_env.tasks.base.Task` of an env made with ``gymnasium.make``, else ``None``."""
    from text_env import task_for

    spec = getattr(env, "spec", None) or getattr(env.unwrapped, "spec", None)
    return task_for(spec.id) if spec is not None else None


class TextEvalCallback(BaseCallback):
    """Every ``every_n_rollouts`` rollouts (after the update on them), at the start and at the end of training,
    generate completions for held-out prompts and log ``eval/score``, ``eval/kl``, ``eval/distinct_1``,
    ``eval/distinct_2``, ``eval/length`` and ``eval/sample_<i>`` texts to the SB3 logger (console, CSV, TensorBoard).

    :param env: an environment of the task (it supplies tokenizer, lengths and reward model).
    :param prompts: the held-out prompts, or their records (with references, for verifiable tasks).
    :param reference: a :class:`ReferenceModel`, or a callable returning one at evaluation time (e.g.
        ``lambda: kl_callback.reference``, which exists only once training starts); ``None`` skips the KL.
    :param deterministic: greedy decoding instead of sampling.
    :param n_samples: sample completions to log.
    :param task: the task whose own metrics to report (:meth:`~text_env.tasks.base.Task.evaluate`); default: the
        registered task of ``env.spec.id``, if any.
    """

    def __init__(
        self,
        env: gym.Env,
        prompts: Sequence[str | PromptRecord],
        *,
        every_n_rollouts: int = 5,
        reference: ReferenceModel | Any = None,
        deterministic: bool = False,
        n_samples: int = 3,
        batch_size: int = 16,
        verbose: int = 1,
        task: Task | None = None,
    ) -> None:
        super().__init__(verbose)
        if every_n_rollouts < 1:
            raise ValueError(f"every_n_rollouts must be >= 1, got {every_n_rollouts}.")
        if isinstance(prompts, str):
            raise TypeError(f"prompts must be a list of strings, got the string {prompts[:40]!r}: pass [prompt].")
        if not prompts:
            raise ValueError("TextEvalCallback needs at least one held-out prompt.")
        self.env = env
        self.prompts = list(prompts)
        self.task = task if task is not None else task_of(env)
        self.every_n_rollouts = every_n_rollouts
        self.reference = reference
        self.deterministic = deterministic
        self.n_samples = n_samples
        self.batch_size = batch_size
        self.history: list[dict[str, float]] = []
        self.first_result: GenerationResult | None = None
        self.last_result: GenerationResult | None = None
        self._rollouts = 0
        self._updated_since_evaluation = False

    def _resolve_reference(self) -> ReferenceModel | None:
        reference = self.reference
        if reference is not None and not isinstance(reference, ReferenceModel) and callable(reference):
            reference = reference()
        return reference

    def evaluate(self) -> dict[str, float]:
        """Generate, log and return the metrics now."""
        device = self.model.device
        # Its own random stream: evaluating (or not) never changes the training's samples, so a resumed run, whose
        # evaluations fall elsewhere, continues exactly.
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            result = generate_completions(
                self.model,
                self.env,
                self.prompts,
                deterministic=self.deterministic,
                reference=self._resolve_reference(),
                batch_size=self.batch_size,
            )
        metrics = summarize(result, self.task)
        for key, value in metrics.items():
            self.logger.record(f"eval/{key}", value)
        for index, (prompt, completion) in enumerate(zip(result.prompts, result.completions, strict=True)):
            if index >= self.n_samples:
                break
            self.logger.record(f"eval/sample_{index}", f"{prompt} ||| {completion}", exclude=("stdout", "csv"))
        if self.verbose:
            shown = ", ".join(f"{key}={value:.3f}" for key, value in metrics.items())
            print(f"[eval @ {self.num_timesteps} steps] {shown}")
            for prompt, completion in list(zip(result.prompts, result.completions, strict=True))[: self.n_samples]:
                print(f"    {prompt!r} -> {completion!r}")
        self.history.append({"timesteps": float(self.num_timesteps), **metrics})
        self.first_result = self.first_result or result
        self.last_result = result
        self._updated_since_evaluation = False
        return metrics

    def _on_training_start(self) -> None:
        if not self.history:
            self.evaluate()

    def on_rollout_end(self) -> None:
        """Count the rollout (whatever subclasses do in ``_on_rollout_end``): an update on it follows."""
        self._rollouts += 1
        self._updated_since_evaluation = True
        super().on_rollout_end()

    def _on_rollout_start(self) -> None:
        # At a rollout's start the previous rollout's update is done: the evaluation sees the policy trained on
        # every token counted in num_timesteps (at a rollout's end it would miss the update on that rollout).
        if self._rollouts and self._rollouts % self.every_n_rollouts == 0 and self._updated_since_evaluation:
            self.evaluate()
            self.model.policy.set_training_mode(False)

    def _on_step(self) -> bool:
        return True

    def _on_training_end(self) -> None:
        if not self.history or self._updated_since_evaluation:  # the final policy, once
            self.evaluate()
