"""Data-parallel training on ``torch.distributed``: every rank runs its own envs and its own SB3 algorithm, and the
ranks take every step together.

    # torchrun --nproc_per_node=2 my_script.py
    device = init_distributed("cpu")                       # gloo on CPU, NCCL on cuda:LOCAL_RANK
    env = make_vec_env("text_env/Vowels-v0", n_envs=4, seed=100 * get_rank())   # different samples per rank
    model = PPO(CausalLMPolicy, env, device=device, seed=get_rank(), ...)
    model.learn(n, callback=[KLPenaltyCallback(), DataParallelCallback()])  # DataParallelCallback LAST

:class:`DataParallelCallback` goes through SB3's public points only (the callback events, the optimizer's step
pre-hook, the algorithm's public attributes); what it synchronises, and why, is in its docstring. The helpers
(:func:`all_reduce_sums`, :func:`broadcast_flag`, :func:`broadcast_object`, :func:`all_gather_objects`) return their
input unchanged (or as a one-element list) without a process group, so the other callbacks call them unconditionally
and behave exactly as before in a single process.
"""

from __future__ import annotations

import contextlib
import functools
import os
import weakref
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import timedelta
from typing import Any, TypeVar

import numpy as np
import torch
import torch.distributed as dist
from stable_baselines3.common.callbacks import BaseCallback

__all__ = [
    "DataParallelCallback",
    "all_gather_objects",
    "all_reduce_sums",
    "broadcast_flag",
    "broadcast_object",
    "get_rank",
    "get_world_size",
    "init_distributed",
    "is_distributed",
    "own_settings",
]

#: Gradient elements per all-reduce (fp32: 100 MB), as DDP's 25 MB buckets but fewer calls for small models.
BUCKET_ELEMENTS = 25_000_000
#: The process group's timeout: how long a rank waits for the others (rank 0 evaluates while the others wait).
DEFAULT_TIMEOUT = timedelta(minutes=30)

T = TypeVar("T")

#: The algorithm settings each running DataParallelCallback replaced, by model, with their own values (own_settings).
_REPLACED: weakref.WeakKeyDictionary[Any, dict[str, Any]] = weakref.WeakKeyDictionary()


def is_distributed() -> bool:
    """A process group of more than one rank is initialized."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def get_rank() -> int:
    """This process's rank (0 without a process group)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def get_world_size() -> int:
    """The number of ranks (1 without a process group)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def init_distributed(device: str | torch.device = "cpu", timeout: timedelta = DEFAULT_TIMEOUT) -> torch.device:
    """Join the process group torchrun describes (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``,
    ``MASTER_PORT``) and return this rank's device: gloo on CPU, NCCL on ``cuda:LOCAL_RANK``.

    Without ``WORLD_SIZE`` (a plain ``python`` run) nothing is initialized and ``device`` comes back as it is.

    :param device: ``"cpu"``, ``"cuda"`` or ``"auto"`` (CUDA when available).
    :param timeout: how long a collective waits for the other ranks before failing (never an endless hang).
    """
    if str(device) == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    requested = torch.device(device)
    if "WORLD_SIZE" not in os.environ:
        return requested
    if requested.type == "cuda":
        requested = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    if dist.is_available() and dist.is_initialized():
        return requested
    if not dist.is_available():
        raise RuntimeError("This PyTorch build has no torch.distributed: data-parallel training needs it.")
    if requested.type == "cuda":
        torch.cuda.set_device(requested)
        backend = "nccl"
    else:
        if not dist.is_gloo_available():
            raise RuntimeError("This PyTorch build has no gloo backend: data-parallel training on CPU needs it.")
        backend = "gloo"
    dist.init_process_group(backend, timeout=timeout)
    return requested


def _collective(what: str, operation: Callable[[], T]) -> T:
    """Run one collective; a failure (another rank died, the network dropped, a timeout) says what it was."""
    try:
        return operation()
    except RuntimeError as error:  # gloo and NCCL raise RuntimeError (DistBackendError is one)
        raise RuntimeError(
            f"Data-parallel training stopped on rank {get_rank()} of {get_world_size()} during {what}: another rank "
            f"most likely failed (its own error is in its output) or the process group timed out. Cause: {error}"
        ) from error


def _reduce_device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def all_reduce_sums(values: Sequence[float], what: str = "a sum over ranks") -> list[float]:
    """The float64 sums of ``values`` over all ranks; ``values`` unchanged without a process group."""
    if not is_distributed():
        return [float(v) for v in values]
    tensor = torch.tensor([float(v) for v in values], dtype=torch.float64, device=_reduce_device())
    _collective(what, lambda: dist.all_reduce(tensor))
    return tensor.cpu().tolist()


def broadcast_flag(flag: bool, what: str = "a decision of rank 0") -> bool:
    """Rank 0's ``flag`` on every rank; ``flag`` unchanged without a process group."""
    if not is_distributed():
        return flag
    tensor = torch.tensor([int(flag)], dtype=torch.int32, device=_reduce_device())
    _collective(what, lambda: dist.broadcast(tensor, src=0))
    return bool(tensor.item())


def broadcast_object(obj: T, what: str = "a choice of rank 0") -> T:
    """Rank 0's ``obj`` (picklable, e.g. the path of the checkpoint to load) on every rank; ``obj`` unchanged
    without a process group."""
    if not is_distributed():
        return obj
    box = [obj]
    _collective(what, lambda: dist.broadcast_object_list(box, src=0))
    return box[0]


def all_gather_objects(obj: T, what: str = "a gather of every rank's state") -> list[T]:
    """Every rank's ``obj`` (picklable), in rank order, on every rank; ``[obj]`` without a process group."""
    if not is_distributed():
        return [obj]
    gathered: list[Any] = [None] * get_world_size()
    _collective(what, lambda: dist.all_gather_object(gathered, obj))
    return gathered


@contextlib.contextmanager
def own_settings(model: Any) -> Iterator[None]:
    """Inside the block, ``model`` holds its own values of the settings :class:`DataParallelCallback` replaces
    during training (``max_grad_norm``, ``normalize_advantage``, ``target_kl``), so a checkpoint saved in the middle
    of ``learn()`` stores the algorithm's settings, not the callback's stand-ins. Outside a data-parallel ``learn()``
    nothing changes."""
    replaced = dict(_REPLACED.get(model, {}))
    current = {name: getattr(model, name) for name in replaced}
    for name, value in replaced.items():
        setattr(model, name, value)
    try:
        yield
    finally:
        for name, value in current.items():
            setattr(model, name, value)


def _all_gather_rows(row: Sequence[float], what: str) -> np.ndarray:
    """``(world_size, len(row))``: every rank's row (float64)."""
    tensor = torch.tensor([float(v) for v in row], dtype=torch.float64, device=_reduce_device())
    rows = [torch.empty_like(tensor) for _ in range(get_world_size())]
    _collective(what, lambda: dist.all_gather(rows, tensor))
    return torch.stack(rows).cpu().numpy()


def _buckets(tensors: Iterable[torch.Tensor], size: int) -> list[list[torch.Tensor]]:
    """Consecutive tensors of one dtype and device, ``size`` elements at most per bucket (a larger tensor alone)."""
    buckets: list[list[torch.Tensor]] = []
    filled = 0
    for tensor in tensors:
        last = buckets[-1][-1] if buckets else None
        same_kind = last is not None and (last.dtype, last.device) == (tensor.dtype, tensor.device)
        if not same_kind or filled + tensor.numel() > size:
            buckets.append([])
            filled = 0
        buckets[-1].append(tensor)
        filled += tensor.numel()
    return buckets


class DataParallelCallback(BaseCallback):
    """Train one SB3 algorithm data-parallel across the ranks of a ``torch.distributed`` process group.

    ``model.learn(n, callback=[kl_callback, ..., DataParallelCallback()])``, with this callback **last**: it has to
    see the advantages after every other callback changed them (the KL penalty recomputes them at the end of each
    rollout). Every rank runs its own envs with its own seed; the policies stay identical because:

    - **weights**: at the start of training every trainable parameter and every buffer of the policy is broadcast
      from rank 0 (random LoRA or value-head initialisations differ by seed), and the frozen weights are checked to
      agree (they come from the same pretrained model on every rank);
    - **gradients**: before every optimizer step (the optimizer's step pre-hook) the gradients are averaged over
      the ranks, in buckets of :data:`BUCKET_ELEMENTS`, then clipped to the algorithm's ``max_grad_norm``. SB3 clips
      before ``optimizer.step()`` with the local gradient, so the algorithm's own ``max_grad_norm`` is set to
      ``inf`` during training (its clip is a no-op) and the clip happens here on the averaged gradient: the step is
      the full-batch step of one process holding every rank's data. A parameter with no gradient on any rank
      (e.g. an unused head) keeps none; with a gradient on some ranks only, the others count zeros;
    - **early stop** (PPO's and MaskablePPO's ``target_kl``, GRPO's): a rank that stops reports it, and every rank
      stops at the same minibatch without stepping it. *``target_kl`` thus stops all ranks when any rank's minibatch
      exceeds it* (each rank checks its own minibatch, as SB3 does). How: each step first all-reduces a flag, "I am
      stepping"; a rank whose update ended (early or not) sends "not stepping" once, at the next rollout start or at
      the end of training. A short sum skips the step everywhere (the gradients are set to ``None``, so
      ``optimizer.step()`` changes nothing) and sets the algorithm's ``target_kl`` to ``-1`` until the next rollout,
      so SB3's own check ends the loop at the next minibatch. No rank ever waits for a step that will not come;
    - **advantage normalisation**: where the algorithm normalises advantages per minibatch
      (``normalize_advantage=True``, PPO's default), it is switched off during training and the rollout's
      advantages are normalised here with the *global* mean and (unbiased) standard deviation of all ranks'
      rollouts. Identical to SB3 when each minibatch is the whole rollout; otherwise global statistics replace the
      per-minibatch ones (less noisy; the ranks would disagree on per-minibatch statistics anyway);
    - **minibatch counts**: ``n_envs``, ``n_steps``, ``batch_size``, ``n_epochs`` (and GRPO's ``group_size``) are
      checked to agree across ranks, so every rank makes the same number of steps per epoch. GRPO's groups never
      span ranks (each rank's envs form whole groups): its group advantages need no synchronisation.
      ``drop_all_equal_groups=True`` would give ranks different minibatch counts and is refused;
    - **step count**: ``num_timesteps`` counts the environment steps of *all* ranks (summed at the end of each
      rollout, so GRPO's data-dependent rounds agree too): ``learn(total_timesteps)`` is a global budget, and every
      rank runs the same number of rollouts and updates, with the same learning-rate and clip schedules.

    :class:`~agents.KLPenaltyCallback` (adaptive coefficient from the global mean KL) and
    :class:`~agents.common.callbacks.TimeBudgetCallback` (rank 0's decision) synchronise themselves when a process
    group exists. Collectives happen at the same events on every rank, in callback order: ``on_training_start``
    (this callback), ``on_rollout_start`` (this callback first: an update that ended sends its flag there, so only
    callbacks placed after it, such as :class:`~agents.common.checkpoint.CheckpointCallback`'s gather, may call a
    collective in ``on_rollout_start``), the first ``on_step`` of a rollout (the time
    budget), ``on_rollout_end`` (the KL penalty, then this callback: step count, advantages), each optimizer step,
    ``on_training_end``.

    sb3-contrib TRPO is refused: its policy step is a line search outside the optimizer.
    """

    def __init__(self, bucket_elements: int = BUCKET_ELEMENTS, verbose: int = 0) -> None:
        super().__init__(verbose)
        self.bucket_elements = bucket_elements
        self._saved: dict[str, Any] = {}  # the algorithm's attributes changed during training, restored after
        self._hook: Any = None
        self._owes_flag = False  # an update is running or ended, and this rank has not told the others it ended
        self._rollout_start = (0, 0)  # num_timesteps at the rollout's start, and on_step calls since
        self._stopped = False  # this update was stopped on every rank: no more collectives until the next rollout

    # ------------------------------------------------------------------ checks and start
    def _init_callback(self) -> None:
        from sb3_contrib import TRPO

        if isinstance(self.model, TRPO):
            raise TypeError(
                "DataParallelCallback does not support sb3-contrib TRPO: its policy step is a line search outside the "
                "optimizer, so gradients cannot be averaged before it. Use PPO, A2C, MaskablePPO or a group algorithm."
            )
        if not (dist.is_available() and dist.is_initialized()):
            raise RuntimeError(
                "DataParallelCallback needs an initialized torch.distributed process group: launch with torchrun "
                "(torchrun --nproc_per_node=N script.py) and call agents.common.distributed.init_distributed() (or "
                "torch.distributed.init_process_group) before building the model."
            )
        if not hasattr(self.model.policy, "optimizer"):
            raise TypeError(f"DataParallelCallback needs a policy with an optimizer, got {type(self.model.policy)}.")

    def _on_training_start(self) -> None:
        self._check_settings()
        self._sync_weights()
        model: Any = self.model
        self._saved = {"max_grad_norm": model.max_grad_norm}
        model.max_grad_norm = float("inf")  # SB3's clip (local gradient) becomes a no-op; the hook clips globally
        if getattr(model, "normalize_advantage", False):
            self._saved["normalize_advantage"] = True
            model.normalize_advantage = False  # normalised globally in _on_rollout_end
        if hasattr(model, "target_kl"):
            self._saved["target_kl"] = model.target_kl
        _REPLACED[model] = self._saved  # a checkpoint saved during training stores these (own_settings)
        self._owes_flag = self._stopped = False
        self._hook = self.model.policy.optimizer.register_step_pre_hook(self._before_step)

    def _check_settings(self) -> None:
        """The settings that fix the number and size of the optimizer steps, gathered from every rank and checked
        on every rank (so all ranks raise together, none is left waiting)."""
        model: Any = self.model
        names = ("n_envs", "n_steps", "batch_size", "n_epochs", "group_size")
        row = [float(getattr(model, name, None) or 0) for name in names]
        row.append(float(zlib.crc32(type(model).__name__.encode())))
        row.append(float(sum(p.numel() for p in model.policy.parameters() if p.requires_grad)))
        row.append(float(bool(getattr(model, "drop_all_equal_groups", False))))
        rows = _all_gather_rows(row, "the check of the settings")
        if rows[:, -1].any():
            raise ValueError(
                "DataParallelCallback does not support drop_all_equal_groups=True: dropping groups gives the ranks "
                "different numbers of minibatches per epoch. Train with drop_all_equal_groups=False."
            )
        if (rows != rows[0]).any():
            labels = (*names, "algorithm", "trainable parameters")
            differ = {
                label: rows[:, i].astype(int).tolist()
                for i, label in enumerate(labels)
                if (rows[:, i] != rows[0, i]).any()
            }
            raise ValueError(
                "DataParallelCallback: the ranks disagree on settings that fix the number and size of the optimizer "
                f"steps (value per rank): {differ}. Give every rank the same algorithm, n_envs, n_steps, batch_size, "
                "n_epochs and group_size (with the CLI, --n-envs and --batch-size are totals, split over the ranks)."
            )

    def _sync_weights(self) -> None:
        """Trainable parameters and buffers from rank 0; frozen parameters checked (float64 sum and norm each)."""
        policy = self.model.policy
        with torch.no_grad():
            for tensor in [p for p in policy.parameters() if p.requires_grad] + list(policy.buffers()):
                if tensor.dtype == torch.bool:  # NCCL broadcasts no bool
                    sent = tensor.data.to(torch.uint8)
                    _collective("the broadcast of the initial weights", functools.partial(dist.broadcast, sent, 0))
                    tensor.data.copy_(sent.bool())
                else:
                    _collective(
                        "the broadcast of the initial weights", functools.partial(dist.broadcast, tensor.data, 0)
                    )
            reset_caches = getattr(type(policy), "reset_caches", None)  # the LM policies' KV caches and decode twins,
            if reset_caches is not None:  # made from the weights before the broadcast
                reset_caches(policy)
            frozen = [p for p in policy.parameters() if not p.requires_grad]
            prints = [
                value
                for p in frozen
                for value in (
                    float(torch.sum(p, dtype=torch.float64)),
                    float(torch.linalg.vector_norm(p, dtype=torch.float64)),
                )
            ]
        if not frozen:
            return
        rows = _all_gather_rows(prints, "the check of the frozen weights")
        if not np.allclose(rows, rows[0], rtol=1e-6, atol=1e-6):
            raise ValueError(
                "DataParallelCallback: the frozen weights differ across ranks: every rank must load the same "
                "pretrained model (only trainable parameters are broadcast from rank 0)."
            )

    # ------------------------------------------------------------------ each rollout
    def _on_rollout_start(self) -> None:
        self._send_end_flag()
        self._stopped = False
        if "target_kl" in self._saved:
            self.model.target_kl = self._saved["target_kl"]  # type: ignore[attr-defined]
        self._rollout_start = (self.model.num_timesteps, 0)  # (global count, steps seen)

    def _on_step(self) -> bool:
        # Each rank's step stands for the world's (exact for the algorithms that step in lockstep; GRPO's rounds
        # can end sooner on one rank: the count is made exact at the end of the rollout).
        self.model.num_timesteps += (get_world_size() - 1) * self.model.n_envs
        self._rollout_start = (self._rollout_start[0], self._rollout_start[1] + 1)
        return True

    def _on_rollout_end(self) -> None:
        start, steps = self._rollout_start
        local = self.model.num_timesteps - start - steps * (get_world_size() - 1) * self.model.n_envs
        (total,) = all_reduce_sums([local], "the count of environment steps")
        self.model.num_timesteps = start + round(total)  # the same on every rank: the same number of rollouts
        if self._saved.get("normalize_advantage"):
            self._normalize_advantages()
        self._owes_flag = True  # train() runs next

    def _on_training_end(self) -> None:
        self._send_end_flag()
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
        for name, value in self._saved.items():
            setattr(self.model, name, value)
        _REPLACED.pop(self.model, None)
        self._saved = {}

    def _normalize_advantages(self) -> None:
        """The buffer's advantages normalised with the global mean and unbiased std (SB3's ``+ 1e-8``)."""
        buffer = self.model.rollout_buffer  # type: ignore[attr-defined]
        advantages = np.asarray(buffer.advantages, dtype=np.float64)
        total, squares, count = all_reduce_sums(
            [advantages.sum(), np.square(advantages).sum(), advantages.size], "the advantage normalisation"
        )
        if count < 2:  # SB3 does not normalise a single advantage
            return
        mean = total / count
        std = np.sqrt(max(squares - count * mean * mean, 0.0) / (count - 1))
        buffer.advantages = ((advantages - mean) / (std + 1e-8)).astype(buffer.advantages.dtype)

    # ------------------------------------------------------------------ each optimizer step
    def _send_end_flag(self) -> None:
        if self._owes_flag:
            self._owes_flag = False
            flags = torch.zeros(1 + len(self._params()), dtype=torch.int32, device=_reduce_device())
            _collective("the end of an update", lambda: dist.all_reduce(flags))

    def _params(self) -> list[torch.nn.Parameter]:
        optimizer = self.model.policy.optimizer
        return [p for group in optimizer.param_groups for p in group["params"]]

    def _before_step(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        """Average the gradients over the ranks and clip them, or skip the step everywhere when a rank stopped."""
        params = self._params()
        if self._stopped:  # already known: this update is over on every rank
            for p in params:
                p.grad = None
            return
        # One int per rank and parameter: [stepping, has a gradient...], summed over the ranks.
        flags = torch.tensor([1] + [p.grad is not None for p in params], dtype=torch.int32, device=_reduce_device())
        _collective("the step flag of an optimizer step", lambda: dist.all_reduce(flags))
        world = get_world_size()
        if int(flags[0]) < world:  # some rank ended its update: nobody steps, everybody stops at the next minibatch
            for p in params:
                p.grad = None
            self._stopped, self._owes_flag = True, False
            if "target_kl" in self._saved:
                self.model.target_kl = -1.0  # type: ignore[attr-defined]  # SB3's check now always breaks
            return
        with torch.no_grad():
            has_grad = flags[1:].cpu().tolist()
            for p, count in zip(params, has_grad, strict=True):
                if count and p.grad is None:
                    p.grad = torch.zeros_like(p)
            grads = [p.grad for p in params if p.grad is not None]
            for bucket in _buckets(grads, self.bucket_elements):
                flat = torch.cat([g.reshape(-1) for g in bucket])  # (sum of numel,)
                _collective("the gradient all-reduce", functools.partial(dist.all_reduce, flat))
                flat /= world
                offset = 0
                for g in bucket:
                    g.copy_(flat[offset : offset + g.numel()].view_as(g))
                    offset += g.numel()
        max_norm = self._saved["max_grad_norm"]
        if max_norm is not None and max_norm != float("inf"):
            torch.nn.utils.clip_grad_norm_(self.model.policy.parameters(), max_norm)
