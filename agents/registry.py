"""The one algorithm registry: an algorithm's name -> its class, LM policy class, rollout buffer, settings class and
fixed settings.

The command line (``agents.cli.train``), the comparison (``agents.cli.compare``) and the tests build algorithms
from here; adding an algorithm is one entry in :data:`ALGORITHMS` (and a settings class when its options differ:
:mod:`agents.common.settings`). What differs between algorithms (options, defaults, checks, the KL term, what
data parallelism asks) is asked of the entry's settings class, never decided from its name.

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
from agents.common.settings import A2CSettings, AlgorithmSettings, NLPOSettings, PPOSettings, TRPOSettings
from agents.grpo import GRPO
from agents.grpo.settings import (
    APOSettings,
    CISPOSettings,
    DAPOSettings,
    GRPOSettings,
    GSPOSettings,
    RAFTSettings,
    ReinforcePPSettings,
)
from agents.nlpo import NLPO


@dataclass(frozen=True)
class AlgorithmSpec:
    """How to build one algorithm with the LM policy.

    :param algorithm_class: the SB3 / sb3-contrib / ``agents`` algorithm class.
    :param policy_class: the LM policy it takes.
    :param rollout_buffer_class: passed as ``rollout_buffer_class`` (``None``: the algorithm's own).
    :param settings: its settings class: options with defaults and checks, and its KL term
        (:class:`~agents.common.settings.AlgorithmSettings`).
    :param summary: one line for ``--help`` and the README.
    :param fixed: constructor settings that define the entry (e.g. ``advantage="rloo"``); callers cannot override.
    """

    algorithm_class: type[BaseAlgorithm]
    policy_class: type[BasePolicy]  # CausalLMPolicy or MaskableCausalLMPolicy
    rollout_buffer_class: type | None
    settings: type[AlgorithmSettings]
    summary: str
    fixed: Mapping[str, Any] = field(default_factory=dict)

    def hyperparameters(self) -> frozenset[str]:
        """Keyword arguments the algorithm's constructor accepts, besides policy, env and the fixed settings (those
        of its base classes too where a constructor passes ``**kwargs`` on)."""
        names: set[str] = set()
        for cls in self.algorithm_class.__mro__:
            if "__init__" not in vars(cls):
                continue
            parameters = inspect.signature(vars(cls)["__init__"]).parameters.values()
            names |= {p.name for p in parameters if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
            if not any(p.kind == p.VAR_KEYWORD for p in parameters):
                break
        return frozenset(names) - {"self", "policy", "env", "_init_setup_model", *self.fixed}


#: The critic-based algorithms first: they take longest per token, and ``agents.compare`` starts them first.
ALGORITHMS: dict[str, AlgorithmSpec] = {
    "ppo": AlgorithmSpec(
        PPO, CausalLMPolicy, EpisodeRolloutBuffer, PPOSettings, "SB3 PPO: clipped ratio, value head, GAE"
    ),
    "a2c": AlgorithmSpec(
        A2C, CausalLMPolicy, EpisodeRolloutBuffer, A2CSettings, "SB3 A2C: one gradient step per rollout"
    ),
    "trpo": AlgorithmSpec(
        TRPO, CausalLMPolicy, EpisodeRolloutBuffer, TRPOSettings, "sb3-contrib TRPO: KL trust region (small models)"
    ),
    "maskable_ppo": AlgorithmSpec(
        MaskablePPO,
        MaskableCausalLMPolicy,
        MaskableEpisodeRolloutBuffer,
        PPOSettings,
        "sb3-contrib MaskablePPO: PPO within the env's action_masks()",
    ),
    "nlpo": AlgorithmSpec(
        NLPO,
        MaskableCausalLMPolicy,
        MaskableEpisodeRolloutBuffer,
        NLPOSettings,
        "NLPO (RL4LMs): MaskablePPO within the top-p set of a periodically refreshed copy of the policy",
    ),
    "grpo": AlgorithmSpec(
        GRPO, CausalLMPolicy, None, GRPOSettings, "GRPO: group mean/std baseline, no critic", {"advantage": "grpo"}
    ),
    "dr_grpo": AlgorithmSpec(
        GRPO,
        CausalLMPolicy,
        None,
        GRPOSettings,
        "Dr. GRPO: group mean baseline, constant loss scale",
        {"advantage": "dr_grpo"},
    ),
    "rloo": AlgorithmSpec(
        GRPO,
        CausalLMPolicy,
        None,
        GRPOSettings,
        "RLOO: leave-one-out group baseline, no critic",
        {"advantage": "rloo"},
    ),
    "dapo": AlgorithmSpec(
        GRPO,
        CausalLMPolicy,
        None,
        DAPOSettings,
        "DAPO: clip-higher, token-mean loss, dynamic sampling of groups with a signal",
        {"advantage": "grpo", "loss_aggregation": "token", "drop_all_equal_groups": True},
    ),
    "gspo": AlgorithmSpec(
        GRPO,
        CausalLMPolicy,
        None,
        GSPOSettings,
        "GSPO: clipped sequence-level ratio (geometric mean over tokens)",
        {"advantage": "grpo", "policy_loss": "gspo", "loss_aggregation": "sequence"},
    ),
    "cispo": AlgorithmSpec(
        GRPO,
        CausalLMPolicy,
        None,
        CISPOSettings,
        "CISPO: REINFORCE with the detached ratio clipped from above, token-mean loss",
        {"advantage": "grpo", "policy_loss": "cispo", "loss_aggregation": "token"},
    ),
    "reinforce_pp": AlgorithmSpec(
        GRPO,
        CausalLMPolicy,
        None,
        ReinforcePPSettings,
        "REINFORCE++: k1 KL per token in the reward, returns-to-go, global whitening",
        {"advantage": "reinforce_pp"},
    ),
    "reinforce_pp_baseline": AlgorithmSpec(
        GRPO,
        CausalLMPolicy,
        None,
        ReinforcePPSettings,
        "REINFORCE++-baseline: the same after subtracting each group's mean reward",
        {"advantage": "reinforce_pp_baseline"},
    ),
    "raft": AlgorithmSpec(
        GRPO,
        CausalLMPolicy,
        None,
        RAFTSettings,
        "RAFT: rejection sampling, the LM loss on the best completion of each group",
        {"advantage": "raft", "policy_loss": "nll"},
    ),
    "apo": AlgorithmSpec(
        GRPO,
        CausalLMPolicy,
        None,
        APOSettings,
        "A*-PO: regress beta log(pi/pi_ref) on r - V*(x), the advantage of the KL-regularised optimum",
        {"advantage": "apo", "policy_loss": "apo", "loss_aggregation": "sequence"},
    ),
}


def get_algorithm(name: str) -> AlgorithmSpec:
    """The registry entry of ``name``; a clear error lists the known names."""
    try:
        return ALGORITHMS[name]
    except KeyError:
        raise ValueError(f"Unknown algorithm {name!r}; choose one of {sorted(ALGORITHMS)}.") from None


def make_algorithm(
    name: str, env: Any, policy_kwargs: dict[str, Any] | None = None, **hyperparameters: Any
) -> BaseAlgorithm:
    """Build algorithm ``name`` with its LM policy and buffer on ``env``.

    :param policy_kwargs: the LM policy's settings (``model``, ``lora``, ``temperature``, ...).
    :param hyperparameters: constructor arguments of the algorithm; one it does not take is an error naming the
        ones it does.
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
