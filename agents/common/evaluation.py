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

#: A completion "is positive" above this score: VADER's standard threshold for its compound score.
POSITIVE_THRESHOLD = 0.05


def summarize(result: GenerationResult) -> dict[str, float]:
    """The evaluation metrics of a batch of completions.

    - ``score``: mean reward-model score (unshaped);
    - ``positive_share``: share of completions scoring above :data:`POSITIVE_THRESHOLD` (0.05: VADER's threshold
      of a positive text, for the sentiment tasks);
    - ``kl``: mean over completions of the summed per-token KL(pi || pi_ref) (absent without a reference);
    - ``distinct_1`` / ``distinct_2``: distinct word uni-/bigrams over all (Li et al. 2016), low when the policy
      collapses onto a few phrases;
    - ``length``: mean number of generated tokens;
    - ``repetition``: mean share of word trigrams that repeat within a completion (reward hacking by stuffing
      words shows here first);
    - ``ref_log_likelihood``: mean per-token log-likelihood of the completions under the reference model (fluency
      as the base model sees it; absent without a reference).
    """
    metrics = {
        "score": float(np.mean(result.scores)),
        "positive_share": float(np.mean(result.scores > POSITIVE_THRESHOLD)),
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


class TextEvalCallback(BaseCallback):
    """Every ``every_n_rollouts`` rollouts (after the update on them), at the start and at the end of training,
    generate completions for held-out prompts and log ``eval/score``, ``eval/kl``, ``eval/distinct_1``,
    ``eval/distinct_2``, ``eval/length`` and ``eval/sample_<i>`` texts to the SB3 logger (console, CSV, TensorBoard).

    :param env: an environment of the task (it supplies tokenizer, lengths and reward model).
    :param prompts: the held-out prompts.
    :param reference: a :class:`ReferenceModel`, or a callable returning one at evaluation time (e.g.
        ``lambda: kl_callback.reference``, which exists only once training starts); ``None`` skips the KL.
    :param deterministic: greedy decoding instead of sampling.
    :param n_samples: sample completions to log.
    """

    def __init__(
        self,
        env: gym.Env,
        prompts: Sequence[str],
        *,
        every_n_rollouts: int = 5,
        reference: ReferenceModel | Any = None,
        deterministic: bool = False,
        n_samples: int = 3,
        batch_size: int = 16,
        verbose: int = 1,
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
        metrics = summarize(result)
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
