"""Language-model policies, buffers and callbacks for stock Stable-Baselines3 and sb3-contrib algorithms, and the
critic-free group algorithms.

``PPO(CausalLMPolicy, env, policy_kwargs=dict(model="smollm2-135m-instruct"))`` and the same with A2C, TRPO, or
``MaskablePPO(MaskableCausalLMPolicy, ...)``; :class:`KLPenaltyCallback` keeps the policy near its reference.
``GRPO(CausalLMPolicy, env, group_size=4, advantage="grpo" | "dr_grpo" | "rloo")`` needs no value head.
``NLPO(MaskableCausalLMPolicy, env, top_p=0.9)`` is MaskablePPO within the nucleus of a copy of the policy.
:class:`DataParallelCallback` (last in the callback list, under torchrun) trains any of them data-parallel.
:func:`make_algorithm` builds any of them by name (:data:`ALGORITHMS`).

Layout, as SB3's: ``agents/common/`` (shared pieces), ``agents/grpo/`` and ``agents/nlpo.py`` (one home per
algorithm of ours),
``agents/registry.py`` (name -> algorithm), ``agents/cli/`` (the command line, which the library never imports).
"""

try:  # text_env installs alone (pip install text-env-rl); the algorithms come with the 'agents' extra
    import sb3_contrib  # noqa: F401
    import stable_baselines3  # noqa: F401
except ModuleNotFoundError as error:
    _missing = (error.name or "").split(".")[0]
    if _missing not in ("stable_baselines3", "sb3_contrib"):
        raise
    raise ModuleNotFoundError(
        f"agents needs {_missing}, which comes with the 'agents' extra: pip install 'text-env-rl[agents]' "
        "(text_env, the environments, works without it).",
        name=_missing,
    ) from error

from agents.common.buffers import EpisodeRolloutBuffer, MaskableEpisodeRolloutBuffer
from agents.common.callbacks import KLPenaltyCallback
from agents.common.distributed import DataParallelCallback
from agents.common.export import export_pretrained
from agents.common.generation import GenerationResult, generate_completions
from agents.common.policy import CausalLMPolicy, LMPolicySettings, MaskableCausalLMPolicy
from agents.common.reference import ReferenceModel
from agents.grpo import GRPO
from agents.nlpo import NLPO
from agents.registry import ALGORITHMS, make_algorithm

__all__ = [
    "ALGORITHMS",
    "GRPO",
    "CausalLMPolicy",
    "DataParallelCallback",
    "EpisodeRolloutBuffer",
    "GenerationResult",
    "KLPenaltyCallback",
    "LMPolicySettings",
    "MaskableCausalLMPolicy",
    "MaskableEpisodeRolloutBuffer",
    "NLPO",
    "ReferenceModel",
    "export_pretrained",
    "generate_completions",
    "make_algorithm",
]
