"""A KV cache per environment row, kept across the policy calls of a rollout.

SB3's ``collect_rollouts`` calls the policy once per token with the whole observation. Without a cache each call
re-encodes the full context; with this one, a call costs one token per row, like ``model.generate``.

Layout: row ``b``'s real tokens are right-aligned in the cache (left padding before them, masked out). A step
appends ``K`` columns to every row, ``K`` the largest number of tokens a row grew by (1 when each step writes one
token; more when an environment appends its reply to a conversation, prefilled in the same pass): a row's new tokens
in its last columns, masked columns elsewhere (a row whose observation did not change gets only masked ones). Rows
whose new observation does not extend the cached one (a reset, or anything unexpected) are re-encoded alone and
spliced in; columns that are padding in every row are cropped, so the cache is never
wider than the longest context.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, cast

import torch
from torch import nn
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

from agents.common.sequences import context_bounds, position_ids_from_mask

_CACHE_KEYWORDS: dict[type, str] = {}


def run_with_cache(trunk: nn.Module, cache: DynamicCache, **inputs: Any) -> tuple[torch.Tensor, DynamicCache]:
    """``trunk(**inputs)`` extending ``cache``: its last hidden states ``(B, T, H)`` and the cache.

    Recent transformers name the argument and the output field ``cache``; ``past_key_values``, the name of earlier 5.x
    releases, is deprecated there (a warning at every call) and goes in 5.40. The name is read from the trunk's
    signature, once per trunk class.
    """
    kind = type(trunk)
    if kind not in _CACHE_KEYWORDS:
        parameters = inspect.signature(trunk.forward).parameters
        _CACHE_KEYWORDS[kind] = "cache" if "cache" in parameters else "past_key_values"
    keyword = _CACHE_KEYWORDS[kind]
    out = trunk(**inputs, **{keyword: cache}, use_cache=True)
    return out.last_hidden_state, out[keyword]


@dataclass
class _CachedRows:
    """The state of a :class:`RowKVCache` after a call: all present together, or no state at all."""

    cache: DynamicCache  # keys and values, (B, heads, W, d) per layer
    kv_mask: torch.Tensor  # (B, W) 1 on cached real tokens
    input_ids: torch.Tensor  # (B, L) last observation seen
    attention_mask: torch.Tensor  # (B, L)
    hidden: torch.Tensor  # (B, H) output of the last call
    last: torch.Tensor  # (B,) last real index in the observation
    length: torch.Tensor  # (B,) number of real tokens
    span: torch.Tensor  # (B,) cache columns from the row's first real token to the end


class RowKVCache:
    """Incremental encoder of a batch of observation rows through a transformer trunk.

    ``step(trunk, input_ids, attention_mask)`` returns the trunk's last hidden state at each row's last real
    token, ``(B, H)``, reusing the cache for rows that grew since the previous call (by one token, or several).
    The result is the same as encoding every row from scratch (up to float rounding), whatever the sequence of
    calls.
    """

    def __init__(self) -> None:
        self.clear()

    def clear(self) -> None:
        """Forget everything (call it whenever the trunk's parameters change)."""
        self.state: _CachedRows | None = None
        self.reencoded_rows = 0  # statistics: rows encoded from scratch
        self.encoded_rows = 0  # statistics: distinct rows among them (one pass per prompt of a group)
        self.extended_rows = 0  # statistics: rows advanced from the cache (by one token, or an env's reply)
        self.extended_tokens = 0  # statistics: tokens those rows were advanced by

    @property
    def batch_size(self) -> int | None:
        return None if self.state is None else int(self.state.input_ids.shape[0])

    @property
    def kv_mask(self) -> torch.Tensor | None:
        """``(B, W)`` 1 on cached real tokens, or None when empty."""
        return None if self.state is None else self.state.kv_mask

    @torch.no_grad()
    def step(self, trunk: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        ids = input_ids.long()  # (B, L)
        mask = attention_mask.long()  # (B, L)
        _, last, length = context_bounds(mask)
        state = self.state
        if state is None or ids.shape != state.input_ids.shape:
            return self._encode_all(trunk, ids, mask, last, length)
        unchanged = (ids == state.input_ids).all(1) & (mask == state.attention_mask).all(1)  # (B,)
        if bool(unchanged.all()):
            return state.hidden
        old_tokens_kept = ((state.attention_mask == 0) | ((mask == 1) & (ids == state.input_ids))).all(1)  # (B,)
        growth = length - state.length  # (B,) new real tokens of each row
        extends = old_tokens_kept & (growth >= 1) & (last == state.last + growth)  # (B,)
        if not bool(extends.any()):
            return self._encode_all(trunk, ids, mask, last, length)

        # K new columns for every row, K the largest growth (1 when each step writes a token; more when an env
        # appends its own reply, as a multi-turn env does): a row that grew by g puts its g new tokens in the last
        # g columns, masked columns before them; unchanged rows (e.g. finished episodes in a batch) get K masked
        # columns; the other rows get garbage and are re-encoded below.
        k = int(growth[extends].max())
        column = torch.arange(k, device=ids.device)  # (K,)
        lead = (k - growth).clamp(min=0)  # (B,) masked columns before a row's new tokens
        new_mask = (column[None, :] >= lead[:, None]) & extends[:, None]  # (B, K)
        index = (last[:, None] - (k - 1) + column[None, :]).clamp(min=0)  # (B, K) the tokens' columns in ids
        new_tokens = torch.where(new_mask, ids.gather(1, index), 0)  # (B, K)
        positions = (state.length[:, None] - lead[:, None] + column[None, :]).clamp(min=0)  # (B, K) along the run
        kv_mask = torch.cat([state.kv_mask, new_mask.long()], 1)  # (B, W+K)
        new_hidden, state.cache = run_with_cache(
            trunk, state.cache, input_ids=new_tokens, attention_mask=kv_mask, position_ids=positions
        )
        hidden = torch.where(extends.unsqueeze(1), new_hidden[:, -1], state.hidden)  # (B, H)
        state.kv_mask = kv_mask
        span = state.span + k
        self.extended_rows += int(extends.sum())
        self.extended_tokens += int(growth[extends].sum())
        redo = (~(extends | unchanged)).nonzero().flatten()  # (R,)
        if redo.numel():
            hidden[redo] = self._splice_rows(state, trunk, ids, mask, last, length, redo)
            span[redo] = length[redo]
        self._remember(state.cache, state.kv_mask, ids, mask, last, length, hidden, span)
        self._crop()
        return hidden

    # ------------------------------------------------------------------ internals
    def _encode(
        self, trunk: nn.Module, ids: torch.Tensor, mask: torch.Tensor, last: torch.Tensor, length: torch.Tensor
    ) -> tuple[DynamicCache, torch.Tensor, torch.Tensor]:
        """Encode rows right-aligned to their longest context: cache, its mask ``(R, m)``, hidden ``(R, H)``.

        Identical rows (the envs of one GRPO group at the start of their episodes: one prompt) are encoded once
        and their keys and values copied to each."""
        width = int(length.max())
        index = last[:, None] - (width - 1) + torch.arange(width, device=ids.device)[None, :]  # (R, m)
        inside = index >= 0
        index = index.clamp(min=0)
        run_ids = ids.gather(1, index) * inside  # (R, m)
        run_mask = mask.gather(1, index) * inside  # (R, m)
        distinct, copy_of = torch.unique(torch.cat([run_ids, run_mask], 1), dim=0, return_inverse=True)  # (U, 2m)
        hidden, cache = run_with_cache(
            trunk,
            DynamicCache(),
            input_ids=distinct[:, :width],
            attention_mask=distinct[:, width:],
            position_ids=position_ids_from_mask(distinct[:, width:]),
        )
        self.encoded_rows += len(distinct)
        for layer in cache.layers:
            if type(layer) is not DynamicLayer:
                raise TypeError(
                    f"RowKVCache supports full-attention DynamicCache layers, got {type(layer).__name__}; "
                    "pass kv_cache=False to the policy for this model."
                )
            keys, values = _keys_values(layer)
            layer.keys, layer.values = keys[copy_of], values[copy_of]  # (R, heads, m, d)
        return cache, run_mask, hidden[copy_of, -1]

    def _encode_all(
        self, trunk: nn.Module, ids: torch.Tensor, mask: torch.Tensor, last: torch.Tensor, length: torch.Tensor
    ) -> torch.Tensor:
        cache, kv_mask, hidden = self._encode(trunk, ids, mask, last, length)
        self.reencoded_rows += int(ids.shape[0])
        self._remember(cache, kv_mask, ids, mask, last, length, hidden, length.clone())
        return hidden

    def _splice_rows(
        self,
        state: _CachedRows,
        trunk: nn.Module,
        ids: torch.Tensor,
        mask: torch.Tensor,
        last: torch.Tensor,
        length: torch.Tensor,
        rows: torch.Tensor,
    ) -> torch.Tensor:
        """Re-encode ``rows`` alone and write their keys and values into the shared cache."""
        cache, run_mask, hidden = self._encode(trunk, ids[rows], mask[rows], last[rows], length[rows])
        width, run_width = state.kv_mask.shape[1], run_mask.shape[1]
        if run_width > width:  # widen the shared cache on the left
            grow = run_width - width
            for layer in _layers(state.cache):
                keys, values = _keys_values(layer)
                layer.keys, layer.values = _left_pad(keys, grow), _left_pad(values, grow)
            state.kv_mask = _left_pad(state.kv_mask, grow, dim=1)
            width = run_width
        pad = width - run_width
        for shared, fresh in zip(_layers(state.cache), _layers(cache), strict=True):
            shared_keys, shared_values = _keys_values(shared)
            fresh_keys, fresh_values = _keys_values(fresh)
            shared_keys[rows] = _left_pad(fresh_keys, pad)  # (R, heads, W, d)
            shared_values[rows] = _left_pad(fresh_values, pad)
        state.kv_mask[rows] = _left_pad(run_mask, pad, dim=1)
        self.reencoded_rows += int(rows.numel())
        return hidden

    def _remember(
        self,
        cache: DynamicCache,
        kv_mask: torch.Tensor,
        ids: torch.Tensor,
        mask: torch.Tensor,
        last: torch.Tensor,
        length: torch.Tensor,
        hidden: torch.Tensor,
        span: torch.Tensor,
    ) -> None:
        # Copies of the observation: callers may reuse their buffers in place.
        self.state = _CachedRows(cache, kv_mask, ids.clone(), mask.clone(), hidden, last, length, span)

    def _crop(self) -> None:
        """Drop leading columns that are padding in every row."""
        state = self.state
        assert state is not None
        extra = state.kv_mask.shape[1] - int(state.span.max())
        if extra > 0:
            for layer in _layers(state.cache):
                keys, values = _keys_values(layer)
                layer.keys, layer.values = keys[:, :, extra:], values[:, :, extra:]
            state.kv_mask = state.kv_mask[:, extra:]


def _layers(cache: DynamicCache) -> list[DynamicLayer]:
    """The cache's layers, all full-attention ``DynamicLayer`` (checked when the cache is made, in ``_encode``)."""
    return cast(list[DynamicLayer], cache.layers)


def _keys_values(layer: DynamicLayer) -> tuple[torch.Tensor, torch.Tensor]:
    """A filled layer's keys and values, each ``(B, heads, W, d)``."""
    keys, values = layer.keys, layer.values
    assert keys is not None and values is not None, "an empty KV-cache layer"
    return keys, values


def _left_pad(tensor: torch.Tensor, amount: int, dim: int = 2) -> torch.Tensor:
    """Prepend ``amount`` zeros along ``dim`` (keys/values: dim 2 of (B, heads, W, d); masks: dim 1)."""
    if amount == 0:
        return tensor
    shape = list(tensor.shape)
    shape[dim] = amount
    return torch.cat([tensor.new_zeros(shape), tensor], dim=dim)


@dataclass
class PolicyCaches:
    """The KV caches of one caller of the policy (rollouts, or step-by-step prediction): one per trunk."""

    policy: RowKVCache = field(default_factory=RowKVCache)
    value: RowKVCache = field(default_factory=RowKVCache)  # used only with a separate value trunk

    def clear(self) -> None:
        self.policy.clear()
        self.value.clear()

    def stats(self) -> dict[str, int]:
        """The policy trunk's cache: rows encoded from scratch (and how many distinct ones were run) and rows advanced
        by one cached token since the last :meth:`clear`, and the cache's current ``rows`` x ``width`` (columns of
        keys and values; 0 when empty)."""
        cache = self.policy
        rows, width = (0, 0) if cache.kv_mask is None else tuple(cache.kv_mask.shape)
        return {
            "reencoded_rows": cache.reencoded_rows,
            "encoded_rows": cache.encoded_rows,
            "extended_rows": cache.extended_rows,
            "rows": int(rows),
            "width": int(width),
        }
