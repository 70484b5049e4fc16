"""The frozen reference model of the KL penalty: one copy of the initial weights at most.

It scores whole rollouts at once, one forward pass per episode, rather than token by token: that is cheaper than
decoding step by step, and with LoRA it toggles the adapters off once per batch instead of once per token.

With LoRA the reference is the policy's own model with its adapters disabled, so there is no copy at all; without
LoRA it is a frozen deep copy of the LM taken when the reference is made (the start of training), or a model the
caller names (e.g. the pretrained checkpoint, when resuming a run).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from stable_baselines3.common.type_aliases import PyTorchObs
from torch import nn

from agents.common.models import ModelSpec, load_causal_lm, trunk_and_head
from agents.common.policy import (
    CausalLMPolicyBase,
    frozen_copy,
    head_logits,
    head_weight_cast,
    last_token_hidden,
    mask_logits,
    scale_logits,
    trunk_precision,
)


class ReferenceModel:
    """Next-token log-probabilities of the frozen reference for batches of observations.

    :param policy: the trained policy (its temperature applies to the reference too, as in TRL).
    :param model: ``None`` for the policy's initial weights (adapters off with LoRA, else a frozen copy), or a model
        spec to load (``"smollm2-135m-instruct"``, a directory, a config or a model).
    :param reference_state: a state dict of the policy's LM to use as the reference (from a checkpoint).
    :param chunk_rows: rows scored per batch (bounds the ``(rows, V)`` logits in memory).
    """

    def __init__(
        self,
        policy: CausalLMPolicyBase,
        model: ModelSpec | None = None,
        reference_state: dict[str, torch.Tensor] | None = None,
        chunk_rows: int = 256,
    ) -> None:
        if not isinstance(policy, CausalLMPolicyBase):
            raise TypeError(f"ReferenceModel needs a CausalLMPolicy, got {type(policy).__name__}.")
        self.policy = policy
        self.uses_disabled_adapters = model is None and reference_state is None and policy.lora is not None
        if self.uses_disabled_adapters:
            self.lm: nn.Module = policy.lm  # same weights, adapters switched off when queried
        elif reference_state is not None:  # a saved reference (exact resume)
            self.lm = frozen_copy(policy.lm)
            self.lm.load_state_dict(reference_state)
        elif model is None:
            self.lm = frozen_copy(policy.lm)
        else:
            self.lm = frozen_copy(load_causal_lm(model, **policy.model_kwargs)).to(policy.device)  # type: ignore[attr-defined]
        self.trunk, self.head = trunk_and_head(self.lm)
        self.chunk_rows = chunk_rows
        #: A copy's own compute dtype: with bf16 compute its trunk's linear weights are stored in bf16 (half the
        #: memory; autocast would cast them to the same values at every call). None: the policy's, as it changes.
        self.compute_dtype: str | None = None
        if not self.uses_disabled_adapters and policy.compute_dtype == "bfloat16":
            self.compute_dtype = "bfloat16"
            for module in self.trunk.modules():
                if isinstance(module, nn.Linear):
                    module.to(torch.bfloat16)

    @contextlib.contextmanager
    def _reference_weights(self) -> Iterator[None]:
        if self.uses_disabled_adapters:
            with self.lm.disable_adapter():  # type: ignore[operator]  # ~0.1 s: once per batch, never per token
                yield
        else:
            yield

    def to(self, device: torch.device | str) -> ReferenceModel:
        if not self.uses_disabled_adapters:
            self.lm.to(device)
        return self

    def _chunks(
        self, obs: PyTorchObs, actions: torch.Tensor | None, action_masks: Any
    ) -> Iterator[tuple[slice, torch.Tensor]]:
        """``(rows, logits)`` for ``chunk_rows`` rows at a time, all inside one switch of the reference weights."""
        ids, mask = self.policy.obs_tokens(obs)
        action_rows = None if actions is None else actions.long().reshape(-1).to(ids.device)
        precision = (
            self.policy.trunk_precision()
            if self.compute_dtype is None
            else trunk_precision(self.compute_dtype, ids.device)
        )
        with self._reference_weights(), precision:
            head_weight = head_weight_cast(self.head, self.policy.head_dtype)  # cast once per call
            for start in range(0, ids.shape[0], self.chunk_rows):
                rows = slice(start, start + self.chunk_rows)
                chunk_actions = None if action_rows is None else action_rows[rows]
                (hidden,) = last_token_hidden(
                    [self.trunk], ids[rows], mask[rows], chunk_actions, share_prompts=self.policy.share_prompts
                )  # (b, H)
                logits = head_logits(self.head, hidden, self.policy.head_dtype, head_weight)  # (b, V), as the policy's
                logits = scale_logits(logits, self.policy.temperature)
                yield rows, mask_logits(logits, None if action_masks is None else action_masks[rows])

    @torch.no_grad()
    def logits(self, obs: PyTorchObs, actions: torch.Tensor | None = None, action_masks: Any = None) -> torch.Tensor:
        """Temperature-scaled next-token logits ``(B, V)`` after each row's context (masked tokens at -inf).

        Rows are scored with full forward passes, one per episode (rows that are prefixes of one another share it;
        pass the ``actions`` to let each row's action confirm the sharing), ``chunk_rows`` rows at a time.
        """
        return torch.cat([logits for _, logits in self._chunks(obs, actions, action_masks)])  # (B, V)

    @torch.no_grad()
    def log_probs(self, obs: PyTorchObs, actions: torch.Tensor, action_masks: Any = None) -> torch.Tensor:
        """``log pi_ref(a_t | s_t)`` for each row, ``(B,)``, holding ``(chunk_rows, V)`` logits at a time (a whole
        rollout's ``(B, V)`` would be 0.3 GB for 32 x 48 tokens of a 49k vocabulary, twice with its log-softmax)."""
        index = actions.long().reshape(-1, 1)  # (B, 1)
        picked = [
            torch.log_softmax(logits, -1).gather(1, index[rows].to(logits.device)).squeeze(1)  # (b,)
            for rows, logits in self._chunks(obs, actions, action_masks)
        ]
        return torch.cat(picked)  # (B,)
