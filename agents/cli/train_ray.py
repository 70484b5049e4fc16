"""The main job's data-parallel training launched by Ray Train instead of torchrun, with automatic restarts.

    python -m agents.train_ray --workers 2 [--max-failures 1] [agents.train options]        # a local Ray on 127.0.0.1
    python -m agents.train_ray --ray-address auto --workers 8 --device cuda --output-dir /shared/runs ...  # a cluster

Each Ray Train worker runs what each torchrun rank runs (``agents.cli.train.run``): Ray Train's ``TorchTrainer``
starts the process group (gloo on CPU, NCCL with ``--device cuda``) and sets ``RANK``, ``WORLD_SIZE`` and
``LOCAL_RANK`` as torchrun does, so the run is the torchrun run: same run directory (rank 0 writes), same
checkpoints, same weights for the same seed (tested bitwise). What Ray adds is placement (workers go wherever the
cluster has room) and recovery: with ``--max-failures K``, a worker that dies (killed, pre-empted, out of memory)
makes Ray restart the worker group, and the restarted workers resume from the run's newest checkpoint (the exact
``--resume`` path); ``summary.json`` records the restarts under ``launcher``.

The run directory must be on storage every worker sees (a shared file system on a cluster): checkpoints are written
by rank 0 and read by every rank on a restart. On one machine that is any directory.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from agents.cli.config import TrainConfig, parse_config

#: Test hook: ``<timesteps>`` makes rank 1 of the first attempt kill its own process (SIGKILL) as soon as the run's
#: checkpoint at that many env steps exists, the way a pre-empted node dies (tests/test_distributed.py).
FAULT_ENV = "AGENTS_RAY_KILL_AFTER_CHECKPOINT"
#: Environment variables the workers get from the launcher when set (offline model loading, caches).
PASSED_ENV = (
    "HF_HUB_OFFLINE", "HF_HOME", "TRANSFORMERS_OFFLINE", "XDG_CACHE_HOME", "RAY_TRAIN_ENABLE_PRINT_PATCH",
)  # fmt: skip
#: A collective waits this long for the other ranks before it fails (as ``init_distributed``'s default).
TIMEOUT_SECONDS = 600


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m agents.train_ray",
        description="python -m agents.train, data parallel on Ray Train workers (every other option is "
        "agents.train's: see python -m agents.train --help).",
    )
    parser.add_argument("--workers", type=int, default=2, help="data-parallel workers (ranks) (default: 2)")
    parser.add_argument("--cpus-per-worker", type=int, default=1, help="CPUs (and torch threads) per worker")
    parser.add_argument(
        "--ray-address", default=None,
        help="a running Ray cluster (e.g. auto, or ray://head:10001); default: start a local Ray on 127.0.0.1",
    )  # fmt: skip
    parser.add_argument(
        "--max-failures", type=int, default=0,
        help="restart the workers this many times after a failure, resuming from the newest checkpoint (needs "
        "--checkpoint-every > 0; -1: without limit)",
    )  # fmt: skip
    parser.add_argument(
        "--allow-oversubscribe", action="store_true",
        help="start a local Ray with more worker CPUs than this machine has (each runs slower)",
    )  # fmt: skip
    return parser


@contextlib.contextmanager
def world_size_for_checks(workers: int) -> Iterator[None]:
    """Check the options as ``workers`` torchrun ranks would see them (``WORLD_SIZE``), in the launcher only."""
    saved = os.environ.get("WORLD_SIZE")
    os.environ["WORLD_SIZE"] = str(workers)
    try:
        yield
    finally:
        if saved is None:
            del os.environ["WORLD_SIZE"]
        else:
            os.environ["WORLD_SIZE"] = saved


def worker_problems(args: argparse.Namespace) -> list[str]:
    """What the launcher's own options ask of this machine (checked before the training options)."""
    problems = []
    if args.workers < 1 or args.cpus_per_worker < 1:
        problems.append("--workers and --cpus-per-worker must be >= 1")
    cpus, needed = os.cpu_count() or 1, args.workers * args.cpus_per_worker
    if args.ray_address is None and needed > cpus and not args.allow_oversubscribe:
        problems.append(
            f"{args.workers} workers x {args.cpus_per_worker} CPUs need {needed} CPUs; this machine has {cpus}: use "
            "fewer workers, or --allow-oversubscribe to run them anyway (each slower)"
        )
    if args.max_failures < -1:
        problems.append(f"--max-failures must be -1 (no limit), 0 or more, got {args.max_failures}")
    return problems


def parse(argv: list[str] | None) -> tuple[argparse.Namespace, TrainConfig, list[str]]:
    """The launcher's options, the training config (checked for ``--workers`` ranks) and the training argv; bad
    input exits 2 naming the problem, before Ray starts or any model loads."""
    parser = build_parser()
    args, train_argv = parser.parse_known_args(argv)
    if importlib.util.find_spec("ray") is None:
        parser.error("python -m agents.train_ray needs Ray Train: pip install 'text-env-rl[ray]'")
    problems = worker_problems(args)
    if problems:
        parser.error("; ".join(problems))
    with world_size_for_checks(args.workers):
        config = parse_config(train_argv)  # exits 2 naming a bad training option
    if args.max_failures != 0 and config.run.checkpoint_every == 0:
        parser.error("--max-failures restarts from the newest checkpoint: give --checkpoint-every N (rollouts) > 0")
    return args, config, train_argv


def worker_loop(loop_config: dict[str, Any]) -> None:
    """One Ray Train worker: the torchrun rank's work, resumed from the newest checkpoint on a restart."""
    import torch
    import torch.distributed as dist

    from agents.cli.train import TrainingFailed, run
    from agents.common.checkpoint import latest_checkpoint

    torch.set_num_threads(loop_config["threads"])
    run_dir = Path(loop_config["run_dir"])
    argv = list(loop_config["argv"])
    resuming = latest_checkpoint(run_dir / "checkpoints") is not None  # none before the first attempt's first save
    if resuming and "--resume" not in argv:
        argv = [*without_config(argv), "--resume", str(run_dir)]  # the run's config.yaml holds --config's options
    rank = dist.get_rank()
    if rank == 0:
        with (run_dir / "ray_attempts.jsonl").open("a", encoding="utf-8") as handle:
            handle.write(json.dumps({"started": time.time(), "resumed": resuming}) + "\n")
    fault = loop_config.get("kill_after_checkpoint")
    if fault is not None and rank == 1 and not resuming:
        _kill_when_saved(run_dir / "checkpoints" / f"checkpoint_{fault}.zip")
    config = parse_config(argv)
    try:
        run(config)
    except TrainingFailed as error:
        if rank == 0 or not error.every_rank:
            print(f"[error] {error}", file=sys.stderr)
        raise


def without_config(argv: list[str]) -> list[str]:
    """``argv`` without ``--config FILE`` / ``--config=FILE``: a resumed run reads its own ``config.yaml``, which
    holds every option the file gave (``--resume`` refuses ``--config``)."""
    kept, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--config":
            skip = True
        elif not arg.startswith("--config="):
            kept.append(arg)
    return kept


def _kill_when_saved(checkpoint: Path) -> None:
    """Test hook (:data:`FAULT_ENV`): SIGKILL this process once ``checkpoint`` exists."""

    def watch() -> None:
        while not checkpoint.is_file():
            time.sleep(0.02)
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, daemon=True).start()


def start_ray(args: argparse.Namespace) -> None:
    """Connect to ``--ray-address``, or start a local Ray with CPUs for the workers (Ray Train's controller takes
    none) whose every process listens on 127.0.0.1 only."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no usage report leaves the machine
    os.environ.setdefault("RAY_TRAIN_ENABLE_PRINT_PATCH", "0")  # print() once, not also through Ray's logger
    if args.ray_address is None:
        # Ray's single-machine mode (its default on macOS and Windows): node address 127.0.0.1, no cluster
        # networking. Read when ray is imported, and inherited by the Ray processes the driver starts.
        os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    import ray

    passed = {name: os.environ[name] for name in PASSED_ENV if name in os.environ}
    if args.ray_address is not None:
        ray.init(address=args.ray_address, runtime_env={"env_vars": passed})
        return
    ray.init(
        num_cpus=args.workers * args.cpus_per_worker, include_dashboard=False, _node_ip_address="127.0.0.1",
        logging_level=logging.WARNING, runtime_env={"env_vars": passed},
    )  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    args, config, train_argv = parse(argv)
    from agents.cli.train import fresh_run_dir

    started, started_wall = time.monotonic(), time.time()
    if config.run.resume is None:  # fix the run directory once: every attempt writes and resumes there
        run_dir = fresh_run_dir(config).resolve()
        run_dir.mkdir(parents=True, exist_ok=True)
        for stale in (run_dir / "checkpoints").glob("checkpoint_*.zip"):  # an --overwrite'n run's
            stale.unlink()
        (run_dir / "ray_attempts.jsonl").unlink(missing_ok=True)
        train_argv = [*train_argv, "--name", run_dir.name, "--output-dir", str(run_dir.parent), "--overwrite"]
    else:
        run_dir = config.run_dir.resolve()
    use_gpu = str(config.run.device).startswith("cuda")
    fault = os.environ.get(FAULT_ENV)
    start_ray(args)
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    trainer = TorchTrainer(
        worker_loop,
        train_loop_config={
            "argv": train_argv, "run_dir": str(run_dir), "threads": args.cpus_per_worker,
            "kill_after_checkpoint": None if fault is None else int(fault),
        },
        scaling_config=ScalingConfig(
            num_workers=args.workers, use_gpu=use_gpu, resources_per_worker={"CPU": args.cpus_per_worker}
        ),
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo", timeout_s=TIMEOUT_SECONDS),
        run_config=RunConfig(
            name=run_dir.name, storage_path=str(run_dir / "ray"),
            # Node pre-emptions count too (Ray's default restarts after them without limit).
            failure_config=FailureConfig(  # type: ignore[call-arg]  # (Ray Train V2's; the stubs show V1's)
                max_failures=args.max_failures, max_preemption_failures=args.max_failures
            ),
        ),
    )  # fmt: skip
    try:
        trainer.fit()
    except Exception as error:  # Ray's TrainingFailedError: the workers' errors, after the allowed restarts
        print(f"[error] Ray Train: {type(error).__name__}: {error}", file=sys.stderr)
        return 1
    finally:
        import ray

        ray.shutdown()
    record_launch(run_dir, args, time.monotonic() - started, started_wall)
    return 0


def record_launch(run_dir: Path, args: argparse.Namespace, seconds: float, started_wall: float) -> None:
    """Add the launcher, its workers and the restarts to ``summary.json`` (written atomically)."""
    from text_env.atomic import atomic_file

    attempts = [json.loads(line) for line in (run_dir / "ray_attempts.jsonl").read_text().splitlines() if line]
    summary_path = run_dir / "summary.json"
    summary = json.loads(summary_path.read_text(encoding="utf-8"))
    summary["launcher"] = {
        "name": "ray", "workers": args.workers, "cpus_per_worker": args.cpus_per_worker,
        "ray_address": args.ray_address or "local (127.0.0.1)", "max_failures": args.max_failures,
        "restarts": len(attempts) - 1, "wall_clock_seconds": round(seconds, 1),
        "startup_seconds": round(attempts[0]["started"] - started_wall, 1) if attempts else None,
    }  # fmt: skip
    text = json.dumps(summary, indent=1)

    def write(staging: Path) -> None:
        staging.write_text(text, encoding="utf-8")

    atomic_file(summary_path, write)
    print(f"[ray] {args.workers} workers, {len(attempts) - 1} restart(s), {seconds:.0f} s; {summary_path}")
