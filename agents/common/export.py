"""Export a trained policy's language model as a plain Hugging Face directory, atomically."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

from torch import nn
from transformers import PreTrainedModel

from agents.common.models import unwrap_peft
from agents.common.policy import CausalLMPolicyBase
from text_env.atomic import atomic_directory
from text_env.tokenizers import resolve_tokenizer


def _language_model(model_or_policy: Any) -> tuple[nn.Module, Any]:
    """The LM to export and the model spec it came from (to find a tokenizer)."""
    policy = getattr(model_or_policy, "policy", model_or_policy)
    if isinstance(policy, CausalLMPolicyBase):
        return policy.lm, policy.model_spec
    if isinstance(model_or_policy, nn.Module):
        return model_or_policy, getattr(getattr(model_or_policy, "config", None), "_name_or_path", None)
    raise TypeError(
        f"Expected an SB3 model with a CausalLMPolicy, a policy or a transformers model, got {model_or_policy!r}."
    )


def export_pretrained(model_or_policy: Any, directory: str | os.PathLike[str], tokenizer: Any = None) -> Path:
    """Write ``directory`` so that ``AutoModelForCausalLM.from_pretrained`` and ``AutoTokenizer.from_pretrained``
    load it. LoRA adapters are merged into the weights (on a copy; the policy keeps training as it was).

    :param model_or_policy: a PPO/A2C/... model, its ``CausalLMPolicy``, or a transformers model.
    :param tokenizer: a tokenizer or a name (``"smollm2-135m-instruct"``, ``"char"``, a directory); by default the
        tokenizer of the policy's model name.
    The directory is written beside its final place and renamed into it, so an interrupted export never leaves a
    half-written model; an existing directory is replaced only once the new one is complete.
    """
    lm, spec = _language_model(model_or_policy)
    if tokenizer is None:
        if not isinstance(spec, (str, os.PathLike)) or not spec:
            raise ValueError(
                "export_pretrained needs a tokenizer when the policy's model was not given by name or path: "
                "pass tokenizer=env.unwrapped.tokenizer (or a tokenizer name)."
            )
        tokenizer = spec
    tokenizer = resolve_tokenizer(tokenizer)
    if hasattr(lm, "merge_and_unload"):  # peft: fold the adapters into a copy of the weights
        lm = copy.deepcopy(lm).merge_and_unload()  # type: ignore[operator]  # a peft model's method
    lm = unwrap_peft(lm)
    if not isinstance(lm, PreTrainedModel):
        raise TypeError(f"Cannot export {type(lm).__name__}: it is not a transformers PreTrainedModel.")

    def write(staging: Path) -> None:
        lm.save_pretrained(staging)
        tokenizer.save_pretrained(staging)

    target = atomic_directory(directory, write, replace=True)
    return target
