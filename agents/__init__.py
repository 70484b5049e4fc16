"""Language-model policies, buffers and callbacks for stock Stable-Baselines3 and sb3-contrib algorithms."""

from agents.policy import CausalLMPolicy, MaskableCausalLMPolicy

__all__ = ["CausalLMPolicy", "MaskableCausalLMPolicy"]
