"""The settings of the group algorithms (GRPO and its family): groups of completions instead of a critic, and a KL
term of their own, in the loss or the reward, with a fixed coefficient.

One class per set of options, each with its paper's defaults; the registry (:data:`agents.registry.ALGORITHMS`)
pairs each entry with one of them and with the constructor settings that define it (``advantage``,
``policy_loss``, ...).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from agents.common.checks import at_least, option
from agents.common.kl import KLSettings
from agents.common.settings import AlgorithmSettings
from agents.grpo.objective import group_size_problems


@dataclass
class GroupSettings(AlgorithmSettings):
    """What every group algorithm takes: :class:`~agents.GRPO`'s group, minibatch and epoch options."""

    group_size: int = option(4, "completions per prompt, a group (n_envs a multiple of it)")
    batch_size: int = option(384, "minibatch size in transitions, rounded down to whole completions (384: 8 of 48)")
    micro_batch_size: int | None = option(
        None, "transitions per forward+backward pass, whole completions, gradients accumulated (a memory knob)"
    )
    n_epochs: int = option(2, "epochs over each rollout (1: purely on-policy, the ratio stays 1)")
    ent_coef: float = option(0.0, "entropy bonus (0 in GRPO and RLOO)")
    max_grad_norm: float = option(1.0, "gradient clipping norm")

    per_rank: ClassVar[tuple[str, ...]] = ("batch_size",)
    per_process: ClassVar[tuple[str, ...]] = ("micro_batch_size",)

    def problems(self) -> list[str]:
        problems = super().problems() + group_size_problems(self.group_size)
        minimums = {"batch_size": 1, "micro_batch_size": 1, "n_epochs": 1, "ent_coef": 0.0, "max_grad_norm": 0.0}
        return problems + at_least(self, minimums)

    def run_problems(self, n_envs: int, world_size: int) -> list[str]:
        return super().run_problems(n_envs, world_size) + group_size_problems(self.group_size, n_envs, world_size)

    def kl_problems(self, kl: KLSettings) -> list[tuple[str, str]]:
        problems = []
        if kl.target is not None:
            problems.append(("kl_target", "the group algorithms keep kl_coef fixed (no adaptive controller)"))
        if kl.horizon != KLSettings.horizon:
            problems.append(("kl_horizon", "the group algorithms keep kl_coef fixed (no adaptive controller)"))
        return problems

    def kl_kwargs(self, kl: KLSettings) -> dict[str, Any]:
        # GRPO's own defaults: k3 in the loss (Shao et al. 2024).
        return {"kl_coef": kl.coef, "kl_estimator": kl.estimator or "k3", "kl_in": kl.placement or "loss"}


@dataclass
class GRPOSettings(GroupSettings):
    """GRPO, Dr. GRPO, RLOO: PPO's clipped ratio per token."""

    clip_range: float = option(0.2, "clip of the probability ratio, below 1 - clip_range")
    clip_range_high: float | None = option(None, "upper clip range (DAPO clip-higher: 0.28); none: clip_range")

    def problems(self) -> list[str]:
        problems = super().problems() + at_least(self, {"clip_range": 0.0}, strict=("clip_range",))
        return problems + at_least(self, {"clip_range_high": 0.0}, strict=("clip_range_high",))


@dataclass
class GSPOSettings(GRPOSettings):
    """GSPO (Zheng et al. 2025): the ratio is the sequence's geometric mean, clipped within the paper's ranges
    (3e-4 below, 4e-4 above: a sequence ratio moves far less than a token's)."""

    clip_range: float = option(3e-4, "clip of the sequence ratio, below 1 - clip_range (GSPO: 3e-4)")
    clip_range_high: float | None = option(4e-4, "upper clip of the sequence ratio (GSPO: 4e-4)")


@dataclass
class DAPOSettings(GRPOSettings):
    """DAPO (Yu et al. 2025): clip-higher, token-level loss, and dynamic sampling."""

    clip_range_high: float | None = option(0.28, "upper clip range (DAPO clip-higher: 0.28)")
    resample_rounds: int = option(
        2, "dynamic sampling: extra rounds sampled per rollout to replace groups whose rewards are all equal"
    )

    def problems(self) -> list[str]:
        return super().problems() + at_least(self, {"resample_rounds": 0})


@dataclass
class CISPOSettings(GroupSettings):
    """CISPO (MiniMax-M1 2025): REINFORCE with the importance ratio clipped from above and detached."""

    clip_range_high: float | None = option(5.0, "CISPO's epsilon_max: the weight is min(ratio, 1 + it) (ScaleRL: 5)")

    def problems(self) -> list[str]:
        return super().problems() + at_least(self, {"clip_range_high": 0.0}, strict=("clip_range_high",))


@dataclass
class ReinforcePPSettings(GRPOSettings):
    """REINFORCE++ (Hu et al. 2025): the k1 KL in each token's reward, returns-to-go, global whitening."""

    def kl_problems(self, kl: KLSettings) -> list[tuple[str, str]]:
        problems = super().kl_problems(kl)
        if kl.estimator not in (None, "k1"):
            problems.append(("kl_estimator", "REINFORCE++ pays k1 in each token's reward"))
        if kl.placement == "loss":
            problems.append(("kl_in", "REINFORCE++ pays the KL in each token's reward"))
        return problems

    def kl_kwargs(self, kl: KLSettings) -> dict[str, Any]:
        return {"kl_coef": kl.coef, "kl_estimator": "k1", "kl_in": "reward"}


@dataclass
class RAFTSettings(GroupSettings):
    """RAFT / rejection-sampling fine-tuning: the LM loss on the best completion of each group."""


@dataclass
class APOSettings(GroupSettings):
    """A*-PO (Brantley et al. 2025): regress ``beta log(pi / pi_ref)`` of each completion on ``r - V*(x)``, the
    advantage of the KL-regularised optimum at ``beta = kl_coef``; ``V*(x)`` from the group's completions
    (:func:`~agents.grpo.objective.optimal_advantages`)."""

    #: Its loss is its KL term: the tiny comparison, which runs every algorithm without one, gives it a beta.
    tiny_task: ClassVar[dict[str, Any]] = {**GroupSettings.tiny_task, "kl_coef": 0.05}

    def kl_problems(self, kl: KLSettings) -> list[tuple[str, str]]:
        problems = super().kl_problems(kl)
        if kl.coef <= 0:
            problems.append(("kl_coef", "A*-PO regresses on the optimum at beta = kl_coef: pass one > 0, e.g. 0.05"))
        if kl.estimator is not None:
            problems.append(("kl_estimator", "A*-PO pays beta log(pi / pi_ref) per completion, no estimator"))
        if kl.placement == "reward":
            problems.append(("kl_in", "A*-PO's KL term is in its loss"))
        return problems

    def kl_kwargs(self, kl: KLSettings) -> dict[str, Any]:
        return {"kl_coef": kl.coef, "kl_in": "loss"}
