"""Language-model policies, buffers and callbacks for stock Stable-Baselines3 and sb3-contrib algorithms, and the
critic-free group algorithms.

``PPO(CausalLMPolicy, env, policy_kwargs=dict(model="smollm2-135m-instruct"))`` and the same with A2C, TRPO, or
``MaskablePPO(MaskableCausalLMPolicy, ...)``; :class:`KLPenaltyCallback` keeps the policy near its reference.
``GRPO(CausalLMPolicy, env, group_size=4, advantage="grpo" | "dr_grpo" | "rloo")`` needs no value head.
:func:`make_algorithm` builds any of them by name (:data:`ALGORITHMS`).
"""

from agents.buffers import EpisodeRolloutBuffer, MaskableEpisodeRolloutBuffer
from agents.callbacks import KLPenaltyCallback
from agents.export import export_pretrained
from agents.generation import GenerationResult, generate_completions
from agents.grpo import GRPO
from agents.policy import CausalLMPolicy, LMPolicySettings, MaskableCausalLMPolicy, lm_policy_class_for
from agents.reference import ReferenceModel
from agents.registry import ALGORITHMS, make_algorithm

__all__ = [
    "ALGORITHMS",
    "GRPO",
    "CausalLMPolicy",
    "EpisodeRolloutBuffer",
    "GenerationResult",
    "KLPenaltyCallback",
    "LMPolicySettings",
    "MaskableCausalLMPolicy",
    "MaskableEpisodeRolloutBuffer",
    "ReferenceModel",
    "export_pretrained",
    "generate_completions",
    "lm_policy_class_for",
    "make_algorithm",
]
