"""Data-parallel training (agents.common.distributed): 2 ranks x 1 thread over gloo on the loopback interface.

One spawned session of two ranks runs the scenarios in order (starting processes costs more than the scenarios):
identical weights after PPO (with ranks stopping early at different minibatches) and GRPO updates, one update equal
to the single-process full-batch update, settings that differ across ranks, a single process's checkpoint resumed
on two ranks and checkpoints that cannot be loaded, and last a rank whose reward model raises. Then the CLI under
torchrun: a straight run, a cut run resumed on two ranks (it ends on the straight run's weights) and in one process.
Every wait is bounded: a process-group timeout of 60 s and join timeouts.
"""

from __future__ import annotations

import copy
import json
import os
import pickle
import shutil
import socket
import subprocess
import sys
import time
import traceback
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist

pytestmark = pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()), reason="torch.distributed with gloo is unavailable"
)

WORLD = 2
SESSION_TIMEOUT = 150  # seconds for the whole spawned session (it takes ~15 s alone on 2 cores)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# ---------------------------------------------------------------------------------------------------- the ranks
def _ppo(model_dir: str, n_envs: int, env_seed: int, seed: int, **settings):
    from stable_baselines3.common.env_util import make_vec_env

    from agents.registry import make_algorithm

    env_kwargs = settings.pop("env_kwargs", None)
    policy_kwargs = dict(model=model_dir, **settings.pop("policy_kwargs", {}))
    env = make_vec_env("text_env/Vowels-v0", n_envs=n_envs, seed=env_seed, env_kwargs=env_kwargs)
    return make_algorithm(
        settings.pop("algorithm", "ppo"), env, policy_kwargs=policy_kwargs, seed=seed, device="cpu", **settings
    )


def _state(model) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.policy.named_parameters()}


def _count_real_steps(model) -> list[int]:
    """Optimizer steps that changed something (DataParallelCallback's skipped steps have no gradients)."""
    from agents.common.policy import release_gradients

    steps = [0]

    def count(optimizer, args, kwargs):
        if any(p.grad is not None for group in optimizer.param_groups for p in group["params"]):
            steps[0] += 1

    # Counted before the policy's own post-hook releases the gradients (hooks run in registration order).
    model.policy.gradient_release.remove()
    model.policy.optimizer.register_step_post_hook(count)
    model.policy.gradient_release = model.policy.optimizer.register_step_post_hook(release_gradients)
    return steps


def scenario_ppo(rank: int, model_dir: str) -> dict:
    """4 PPO updates with the adaptive KL penalty; rank 1 stops each update early (tiny target_kl), rank 0 never
    would: both must make the same steps and end with bitwise identical weights."""
    from agents import DataParallelCallback, KLPenaltyCallback

    target_kl = 1e-5 if rank == 1 else None  # above float32 noise (~1e-7) before a step, far below one step
    model = _ppo(model_dir, 2, 100 * rank, rank, n_steps=16, batch_size=16, n_epochs=2, learning_rate=1e-2,
                 target_kl=target_kl)  # fmt: skip
    steps = _count_real_steps(model)
    initial = _state(model)  # the saved model's weights: the same on both ranks
    kl = KLPenaltyCallback(kl_coef=0.1, kl_target=1.0, horizon=100)
    model.learn(256, callback=[kl, DataParallelCallback()])  # 4 rollouts of 2 ranks x 2 envs x 16
    assert model.target_kl == target_kl and model.max_grad_norm == 0.5 and model.normalize_advantage
    moved = max(float((p - initial[name]).abs().max()) for name, p in _state(model).items())
    return dict(state=_state(model), steps=steps[0], kl_coefs=[r["kl/coef"] for r in kl.history], moved=moved)


def scenario_a2c_maskable(rank: int, model_dir: str) -> dict:
    """A2C (one step per rollout), MaskablePPO (its own buffer and masks) and NLPO (masks from a copy of the policy,
    refreshed at every rollout) keep identical weights too."""
    from agents import DataParallelCallback, KLPenaltyCallback

    results = {}
    for algorithm, settings in (
        ("a2c", dict(n_steps=8)),
        ("maskable_ppo", dict(n_steps=8, batch_size=8)),
        ("nlpo", dict(n_steps=8, batch_size=8, mask_update_interval=1)),
    ):
        model = _ppo(model_dir, 2, 100 * rank, rank, algorithm=algorithm, learning_rate=1e-3, **settings)
        model.learn(64, callback=[KLPenaltyCallback(kl_coef=0.1), DataParallelCallback()])
        results[algorithm] = _state(model)
    return results


def scenario_grpo(rank: int, model_dir: str) -> dict:
    from agents import DataParallelCallback

    model = _ppo(model_dir, 2, 100 * rank, rank, algorithm="grpo", group_size=2, n_steps=8, batch_size=8,
                 n_epochs=2, kl_coef=0.1, learning_rate=1e-3)  # fmt: skip
    steps = _count_real_steps(model)
    model.learn(96, callback=DataParallelCallback())  # global steps: 2 ranks x 2 envs x up to 8 per rollout
    return dict(state=_state(model), steps=steps[0], timesteps=model.num_timesteps)


class _Snapshot:
    """The rollout buffer's arrays at the end of a rollout, (n_steps, n_envs, ...) each."""

    def __init__(self, buffer) -> None:
        names = ("actions", "rewards", "returns", "episode_starts", "values", "log_probs", "advantages")
        self.arrays = {name: getattr(buffer, name).copy() for name in names}
        self.observations = {key: value.copy() for key, value in buffer.observations.items()}


def _update_on_columns(model_dir, rank, settings, initial, snapshot, distributed: bool) -> dict[str, torch.Tensor]:
    """One PPO update of a 2-env model from ``initial`` weights on this rank's two columns of ``snapshot``."""
    from stable_baselines3.common.logger import Logger

    from agents import DataParallelCallback

    model = _ppo(model_dir, 2, 0, 0, batch_size=16, **settings)
    model.policy.load_state_dict(initial)
    model.set_logger(Logger(None, []))
    callback = DataParallelCallback()
    if distributed:
        callback.init_callback(model)
        callback.on_training_start({}, {})
    buffer = model.rollout_buffer
    columns = slice(2 * rank, 2 * rank + 2)
    for name, value in snapshot.arrays.items():
        setattr(buffer, name, value[:, columns].copy())
    buffer.observations = {key: value[:, columns].copy() for key, value in snapshot.observations.items()}
    buffer.full, buffer.generator_ready = True, False
    if distributed:
        callback.on_rollout_end()  # the advantages, normalised with both ranks' statistics
    model.train()
    if distributed:
        callback.on_training_end()
    return _state(model)


def scenario_equivalence(rank: int, model_dir: str) -> dict:
    """One PPO update (2 epochs, each minibatch the whole rollout, SGD) on the same rollout: 1 process x 4 envs
    against 2 ranks x 2 envs (each rank its columns), with a gradient clip that acts and one that does not."""
    from stable_baselines3.common.callbacks import BaseCallback

    class Snapshot(BaseCallback):
        def _on_rollout_end(self) -> None:
            self.snapshot = _Snapshot(self.model.rollout_buffer)  # type: ignore[attr-defined]

        def _on_step(self) -> bool:
            return True

    results = {}
    for max_grad_norm in (1e6, 0.05):
        settings = dict(n_steps=8, n_epochs=2, learning_rate=0.5, max_grad_norm=max_grad_norm,
                        policy_kwargs=dict(optimizer_class=torch.optim.SGD))  # fmt: skip
        full = _ppo(model_dir, 4, 0, 0, batch_size=32, **settings)  # same seed on both ranks: the same rollout
        initial = {k: v.clone() for k, v in full.policy.state_dict().items()}
        recorder = Snapshot()
        full.learn(32, callback=recorder)  # one rollout of 4 x 8, one update
        expected = _state(full)
        got = _update_on_columns(model_dir, rank, settings, initial, recorder.snapshot, distributed=True)
        alone = _update_on_columns(model_dir, rank, settings, initial, recorder.snapshot, distributed=False)
        results[max_grad_norm] = dict(
            diff=max(float((got[k] - expected[k]).abs().max()) for k in expected),
            moved=max(float((expected[k] - initial[k]).abs().max()) for k in expected),
            alone_diff=max(float((alone[k] - expected[k]).abs().max()) for k in expected),
        )
    return results


def scenario_mismatch(rank: int, model_dir: str) -> dict:
    from agents import DataParallelCallback

    model = _ppo(model_dir, 2 + 2 * rank, rank, rank, n_steps=8, batch_size=8)
    try:
        model.learn(64, callback=DataParallelCallback())
    except ValueError as error:
        return dict(error=str(error))
    return dict(error=None)


def scenario_failure(rank: int, model_dir: str) -> dict:
    """Rank 1's reward model raises at its first completion; rank 0's is fine. Runs last: the group is broken."""
    from agents import DataParallelCallback, KLPenaltyCallback

    def failing(prompts, completions):
        raise KeyError("the reward service is down")

    env_kwargs = dict(reward_model=failing) if rank == 1 else None
    model = _ppo(model_dir, 2, rank, rank, n_steps=8, batch_size=8, env_kwargs=env_kwargs)
    started = time.monotonic()
    try:
        model.learn(10_000, callback=[KLPenaltyCallback(), DataParallelCallback()])
    except RuntimeError as error:
        return dict(error=str(error), seconds=time.monotonic() - started)
    return dict(error=None, seconds=time.monotonic() - started)


def _single_process_checkpoint(model_dir: Path, path: Path) -> None:
    """A checkpoint written by one process (2 envs), with an adaptive KL coefficient that moved."""
    from agents import KLPenaltyCallback
    from agents.common.checkpoint import save_checkpoint

    model = _ppo(str(model_dir), 2, 0, 0, n_steps=8, batch_size=8, learning_rate=1e-2)
    kl = KLPenaltyCallback(kl_coef=0.1, kl_target=0.01, horizon=10)
    model.learn(32, callback=kl)
    save_checkpoint(model, path, kl)


def scenario_resume(rank: int, model_dir: str) -> dict:
    """A single process's checkpoint loaded on each of 2 ranks (2 envs each): the training state as saved, fresh
    episodes seeded per rank (rank 0 warns), then a data-parallel rollout and update. Then a corrupt and a missing
    checkpoint through the CLI's resume_model: every rank raises the same TrainingFailed, none waits."""
    import warnings

    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.save_util import load_from_zip_file

    from agents import DataParallelCallback
    from agents.cli.config import TrainConfig
    from agents.cli.train import TrainingFailed, rank_config, resume_model
    from agents.common.checkpoint import load_checkpoint_state
    from agents.common.distributed import broadcast_flag

    root = Path(model_dir).parent
    data, params, _ = load_from_zip_file(root / "single.zip")
    env = make_vec_env("text_env/Vowels-v0", n_envs=2, seed=100 * rank)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model, kl, _ = load_checkpoint_state(PPO, root / "single.zip", env, device="cpu")
    assert kl is not None
    result: dict = dict(
        warnings=[str(w.message) for w in caught if "episodes in progress" in str(w.message)],
        weights_equal=all(torch.equal(v, params["policy"][k]) for k, v in model.policy.state_dict().items()),
        timesteps=(model.num_timesteps, data["num_timesteps"]),
        kl_coef=(kl.kl_coef, data["resume_state"]["kl"]["kl_coef"]),
        fresh=bool(model._last_episode_starts.all()),
        draw=float(torch.rand(1)),
    )
    model.learn(32, callback=[kl, DataParallelCallback()], reset_num_timesteps=False)  # 2 ranks x 2 envs x 8
    result.update(after=model.num_timesteps, state=_state(model))

    if rank == 0:
        (root / "corrupt" / "checkpoints").mkdir(parents=True)
        (root / "corrupt" / "checkpoints" / "checkpoint_48.zip").write_bytes(b"PK\x03\x04 cut short")
        (root / "empty").mkdir()
    broadcast_flag(True, "the test's files are written")
    result["outcomes"] = {}
    for name in ("corrupt", "empty"):
        config = TrainConfig.from_values(dict(env_id="text_env/Vowels-v0", model=model_dir, output_dir=str(root),
                                              name=name, n_envs=4, n_steps=8, batch_size=16))  # fmt: skip
        started = time.monotonic()
        try:
            resume_model(config, rank_config(config), env)
            result["outcomes"][name] = None
        except TrainingFailed as error:
            result["outcomes"][name] = (str(error), error.every_rank, time.monotonic() - started)
    return result


SCENARIOS = {
    "ppo": scenario_ppo,
    "a2c_maskable": scenario_a2c_maskable,
    "grpo": scenario_grpo,
    "equivalence": scenario_equivalence,
    "mismatch": scenario_mismatch,
    "resume": scenario_resume,
    "failure": scenario_failure,
}


def _rank_main(rank: int, port: int, out_dir: str, model_dir: str) -> None:
    """One rank: join the group through init_distributed (as under torchrun), run every scenario, write results."""
    os.environ.update(
        RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
        GLOO_SOCKET_IFNAME="lo", HF_HUB_OFFLINE="1",
    )  # fmt: skip
    torch.set_num_threads(1)
    import text_env  # noqa: F401  (registers the envs)
    from agents.common.distributed import get_rank, get_world_size, init_distributed

    device = init_distributed("cpu", timeout=timedelta(seconds=60))
    assert (device.type, get_rank(), get_world_size()) == ("cpu", rank, WORLD)
    for name, scenario in SCENARIOS.items():
        try:
            result = scenario(rank, model_dir)
        except Exception:  # noqa: BLE001  (reported to the test, which fails on it)
            result = dict(crashed=traceback.format_exc())
        with open(Path(out_dir) / f"{name}.{rank}.pkl", "wb") as handle:
            pickle.dump(result, handle)
        if name == "failure":
            os._exit(1 if result.get("error") or result.get("crashed") else 0)  # as an uncaught error would
    os._exit(0)


@pytest.fixture(scope="module")
def session(tmp_path_factory) -> dict:
    """Run the two ranks once; {scenario: [result of rank 0, result of rank 1]}."""
    import multiprocessing

    from transformers import AutoModelForCausalLM

    from agents.testing import tiny_gpt2_config

    root = tmp_path_factory.mktemp("distributed")
    model_dir = root / "tiny"
    AutoModelForCausalLM.from_config(tiny_gpt2_config()).save_pretrained(model_dir)  # the same weights everywhere
    _single_process_checkpoint(model_dir, root / "single.zip")
    context = multiprocessing.get_context("spawn")
    port = free_port()
    processes = [
        context.Process(target=_rank_main, args=(rank, port, str(root), str(model_dir))) for rank in range(WORLD)
    ]
    started = time.monotonic()
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=max(1.0, SESSION_TIMEOUT - (time.monotonic() - started)))
    hung = [rank for rank, process in enumerate(processes) if process.is_alive()]
    for process in processes:
        if process.is_alive():
            process.kill()
            process.join(5)
    assert not hung, f"ranks {hung} still running after {SESSION_TIMEOUT} s"
    results: dict = {"exitcodes": [p.exitcode for p in processes], "seconds": time.monotonic() - started}
    for name in SCENARIOS:
        results[name] = []
        for rank in range(WORLD):
            path = root / f"{name}.{rank}.pkl"
            results[name].append(pickle.loads(path.read_bytes()) if path.exists() else dict(crashed="no result"))
    return results


def _no_crash(results: list[dict]) -> None:
    for rank, result in enumerate(results):
        assert "crashed" not in result, f"rank {rank}:\n{result['crashed']}"


def test_ppo_weights_stay_bitwise_identical_and_early_stop_stops_every_rank(session):
    rank0, rank1 = session["ppo"]
    _no_crash([rank0, rank1])
    for name, tensor in rank0["state"].items():
        assert torch.equal(tensor, rank1["state"][name]), name
    # rank 1's target_kl stops each of the 4 updates after its first step: rank 0 (no target_kl) stops with it
    assert rank0["steps"] == rank1["steps"] == 4, (rank0["steps"], rank1["steps"])
    assert 1e-4 < rank0["moved"] < 0.5  # trained, from the loaded weights (not re-initialised by the broadcast)
    assert rank0["kl_coefs"] == rank1["kl_coefs"] and len(rank0["kl_coefs"]) == 4  # adaptive, from global KL
    assert len(set(rank0["kl_coefs"])) > 1


def test_a2c_maskable_ppo_and_nlpo_weights_stay_bitwise_identical(session):
    rank0, rank1 = session["a2c_maskable"]
    _no_crash([rank0, rank1])
    for algorithm, state in rank0.items():
        for name, tensor in state.items():
            assert torch.equal(tensor, rank1[algorithm][name]), (algorithm, name)


def test_grpo_weights_stay_bitwise_identical(session):
    rank0, rank1 = session["grpo"]
    _no_crash([rank0, rank1])
    assert rank0["steps"] == rank1["steps"] >= 4  # >= 2 updates x 2 epochs x 1 minibatch, the same everywhere
    assert rank0["timesteps"] == rank1["timesteps"] >= 96
    for name, tensor in rank0["state"].items():
        assert torch.equal(tensor, rank1["state"][name]), name


def test_one_update_on_two_ranks_equals_the_full_batch_update_on_one(session):
    _no_crash(session["equivalence"])
    for rank, results in enumerate(session["equivalence"]):
        for max_grad_norm, result in results.items():
            assert result["moved"] > 1e-3, (rank, max_grad_norm, result)  # the update did something
            assert result["diff"] < 1e-5, (rank, max_grad_norm, result)
            # without the callback (local gradients, local advantage normalisation) the test would fail
            assert result["alone_diff"] > 1e-4, (rank, max_grad_norm, result)


def test_ranks_with_different_settings_all_refuse(session):
    _no_crash(session["mismatch"])
    for result in session["mismatch"]:
        assert result["error"] is not None and "'n_envs': [2, 4]" in result["error"], result


def test_a_rank_that_raises_stops_every_rank_with_a_clear_error(session):
    rank0, rank1 = session["failure"]
    _no_crash([rank0, rank1])
    assert "Reward model" in rank1["error"] and "the reward service is down" in rank1["error"]
    assert "another rank most likely failed" in rank0["error"], rank0["error"]
    assert rank0["seconds"] < 30
    assert session["exitcodes"] == [1, 1]


def test_a_single_process_checkpoint_resumes_on_two_ranks_with_fresh_episodes(session):
    rank0, rank1 = session["resume"]
    _no_crash([rank0, rank1])
    for result in (rank0, rank1):
        assert result["weights_equal"] and result["fresh"]
        assert result["timesteps"][0] == result["timesteps"][1] == 32
        assert result["kl_coef"][0] == result["kl_coef"][1] != 0.1  # the adaptive coefficient as saved
    assert len(rank0["warnings"]) == 1 and not rank1["warnings"]  # rank 0 alone says so
    assert "saved by 1 process(es) with 2 envs each; this run has 2 with 2 envs each" in rank0["warnings"][0]
    assert rank0["draw"] != rank1["draw"]  # each rank's generators seeded from (seed, rank, timesteps)
    assert rank0["after"] == rank1["after"] == 64  # it trained on: one rollout of 2 ranks x 2 envs x 8
    for name, tensor in rank0["state"].items():
        assert torch.equal(tensor, rank1["state"][name]), name


@pytest.mark.parametrize(("name", "message"), [("corrupt", "cannot load"), ("empty", "no checkpoint in")])
def test_a_corrupt_or_missing_checkpoint_stops_every_rank_with_one_message(session, name, message):
    outcomes = [result["outcomes"][name] for result in session["resume"]]
    assert None not in outcomes, outcomes
    (text0, every0, seconds0), (text1, every1, seconds1) = outcomes
    assert text0 == text1 and every0 and every1  # the same message; rank 0 alone prints it
    assert text0.startswith("--resume (ranks 0, 1 of 2): " + message), text0
    if name == "corrupt":
        assert "wasn't a zip-file" in text0 and "checkpoint_48.zip" in text0 and "Delete it" in text0
    assert max(seconds0, seconds1) < 20


# ---------------------------------------------------------------------------------------------------- one process
def test_the_callback_needs_a_process_group_and_refuses_trpo(tmp_path):
    from stable_baselines3.common.env_util import make_vec_env

    from agents import DataParallelCallback
    from agents.common.distributed import all_reduce_sums, broadcast_flag, get_rank, get_world_size, is_distributed
    from agents.registry import make_algorithm
    from agents.testing import tiny_gpt2_config

    assert not is_distributed() and (get_rank(), get_world_size()) == (0, 1)
    assert all_reduce_sums([1.5, 2]) == [1.5, 2.0] and broadcast_flag(True) is True
    env = make_vec_env("text_env/Vowels-v0", n_envs=2, seed=0)
    spec = dict(model=tiny_gpt2_config())
    ppo = make_algorithm("ppo", env, policy_kwargs=spec, n_steps=8, batch_size=8)
    with pytest.raises(
        RuntimeError, match="needs an initialized torch.distributed process group: launch with torchrun"
    ):
        ppo.learn(16, callback=DataParallelCallback())
    trpo = make_algorithm("trpo", env, policy_kwargs=spec, n_steps=8, batch_size=8)
    with pytest.raises(TypeError, match="does not support sb3-contrib TRPO"):
        DataParallelCallback().init_callback(trpo)


def torchrun_cli(cwd: Path, argv: list[str]) -> subprocess.CompletedProcess:
    """``python -m agents.train ARGV`` on 2 ranks under torchrun (gloo on loopback, 1 thread each); must exit 0."""
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", "2",
        "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{free_port()}", "-m", "agents.train", *argv,
    ]  # fmt: skip
    root = str(Path(__file__).resolve().parents[1])
    env = dict(os.environ, OMP_NUM_THREADS="1", GLOO_SOCKET_IFNAME="lo", HF_HUB_OFFLINE="1", PYTHONPATH=root)
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=150, cwd=cwd)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def cli_argv(model_dir: Path, output_dir: Path, total: int) -> list[str]:
    """The tiny task on 2 ranks: rollouts of 4 envs x 8 = 32 env steps, a checkpoint at every rollout start."""
    return [
        "--env-id", "text_env/Vowels-v0", "--model", str(model_dir), "--n-envs", "4", "--n-steps", "8",
        "--batch-size", "16", "--eval-prompts", "4", "--eval-every", "100", "--checkpoint-every", "1",
        "--budget-minutes", "10", "--compute-dtype", "float32", "--total-timesteps", str(total),
        "--output-dir", str(output_dir), "--name", "t",
    ]  # fmt: skip


@pytest.fixture(scope="module")
def cli_runs(tmp_path_factory) -> dict:
    """Three CLI runs on 2 ranks, rollouts of 4 envs x 8 = 32 env steps, a checkpoint at every rollout start:
    ``straight`` to 96 env steps; ``cut`` to 64 (its newest checkpoint: 32); ``resumed``, a copy of ``cut`` resumed
    to 96. {name: run directory, "<name>_out": the CompletedProcess}."""
    from transformers import AutoModelForCausalLM

    from agents.testing import tiny_gpt2_config

    root = tmp_path_factory.mktemp("cli")
    model_dir = root / "tiny"
    AutoModelForCausalLM.from_config(tiny_gpt2_config()).save_pretrained(model_dir)

    def argv(name: str, total: int) -> list[str]:
        return cli_argv(model_dir, root / name, total)

    runs: dict = {"root": root, "model_dir": model_dir}
    for name, total in (("straight", 96), ("cut", 64)):
        runs[f"{name}_out"] = torchrun_cli(root, argv(name, total))
        runs[name] = root / name / "t"
    runs["resumed"] = root / "resumed" / "t"
    shutil.copytree(runs["cut"], runs["resumed"])
    runs["resumed_out"] = torchrun_cli(root, ["--resume", str(runs["resumed"]), "--total-timesteps", "96"])
    return runs


def test_the_cli_under_torchrun_trains_on_two_ranks(cli_runs):
    runs = list(cli_runs["straight"].parent.iterdir())
    assert [run.name for run in runs] == ["t"]  # rank 0 alone made the run directory
    summary = json.loads((runs[0] / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["timesteps"] == 96
    assert (runs[0] / "model" / "config.json").is_file()
    assert cli_runs["straight_out"].stdout.count("[eval @") >= 2  # rank 0 evaluated, before and after
    assert np.isfinite(summary["after"]["score"])


def _checkpoint(path: Path) -> tuple[dict, dict]:
    from stable_baselines3.common.save_util import load_from_zip_file

    data, params, _ = load_from_zip_file(path)
    return data, params


def test_checkpoints_under_torchrun_hold_every_ranks_state(cli_runs):
    checkpoints = cli_runs["straight"] / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["checkpoint_32.zip", "checkpoint_64.zip"]  # keep 2
    data, _ = _checkpoint(checkpoints / "checkpoint_64.zip")
    state = data["resume_state"]
    assert state["world_size"] == 2 and len(state["ranks"]) == 2
    ranks = state["ranks"]
    assert [len(rank["env_states"]) for rank in ranks] == [2, 2]
    assert not np.array_equal(ranks[0]["rng"]["numpy"][1], ranks[1]["rng"]["numpy"][1])  # seed + rank
    # the algorithm's own settings, not DataParallelCallback's stand-ins during training
    assert data["max_grad_norm"] == 1.0 and data["normalize_advantage"] is True
    assert data["batch_size"] == 8  # per rank


def test_a_cut_run_resumed_on_two_ranks_ends_on_the_straight_runs_weights(cli_runs):
    from transformers import AutoModelForCausalLM

    out = cli_runs["resumed_out"]
    assert "resuming from" in out.stdout and "checkpoint_32.zip (32 env steps done)" in out.stdout
    assert "episodes in progress" not in out.stderr  # the same world size: exact
    summary = json.loads((cli_runs["resumed"] / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["timesteps"] == 96
    assert summary["before"]["timesteps"] == 0  # the cut run's first evaluation, kept
    # the checkpoint both runs wrote at 64 env steps: the same weights, optimizer and KL controller
    (straight, straight_params), (resumed, resumed_params) = (
        _checkpoint(run / "checkpoints" / "checkpoint_64.zip") for run in (cli_runs["straight"], cli_runs["resumed"])
    )
    for name, tensor in straight_params["policy"].items():
        assert torch.equal(tensor, resumed_params["policy"][name]), name
    for key, value in straight_params["policy.optimizer"]["state"].items():
        for field, tensor in value.items():
            assert torch.equal(tensor, resumed_params["policy.optimizer"]["state"][key][field]), (key, field)
    assert straight["resume_state"]["kl"]["kl_coef"] == resumed["resume_state"]["kl"]["kl_coef"]
    # and the exported models at 96
    weights = [
        AutoModelForCausalLM.from_pretrained(cli_runs[name] / "model").state_dict() for name in ("straight", "resumed")
    ]
    for name, tensor in weights[0].items():
        assert torch.equal(tensor, weights[1][name]), name


def test_a_two_rank_checkpoint_resumes_in_one_process(cli_runs, tmp_path, monkeypatch):
    """Another world size: the training state as saved (weights, optimizer, timesteps, KL coefficient), the batch
    size per rank from the config, fresh episodes with a warning; the run continues to its total."""
    from agents.cli import train
    from agents.common.checkpoint import latest_checkpoint

    run = tmp_path / "t"
    shutil.copytree(cli_runs["cut"], run)
    data, params = _checkpoint(latest_checkpoint(run / "checkpoints"))
    assert data["resume_state"]["world_size"] == 2 and data["batch_size"] == 8
    loaded: dict = {}
    resume_model = train.resume_model

    def spy(config, local, env):
        model, kl_callback, state = resume_model(config, local, env)
        loaded.update(
            weights={k: v.clone() for k, v in model.policy.state_dict().items()},
            optimizer=copy.deepcopy(model.policy.optimizer.state_dict()),  # its tensors train on otherwise
            timesteps=model.num_timesteps, kl_coef=kl_callback.kl_coef, batch_size=model.batch_size,
            n_envs=model.n_envs,
        )  # fmt: skip
        return model, kl_callback, state

    monkeypatch.setattr(train, "resume_model", spy)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    expected = r"saved by 2 process\(es\) with 2 envs each; this run has 1 with 4 envs each"
    with pytest.warns(UserWarning, match=expected):
        assert train.main(["--resume", str(run), "--total-timesteps", "96"]) == 0
    for name, tensor in params["policy"].items():
        assert torch.equal(tensor, loaded["weights"][name]), name
    for key, value in params["policy.optimizer"]["state"].items():
        for field, tensor in value.items():
            assert torch.equal(tensor, loaded["optimizer"]["state"][key][field]), (key, field)
    assert loaded["timesteps"] == data["num_timesteps"] == 32
    assert loaded["kl_coef"] == data["resume_state"]["kl"]["kl_coef"]
    assert (loaded["batch_size"], loaded["n_envs"]) == (16, 4)  # the config's totals, in one process
    summary = json.loads((run / "summary.json").read_text())
    assert summary["world_size"] == 1 and summary["timesteps"] == 96 and summary["before"]["timesteps"] == 0


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--n-envs", "5"], "n_envs=5 is a total over 2 ranks: use a multiple of 2"),
        (["--batch-size", "25"], "batch_size=25 is a total over 2 ranks"),
        (["--algorithm", "grpo", "--n-envs", "8", "--group-size", "8"], "not whole groups of group_size=8"),
        (["--algorithm", "trpo"], "trpo does not train data-parallel"),
    ],
)
def test_the_cli_under_torchrun_checks_the_split_before_loading_a_model(argv, message, capsys, monkeypatch):
    from agents.cli.config import parse_config

    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(SystemExit) as exit_info:
        parse_config(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


# ---------------------------------------------------------------------------- Ray Train (python -m agents.train_ray)
def ray_cli(cwd: Path, argv: list[str], **env_vars: str) -> subprocess.CompletedProcess:
    """``python -m agents.train_ray --workers 2 ARGV`` on a local Ray bound to 127.0.0.1; must exit 0."""
    root = str(Path(__file__).resolve().parents[1])
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=root, **env_vars)
    command = [sys.executable, "-m", "agents.train_ray", "--workers", "2", *argv]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300, cwd=cwd)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def _exported(run: Path) -> dict[str, torch.Tensor]:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(run / "model").state_dict()


def _assert_same_weights(a: Path, b: Path) -> None:
    first, second = _exported(a), _exported(b)
    for name, tensor in first.items():
        assert torch.equal(tensor, second[name]), name


def test_ray_train_workers_end_on_the_torchrun_ranks_weights(cli_runs):
    """The same options on 2 Ray Train workers and on 2 torchrun ranks: bitwise-identical weights."""
    root = cli_runs["root"]
    ray_cli(root, cli_argv(cli_runs["model_dir"], root / "ray", 96))
    run = root / "ray" / "t"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["timesteps"] == 96
    assert summary["launcher"]["name"] == "ray" and summary["launcher"]["restarts"] == 0
    _assert_same_weights(cli_runs["straight"], run)


def test_ray_restarts_a_killed_worker_from_the_checkpoint_and_ends_exactly(cli_runs):
    """Rank 1 is SIGKILLed once the checkpoint at 32 env steps exists: Ray restarts the workers, which resume from
    the newest checkpoint and end on the straight run's weights, one restart recorded."""
    from agents.cli.train_ray import FAULT_ENV

    root = cli_runs["root"]
    argv = cli_argv(cli_runs["model_dir"], root / "ray_killed", 96)
    # Part of the options from a YAML file, as cluster jobs give them: the restart resumes from the run's own
    # config.yaml instead (--resume refuses --config).
    at = argv.index("--n-steps")
    config = root / "ray_killed.yaml"
    config.write_text(f"n_steps: {argv[at + 1]}\nbatch_size: {argv[argv.index('--batch-size') + 1]}\n")
    argv = [a for i, a in enumerate(argv) if i not in (at, at + 1)]
    at = argv.index("--batch-size")
    argv = [a for i, a in enumerate(argv) if i not in (at, at + 1)]
    out = ray_cli(root, ["--max-failures", "1", "--config", str(config), *argv], **{FAULT_ENV: "32"})
    run = root / "ray_killed" / "t"
    attempts = [json.loads(line) for line in (run / "ray_attempts.jsonl").read_text().splitlines()]
    assert [attempt["resumed"] for attempt in attempts] == [False, True]
    assert "resuming from" in out.stdout + out.stderr
    summary = json.loads((run / "summary.json").read_text())
    assert summary["timesteps"] == 96 and summary["launcher"]["restarts"] == 1
    _assert_same_weights(cli_runs["straight"], run)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--workers", "64"], "need 64 CPUs; this machine has"),
        (["--max-failures", "2", "--checkpoint-every", "0"], "--max-failures restarts from the newest checkpoint"),
        (["--workers", "2", "--n-envs", "3"], "n_envs=3 is a total over 2 ranks"),
        (["--workers", "2", "--algorithm", "trpo"], "trpo does not train data-parallel"),
    ],
)
def test_the_ray_launcher_refuses_bad_input_before_starting_ray(argv, message, capsys, monkeypatch):
    from agents.cli import train_ray

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with pytest.raises(SystemExit) as exit_info:
        train_ray.parse(argv)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err
    assert "WORLD_SIZE" not in os.environ  # the check's world size does not leak


def test_the_ray_launcher_names_the_extra_when_ray_is_missing(capsys, monkeypatch):
    import importlib.util

    from agents.cli import train_ray

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real_find_spec(name))
    with pytest.raises(SystemExit):
        train_ray.parse([])
    assert "pip install 'text-env-rl[ray]'" in capsys.readouterr().err


def test_the_ray_launcher_oversubscribes_only_when_asked(monkeypatch, tmp_path):
    from transformers import AutoModelForCausalLM

    from agents.cli import train_ray
    from agents.testing import tiny_gpt2_config

    AutoModelForCausalLM.from_config(tiny_gpt2_config()).save_pretrained(tmp_path / "tiny")
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    argv = ["--workers", "4", "--env-id", "text_env/Vowels-v0", "--model", str(tmp_path / "tiny"), "--n-envs", "8"]
    with pytest.raises(SystemExit):
        train_ray.parse(argv)
    args, config, train_argv = train_ray.parse([*argv, "--allow-oversubscribe"])
    assert args.workers == 4 and config.task.n_envs == 8 and "--workers" not in train_argv


def test_a_resumed_ray_worker_drops_the_config_file_for_the_runs_own_config():
    from agents.cli.train_ray import without_config

    argv = ["--config", "a.yaml", "--n-envs", "4", "--config=b.yaml", "--seed", "1"]
    assert without_config(argv) == ["--n-envs", "4", "--seed", "1"]
