"""Critic-free, group-relative algorithms: GRPO, Dr. GRPO and RLOO (``GRPO(..., advantage=...)``)."""

from agents.grpo.buffers import GroupRolloutBuffer, GroupSamples
from agents.grpo.grpo import GRPO
from agents.grpo.objective import aggregate_loss, group_advantages, group_size_problems

__all__ = [
    "GRPO",
    "GroupRolloutBuffer",
    "GroupSamples",
    "aggregate_loss",
    "group_advantages",
    "group_size_problems",
]
