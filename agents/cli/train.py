"""The main job: fine-tune a causal LM with RL on a text_env task, evaluate it on held-out prompts, export it.

    python -m agents.train                      # PPO + KL penalty, SmolLM2-135M-Instruct, PositiveReview-v0
    python -m agents.train --budget-minutes 5 --algorithm a2c --lora-r 8
    python -m agents.train --config my.yaml --help

Steps: check the options (before loading any model) -> build the vectorized env and the algorithm with a
CausalLMPolicy -> evaluate on held-out prompts -> train under a wall-clock budget with the KL penalty, evaluating
every few rollouts -> evaluate again -> write ``runs/<name>/``: ``model/`` (loadable with ``from_pretrained``),
``training.png`` (score and KL over training), ``summary.json``, ``config.yaml``, ``logs/`` (SB3's logger: every
metric of every rollout in ``progress.csv``).

Data parallel: ``torchrun --nproc_per_node=N -m agents.train ...`` (multi-node: torchrun's rendezvous flags). Each
rank gets ``n_envs / N`` envs, ``batch_size / N`` transitions per minibatch and the seed ``seed + rank``;
:class:`~agents.DataParallelCallback` averages the gradients and keeps every decision common; rank 0 alone writes
the run directory, logs, evaluates and exports. Checkpoints hold every rank's envs and random streams (gathered to
rank 0, which writes them); ``--resume`` with the same number of ranks continues exactly, with another number (or a
single process) it restores the training state and starts fresh episodes (a warning says so).
"""

from __future__ import annotations

import copy
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from agents.cli.config import TrainConfig, parse_config
from agents.cli.options import TaskOptions
from text_env.prompts import PromptRecord

#: Share of the training prompts set aside for evaluation when a task declares no held-out prompts.
HELD_OUT_SHARE = 0.1


def held_out_prompts(options: TaskOptions, env: Any, task: dict[str, Any]) -> list[PromptRecord]:
    """The distinct prompt records to evaluate on: ``--eval-prompts-file``, else the task's own ``eval_records``,
    else the last 10% of its training records, which are then removed from training (``task["prompts"]``), and
    says so."""
    from text_env import load_records

    if options.eval_prompts_file is not None:
        prompts = load_records(options.eval_prompts_file)
    elif env.eval_records:
        prompts = list(env.eval_records)
    elif len(env.records) >= 2:
        n_held = max(1, round(HELD_OUT_SHARE * len(env.records)))
        prompts = list(env.records[-n_held:])
        task["prompts"] = list(env.records[:-n_held])
        print(
            f"[setup] {options.env_id} declares no held-out prompts: evaluating on its last {n_held} of "
            f"{len(env.prompts)} prompts, set aside from training"
        )
    else:
        prompts = list(env.records)
        print(f"[setup] {options.env_id} has one prompt and no held-out prompts: evaluating on the training prompt")
    return prompts[: options.eval_prompts or None]


def build_model(config: TrainConfig, env: Any, model: Any = None) -> Any:
    """The algorithm with the LM policy, from the config, through :func:`agents.registry.make_algorithm`: its
    settings and its KL term's constructor arguments (a KL term that comes as callbacks is added by :func:`setup`).

    :param model: a model spec (e.g. a ``PretrainedConfig``) used instead of ``config.lm.model``.
    """
    from agents.registry import make_algorithm

    return make_algorithm(
        config.algorithm,
        env,
        policy_kwargs=config.lm.policy_kwargs(config.run.device, model),
        seed=config.run.seed,
        device=config.run.device,
        verbose=0,
        **config.algorithm_kwargs(),
    )


def plot_training(path: Any, kl_history: list[dict[str, float]], eval_history: list[dict[str, float]]) -> None:
    """Two panels against environment steps: reward-model score (training rollouts and held-out evaluations) and
    KL to the reference per episode."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (score_ax, kl_ax) = plt.subplots(1, 2, figsize=(11, 4))
    rows = [r for r in kl_history if "rollout/score" in r]
    score_ax.plot(
        [r["timesteps"] for r in rows], [r["rollout/score"] for r in rows], label="training rollouts", alpha=0.7
    )
    score_ax.plot([r["timesteps"] for r in eval_history], [r["score"] for r in eval_history], "o-", label="held-out")
    score_ax.set(xlabel="environment steps (tokens)", ylabel="mean reward-model score", title="Reward")
    score_ax.legend()
    rows = [r for r in kl_history if "kl/k1_per_episode" in r]
    kl_ax.plot([r["timesteps"] for r in rows], [r["kl/k1_per_episode"] for r in rows], label="training (sampled)")
    evals = [r for r in eval_history if "kl" in r]
    kl_ax.plot([r["timesteps"] for r in evals], [r["kl"] for r in evals], "o-", label="held-out (exact)")
    kl_ax.set(xlabel="environment steps (tokens)", ylabel="KL(pi || pi_ref) per episode", title="KL to reference")
    kl_ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


@dataclass
class TrainingRun:
    """What :func:`setup` builds and :func:`learn` and :func:`write_outputs` use."""

    config: TrainConfig
    model: Any  # the SB3 algorithm
    eval_env: Any
    prompts: list[PromptRecord]  # distinct held-out prompt records
    callbacks: list[Any]  # KL penalty (critic-based algorithms) or nothing, then the three below
    history: Any  # RolloutHistoryCallback
    evaluation: Any  # TextEvalCallback
    budget: Any  # TimeBudgetCallback
    started: float  # time.monotonic() at the start of setup
    checkpoints: Any = None  # CheckpointCallback (on every rank; rank 0 writes), or None
    resumed: dict[str, Any] = field(default_factory=dict)  # the CLI state of the checkpoint resumed from
    train_started: float | None = None  # time.monotonic() when learn() started
    freed_memory_kept: bool = False  # keep_freed_memory() took effect (glibc)

    def first_completions(self) -> list[str]:
        """The completions of the first (before-training) evaluation, also across a resume."""
        if self.evaluation is not None and self.evaluation.first_result is not None:
            return list(self.evaluation.first_result.completions)
        return list(self.resumed.get("first_completions", []))

    def train_seconds(self) -> float:
        """Seconds in learn() so far, including those before a resume."""
        now = 0.0 if self.train_started is None else time.monotonic() - self.train_started
        return float(self.resumed.get("train_seconds", 0.0)) + now

    def checkpoint_state(self) -> dict[str, Any]:
        """What the CLI needs besides the model to continue a run (saved inside each checkpoint)."""
        return {
            "eval_history": list(self.evaluation.history) if self.evaluation is not None else [],
            "first_completions": self.first_completions(),
            "rollout_rows": list(self.history.rows),
            "train_seconds": self.train_seconds(),
        }


class TrainingFailed(RuntimeError):
    """Training stopped on an error (e.g. the reward model raised or returned NaN); the message says which
    checkpoint is intact and how to continue.

    :param every_rank: data parallel: every rank raised this same error (rank 0 alone prints it).
    """

    def __init__(self, message: str, every_rank: bool = False) -> None:
        super().__init__(message)
        self.every_rank = every_rank


def fresh_run_dir(config: TrainConfig) -> Path:
    """``<output_dir>/<name>``, or ``<name>-2``, ``-3``, ... when it holds an earlier run (unless ``--overwrite``)."""
    run_dir = config.run_dir
    if config.run.overwrite or not run_dir.exists() or not any(run_dir.iterdir()):
        return run_dir
    number = 2
    while (candidate := run_dir.with_name(f"{run_dir.name}-{number}")).exists():
        number += 1
    print(f"[setup] {run_dir} holds an earlier run: writing to {candidate} (--overwrite reuses {run_dir})")
    return candidate


def setup(config: TrainConfig) -> TrainingRun:
    """Build the envs, the algorithm with the LM policy, its logger, one reference and the callbacks."""
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.logger import Logger, configure

    import text_env  # noqa: F401  (registers the ids)
    from agents import KLPenaltyCallback, ReferenceModel
    from agents.common.callbacks import RolloutHistoryCallback, TimeBudgetCallback
    from agents.common.distributed import get_rank, get_world_size
    from agents.common.evaluation import TextEvalCallback
    from agents.common.resources import keep_freed_memory

    # before any model is loaded: blocks mapped before it stay mapped
    freed_memory_kept = keep_freed_memory() if config.run.keep_freed_memory else False
    started = time.monotonic()
    rank, world = get_rank(), get_world_size()
    if rank == 0:  # data parallel: rank 0 alone writes
        config.run.name = fresh_run_dir(config).name
        config.run_dir.mkdir(parents=True, exist_ok=True)
        if config.run.resume is None:  # an --overwrite'n run's checkpoints would be taken for this run's
            for stale in (config.run_dir / "checkpoints").glob("checkpoint_*.zip"):
                stale.unlink()
        (config.run_dir / "config.yaml").write_text(config.to_yaml(), encoding="utf-8")
        envs = f"{config.task.n_envs} envs" + (f" on {world} ranks" if world > 1 else "")
        where = f"({envs}, {config.run.device})"
        print(f"[setup] {config.algorithm} on {config.task.env_id} with {config.lm.model} {where}")
    task = config.env_kwargs()
    eval_env = gym.make(config.task.env_id, **task)  # the task as the flags assemble it; generates given prompts only
    prompts = held_out_prompts(config.task, eval_env.unwrapped, task)  # may set training prompts aside in ``task``
    local = rank_config(config)
    env = make_vec_env(config.task.env_id, n_envs=local.task.n_envs, seed=local.run.seed, env_kwargs=task)
    resumed_kl: Any = None
    resumed: dict[str, Any] = {}
    if config.run.resume is not None:
        model, resumed_kl, resumed = resume_model(config, local, env)
    else:
        model = build_model(local, env)
    if rank == 0:
        formats = ["csv"] + (["tensorboard"] if config.run.tensorboard_log else [])
        logs = config.run_dir / ("logs" if not resumed else f"logs/resumed-{model.num_timesteps}")
        model.set_logger(configure(str(config.run.tensorboard_log or logs), formats))
    else:
        model.set_logger(Logger(folder=None, output_formats=[]))

    # One reference (the initial policy; with LoRA the same model with adapters off), shared by the KL term and the
    # evaluation: the algorithm's own when it holds one, else the resumed KL callback's, else a new one. The KL
    # term is the algorithm's own or callbacks its settings make (a resumed KL callback continues as saved).
    reference = getattr(model, "reference", None)
    if resumed_kl is not None:
        reference = resumed_kl.reference
    elif reference is None:
        reference = ReferenceModel(model.policy)
    callbacks = [resumed_kl] if resumed_kl is not None else config.settings.kl_callbacks(config.kl, reference)
    evaluation = None  # data parallel: rank 0 alone evaluates
    if rank == 0:
        evaluation = TextEvalCallback(
            eval_env,
            prompts * config.task.eval_samples,  # repeated in blocks: the first samples are distinct prompts
            every_n_rollouts=config.task.eval_every,
            reference=reference,
            batch_size=config.task.eval_batch_size,
        )
        print(f"[setup] model and envs ready in {time.monotonic() - started:.0f} s")
    budget_seconds = config.run.budget_minutes * 60 - float(resumed.get("train_seconds", 0.0))
    if budget_seconds <= 0:
        raise TrainingFailed(
            f"--resume: the run already used its {config.run.budget_minutes} minutes; give a larger --budget-minutes.",
            every_rank=True,  # the time used comes from the checkpoint every rank loaded
        )
    run = TrainingRun(
        config, model, eval_env, prompts, callbacks, RolloutHistoryCallback(), evaluation,
        TimeBudgetCallback(budget_seconds, progress_bar=rank == 0), started, resumed=resumed,
        freed_memory_kept=freed_memory_kept,
    )  # fmt: skip
    if evaluation is not None:
        evaluation.history = list(resumed.get("eval_history", []))
    run.history.rows = list(resumed.get("rollout_rows", []))
    if config.run.checkpoint_every > 0:  # on every rank: each save gathers every rank's envs and random streams
        from agents.common.checkpoint import CheckpointCallback

        kl_callback = next((c for c in callbacks if isinstance(c, KLPenaltyCallback)), None)
        run.checkpoints = CheckpointCallback(
            config.run_dir / "checkpoints", config.run.checkpoint_every, config.run.keep_checkpoints, kl_callback,
            extra_state=run.checkpoint_state,
        )  # fmt: skip
    return run


def resume_model(config: TrainConfig, local: TrainConfig, env: Any) -> tuple[Any, Any, dict[str, Any]]:
    """The model, KL callback and CLI state of the newest checkpoint in ``<run>/checkpoints``, on this rank's envs
    (``local``: :func:`rank_config`).

    Data parallel, rank 0 picks the checkpoint and every rank loads that one; when it is missing or any rank cannot
    load it, every rank raises the same :class:`TrainingFailed` (none is left waiting for the others).
    """
    from agents.common.checkpoint import latest_checkpoint, load_checkpoint_state
    from agents.common.distributed import all_gather_objects, broadcast_object, get_rank, get_world_size
    from agents.registry import get_algorithm

    directory = config.run_dir / "checkpoints"
    newest = latest_checkpoint(directory) if get_rank() == 0 else None
    path = broadcast_object(None if newest is None else str(newest), "the choice of the checkpoint to resume from")
    loaded, problem = None, None
    if path is None:
        problem = f"no checkpoint in {directory}: start the run again instead."
    else:
        algorithm = get_algorithm(config.algorithm).algorithm_class
        # The world may differ (per-rank shares), and memory knobs may change (e.g. after running out of memory).
        names = (*local.settings.per_rank, *local.settings.per_process)
        overrides = {name: getattr(local.settings, name) for name in names}
        try:
            loaded = load_checkpoint_state(algorithm, path, env, device=local.run.device, **overrides)
        except Exception as error:  # noqa: BLE001  (a truncated or foreign file: reported by every rank below)
            problem = (
                f"cannot load {path}: {type(error).__name__}: {error}\nDelete it to resume from the checkpoint "
                "before it (the newest --keep-checkpoints are kept), or start the run again."
            )
    problems = all_gather_objects(problem, "the outcome of loading the checkpoint")
    failed = [rank for rank, text in enumerate(problems) if text is not None]
    if failed:
        plural = "s" if len(failed) > 1 else ""
        ranks = f" (rank{plural} {', '.join(map(str, failed))} of {get_world_size()})" if get_world_size() > 1 else ""
        raise TrainingFailed(f"--resume{ranks}: {problems[failed[0]]}", every_rank=True)
    assert loaded is not None
    model, kl_callback, state = loaded
    if get_rank() == 0:
        print(f"[setup] resuming from {path} ({model.num_timesteps} env steps done)")
    return model, kl_callback, state


def rank_config(config: TrainConfig) -> TrainConfig:
    """This rank's share of the run: ``n_envs / world`` envs, the algorithm's per-rank totals divided
    (:meth:`~agents.common.settings.AlgorithmSettings.for_rank`, e.g. ``batch_size``), seed ``seed + rank`` and the
    rank's device; ``config`` itself (unchanged) in a single process."""
    from agents.common.distributed import get_rank, get_world_size, init_distributed

    world = get_world_size()
    if world == 1:
        return config
    # Copies without __post_init__: the checks are the global config's.
    local, task, run = copy.copy(config), copy.copy(config.task), copy.copy(config.run)
    task.n_envs = config.task.n_envs // world
    run.seed = config.run.seed + get_rank()
    run.device = str(init_distributed(config.run.device))  # already initialized: the rank's device (cuda:LOCAL_RANK)
    local.task, local.run, local.settings = task, run, config.settings.for_rank(world)
    return local


def learn(run: TrainingRun) -> float:
    """Train under the time budget (evaluating before, every few rollouts, and after); returns the seconds."""
    from stable_baselines3.common.callbacks import CallbackList

    from agents import DataParallelCallback
    from agents.common.distributed import is_distributed

    callbacks = [*run.callbacks, run.history, run.evaluation, run.budget]
    if is_distributed():
        callbacks.append(DataParallelCallback())  # last: it sees the advantages after the KL penalty
    callbacks.append(run.checkpoints)
    run.train_started = time.monotonic()
    resuming = run.config.run.resume is not None
    steps = run.config.run.total_timesteps - (run.model.num_timesteps if resuming else 0)
    try:
        run.model.learn(
            steps, callback=CallbackList([c for c in callbacks if c is not None]), reset_num_timesteps=not resuming
        )
    except Exception as error:  # e.g. a reward model that raises or returns NaN: say what is safe and how to go on
        from agents.common.checkpoint import latest_checkpoint

        saved = latest_checkpoint(run.config.run_dir / "checkpoints")  # this run's own, or the one it resumed from
        where = (
            f"The last checkpoint, {saved}, is intact: fix the cause, then continue with --resume {run.config.run_dir}"
            if saved is not None
            else "No checkpoint was written yet (one every --checkpoint-every rollouts)."
        )
        raise TrainingFailed(
            f"Training stopped after {run.model.num_timesteps} env steps: {type(error).__name__}: {error}\n{where}"
        ) from error
    return run.train_seconds()


def write_outputs(run: TrainingRun, train_seconds: float) -> dict[str, Any]:
    """Export the model, plot the curves, write and print the summary; returns the summary."""
    from agents import export_pretrained
    from agents.common.distributed import get_world_size

    config, evaluation = run.config, run.evaluation
    export_pretrained(run.model, config.run_dir / "model", tokenizer=run.eval_env.unwrapped.tokenizer)
    plot_training(config.run_dir / "training.png", run.history.rows, evaluation.history)
    shown = run.prompts[:5]  # the first completions are one per distinct prompt (prompts repeat in blocks)
    summary = {
        "env_id": config.task.env_id,
        "algorithm": config.algorithm,
        "model": config.lm.model,
        "seed": config.run.seed,
        "world_size": get_world_size(),
        "compute_dtype": config.lm.resolved_compute_dtype(config.run.device),
        "head_dtype": config.lm.head_dtype,
        "keep_freed_memory": run.freed_memory_kept,
        "algorithm_settings": config.algorithm_kwargs(),  # as trained: defaults resolved, the KL term's included
        "budget_minutes": config.run.budget_minutes,
        "timesteps": int(run.model.num_timesteps),  # env steps = generated tokens
        "train_seconds": round(train_seconds, 1),
        "wall_clock_seconds": round(time.monotonic() - run.started, 1),
        "versions": package_versions(),
        "held_out_prompts": len(run.prompts),
        "samples_per_prompt": config.task.eval_samples,
        "before": evaluation.history[0],
        "after": evaluation.history[-1],
        "final_kl_coef": run.history.rows[-1].get("kl/coef") if run.history.rows else None,
        "samples": [
            {"prompt": p.prompt, "before": b, "after": a}
            for p, b, a in zip(
                shown,
                run.first_completions()[: len(shown)],
                evaluation.last_result.completions[: len(shown)],
                strict=True,
            )
        ],
    }
    (config.run_dir / "summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    print_summary(summary)
    print(f"[done] {time.monotonic() - run.started:.0f} s in all; outputs in {config.run_dir}/")
    return summary


def package_versions() -> dict[str, str]:
    """Versions of the packages a run's figures depend on."""
    import importlib.metadata

    names = ("text-env-rl", "torch", "transformers", "stable-baselines3", "sb3-contrib", "peft", "gymnasium")
    versions = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def run(config: TrainConfig) -> dict[str, Any]:
    """Train, evaluate and export as the config says; returns the summary that is also written as JSON."""
    from agents.common.distributed import get_rank

    training_run = setup(config)
    seconds = learn(training_run)
    return write_outputs(training_run, seconds) if get_rank() == 0 else {}


def print_summary(summary: dict[str, Any]) -> None:
    before, after = summary["before"], summary["after"]
    print(
        f"\nHeld-out evaluation on {summary['held_out_prompts']} test prompts x {summary['samples_per_prompt']} "
        f"samples ({summary['timesteps']} env steps):"
    )
    print(f"  {'metric':<18}{'before':>10}{'after':>10}")
    for key in after:  # every metric the evaluation reported, in its order
        if key != "timesteps" and isinstance(after[key], (int, float)):
            print(f"  {key:<18}{before.get(key, float('nan')):>10.3f}{after[key]:>10.3f}")
    print("\nSample completions, before -> after training:")
    for sample in summary["samples"][:3]:
        print(f"  {sample['prompt']!r}\n    before: {sample['before']!r}\n    after:  {sample['after']!r}")


def main(argv: list[str] | None = None) -> int:
    config = parse_config(argv)  # exits with a clear message on bad options, before any model is loaded
    np.set_printoptions(precision=3)
    if int(os.environ.get("WORLD_SIZE", "1")) == 1:  # a plain run, or torchrun with one process
        try:
            run(config)
        except TrainingFailed as error:
            print(f"[error] {error}", file=sys.stderr)
            return 1
        return 0
    import torch.distributed as dist

    from agents.common.distributed import get_rank, init_distributed

    init_distributed(config.run.device)  # torchrun's RANK, WORLD_SIZE, MASTER_ADDR/PORT; gloo on CPU, NCCL on CUDA
    try:
        run(config)
    except TrainingFailed as error:
        if get_rank() == 0 or not error.every_rank:
            print(f"[error] {error}", file=sys.stderr)
        return 1
    finally:
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
