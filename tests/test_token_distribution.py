"""log_prob_and_entropy: Categorical's values and gradients, with one (N, V) tensor kept for backward."""

from __future__ import annotations

import pytest
import torch
from torch.distributions import Categorical

from agents.common.policy import MASKED_LOGIT, mask_logits
from agents.common.token_distribution import log_prob_and_entropy


def _reference(logits: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    distribution = Categorical(logits=logits)
    return distribution.log_prob(actions), distribution.entropy()


@pytest.mark.parametrize("masked", [False, True])
def test_values_and_gradients_match_categorical(masked: bool) -> None:
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(12, 50, generator=generator, dtype=torch.float64) * 3
    actions = torch.randint(0, 50, (12,), generator=generator)
    if masked:  # half the vocabulary forbidden, never the taken token
        masks = torch.rand(12, 50, generator=generator) < 0.5
        masks[torch.arange(12), actions] = True
        logits = mask_logits(logits, masks.numpy(), MASKED_LOGIT)
    weights = torch.randn(2, 12, generator=generator, dtype=torch.float64)  # arbitrary upstream gradients

    grads = []
    for fn in (log_prob_and_entropy, _reference):
        leaf = logits.clone().requires_grad_(True)
        log_prob, entropy = fn(leaf, actions)
        (weights[0] @ log_prob + weights[1] @ entropy).backward()
        grads.append((log_prob.detach(), entropy.detach(), leaf.grad))
    for ours, torch_value in zip(grads[0], grads[1], strict=True):
        torch.testing.assert_close(ours, torch_value, rtol=1e-9, atol=1e-9)
    assert torch.isfinite(grads[0][2]).all()


def test_gradcheck() -> None:
    logits = torch.randn(4, 7, dtype=torch.float64, requires_grad=True)
    actions = torch.tensor([0, 3, 6, 2])
    assert torch.autograd.gradcheck(lambda z: log_prob_and_entropy(z, actions), (logits,))


def test_keeps_one_vocabulary_sized_tensor_for_backward() -> None:
    """Autograd's saved tensors of size (N, V): one here; Categorical keeps several."""
    logits = torch.randn(8, 1000, requires_grad=True)
    actions = torch.randint(0, 1000, (8,))

    def saved_vocabulary_tensors(fn) -> int:  # type: ignore[no-untyped-def]
        saved: list[torch.Tensor] = []
        with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
            log_prob, entropy = fn(logits * 1.0, actions)
        return sum(t.numel() == logits.numel() for t in {id(t): t for t in saved}.values())

    assert saved_vocabulary_tensors(log_prob_and_entropy) == 1
    assert saved_vocabulary_tensors(_reference) >= 3


def test_bad_shapes_and_dtypes_are_named() -> None:
    with pytest.raises(ValueError, match=r"logits \(N, V\) and actions \(N,\)"):
        log_prob_and_entropy(torch.zeros(2, 3), torch.zeros(3, dtype=torch.long))
    with pytest.raises(TypeError, match="float32 or float64"):
        log_prob_and_entropy(torch.zeros(2, 3, dtype=torch.bfloat16), torch.zeros(2, dtype=torch.long))
