"""Tensor helpers on token observations: where the real tokens are, and which transitions share an episode.

An observation row holds one contiguous run of real tokens (prompt, then the tokens generated so far) marked by
``attention_mask``; the next token is predicted from the hidden state at the run's last position. Transitions of
one episode are prefixes of each other, so one forward pass over the longest of them yields the outputs of all.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

# Two primes below 2**31: polynomial hashes mod each stay far from int64 overflow (token * power < 2**48).
_P1, _P2 = 2_147_483_629, 2_147_483_587
_R1, _R2 = 1_000_003, 916_132_831
_POWERS: dict[tuple[int, str], tuple[torch.Tensor, torch.Tensor]] = {}


#: The keys of a ``TextGenerationEnv`` observation.
OBS_KEYS = ("input_ids", "attention_mask")


def observation_tokens(obs: Any, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``input_ids`` and ``attention_mask`` of a batch of ``TextGenerationEnv`` observations as long tensors
    ``(B, length)``, checked. SB3 may hand them over as floats (``preprocess_obs`` casts a ``Box`` to float32)."""
    if not isinstance(obs, dict) or any(key not in obs for key in OBS_KEYS):
        raise ValueError(f"The policy expects a dict observation with keys {OBS_KEYS}, got {type(obs).__name__}.")
    ids, mask = obs["input_ids"], obs["attention_mask"]
    if ids.dim() != 2 or ids.shape[1] != length or ids.shape != mask.shape:
        raise ValueError(
            f"Observation tensors must have shape (batch, {length}) for both keys, got input_ids "
            f"{tuple(ids.shape)} and attention_mask {tuple(mask.shape)}."
        )
    if ids.is_floating_point() and (bool((ids != ids.round()).any()) or bool((ids < 0).any())):
        raise ValueError(
            "Observation token ids are not non-negative integers: an observation normaliser (SB3's VecNormalize, "
            "Gymnasium's NormalizeObservation) turned them into z-scores. Token ids must reach the policy as they "
            "are: use VecNormalize(venv, norm_obs=False) (norm_reward=True is fine) or no observation normaliser."
        )
    return ids.long(), mask.long()


def context_bounds(attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """First index, last index and length of each row's run of real tokens, each ``(B,)``.

    Raises ``ValueError`` for rows with no real token or with gaps (not an observation of ``TextGenerationEnv``).
    """
    mask = attention_mask.long()  # (B, L)
    length = mask.sum(1)  # (B,)
    seq_len = mask.shape[1]
    last = seq_len - 1 - mask.flip(1).argmax(1)  # (B,) index of the last 1
    first = mask.argmax(1)  # (B,) index of the first 1
    if bool((length == 0).any()) or bool((last - first + 1 != length).any()):
        raise ValueError(
            "Each observation row must hold one contiguous, non-empty run of real tokens in 'attention_mask' "
            "(prompt then generated tokens), as TextGenerationEnv produces."
        )
    return first, last, length


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions 0, 1, ... along the real tokens (padding gets 0), as ``generate`` does for left padding."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def _powers(length: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    key = (length, str(device))
    if key not in _POWERS:
        p1, p2, a, b = [], [], 1, 1
        for _ in range(length):
            p1.append(a)
            p2.append(b)
            a, b = a * _R1 % _P1, b * _R2 % _P2
        _POWERS[key] = (torch.tensor(p1, device=device), torch.tensor(p2, device=device))
    return _POWERS[key]


def group_by_prefix(
    input_ids: torch.Tensor, attention_mask: torch.Tensor, actions: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Map every row to a *root* row whose context contains it, and the root position that predicts its action.

    Row ``i`` (context ``c_i``, action ``a_i``) is covered by row ``j`` when ``c_i + [a_i]`` is a prefix of
    ``c_j + [a_j]`` (without actions: when ``c_i`` is a prefix of ``c_j``). The hidden state at position
    ``first_j + len(c_i) - 1`` of row ``j`` is then exactly the one that row ``i`` needs (causal attention).
    Each row maps to the longest row covering it, which is never covered itself: a root.

    Prefix matches are found with a double polynomial hash and then verified token by token, so the result is
    exact: a row whose match fails the check becomes its own root.

    :return: ``root`` (B,) index of the root row of each row, and ``position`` (B,) index into the root's
        observation of the hidden state that predicts the row's next token.
    """
    ids = input_ids.long()  # (B, L)
    mask = attention_mask.long()  # (B, L)
    batch, seq_len = ids.shape
    device = ids.device
    first, last, length = context_bounds(mask)
    rows = torch.arange(batch, device=device)
    if actions is not None:
        # Full sequences: the context followed by the action, in one extra column.
        ids = torch.cat([ids, ids.new_zeros(batch, 1)], 1)  # (B, L+1)
        mask = torch.cat([mask, mask.new_zeros(batch, 1)], 1)  # (B, L+1)
        ids[rows, last + 1] = actions.reshape(-1).long()
        mask[rows, last + 1] = 1
    full_last = last + (1 if actions is not None else 0)  # (B,)
    full_length = length + (1 if actions is not None else 0)  # (B,)

    relative = position_ids_from_mask(mask)  # (B, L') index within the run
    pow1, pow2 = _powers(ids.shape[1], device)
    token = (ids + 1) * mask  # (B, L') 0 on padding
    prefix1 = (token * pow1[relative] % _P1).cumsum(1) % _P1  # (B, L') hash of the run up to each column
    prefix2 = (token * pow2[relative] % _P2).cumsum(1) % _P2
    prefix = prefix1 * _P2 + prefix2  # (B, L') combined 62-bit key

    # For every distinct prefix, the longest row holding it (ties: lowest index).
    valid = mask.bool()  # (B, L')
    entry_rows = rows[:, None].expand_as(mask)[valid]  # (M,)
    entry_keys = prefix[valid]  # (M,)
    unique_keys, inverse = torch.unique(entry_keys, return_inverse=True)  # (U,), (M,)
    rank = full_length[entry_rows] * batch + (batch - 1 - entry_rows)  # (M,) larger = preferred
    best = torch.full_like(unique_keys, -1).scatter_reduce(0, inverse, rank, reduce="amax")  # (U,)
    own_keys = prefix[rows, full_last]  # (B,) key of each row's full sequence
    root = batch - 1 - best[torch.searchsorted(unique_keys, own_keys)] % batch  # (B,)

    # Verify token by token: row i's run, shifted to the root's start, must match the root.
    shift = first[root] - first  # (B,)
    index = (torch.arange(ids.shape[1], device=device)[None, :] + shift[:, None]).clamp(0, ids.shape[1] - 1)
    aligned = ids[root].gather(1, index)  # (B, L') root tokens in row i's coordinates
    ok = ((aligned == ids) | ~valid).all(1) & (full_length <= full_length[root])
    root = torch.where(ok, root, rows)
    position = first[root] + length - 1  # (B,)
    return root, position


#: The shortest common prefix worth its own pass in :func:`shared_prompt_clusters`.
MIN_SHARED_TOKENS = 8


def shared_prompt_clusters(
    input_ids: torch.Tensor, attention_mask: torch.Tensor, min_shared: int = MIN_SHARED_TOKENS
) -> tuple[torch.Tensor, torch.Tensor]:
    """Group rows that start with the same tokens (the completions of one prompt) and the prefix each group shares,
    chosen to save the most tokens: a group of ``n`` rows sharing ``p`` tokens saves ``(n - 1) p`` token positions
    when the prefix is encoded once.

    Rows are sorted by their real tokens; the common prefix of neighbours splits the sorted list recursively at its
    weakest link wherever the two halves save more than the whole (so completions of two prompts that share only a
    system prompt form two groups, each sharing its whole prompt). A prefix stops one token before its shortest
    row's end (every row keeps a token of its own), and one shorter than ``min_shared`` is not shared.

    :return: ``cluster`` (B,) the group of each row, and ``prefix`` (C,) the number of real tokens its rows share
        (0: a row alone, encoded whole).
    """
    ids, mask = input_ids.long(), attention_mask.long()  # (B, L)
    batch, width = ids.shape
    first, last, length = context_bounds(mask)
    index = first[:, None] + torch.arange(width, device=ids.device)[None, :]  # (B, L)
    aligned = torch.where(index <= last[:, None], ids.gather(1, index.clamp(max=width - 1)), -1)  # (B, L) from 0
    _, rank = torch.unique(aligned, dim=0, return_inverse=True)  # lexicographic rank of each row
    order = torch.argsort(rank, stable=True)  # (B,)
    ordered, ordered_length = aligned[order], length[order]
    same = (ordered[1:] == ordered[:-1]) & (ordered[1:] >= 0)  # (B-1, L)
    common_tokens = same.long().cumprod(1).sum(1)  # (B-1,) common prefix of sorted neighbours
    shortest = torch.minimum(ordered_length[1:], ordered_length[:-1])  # (B-1,)
    common: list[int] = torch.minimum(common_tokens, shortest - 1).tolist()

    cluster = torch.empty(batch, dtype=torch.long, device=ids.device)
    prefixes = []
    for number, (start, stop, shared) in enumerate(_best_groups(common, min_shared)):
        cluster[order[start:stop]] = number
        prefixes.append(shared)
    return cluster, torch.tensor(prefixes, dtype=torch.long, device=ids.device)


def _best_groups(common: list[int], min_shared: int) -> list[tuple[int, int, int]]:
    """Groups ``(start, stop, prefix)`` of sorted rows (``common[i]``: the prefix rows ``i`` and ``i + 1`` share)
    saving the most positions: a range is one group sharing its weakest link, or its two sides split there, whichever
    saves more. Evaluated without recursion (a long run of equal links would otherwise nest one call per row)."""
    rows = len(common) + 1
    if common and min(common) >= min_shared and min(common) == max(common):  # one prompt's completions: one group
        return [(0, rows, common[0])]
    links = np.asarray(common)
    best: dict[tuple[int, int], list[tuple[int, int, int]]] = {}
    stack: list[tuple[int, int, bool]] = [(0, rows, False)]
    while stack:
        start, stop, split_done = stack.pop()
        if stop - start == 1:
            best[start, stop] = [(start, stop, 0)]
            continue
        span = links[start : stop - 1]
        weakest = start + int(np.argmin(span))
        if not split_done:
            stack += [(start, stop, True), (start, weakest + 1, False), (weakest + 1, stop, False)]
            continue
        parts = best.pop((start, weakest + 1)) + best.pop((weakest + 1, stop))
        shared = int(span.min()) if int(span.min()) >= min_shared else 0
        whole_saves = (stop - start - 1) * shared
        best[start, stop] = [(start, stop, shared)] if shared and whole_saves >= _saved(parts) else parts
    return best[0, rows]


def _saved(groups: list[tuple[int, int, int]]) -> int:
    return sum((stop - start - 1) * shared for start, stop, shared in groups)
