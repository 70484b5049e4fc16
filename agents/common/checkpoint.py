"""Atomic checkpoints that resume training exactly.

SB3's ``model.save`` writes the policy, the optimizer state, ``num_timesteps`` and the last observation. Exact
resume needs more: the random number generators (torch, numpy, Python), each environment's episode state, and
the KL controller with its reference weights. :func:`save_checkpoint` stores all of it inside the SB3 zip (as the
model attribute ``resume_state``), written to a temporary file in the same directory and renamed into place, so a
failure or a kill during a save leaves the previous checkpoint intact.

    save_checkpoint(model, "runs/x/checkpoint.zip", kl_callback)
    model, kl_callback = load_checkpoint(PPO, "runs/x/checkpoint.zip", env)
    model.learn(n, callback=kl_callback, reset_num_timesteps=False)

Data parallel (``agents.common.distributed``): the weights, the optimizer, ``num_timesteps`` and the KL controller
are the same on every rank, but each rank has its own envs and random streams (:func:`rank_state`).
:class:`CheckpointCallback` gathers every rank's to rank 0, which alone writes the file, with the world size it was
saved with. A resume with the same world size (and envs per rank) restores every rank exactly; with another world
size (or number of envs) the training state is restored and the envs start fresh episodes, seeded from
``(seed, rank, num_timesteps)`` (:func:`load_checkpoint_state` warns).

An algorithm with per-rank state of its own (e.g. :class:`~agents.GRPO`'s pass over the prompts) declares it through
:class:`RankStateHook`: the checkpoint stores what ``get_rank_state()`` returns and gives it back to
``set_rank_state``, or ``None`` when the episodes start afresh.
"""

from __future__ import annotations

import os
import random
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback

from agents.common.callbacks import KLPenaltyCallback
from agents.common.distributed import all_gather_objects, get_rank, get_world_size, own_settings
from agents.common.policy import CausalLMPolicyBase
from text_env.atomic import atomic_file

#: SB3's model attributes that differ between the ranks of a data-parallel run (each rank's own envs and draws):
#: ``model.save`` holds the saving rank's only, :func:`rank_state` every rank's (``agents/common/sb3_contract.py``,
#: item 9). An algorithm's own per-rank state goes through :class:`RankStateHook`.
RANK_ATTRIBUTES = ("_last_obs", "_last_episode_starts", "ep_info_buffer", "ep_success_buffer")


@runtime_checkable
class RankStateHook(Protocol):
    """What an algorithm with per-rank state of its own defines for exact resume (:class:`~agents.GRPO` does)."""

    def get_rank_state(self) -> dict[str, Any]:
        """This process's own state, picklable: stored per rank in the checkpoint."""
        ...

    def set_rank_state(self, state: dict[str, Any] | None) -> None:
        """Continue from :meth:`get_rank_state`'s ``state`` saved by this rank; ``None``: the episodes start afresh
        (another world size or number of envs), after the generators were seeded for this rank."""
        ...


def _rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def rank_state(model: BaseAlgorithm, kl_callback: KLPenaltyCallback | None = None) -> dict[str, Any]:
    """What is this process's own in a data-parallel run: the random generators, each env's episode, the model's
    :data:`RANK_ATTRIBUTES` (last observation, episode starts, ...), the algorithm's own (:class:`RankStateHook`)
    and the KL callback's running KL per env."""
    env = model.get_env()
    state: dict[str, Any] = {
        "rng": _rng_state(),
        "attributes": {name: getattr(model, name) for name in RANK_ATTRIBUTES if hasattr(model, name)},
    }
    if isinstance(model, RankStateHook):
        state["algorithm"] = model.get_rank_state()
    if env is not None:
        state["env_states"] = env.env_method("get_state")
    if kl_callback is not None:
        state["running_kl"] = kl_callback.state_dict()["running_kl"]
    return state


def save_checkpoint(
    model: BaseAlgorithm,
    path: str | os.PathLike[str],
    kl_callback: KLPenaltyCallback | None = None,
    extra: dict[str, Any] | None = None,
    rank_states: list[dict[str, Any]] | None = None,
) -> Path:
    """Write ``path`` atomically: everything needed to continue training exactly where it stopped.

    :param extra: picklable state of the caller's own (e.g. the CLI's evaluation history), returned by
        :func:`load_checkpoint_state`.
    :param rank_states: data parallel: :func:`rank_state` of every rank in rank order (gathered to the rank that
        saves, as :class:`CheckpointCallback` does); default: this process's own, which resumes exactly in a single
        process only.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    ranks = [rank_state(model, kl_callback)] if rank_states is None else list(rank_states)
    resume_state: dict[str, Any] = {"world_size": get_world_size(), "ranks": ranks}
    if kl_callback is not None:
        resume_state["kl"] = kl_callback.state_dict()
    if extra is not None:
        resume_state["extra"] = extra
    setattr(model, "resume_state", resume_state)  # noqa: B010  # saved with the model (sb3_contract, item 6)
    try:
        with own_settings(model):  # the algorithm's max_grad_norm etc., not DataParallelCallback's stand-ins
            return atomic_file(target, lambda staging: model.save(staging, include=["resume_state"]))
    finally:
        delattr(model, "resume_state")


def load_checkpoint(
    algorithm: type[BaseAlgorithm], path: str | os.PathLike[str], env: Any, **load_kwargs: Any
) -> tuple[BaseAlgorithm, KLPenaltyCallback | None]:
    """Load a checkpoint written by :func:`save_checkpoint` onto ``env`` (same number of envs) and restore the
    environments' episodes, the random generators and the KL controller. Returns the model and the KL callback to
    pass to ``learn(..., reset_num_timesteps=False)`` (``None`` if the run had none)."""
    model, kl_callback, _ = load_checkpoint_state(algorithm, path, env, **load_kwargs)
    return model, kl_callback


def latest_checkpoint(directory: str | os.PathLike[str]) -> Path | None:
    """The newest ``checkpoint_<timesteps>.zip`` of :class:`CheckpointCallback` in ``directory``, or ``None``."""
    found = sorted(Path(directory).glob("checkpoint_*.zip"), key=lambda p: int(p.stem.split("_")[-1]))
    return found[-1] if found else None


def load_checkpoint_state(
    algorithm: type[BaseAlgorithm], path: str | os.PathLike[str], env: Any, **load_kwargs: Any
) -> tuple[BaseAlgorithm, KLPenaltyCallback | None, dict[str, Any]]:
    """:func:`load_checkpoint`, plus the ``extra`` state given to :func:`save_checkpoint` (``{}`` if none).

    Data parallel, every rank loads the same file: saved with this world size and as many envs per rank, each rank
    continues exactly from its own state; otherwise the weights, optimizer, ``num_timesteps`` and KL controller are
    restored and the envs start fresh episodes with random generators seeded from ``(seed, rank, num_timesteps)``
    (a ``UserWarning`` on rank 0 says so).

    :param load_kwargs: for ``algorithm.load``, e.g. ``device``, and ``batch_size`` (per rank) when the world size
        changes.
    """
    # force_reset=False keeps the saved last observation; the envs get the matching episodes below.
    model = algorithm.load(str(path), env=env, force_reset=False, **load_kwargs)
    state = getattr(model, "resume_state", None)
    if state is None:
        raise ValueError(f"{path} is a plain SB3 save without resume state: write it with save_checkpoint().")
    delattr(model, "resume_state")
    saved_world = int(state["world_size"])
    rank, world = get_rank(), get_world_size()
    venv = model.get_env()
    own = state["ranks"][rank] if len(state["ranks"]) == world == saved_world else None
    if own is not None and venv is not None and own.get("env_states") is not None:
        if len(own["env_states"]) != venv.num_envs:
            own = None  # another number of envs
        else:
            venv.reset()  # arms wrappers such as Monitor; the episodes are then overwritten
            for index, env_state in enumerate(own["env_states"]):
                venv.env_method("set_state", env_state, indices=index)
    kl_callback = None
    if "kl" in state:  # the controller is common; the running KL per env is the rank's (none: fresh episodes)
        policy = model.policy
        assert isinstance(policy, CausalLMPolicyBase), "a checkpoint with a KL state has an LM policy"
        running_kl = None if own is None else own.get("running_kl")
        kl_callback = KLPenaltyCallback.from_state_dict({**state["kl"], "running_kl": running_kl}, policy)
    if own is not None:
        for name, value in own["attributes"].items():
            setattr(model, name, value)
        if isinstance(model, RankStateHook) and "algorithm" in own:
            model.set_rank_state(own["algorithm"])
        _set_rng_state(own["rng"])
    else:
        seed = _start_fresh_episodes(model, rank)
        if rank == 0:
            saved_envs = len(state["ranks"][0].get("env_states") or [])
            envs = venv.num_envs if venv is not None else 0
            warnings.warn(
                f"{path} was saved by {saved_world} process(es) with {saved_envs} envs each; this run has {world} "
                f"with {envs} envs each: the weights, optimizer, timesteps ({model.num_timesteps}) and KL coefficient "
                "are restored, but the episodes in progress cannot be carried over: every env starts a fresh "
                f"episode, seeded from (seed, rank, timesteps) (rank 0: {seed}). Resume with the same number of "
                "processes and --n-envs to continue exactly.",
                UserWarning,
                stacklevel=2,
            )
    return model, kl_callback, dict(state.get("extra") or {})


def _start_fresh_episodes(model: BaseAlgorithm, rank: int) -> int:
    """Seed this rank's generators and envs from ``(seed, rank, num_timesteps)`` and reset every env; returns the
    seed (env ``i`` gets ``seed + i``, SB3's ``VecEnv.seed``)."""
    base = 0 if model.seed is None else int(model.seed) & 0xFFFFFFFF
    seed = int(np.random.SeedSequence([base, rank, model.num_timesteps]).generate_state(1)[0])
    model.set_random_seed(seed)  # python, numpy, torch, the action space, and the envs at their next reset
    venv = model.get_env()
    if venv is not None:
        model._last_obs = venv.reset()  # type: ignore[assignment]
        model._last_episode_starts = np.ones((venv.num_envs,), dtype=bool)
    if isinstance(model, RankStateHook):  # e.g. GRPO: a new pass over the prompts, drawn from the generator just seeded
        model.set_rank_state(None)
    return seed


class CheckpointCallback(BaseCallback):
    """Save an atomic, exactly-resumable checkpoint every ``every_n_rollouts`` rollouts, keeping the last
    ``keep_last`` files (``checkpoint_<timesteps>.zip``) in ``directory``.

    Saves run when a rollout starts (after the previous update), the state ``learn()`` ends in, so a resumed
    run repeats no work and skips none.

    Data parallel, give every rank one, placed after :class:`~agents.DataParallelCallback` in the callback list:
    each save gathers every rank's :func:`rank_state` (a collective), and rank 0 alone writes the file and calls
    ``extra_state``.

    :param extra_state: called at each save for picklable state of the caller's own (:func:`save_checkpoint`).
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        every_n_rollouts: int = 10,
        keep_last: int = 3,
        kl_callback: KLPenaltyCallback | None = None,
        extra_state: Callable[[], dict[str, Any]] | None = None,
        verbose: int = 0,
    ) -> None:
        super().__init__(verbose)
        if every_n_rollouts < 1 or keep_last < 1:
            raise ValueError("every_n_rollouts and keep_last must be >= 1.")
        self.directory = Path(directory)
        self.every_n_rollouts = every_n_rollouts
        self.keep_last = keep_last
        self.kl_callback = kl_callback
        self.extra_state = extra_state
        self._rollouts = 0
        self.saved: list[Path] = []

    def _on_rollout_start(self) -> None:
        if self._rollouts and self._rollouts % self.every_n_rollouts == 0:
            self._save()
        self._rollouts += 1

    def _save(self) -> None:
        states = all_gather_objects(rank_state(self.model, self.kl_callback), "the gather of a checkpoint's states")
        if get_rank() != 0:
            return
        extra = None if self.extra_state is None else self.extra_state()
        path = save_checkpoint(
            self.model, self.directory / f"checkpoint_{self.num_timesteps}.zip", self.kl_callback, extra, states
        )
        self.saved.append(path)
        if self.verbose:
            print(f"[checkpoint] {path}")
        existing = sorted(self.directory.glob("checkpoint_*.zip"), key=lambda p: int(p.stem.split("_")[-1]))
        for old in existing[: -self.keep_last]:
            old.unlink()

    def _on_step(self) -> bool:
        return True
