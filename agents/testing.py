"""Tiny, randomly initialised model configs for tests, smoke runs and benchmarks: CPU-fast, nothing downloaded."""

from __future__ import annotations

from typing import Any


def tiny_gpt2_config(vocab_size: int = 100, **overrides: Any) -> Any:
    """A 2-layer GPT-2 over the ``"char"`` tokenizer's 100 ids (EOS 1, BOS 2): seconds per test on CPU."""
    from transformers import GPT2Config

    settings: dict[str, Any] = dict(
        vocab_size=vocab_size, n_positions=64, n_embd=32, n_layer=2, n_head=2, bos_token_id=2, eos_token_id=1
    )
    settings.update(overrides)
    return GPT2Config(**settings)


def tiny_llama_config(**overrides: Any) -> Any:
    """A 2-layer Llama (SmolLM2's architecture family) over SmolLM2's 49,152-token vocabulary."""
    from transformers import LlamaConfig

    settings: dict[str, Any] = dict(
        vocab_size=49152, hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=256, bos_token_id=1, eos_token_id=2, pad_token_id=2,
    )  # fmt: skip
    settings.update(overrides)
    return LlamaConfig(**settings)
