"""Log-probabilities of the taken tokens and the entropy of the next-token distribution, lean on memory.

A PPO or GRPO update scores every transition of a minibatch at once: ``(N, V)`` logits with N = episodes x new
tokens and V ~ 50k (72 MiB for 384 transitions of SmolLM2). Through ``torch.distributions.Categorical`` autograd
keeps four tensors of that size alive until the backward pass (288 MiB there: the logits, the normalised logits,
the probabilities and their clamped copy), on top of the trunk's activations, at the peak of the update.
:func:`log_prob_and_entropy` computes the same two values with an analytic gradient that keeps only the logits.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.autograd.function import once_differentiable


class _LogProbAndEntropy(torch.autograd.Function):
    """``log softmax(z)[a]`` and ``H(softmax(z))`` per row; saves only ``z`` for the backward pass.

    With ``log p = z - logsumexp(z)`` and ``H = -sum p log p``:
    ``d log p_a / dz = onehot(a) - p`` and ``dH / dz = -p (log p + H)``.
    """

    @staticmethod
    def forward(ctx: Any, logits: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        log_norm = torch.logsumexp(logits, dim=-1)  # (N,)
        log_prob = logits.gather(1, actions[:, None]).squeeze(1) - log_norm  # (N,)
        probs = torch.softmax(logits, dim=-1)  # (N, V), freed on return
        entropy = log_norm - torch.linalg.vecdot(probs, logits)  # (N,)
        ctx.save_for_backward(logits, actions, log_norm, entropy)
        return log_prob, entropy

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_log_prob: torch.Tensor, grad_entropy: torch.Tensor) -> tuple[torch.Tensor, None]:
        logits, actions, log_norm, entropy = ctx.saved_tensors
        log_probs = logits - log_norm[:, None]  # (N, V)
        probs = log_probs.exp()  # (N, V)
        # grad = -p * (g_lp + g_H * (log p + H)) + g_lp * onehot(a), in place on the two (N, V) buffers.
        # p * (log p + H) comes first: a masked token (p = 0, log p ~ -1e8) gives 0, never 0 * inf.
        grad = log_probs.add_(entropy[:, None]).mul_(probs).mul_(grad_entropy[:, None])
        grad.add_(probs.mul_(grad_log_prob[:, None])).neg_()
        grad.scatter_add_(1, actions[:, None], grad_log_prob[:, None])
        return grad, None


def log_prob_and_entropy(logits: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probabilities of ``actions`` ``(N,)`` and entropies ``(N,)`` of the categorical distributions with
    ``logits`` ``(N, V)``: ``Categorical(logits=logits).log_prob(actions)`` and ``.entropy()``, with the same values
    and gradients, holding one ``(N, V)`` tensor for the backward pass instead of four.

    Masked tokens must carry a large finite negative logit (sb3-contrib's ``MaskableCategorical`` uses -1e8), not
    ``-inf``: their probability is then 0 and they add nothing to the entropy, as there.
    """
    if logits.dim() != 2 or actions.shape != logits.shape[:1]:
        raise ValueError(
            f"Expected logits (N, V) and actions (N,), got {tuple(logits.shape)} and {tuple(actions.shape)}."
        )
    if logits.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"Compute log-probabilities in float32 or float64, got {logits.dtype}: cast the logits first.")
    log_prob, entropy = _LogProbAndEntropy.apply(logits, actions.long())
    return log_prob, entropy
