"""Language-model policies, buffers and callbacks for stock Stable-Baselines3 and sb3-contrib algorithms.

``PPO(CausalLMPolicy, env, policy_kwargs=dict(model="smollm2-135m-instruct"))`` and the same with A2C, TRPO, or
``MaskablePPO(MaskableCausalLMPolicy, ...)``; :class:`KLPenaltyCallback` keeps the policy near its reference.
"""

from agents.buffers import EpisodeRolloutBuffer, MaskableEpisodeRolloutBuffer
from agents.callbacks import KLPenaltyCallback
from agents.export import export_pretrained
from agents.generation import GenerationResult, generate_completions
from agents.policy import CausalLMPolicy, MaskableCausalLMPolicy, lm_policy_class_for
from agents.reference import ReferenceModel

__all__ = [
    "CausalLMPolicy",
    "EpisodeRolloutBuffer",
    "GenerationResult",
    "KLPenaltyCallback",
    "MaskableCausalLMPolicy",
    "MaskableEpisodeRolloutBuffer",
    "ReferenceModel",
    "export_pretrained",
    "generate_completions",
    "lm_policy_class_for",
]
