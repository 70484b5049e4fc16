"""Atomic checkpoints that resume training exactly.

SB3's ``model.save`` writes the policy, the optimizer state, ``num_timesteps`` and the last observation. Exact
resume needs more: the random number generators (torch, numpy, Python), each environment's episode state, and
the KL controller with its reference weights. :func:`save_checkpoint` stores all of it inside the SB3 zip (as the
model attribute ``resume_state``), written to a temporary file in the same directory and renamed into place, so a
failure or a kill during a save leaves the previous checkpoint intact.

    save_checkpoint(model, "runs/x/checkpoint.zip", kl_callback)
    model, kl_callback = load_checkpoint(PPO, "runs/x/checkpoint.zip", env)
    model.learn(n, callback=kl_callback, reset_num_timesteps=False)
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback

from agents.common.callbacks import KLPenaltyCallback
from agents.common.policy import CausalLMPolicyBase
from text_env.atomic import atomic_file


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


def save_checkpoint(
    model: BaseAlgorithm,
    path: str | os.PathLike[str],
    kl_callback: KLPenaltyCallback | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write ``path`` atomically: everything needed to continue training exactly where it stopped.

    :param extra: picklable state of the caller's own (e.g. the CLI's evaluation history), returned by
        :func:`load_checkpoint_state`.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    env = model.get_env()
    resume_state: dict[str, Any] = {"rng": _rng_state()}
    if env is not None:
        resume_state["env_states"] = env.env_method("get_state")
    if kl_callback is not None:
        resume_state["kl"] = kl_callback.state_dict()
    if extra is not None:
        resume_state["extra"] = extra
    setattr(model, "resume_state", resume_state)  # noqa: B010  # saved with the model (sb3_contract, item 6)
    try:
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
    """:func:`load_checkpoint`, plus the ``extra`` state given to :func:`save_checkpoint` (``{}`` if none)."""
    # force_reset=False keeps the saved last observation; the envs get the matching episodes below.
    model = algorithm.load(str(path), env=env, force_reset=False, **load_kwargs)
    state = getattr(model, "resume_state", None)
    if state is None:
        raise ValueError(f"{path} is a plain SB3 save without resume state: write it with save_checkpoint().")
    venv = model.get_env()
    if venv is not None and "env_states" in state:
        venv.reset()  # arms wrappers such as Monitor; the episodes are then overwritten
        if len(state["env_states"]) != venv.num_envs:
            raise ValueError(
                f"The checkpoint holds {len(state['env_states'])} environments but the env has "
                f"{venv.num_envs}: resume with the same number of envs."
            )
        for index, env_state in enumerate(state["env_states"]):
            venv.env_method("set_state", env_state, indices=index)
    kl_callback = None
    if "kl" in state:
        policy = model.policy
        assert isinstance(policy, CausalLMPolicyBase), "a checkpoint with a KL state has an LM policy"
        kl_callback = KLPenaltyCallback.from_state_dict(state["kl"], policy)
    _set_rng_state(state["rng"])
    delattr(model, "resume_state")
    return model, kl_callback, dict(state.get("extra") or {})


class CheckpointCallback(BaseCallback):
    """Save an atomic, exactly-resumable checkpoint every ``every_n_rollouts`` rollouts, keeping the last
    ``keep_last`` files (``checkpoint_<timesteps>.zip``) in ``directory``.

    Saves run when a rollout starts (after the previous update), the state ``learn()`` ends in, so a resumed
    run repeats no work and skips none.

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
        extra = None if self.extra_state is None else self.extra_state()
        path = save_checkpoint(
            self.model, self.directory / f"checkpoint_{self.num_timesteps}.zip", self.kl_callback, extra
        )
        self.saved.append(path)
        if self.verbose:
            print(f"[checkpoint] {path}")
        existing = sorted(self.directory.glob("checkpoint_*.zip"), key=lambda p: int(p.stem.split("_")[-1]))
        for old in existing[: -self.keep_last]:
            old.unlink()

    def _on_step(self) -> bool:
        return True
