"""Each algorithm's settings: its options with their defaults and checks, what it asks of the run, and its KL term.

Every entry of the registry (:data:`agents.registry.ALGORITHMS`) names one settings class: those of SB3's and
sb3-contrib's algorithms are here, GRPO's is in :mod:`agents.grpo.settings`. The command line makes its algorithm
flags from these classes' fields, checks and builds through their methods, and never branches on an algorithm's
name or family: a new algorithm is a registry entry and, when its options differ, a settings class.

A field is a constructor argument of the algorithm of the same name; its ``metadata["help"]`` is the flag's help.
The defaults are the main job's (PPO with SmolLM2 on 2 CPU cores; sources in :mod:`agents.cli.config` and
``docs/calibration.md``); a task's recommended settings (:attr:`text_env.Task.training`) override them.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

from agents.common.checks import at_least, option, raise_problems
from agents.common.kl import KLSettings


@dataclass
class AlgorithmSettings:
    """The options every on-policy algorithm here takes; subclasses add their own.

    :cvar per_rank: options that are totals over data-parallel ranks, each rank taking ``value / world_size``.
    :cvar per_process: options that shape only how this process computes the same update (memory knobs): a resumed
        run takes them from its command line, where the checkpoint's other settings win.
    :cvar tiny_task: the algorithm's step sizes on the tiny task (``agents.compare``'s tiny mode).
    """

    learning_rate: float = option(3.5e-4, "optimizer learning rate (TRL: 1.41e-5 full fine-tuning; LoRA takes ~10x+)")
    n_steps: int = option(48, "steps per env per rollout (48: one episode each)")

    per_rank: ClassVar[tuple[str, ...]] = ()
    per_process: ClassVar[tuple[str, ...]] = ()
    #: Step sizes on the tiny Vowels task from a random 2-layer model (``agents.compare``'s tiny mode).
    tiny_task: ClassVar[dict[str, Any]] = {"n_steps": 64, "learning_rate": 3e-3}

    def __post_init__(self) -> None:
        raise_problems(self.problems())

    def problems(self) -> list[str]:
        """What is wrong with the options on their own (one line each); subclasses add their options' checks."""
        return at_least(self, {"learning_rate": 0.0, "n_steps": 1}, ("learning_rate",))

    def run_problems(self, n_envs: int, world_size: int) -> list[str]:
        """What breaks with the run's ``n_envs`` (total) over ``world_size`` data-parallel ranks."""
        return [
            f"{name}={getattr(self, name)} is a total over {world_size} ranks: use a multiple of {world_size}"
            for name in self.per_rank
            if getattr(self, name) % world_size
        ]

    def for_rank(self, world_size: int) -> AlgorithmSettings:
        """This rank's share: each :attr:`per_rank` option divided by ``world_size`` (unchecked, like a slice)."""
        local = copy.copy(self)
        for name in self.per_rank:
            setattr(local, name, getattr(self, name) // world_size)
        return local

    def options(self) -> dict[str, Any]:
        """The options as given (``None`` where the algorithm resolves a default itself)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def algorithm_kwargs(self, kl: KLSettings, dense_reward: bool) -> dict[str, Any]:
        """The algorithm's constructor arguments: the options, resolved for the run (``dense_reward``), and the KL
        term's own arguments (:meth:`kl_kwargs`)."""
        return {**self.options(), **self.kl_kwargs(kl)}

    # ------------------------------------------------------------------ the KL term
    def kl_problems(self, kl: KLSettings) -> list[tuple[str, str]]:
        """The parts of ``kl`` this algorithm cannot apply, as ``(option, reason)`` pairs."""
        return []

    def kl_kwargs(self, kl: KLSettings) -> dict[str, Any]:
        """Constructor arguments that make the algorithm's own KL term (none: the KL comes from callbacks)."""
        return {}

    def kl_callbacks(self, kl: KLSettings, reference: Any) -> list[Any]:
        """Callbacks that apply the KL term during ``learn`` (none: the algorithm applies it itself)."""
        return []


@dataclass
class CriticSettings(AlgorithmSettings):
    """Algorithms with a value head (SB3's and sb3-contrib's): discounting and GAE, and the KL penalty on the
    reward per token as :class:`~agents.KLPenaltyCallback`, fixed or adaptive."""

    gamma: float = option(1.0, "discount (TRL: 1.0)")
    gae_lambda: float | None = option(
        None,
        "GAE lambda (TRL: 0.95). Default: 0.5 with the dense reward (a token's advantage sums ~2 tokens' score "
        "changes), 1.0 with a sparse one (the whole return arrives at the last token)",
    )

    def problems(self) -> list[str]:
        problems = super().problems()
        if not 0 < self.gamma <= 1 or (self.gae_lambda is not None and not 0 <= self.gae_lambda <= 1):
            problems.append("gamma must be in (0, 1] and gae_lambda in [0, 1]")
        return problems

    def resolved_gae_lambda(self, dense_reward: bool) -> float:
        """``gae_lambda``, with ``None`` resolved: 0.5 with the dense reward, 1.0 with a sparse one.

        With the dense reward each token is paid its own change of the score at once, and a lambda of 0.5 adds only
        the next ~2 tokens' (random) changes to its advantage: the main job's held-out score rose ~0.1 at the same
        KL against lambda 1.0 (``docs/calibration.md``). With a sparse reward the whole return arrives at the last
        token, and 0.5 would give the first of 48 tokens 0.5^47 of it.
        """
        if self.gae_lambda is not None:
            return self.gae_lambda
        return 0.5 if dense_reward else 1.0

    def algorithm_kwargs(self, kl: KLSettings, dense_reward: bool) -> dict[str, Any]:
        return {**super().algorithm_kwargs(kl, dense_reward), "gae_lambda": self.resolved_gae_lambda(dense_reward)}

    def kl_problems(self, kl: KLSettings) -> list[tuple[str, str]]:
        problems = []
        if kl.estimator not in (None, "k1"):
            problems.append(("kl_estimator", "the KL penalty of a critic-based algorithm is k1 on the reward"))
        if kl.placement == "loss":
            problems.append(("kl_in", "a KL term in the loss needs an algorithm whose loss is its own"))
        return problems

    def kl_callbacks(self, kl: KLSettings, reference: Any) -> list[Any]:
        from agents.common.callbacks import KLPenaltyCallback

        return [KLPenaltyCallback(kl.coef, kl.target, kl.horizon, reference=reference)]


@dataclass
class A2CSettings(CriticSettings):
    """SB3 A2C: one gradient step per rollout."""

    tiny_task: ClassVar[dict[str, Any]] = {"n_steps": 8, "learning_rate": 1e-3}  # short rollouts: A2C's design

    ent_coef: float = option(0.0, "entropy bonus (0: the KL penalty regularises)")
    vf_coef: float = option(0.1, "value loss coefficient (TRL vf_coef)")
    max_grad_norm: float = option(1.0, "gradient clipping norm")

    def problems(self) -> list[str]:
        return super().problems() + at_least(self, {"ent_coef": 0.0, "vf_coef": 0.0, "max_grad_norm": 0.0})


@dataclass
class PPOSettings(A2CSettings):
    """SB3 PPO and sb3-contrib MaskablePPO: clipped ratio over minibatches and epochs."""

    batch_size: int = option(384, "minibatch size in transitions (384: 8 episodes of 48 tokens)")
    n_epochs: int = option(2, "epochs over each rollout (TRL ppo_epochs: 4)")
    clip_range: float = option(0.2, "PPO clip range (TRL cliprange)")

    per_rank: ClassVar[tuple[str, ...]] = ("batch_size",)

    def problems(self) -> list[str]:
        return super().problems() + at_least(self, {"batch_size": 1, "n_epochs": 1, "clip_range": 0.0}, ("clip_range",))


@dataclass
class NLPOSettings(PPOSettings):
    """NLPO (RL4LMs): MaskablePPO within the top-p set of a periodically refreshed copy of the policy."""

    top_p: float = option(0.9, "nucleus mass of the mask model's top-p set (RL4LMs: 0.9)")
    mask_update_interval: int = option(
        20, "rollouts between refreshes of the mask model from the policy (RL4LMs target_update_iterations: 20)"
    )

    def problems(self) -> list[str]:
        problems = super().problems() + at_least(self, {"mask_update_interval": 1})
        if not 0.0 < self.top_p <= 1.0:
            problems.append(f"--top-p must be in (0, 1], got {self.top_p}")
        return problems


@dataclass
class TRPOSettings(CriticSettings):
    """sb3-contrib TRPO: a KL trust region, stepped by a line search outside the optimizer (single process)."""

    batch_size: int = option(384, "minibatch size in transitions of the value function's updates")

    per_rank: ClassVar[tuple[str, ...]] = ("batch_size",)

    def problems(self) -> list[str]:
        return super().problems() + at_least(self, {"batch_size": 1})

    def run_problems(self, n_envs: int, world_size: int) -> list[str]:
        if world_size > 1:
            return ["trpo does not train data-parallel (its step is a line search outside the optimizer)"]
        return []
