"""The one algorithm registry: an algorithm's name -> its class, LM policy class, rollout buffer and fixed settings.

The command line (``agents.cli.train``), the comparison (``agents.cli.compare``) and the tests build algorithms
from here; adding an algorithm is one entry in :data:`ALGORITHMS`.

    from agents.registry import make_algorithm
    model = make_algorithm("rloo", env, policy_kwargs=dict(model=...), group_size=4, learning_rate=1e-5)
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sb3_contrib import TRPO, MaskablePPO
from stable_baselines3 import A2C, PPO
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.policies import BasePolicy

from agents.common.buffers import EpisodeRolloutBuffer, MaskableEpisodeRolloutBuffer
from agents.common.policy import CausalLMPolicy, MaskableCausalLMPolicy
from agents.grpo import GRPO


@dataclass(frozen=True)
class AlgorithmSpec:
    """How to build one algorithm with the LM policy.

    :param algorithm_class: the SB3 / sb3-contrib / ``agents`` algorithm class.
    :param policy_class: the LM policy it takes.
    :param rollout_buffer_class: passed as ``rollout_buffer_class`` (``None``: the algorithm's own).
    :param fixed: constructor settings that define the entry (e.g. ``advantage="rloo"``); callers cannot override.
    :param critic: it trains a value head (and so takes the KL penalty as :class:`~agents.KLPenaltyCallback`);
        critic-free algorithms take ``kl_coef`` themselves.
    :param summary: one line for ``--help`` and the README.
    """

    algorithm_class: type[BaseAlgorithm]
    policy_class: type[BasePolicy]  # CausalLMPolicy or MaskableCausalLMPolicy
    rollout_buffer_class: type | None
    critic: bool
    summary: str
    fixed: Mapping[str, Any] = field(default_factory=dict)

    def hyperparameters(self) -> frozenset[str]:
        """Keyword arguments the algorithm's constructor accepts, besides policy, env and the fixed settings."""
        names = inspect.signature(self.algorithm_class.__init__).parameters
        return frozenset(names) - {"self", "policy", "env", "_init_setup_model", *self.fixed}


ALGORITHMS: dict[str, AlgorithmSpec] = {
    "ppo": AlgorithmSpec(PPO, CausalLMPolicy, EpisodeRolloutBuffer, True, "SB3 PPO: clipped ratio, value head, GAE"),
    "a2c": AlgorithmSpec(A2C, CausalLMPolicy, EpisodeRolloutBuffer, True, "SB3 A2C: one gradient step per rollout"),
    "trpo": AlgorithmSpec(
        TRPO, CausalLMPolicy, EpisodeRolloutBuffer, True, "sb3-contrib TRPO: KL trust region (small models)"
    ),
    "maskable_ppo": AlgorithmSpec(
        MaskablePPO,
        MaskableCausalLMPolicy,
        MaskableEpisodeRolloutBuffer,
        True,
        "sb3-contrib MaskablePPO: PPO within the env's action_masks()",
    ),
    "grpo": AlgorithmSpec(
        GRPO, CausalLMPolicy, None, False, "GRPO: group mean/std baseline, no critic", {"advantage": "grpo"}
    ),
    "dr_grpo": AlgorithmSpec(
        GRPO,
        CausalLMPolicy,
        None,
        False,
        "Dr. GRPO: group mean baseline, constant loss scale",
        {"advantage": "dr_grpo"},
    ),
    "rloo": AlgorithmSpec(
        GRPO, CausalLMPolicy, None, False, "RLOO: leave-one-out group baseline, no critic", {"advantage": "rloo"}
    ),
}


def get_algorithm(name: str) -> AlgorithmSpec:
    """The registry entry of ``name``; a clear error lists the known names."""
    try:
        return ALGORITHMS[name]
    except KeyError:
        raise ValueError(f"Unknown algorithm {name!r}; choose one of {sorted(ALGORITHMS)}.") from None


def applicable(name: str, settings: Mapping[str, Any]) -> dict[str, Any]:
    """The subset of ``settings`` that algorithm ``name`` takes (e.g. A2C has no ``batch_size``; GRPO no
    ``vf_coef``): for callers holding one set of settings for every algorithm, like the command line."""
    accepted = get_algorithm(name).hyperparameters()
    return {key: value for key, value in settings.items() if key in accepted}


def make_algorithm(
    name: str, env: Any, policy_kwargs: dict[str, Any] | None = None, **hyperparameters: Any
) -> BaseAlgorithm:
    """Build algorithm ``name`` with its LM policy and buffer on ``env``.

    :param policy_kwargs: the LM policy's settings (``model``, ``lora``, ``temperature``, ...).
    :param hyperparameters: constructor arguments of the algorithm; one it does not take is an error naming the
        ones it does (use :func:`applicable` to filter a shared set).
    """
    spec = get_algorithm(name)
    unknown = set(hyperparameters) - spec.hyperparameters()
    if unknown:
        raise TypeError(
            f"{name} ({spec.algorithm_class.__name__}) does not take {sorted(unknown)}; it takes "
            f"{sorted(spec.hyperparameters())}."
        )
    kwargs = dict(hyperparameters)
    if spec.rollout_buffer_class is not None:
        kwargs.setdefault("rollout_buffer_class", spec.rollout_buffer_class)
    return spec.algorithm_class(spec.policy_class, env, policy_kwargs=policy_kwargs, **spec.fixed, **kwargs)
