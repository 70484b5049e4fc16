"""Three parts of the training configuration, each with its checks: the run, the task and the model.

The other two parts are the KL settings (:class:`agents.common.kl.KLSettings`) and the algorithm's own settings
(:mod:`agents.common.settings`); :class:`agents.cli.config.TrainConfig` composes the five. A field is a flag of the
same name (``--eval-prompts``); its ``metadata["help"]`` is the flag's help.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agents.common.checks import at_least, option, raise_problems
from agents.common.policy import COMPUTE_DTYPES

DEVICES = ("cpu", "cuda", "auto")
#: SmolLM2-135M-Instruct's embedding rows (its tokenizer has as many tokens).
EMBEDDED_VOCAB_SIZE = 49152
#: The main job's task.
MAIN_ENV_ID = "text_env/PositiveReview-v0"


@dataclass
class RunOptions:
    """Where the run writes, how long it lasts, its seed and device."""

    name: str = option("positive-review", "run name: outputs go to <output_dir>/<name>/")
    output_dir: str = option("runs", "directory holding the runs")
    overwrite: bool = option(False, "reuse <output_dir>/<name> (default: an earlier run's directory is kept)")
    checkpoint_every: int = option(
        10, "save an exactly resumable checkpoint in <run>/checkpoints every N rollouts (0: never)"
    )
    keep_checkpoints: int = option(2, "checkpoints kept (the newest)")
    resume: str | None = option(
        None,
        "continue the run in this directory from its newest checkpoint, with its config.yaml (flags given with it "
        "win, e.g. --budget-minutes)",
    )
    seed: int = option(0, "random seed (SB3 seeds numpy, torch and the envs)")
    device: str = option("cpu", "torch device: cpu, cuda or auto")
    budget_minutes: float = option(
        16.0, "wall-clock budget of training, with its periodic evaluations (not the first and last)"
    )
    total_timesteps: int = option(1_000_000, "upper bound on environment steps")
    tensorboard_log: str | None = option(None, "TensorBoard directory (optional)")
    keep_freed_memory: bool = option(
        True,
        "reuse freed memory in the C heap instead of returning it to the system (glibc; "
        "agents.common.resources.keep_freed_memory): on CPU updates take ~0.8x the time and iterations ~0.88x, for a "
        "peak up to a tenth higher",
    )

    def __post_init__(self) -> None:
        problems = at_least(self, {"checkpoint_every": 0, "keep_checkpoints": 1, "total_timesteps": 1})
        problems += at_least(self, {"budget_minutes": 0}, strict=("budget_minutes",))
        if self.device not in DEVICES:
            problems.append(f"device must be one of {DEVICES}, got {self.device!r}")
        raise_problems(problems)

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir) / self.name

    def check_environment(self) -> None:
        """What needs imports: the device is there, the optional packages asked for are installed."""
        import torch

        if self.tensorboard_log and importlib.util.find_spec("tensorboard") is None:
            raise ValueError(
                "--tensorboard-log needs the tensorboard package: pip install 'text-env-rl[tensorboard]' (or "
                "pip install tensorboard), or drop the option (metrics still go to logs/progress.csv)."
            )
        if self.device == "cuda" and not torch.cuda.is_available():
            raise ValueError("device='cuda' but PyTorch sees no CUDA GPU: use --device cpu (or auto).")


@dataclass
class TaskOptions:
    """The registered task, its envs and held-out evaluation, and the flags that assemble or override a task."""

    env_id: str = option(MAIN_ENV_ID, "registered environment id")
    n_envs: int = option(32, "parallel environments (episodes per rollout and env step)")
    eval_prompts: int = option(64, "held-out test prompts evaluated before/after (0: all)")
    eval_samples: int = option(2, "completions sampled per held-out prompt (1 sample of 64 varies by ~0.06)")
    eval_every: int = option(10, "evaluate every N rollouts during training (each costs ~2 rollouts' time)")
    eval_batch_size: int = option(64, "held-out prompts generated together (64: ~1.8x faster than 16 on CPU)")
    # --- a task from flags (each overrides the registered env's own; text_env/TextGeneration-v0 needs all three)
    prompts: str | None = option(None, "training prompts: a .txt (one a line) or .jsonl file")
    eval_prompts_file: str | None = option(
        None, "held-out prompts file; default: the task's own, else a slice of --prompts"
    )
    reward: str | None = option(
        None,
        "reward spec: sentiment, keyword:good,great, length:40, classifier:DIR[:LABEL], embedding:TEXT, "
        "python:module:function; terms joined by + with optional weights (0.5*length:40)",
    )
    tokenizer: str | None = option(None, "tokenizer name or directory (default: the task's, else --model's)")
    max_new_tokens: int | None = option(None, "completion length (default: the task's)")
    max_prompt_tokens: int | None = option(None, "prompt length (default: the task's)")
    dense_reward: bool | None = option(
        None,
        "pay the score's change at every token (same return, potential-based shaping): a token is not credited "
        "with words written before it. Default: the task's choice (text_env.Task.dense_reward), else on for cheap "
        "reward specs (sentiment, keyword, length) and off for neural or Python ones, which it would call at every "
        "token",
    )

    def __post_init__(self) -> None:
        minimums = {"n_envs": 1, "eval_prompts": 0, "eval_samples": 1, "eval_every": 1, "eval_batch_size": 1}
        raise_problems(at_least(self, {**minimums, "max_new_tokens": 1, "max_prompt_tokens": 1}))

    def check(self, model: str) -> None:
        """Checks that need imports but no model weights: the env id is registered, files exist, the reward spec
        parses, the tokenizer fits ``model``'s vocabulary (read from its config) and a generic env gets everything
        it needs."""
        import gymnasium as gym

        import text_env  # noqa: F401  (registers the ids)
        from text_env.rewards.spec import check_reward_spec

        if self.env_id not in gym.registry:
            known = sorted(k for k in gym.registry if k.startswith("text_env/"))
            raise ValueError(f"Unknown env_id {self.env_id!r}; registered text envs: {known}.")
        for name in ("prompts", "eval_prompts_file"):
            path = getattr(self, name)
            if path is not None and not Path(path).is_file():
                raise ValueError(f"--{name.replace('_', '-')} {path!r} is not a file (.txt or .jsonl).")
        if self.reward is not None:
            check_reward_spec(self.reward)
        if self.env_id == "text_env/TextGeneration-v0" and (self.prompts is None or self.reward is None):
            raise ValueError("text_env/TextGeneration-v0 is assembled from flags: give --prompts and --reward.")
        vocab = model_vocab_size(model)
        tokenizer_name = self.tokenizer_name(model)
        if vocab is not None and tokenizer_name is not None:
            from text_env.tokenizers import resolve_tokenizer

            try:
                size = len(resolve_tokenizer(tokenizer_name))
            except (OSError, ValueError) as error:
                raise ValueError(f"--tokenizer {tokenizer_name!r} cannot be loaded: {error}") from None
            if size > vocab or vocab - size > max(1024, vocab // 20):  # models pad embeddings a little, not more
                raise ValueError(
                    f"The tokenizer {tokenizer_name!r} has {size} tokens but the model {model!r} {vocab}: they "
                    "do not belong together; use the model's own tokenizer (--tokenizer) or a matching model."
                )

    def tokenizer_name(self, model: str) -> str | None:
        """The tokenizer the task will use: ``--tokenizer``, else the registered env's default (read from its entry
        point's signature), else ``model``'s own (``text_env/TextGeneration-v0``)."""
        if self.tokenizer is not None:
            return self.tokenizer
        import inspect

        import gymnasium as gym

        entry_point = gym.registry[self.env_id].entry_point
        factory = gym.envs.registration.load_env_creator(entry_point) if isinstance(entry_point, str) else entry_point
        if factory is None:
            return model
        default = inspect.signature(factory).parameters.get("tokenizer")
        if default is not None and isinstance(default.default, str):
            return default.default
        return model

    def env_kwargs(self, model: str) -> dict[str, Any]:
        """``gymnasium.make`` kwargs from the task flags (prompts, reward model, tokenizer, lengths) and the
        vocabulary of ``model`` (the action space is its output layer)."""
        from text_env.rewards.spec import reward_from_spec

        kwargs: dict[str, Any] = {}
        if self.prompts is not None:
            kwargs["prompts"] = self.prompts
        if self.reward is not None:
            kwargs["reward_model"] = reward_from_spec(self.reward)
        if self.tokenizer is not None or self.env_id == "text_env/TextGeneration-v0":
            kwargs["tokenizer"] = self.tokenizer_name(model)
        for name in ("max_new_tokens", "max_prompt_tokens"):
            if getattr(self, name) is not None:
                kwargs[name] = getattr(self, name)
        if self.dense_reward_on():
            kwargs["dense_reward"] = True
        vocab = model_vocab_size(model)
        if vocab is not None:
            kwargs["vocab_size"] = vocab
        return kwargs

    def dense_reward_on(self) -> bool:
        """``dense_reward``, with ``None`` resolved: the task's own choice (:attr:`text_env.Task.dense_reward`), or
        for a reward spec, on when it is cheap to call at every token
        (:data:`~text_env.rewards.spec.CHEAP_KINDS`)."""
        from text_env import task_for
        from text_env.rewards.spec import is_cheap_reward_spec

        if self.dense_reward is not None:
            return self.dense_reward
        if self.reward is None:
            task = task_for(self.env_id)
            return task is not None and task.dense_reward
        return is_cheap_reward_spec(self.reward)


@dataclass
class ModelOptions:
    """The language model and how it is trained (LoRA, precision, activation checkpointing, temperature)."""

    model: str = option("smollm2-135m-instruct", "model name or local directory")
    lora_r: int = option(16, "LoRA rank on all linear layers; 0 fine-tunes all weights")
    lora_alpha: int = option(32, "LoRA alpha (scaling = alpha / r)")
    temperature: float = option(1.0, "sampling temperature, also used in log-probs (TRL)")
    compute_dtype: str = option(
        "auto",
        "float32, bfloat16 or auto: dtype of the transformer matmuls (autocast; fp32 weights, log-probs, and heads "
        "unless --head-dtype); "
        "auto is bfloat16 where the hardware runs it natively (CPU AVX512-BF16/AMX, CUDA), else float32",
    )
    head_dtype: str = option(
        "float32",
        "float32 or bfloat16: dtype of the LM head's matmul; bfloat16 rounds the logits as whole-model bf16 "
        "autocast does (TRL's bf16), for faster decoding and updates",
    )
    gradient_checkpointing: bool = option(
        False, "recompute layer activations in the backward pass of updates: less memory, ~1 more forward"
    )

    def __post_init__(self) -> None:
        problems = at_least(self, {"lora_r": 0, "lora_alpha": 1}) + at_least(self, {"temperature": 0}, ("temperature",))
        if self.compute_dtype not in (*COMPUTE_DTYPES, "auto"):
            problems.append(
                f"compute_dtype must be one of {[*sorted(COMPUTE_DTYPES), 'auto']}, got {self.compute_dtype!r}"
            )
        if self.head_dtype not in COMPUTE_DTYPES:
            problems.append(f"head_dtype must be one of {sorted(COMPUTE_DTYPES)}, got {self.head_dtype!r}")
        raise_problems(problems)

    def check_environment(self) -> None:
        if self.lora_r > 0 and importlib.util.find_spec("peft") is None:
            raise ValueError(
                f"--lora-r {self.lora_r} needs peft: pip install 'text-env-rl[lora]', or pass --lora-r 0 to "
                "fine-tune all weights."
            )

    def resolved_compute_dtype(self, device: str) -> str:
        """``compute_dtype``, with ``auto`` resolved for ``device`` (:func:`native_bfloat16`)."""
        if self.compute_dtype != "auto":
            return self.compute_dtype
        return "bfloat16" if native_bfloat16(device) else "float32"

    def policy_kwargs(self, device: str, model: Any = None) -> dict[str, Any]:
        """The LM policy's settings; ``model`` (e.g. a ``PretrainedConfig``) replaces ``self.model``."""
        kwargs: dict[str, Any] = dict(
            model=self.model if model is None else model,
            temperature=self.temperature,
            compute_dtype=self.resolved_compute_dtype(device),
            head_dtype=self.head_dtype,
            gradient_checkpointing=self.gradient_checkpointing,
        )
        if self.lora_r > 0:
            kwargs["lora"] = dict(r=self.lora_r, lora_alpha=self.lora_alpha, target_modules="all-linear")
        return kwargs


def model_vocab_size(model: str) -> int | None:
    """The model's vocabulary size from its config alone (no weights), or ``None`` when unknown."""
    from text_env.embedded import EMBEDDED_MODEL

    if model == EMBEDDED_MODEL:
        return EMBEDDED_VOCAB_SIZE
    if Path(model).is_dir():
        from transformers import AutoConfig

        try:
            config = AutoConfig.from_pretrained(model)
        except (OSError, ValueError) as error:
            raise ValueError(f"--model {model!r} has no readable config.json: {error}") from None
        vocab = getattr(config, "vocab_size", None)
        return int(vocab) if isinstance(vocab, int) else None
    raise ValueError(
        f"--model {model!r} is neither {EMBEDDED_MODEL!r} nor a local directory saved with save_pretrained."
    )


def native_bfloat16(device: str, cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Whether bf16 matmuls run natively on ``device``: a CUDA GPU with bf16 support, or a CPU with AVX512-BF16 or
    AMX-BF16 (read from ``/proc/cpuinfo``; elsewhere the CPU path stays float32, where bf16 would be emulated).
    On this project's 2-core AVX512-BF16 machine bf16 made a PPO iteration 1.4x faster (``docs/calibration.md``)."""
    import torch

    if device in ("cuda", "auto") and torch.cuda.is_available():
        return bool(torch.cuda.is_bf16_supported())
    try:
        flags = cpuinfo.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def world_size() -> int:
    """Data-parallel processes (torchrun's ``WORLD_SIZE``; 1 in a plain run)."""
    return int(os.environ.get("WORLD_SIZE", "1"))
