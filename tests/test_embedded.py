"""The embedded default model: converted once from GGUF into a cached directory, atomically, and identical."""

from __future__ import annotations

import multiprocessing
import time
from pathlib import Path

import pytest
import torch

from text_env import embedded
from text_env.embedded import cached_conversion


def _entries(directory: Path) -> list[str]:
    """What a directory holds besides the conversions' lock files (``<target>.lock``, kept for the next one)."""
    return sorted(p.name for p in directory.iterdir() if p.suffix != ".lock")


def _write_marker(directory: Path) -> None:
    (directory / "weights.bin").write_bytes(b"converted")


def test_conversion_runs_once_and_later_calls_reuse_it(tmp_path: Path) -> None:
    calls = []

    def convert(directory: Path) -> None:
        calls.append(directory)
        _write_marker(directory)

    first = cached_conversion(tmp_path / "model", convert)
    second = cached_conversion(tmp_path / "model", convert)
    assert first == second == tmp_path / "model"
    assert len(calls) == 1 and calls[0] != first  # written in a staging directory, then renamed
    assert (first / "weights.bin").read_bytes() == b"converted"
    assert _entries(tmp_path) == ["model"]  # no staging directory left behind


def test_a_failed_conversion_leaves_no_cache_and_no_staging_directory(tmp_path: Path) -> None:
    def convert(directory: Path) -> None:
        _write_marker(directory)  # half-written, then interrupted
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        cached_conversion(tmp_path / "model", convert)
    assert _entries(tmp_path) == []
    calls = []
    cached_conversion(tmp_path / "model", lambda d: (calls.append(d), _write_marker(d)))
    assert len(calls) == 1  # the next call converts again


def _slow_conversion(target: str, log: str) -> None:
    """Run in a subprocess: convert ``target`` slowly, appending one line to ``log`` per conversion made."""

    def convert(directory: Path) -> None:
        with open(log, "a", encoding="utf-8") as handle:
            handle.write("converted\n")
        time.sleep(0.5)  # long enough for the other processes to arrive while this one converts
        _write_marker(directory)

    cached_conversion(Path(target), convert)


def test_processes_starting_together_convert_once(tmp_path: Path) -> None:
    context = multiprocessing.get_context("spawn")
    log = tmp_path / "conversions.log"
    workers = [context.Process(target=_slow_conversion, args=(str(tmp_path / "model"), str(log))) for _ in range(3)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0
    assert log.read_text().splitlines() == ["converted"]
    assert (tmp_path / "model" / "weights.bin").read_bytes() == b"converted"


def test_the_test_suite_has_its_own_cache() -> None:
    """conftest.py points the cache at the checkout's .pytest_cache, never at the user's ~/.cache."""
    assert embedded.cache_root() == Path(__file__).resolve().parent.parent / ".pytest_cache" / "text_env"


def test_a_conversion_finished_first_by_another_process_is_kept(tmp_path: Path) -> None:
    target = tmp_path / "model"

    def convert(directory: Path) -> None:
        target.mkdir()  # another process renames its result into place meanwhile
        (target / "weights.bin").write_bytes(b"theirs")
        _write_marker(directory)

    assert cached_conversion(target, convert) == target
    assert (target / "weights.bin").read_bytes() == b"theirs"
    assert _entries(tmp_path) == ["model"]


def test_cache_location_follows_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TEXT_ENV_CACHE", str(tmp_path / "mine"))
    assert embedded.cache_root() == tmp_path / "mine"
    monkeypatch.delenv("TEXT_ENV_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert embedded.cache_root() == tmp_path / "xdg" / "text_env"


def test_the_converted_smollm2_equals_the_gguf_file() -> None:
    """The real embedded model (~70 s; the conversion happens once per checkout, in the test suite's own cache):
    same token ids, special tokens and logits as loading the GGUF directly."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    directory = embedded.embedded_checkpoint_dir()
    assert directory.parent == embedded.cache_root() and (directory / "model.safetensors").is_file()
    assert embedded.embedded_checkpoint_dir() == directory

    source = embedded.embedded_gguf_dir()
    text = "The film opens with a long shot of the sea, and ünïcode 🎬 <|im_end|>\n"
    converted_tokenizer = AutoTokenizer.from_pretrained(directory)
    gguf_tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=embedded.EMBEDDED_GGUF_FILE)
    ids = gguf_tokenizer(text).input_ids
    assert converted_tokenizer(text).input_ids == ids
    for name in ("eos_token_id", "pad_token_id", "bos_token_id"):
        assert getattr(converted_tokenizer, name) == getattr(gguf_tokenizer, name)

    converted = AutoModelForCausalLM.from_pretrained(directory)
    gguf = AutoModelForCausalLM.from_pretrained(source, gguf_file=embedded.EMBEDDED_GGUF_FILE)
    with torch.no_grad():
        batch = torch.tensor([ids])
        assert torch.equal(converted(batch).logits, gguf(batch).logits)
