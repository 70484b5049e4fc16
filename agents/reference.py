"""The frozen reference model of the KL penalty: one copy of the initial weights at most.

With LoRA the reference is the policy's own model with its adapters disabled, so there is no copy at all; without
LoRA it is a frozen deep copy of the LM taken when the reference is made (the start of training), or a model the
caller names (e.g. the pretrained checkpoint, when resuming a run).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from stable_baselines3.common.type_aliases import PyTorchObs
from torch import nn

from agents.kv_cache import RowKVCache
from agents.models import ModelSpec, load_causal_lm, trunk_and_head
from agents.policy import CausalLMPolicyMixin, frozen_copy


class ReferenceModel:
    """Next-token log-probabilities of the frozen reference, stepping a KV cache of its own along the rollout.

    :param policy: the trained policy (its temperature applies to the reference too, as in TRL).
    :param model: ``None`` for the policy's initial weights (adapters off with LoRA, else a frozen copy), or a model
        spec to load (``"smollm2-135m-instruct"``, a directory, a config or a model).
    """

    def __init__(self, policy: CausalLMPolicyMixin, model: ModelSpec | None = None) -> None:
        if not isinstance(policy, CausalLMPolicyMixin):
            raise TypeError(f"ReferenceModel needs a CausalLMPolicy, got {type(policy).__name__}.")
        self.policy = policy
        self.uses_disabled_adapters = model is None and policy.lora is not None
        if self.uses_disabled_adapters:
            self.lm: nn.Module = policy.lm  # same weights, adapters switched off when queried
        elif model is None:
            self.lm = frozen_copy(policy.lm)
        else:
            self.lm = frozen_copy(load_causal_lm(model, **policy.model_kwargs)).to(policy.device)  # type: ignore[attr-defined]
        self.trunk, self.head = trunk_and_head(self.lm)
        self.cache = RowKVCache()

    @contextlib.contextmanager
    def _reference_weights(self) -> Iterator[None]:
        if self.uses_disabled_adapters:
            with self.lm.disable_adapter():  # type: ignore[operator]
                yield
        else:
            yield

    def to(self, device: torch.device | str) -> ReferenceModel:
        if not self.uses_disabled_adapters:
            self.lm.to(device)
        self.cache.clear()
        return self

    @torch.no_grad()
    def next_token_logits(self, obs: PyTorchObs, action_masks: Any = None) -> torch.Tensor:
        """Temperature-scaled logits ``(B, V)`` for the token after each row's context (masked tokens at -inf)."""
        ids, mask = self.policy._tokens(obs)
        with self._reference_weights():
            cached = self.cache.batch_size
            if cached is not None and cached != ids.shape[0]:
                self.cache.clear()
            hidden = self.cache.step(self.trunk, ids, mask)  # (B, H)
            logits = self.head(hidden).float() / self.policy.temperature  # (B, V)
        if action_masks is not None:
            allowed = torch.as_tensor(np.asarray(action_masks), dtype=torch.bool, device=logits.device)
            logits = logits.masked_fill(~allowed.reshape(logits.shape), float("-inf"))
        return logits

    def log_probs(self, obs: PyTorchObs, actions: torch.Tensor, action_masks: Any = None) -> torch.Tensor:
        """``log pi_ref(a_t | s_t)`` for each row, ``(B,)``."""
        logits = self.next_token_logits(obs, action_masks)
        index = actions.long().reshape(-1, 1).to(logits.device)  # (B, 1)
        return torch.log_softmax(logits, -1).gather(1, index).squeeze(1)
