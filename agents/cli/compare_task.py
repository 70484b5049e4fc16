"""The real-task comparison's two kinds of job, each run in a fresh process by :mod:`agents.cli.compare`:

- :func:`run_task`: one (algorithm, seed) through the main job's own code path (:func:`agents.cli.train.setup`,
  then :func:`agents.cli.train.learn`), with the held-out evaluation at fixed counts of generated tokens;
- :func:`best_of_n_reference`: ``n_max`` completions per held-out prompt from the base model (the same config's
  policy before training), scored by the task's reward model, and the best-of-n curve
  (:mod:`agents.common.best_of_n`).
"""

from __future__ import annotations

import json
import time
from typing import Any

from agents.cli.config import TrainConfig
from agents.common.evaluation import TextEvalCallback
from agents.common.resources import peak_rss_mib


class TokenCheckpointEvaluation(TextEvalCallback):
    """The main job's held-out evaluation (:class:`TextEvalCallback`), run at the first rollout start at or past
    each multiple of ``every_tokens`` generated tokens, and timed.

    At the start of a rollout the algorithm has trained on every token counted so far, so each checkpoint
    evaluates the policy trained on ``timesteps`` tokens, as ``TextEvalCallback`` does every N rollouts. Token
    counts, not rollout counts: a group algorithm's round stops when every completion has ended, so its rollouts can be
    shorter than ``n_envs x n_steps``.

    :param evaluation: the main job's evaluation callback, whose env, prompts, reference and batch size are reused.
    :param every_tokens: generated tokens between checkpoints.
    """

    def __init__(self, evaluation: TextEvalCallback, every_tokens: int) -> None:
        super().__init__(
            evaluation.env,
            evaluation.prompts,
            reference=evaluation.reference,
            deterministic=evaluation.deterministic,
            n_samples=evaluation.n_samples,
            batch_size=evaluation.batch_size,
            verbose=evaluation.verbose,
        )
        if every_tokens < 1:
            raise ValueError(f"every_tokens must be >= 1, got {every_tokens}.")
        self.every_tokens = every_tokens
        self.seconds = 0.0  # spent evaluating
        self._next_checkpoint = every_tokens

    def evaluate(self) -> dict[str, float]:
        started = time.monotonic()
        metrics = super().evaluate()
        self.seconds += time.monotonic() - started
        return metrics

    def _on_rollout_start(self) -> None:
        if self.num_timesteps >= self._next_checkpoint:
            self.evaluate()
            while self._next_checkpoint <= self.num_timesteps:
                self._next_checkpoint += self.every_tokens


def run_task(config: TrainConfig, eval_every_tokens: int) -> dict[str, Any]:
    """Train ``config.algorithm`` with ``config.seed`` for ``config.total_timesteps`` generated tokens through the
    main job's set-up and training loop, evaluating every ``eval_every_tokens``; return the evaluations, wall-clock
    and peak RSS (also written as ``comparison_run.json`` in the run's directory)."""
    import torch

    from agents.cli.train import learn, setup

    torch.set_num_threads(1)
    started = time.monotonic()
    run = setup(config)
    run.budget.progress_bar = False  # the budget is tokens; the time budget is only a safety net
    evaluation = run.evaluation = TokenCheckpointEvaluation(run.evaluation, eval_every_tokens)
    train_seconds = learn(run)
    tokens = int(run.model.num_timesteps)
    result = {
        "algorithm": config.algorithm,
        "seed": config.run.seed,
        "run_dir": str(config.run_dir),
        "tokens": tokens,
        "budget_tokens": config.run.total_timesteps,
        "train_seconds": train_seconds,  # learn(), evaluations included
        "eval_seconds": evaluation.seconds,
        "seconds_per_1k_tokens": 1000 * (train_seconds - evaluation.seconds) / max(tokens, 1),  # training only
        "wall_clock_seconds": time.monotonic() - started,  # the whole process: set-up, training, evaluations
        "peak_rss_mib": peak_rss_mib(),
        "history": evaluation.history,  # held-out evaluations: timesteps, score, kl, distinct_2, repetition, ...
        "rollouts": run.history.rows,  # per rollout: timesteps, rollout/score, kl/k1_per_episode, kl/coef, ...
        "config": config.flat(),
        "algorithm_settings": config.algorithm_kwargs(),  # as trained: defaults resolved, the KL term's included
    }
    (config.run_dir / "comparison_run.json").write_text(json.dumps(result, indent=1), encoding="utf-8")
    return result


def best_of_n_key(config: TrainConfig, n_max: int) -> dict[str, Any]:
    """What the best-of-n reference depends on: a cached reference with another key is recomputed."""
    fields = (
        "env_id", "model", "compute_dtype", "temperature", "seed", "eval_prompts", "eval_prompts_file", "prompts",
        "reward", "tokenizer", "max_new_tokens", "max_prompt_tokens",
    )  # fmt: skip
    options = config.flat()
    key = {"n_max": n_max, **{name: options[name] for name in fields}}
    if options["head_dtype"] != "float32":  # named only when set, so references cached before it existed still match
        key["head_dtype"] = options["head_dtype"]
    return key


def best_of_n_reference(config: TrainConfig, n_max: int) -> dict[str, Any]:
    """Sample ``n_max`` completions per held-out prompt from the policy before training (built by the main job's
    :func:`~agents.cli.train.setup` from ``config``, so the same model, dtype, temperature and prompts as every
    run's first evaluation), score them with the task's reward model and return the best-of-n curve with the raw
    ``(prompts, n_max)`` scores."""
    import torch

    from agents.cli.train import setup
    from agents.common.best_of_n import best_of_n_curve
    from agents.common.generation import generate_completions

    torch.set_num_threads(1)
    started = time.monotonic()
    run = setup(config)
    prompts = run.prompts  # distinct held-out prompts
    result = generate_completions(
        run.model,
        run.eval_env,
        [prompt for prompt in prompts for _ in range(n_max)],  # prompt-major: row p * n_max + j
        batch_size=config.task.eval_batch_size,
    )
    scores = result.scores.reshape(len(prompts), n_max)  # (P, n_max)
    best = scores.argmax(1)  # (P,)
    return {
        "key": best_of_n_key(config, n_max),
        "curve": best_of_n_curve(scores),
        "prompts": [record.prompt for record in prompts],
        "scores": scores.tolist(),
        "best_samples": [  # the best of n_max for the first prompts
            {"prompt": prompts[p].prompt, "score": float(scores[p, b]), "completion": result.completions[p * n_max + b]}
            for p, b in enumerate(best[:3].tolist())
        ],
        "seconds": time.monotonic() - started,
        "peak_rss_mib": peak_rss_mib(),
    }
