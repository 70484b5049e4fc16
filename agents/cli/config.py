"""The training configuration: one dataclass, loadable from YAML, overridable from the command line.

Defaults are for the main job, PPO on ``text_env/PositiveReview-v0`` with SmolLM2-135M-Instruct on 2 CPU cores, and
say where each comes from:

- TRL ``PPOConfig`` (v0.11) and its sentiment example: ``gamma=1``, ``lam=0.95``, ``cliprange=0.2``,
  ``vf_coef=0.1``, ``ppo_epochs=4``, adaptive KL with ``init_kl_coef=0.2``, ``target=6``, ``horizon=10000``,
  ``temperature=1``, learning rate 1.41e-5, advantage whitening;
- "The N Implementation Details of RLHF with PPO" (Huang et al. 2024): dropout off, zero-initialised value head,
  the KL penalty on the reward per token, no entropy bonus;
- RL4LMs' IMDB settings (Ramamurthy et al. 2023): 48 new tokens, ``n_steps`` of one episode per env, batch of
  episodes, ``target_kl`` around 0.1 per token.

The CPU calibration runs behind the defaults, with their figures, are in ``docs/calibration.md``.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agents.common.policy import COMPUTE_DTYPES
from agents.grpo.objective import KL_ESTIMATORS, group_size_problems
from agents.registry import ALGORITHMS

DEVICES = ("cpu", "cuda", "auto")


@dataclass
class TrainConfig:
    """Options of ``python -m agents.train``; each field is a command-line flag (``--learning-rate 1e-5``)."""

    # --- run
    name: str = field(default="positive-review", metadata={"help": "run name: outputs go to <output_dir>/<name>/"})
    output_dir: str = field(default="runs", metadata={"help": "directory holding the runs"})
    overwrite: bool = field(
        default=False, metadata={"help": "reuse <output_dir>/<name> (default: an earlier run's directory is kept)"}
    )
    checkpoint_every: int = field(
        default=10,
        metadata={"help": "save an exactly resumable checkpoint in <run>/checkpoints every N rollouts (0: never)"},
    )
    keep_checkpoints: int = field(default=2, metadata={"help": "checkpoints kept (the newest)"})
    resume: str | None = field(
        default=None,
        metadata={
            "help": "continue the run in this directory from its newest checkpoint, with its config.yaml (flags "
            "given with it win, e.g. --budget-minutes)"
        },
    )
    seed: int = field(default=0, metadata={"help": "random seed (SB3 seeds numpy, torch and the envs)"})
    device: str = field(default="cpu", metadata={"help": "torch device: cpu, cuda or auto"})
    budget_minutes: float = field(
        default=16.0,
        metadata={"help": "wall-clock budget of training, with its periodic evaluations (not the first and last)"},
    )
    total_timesteps: int = field(default=1_000_000, metadata={"help": "upper bound on environment steps"})
    tensorboard_log: str | None = field(default=None, metadata={"help": "TensorBoard directory (optional)"})
    # --- task
    env_id: str = field(default="text_env/PositiveReview-v0", metadata={"help": "registered environment id"})
    n_envs: int = field(default=32, metadata={"help": "parallel environments (episodes per rollout and env step)"})
    eval_prompts: int = field(default=64, metadata={"help": "held-out test prompts evaluated before/after (0: all)"})
    eval_samples: int = field(
        default=2, metadata={"help": "completions sampled per held-out prompt (1 sample of 64 varies by ~0.06)"}
    )
    eval_every: int = field(
        default=10, metadata={"help": "evaluate every N rollouts during training (each costs ~2 rollouts' time)"}
    )
    eval_batch_size: int = field(
        default=64, metadata={"help": "held-out prompts generated together (64: ~1.8x faster than 16 on CPU)"}
    )
    # --- task from flags (each overrides the registered env's own; text_env/TextGeneration-v0 needs all three)
    prompts: str | None = field(default=None, metadata={"help": "training prompts: a .txt (one a line) or .jsonl file"})
    eval_prompts_file: str | None = field(
        default=None, metadata={"help": "held-out prompts file; default: the task's own, else a slice of --prompts"}
    )
    reward: str | None = field(
        default=None,
        metadata={
            "help": "reward spec: sentiment, keyword:good,great, length:40, classifier:DIR[:LABEL], "
            "embedding:TEXT, python:module:function; terms joined by + with optional weights (0.5*length:40)"
        },
    )
    tokenizer: str | None = field(
        default=None, metadata={"help": "tokenizer name or directory (default: the task's, else --model's)"}
    )
    max_new_tokens: int | None = field(default=None, metadata={"help": "completion length (default: the task's)"})
    max_prompt_tokens: int | None = field(default=None, metadata={"help": "prompt length (default: the task's)"})
    dense_reward: bool | None = field(
        default=None,
        metadata={
            "help": "pay the score's change at every token (same return, potential-based shaping): a token is not "
            "credited with words written before it. Default: on for lexicon/rule rewards (the built-in tasks, "
            "sentiment, keyword, length), off for neural or Python ones, which it would call at every token"
        },
    )
    # --- model
    model: str = field(default="smollm2-135m-instruct", metadata={"help": "model name or local directory"})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank on all linear layers; 0 fine-tunes all weights"})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA alpha (scaling = alpha / r)"})
    temperature: float = field(default=1.0, metadata={"help": "sampling temperature, also used in log-probs (TRL)"})
    compute_dtype: str = field(
        default="auto",
        metadata={
            "help": "float32, bfloat16 or auto: dtype of the transformer matmuls (autocast; fp32 weights, heads, "
            "log-probs); auto is bfloat16 where the hardware runs it natively (CPU AVX512-BF16/AMX, CUDA), else float32"
        },
    )
    gradient_checkpointing: bool = field(
        default=False,
        metadata={"help": "recompute layer activations in the backward pass of updates: less memory, ~1 more forward"},
    )
    # --- KL penalty
    kl_coef: float = field(
        default=0.1, metadata={"help": "KL coefficient beta, initial if adaptive (TRL init_kl_coef 0.2; VADER's range)"}
    )
    kl_target: float | None = field(
        default=None,
        metadata={
            "help": "target KL per episode of the adaptive KL controller (TRL: 6); none (default) for a fixed beta: "
            "over a 16-minute run the controller moves beta by about one percent with its 10,000-episode horizon"
        },
    )
    kl_horizon: int = field(default=10_000, metadata={"help": "adaptive KL horizon in episodes (Ziegler et al.)"})
    # --- algorithm
    algorithm: str = field(default="ppo", metadata={"help": ", ".join(ALGORITHMS)})
    learning_rate: float = field(
        default=3.5e-4,
        metadata={"help": "optimizer learning rate (TRL: 1.41e-5 full fine-tuning; LoRA takes ~10x+)"},
    )
    n_steps: int = field(default=48, metadata={"help": "steps per env per rollout (48: one episode each)"})
    batch_size: int = field(default=384, metadata={"help": "minibatch size in transitions (384: 8 episodes)"})
    n_epochs: int = field(default=2, metadata={"help": "PPO epochs per rollout (TRL ppo_epochs: 4)"})
    gamma: float = field(default=1.0, metadata={"help": "discount (TRL: 1.0)"})
    gae_lambda: float | None = field(
        default=None,
        metadata={
            "help": "GAE lambda (TRL: 0.95). Default: 0.5 with the dense reward (a token's advantage sums ~2 tokens' "
            "score changes), 1.0 with a sparse one (the whole return arrives at the last token)"
        },
    )
    clip_range: float = field(default=0.2, metadata={"help": "PPO clip range (TRL cliprange)"})
    ent_coef: float = field(default=0.0, metadata={"help": "entropy bonus (0: the KL penalty regularises)"})
    vf_coef: float = field(default=0.1, metadata={"help": "value loss coefficient (TRL vf_coef)"})
    max_grad_norm: float = field(default=1.0, metadata={"help": "gradient clipping norm"})
    # --- group algorithms (grpo, dr_grpo, rloo): kl_coef is their KL strength, with no adaptive controller
    group_size: int = field(
        default=4, metadata={"help": "completions per prompt in the group algorithms (n_envs a multiple of it)"}
    )
    kl_estimator: str = field(default="k3", metadata={"help": "group algorithms: KL estimator k1, k2 or k3"})
    kl_in: str = field(
        default="loss", metadata={"help": "group algorithms: KL penalty in the 'loss' (GRPO) or the 'reward'"}
    )
    clip_range_high: float | None = field(
        default=None, metadata={"help": "group algorithms: upper clip range (DAPO clip-higher 0.28); none: clip_range"}
    )

    def __post_init__(self) -> None:
        problems = []
        if self.algorithm not in ALGORITHMS:
            problems.append(f"algorithm must be one of {ALGORITHMS}, got {self.algorithm!r}")
        if self.device not in DEVICES:
            problems.append(f"device must be one of {DEVICES}, got {self.device!r}")
        positive = ("n_envs", "n_steps", "batch_size", "n_epochs", "kl_horizon", "total_timesteps", "eval_every")
        for name in (*positive, "eval_batch_size", "eval_samples"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("max_new_tokens", "max_prompt_tokens"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1 or none, got {getattr(self, name)}")
        for name in ("learning_rate", "budget_minutes", "temperature", "clip_range"):
            if getattr(self, name) <= 0:
                problems.append(f"{name} must be > 0, got {getattr(self, name)}")
        if self.keep_checkpoints < 1:
            problems.append(f"keep_checkpoints must be >= 1, got {self.keep_checkpoints}")
        for name in ("kl_coef", "ent_coef", "vf_coef", "lora_r", "eval_prompts", "checkpoint_every"):
            if getattr(self, name) < 0:
                problems.append(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.kl_target is not None and self.kl_target <= 0:
            problems.append(f"kl_target must be > 0 or none, got {self.kl_target}")
        if not 0 < self.gamma <= 1 or (self.gae_lambda is not None and not 0 <= self.gae_lambda <= 1):
            problems.append("gamma must be in (0, 1] and gae_lambda in [0, 1]")
        if self.algorithm in ALGORITHMS and not ALGORITHMS[self.algorithm].critic:
            problems.extend(group_size_problems(self.group_size, self.n_envs, name=self.algorithm))
        if self.compute_dtype not in (*COMPUTE_DTYPES, "auto"):
            problems.append(
                f"compute_dtype must be one of {[*sorted(COMPUTE_DTYPES), 'auto']}, got {self.compute_dtype!r}"
            )
        if self.kl_estimator not in KL_ESTIMATORS:
            problems.append(f"kl_estimator must be one of {KL_ESTIMATORS}, got {self.kl_estimator!r}")
        if self.kl_in not in ("loss", "reward"):
            problems.append(f"kl_in must be 'loss' or 'reward', got {self.kl_in!r}")
        if self.clip_range_high is not None and self.clip_range_high <= 0:
            problems.append(f"clip_range_high must be > 0 or none, got {self.clip_range_high}")
        problems.extend(self._data_parallel_problems())
        if problems:
            raise ValueError("Invalid training configuration:\n  - " + "\n  - ".join(problems))

    def _data_parallel_problems(self) -> list[str]:
        """Under torchrun (``WORLD_SIZE`` > 1) ``n_envs`` and ``batch_size`` are totals, split evenly over the ranks."""
        import os

        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world == 1:
            return []
        problems = []
        for name in ("n_envs", "batch_size"):
            if getattr(self, name) % world:
                problems.append(
                    f"{name}={getattr(self, name)} is a total over {world} ranks: use a multiple of {world}"
                )
        if self.algorithm in ALGORITHMS and not ALGORITHMS[self.algorithm].critic and self.group_size >= 2:
            problems.extend(group_size_problems(self.group_size, self.n_envs, world_size=world))
        if self.algorithm == "trpo":
            problems.append("trpo does not train data-parallel (its step is a line search outside the optimizer)")
        return problems

    def check_environment(self) -> None:
        """Checks that need imports but no model weights: the env id, the task flags (files, reward spec, tokenizer
        against the model's vocabulary, read from its config), the device, optional packages."""
        import gymnasium as gym
        import torch

        import text_env  # noqa: F401  (registers the ids)

        if self.env_id not in gym.registry:
            known = sorted(k for k in gym.registry if k.startswith("text_env/"))
            raise ValueError(f"Unknown env_id {self.env_id!r}; registered text envs: {known}.")
        self.check_task()
        if self.tensorboard_log and importlib.util.find_spec("tensorboard") is None:
            raise ValueError(
                "--tensorboard-log needs the tensorboard package: pip install 'text-env-rl[tensorboard]' (or "
                "pip install tensorboard), or drop the option (metrics still go to logs/progress.csv)."
            )
        if self.lora_r > 0 and importlib.util.find_spec("peft") is None:
            raise ValueError(
                f"--lora-r {self.lora_r} needs peft: pip install 'text-env-rl[lora]', or pass --lora-r 0 to "
                "fine-tune all weights."
            )
        if self.device == "cuda" and not torch.cuda.is_available():
            raise ValueError("device='cuda' but PyTorch sees no CUDA GPU: use --device cpu (or auto).")

    def check_task(self) -> None:
        """The task flags, checked without loading a model: files exist, the reward spec parses, the tokenizer
        fits the model's vocabulary, and a generic env gets everything it needs."""
        from text_env.rewards.spec import check_reward_spec

        for name in ("prompts", "eval_prompts_file"):
            path = getattr(self, name)
            if path is not None and not Path(path).is_file():
                raise ValueError(f"--{name.replace('_', '-')} {path!r} is not a file (.txt or .jsonl).")
        if self.reward is not None:
            check_reward_spec(self.reward)
        if self.env_id == "text_env/TextGeneration-v0" and (self.prompts is None or self.reward is None):
            raise ValueError("text_env/TextGeneration-v0 is assembled from flags: give --prompts and --reward.")
        vocab = model_vocab_size(self.model)
        tokenizer_name = self.tokenizer_name()
        if vocab is not None and tokenizer_name is not None:
            from text_env.tokenizers import resolve_tokenizer

            try:
                size = len(resolve_tokenizer(tokenizer_name))
            except (OSError, ValueError) as error:
                raise ValueError(f"--tokenizer {tokenizer_name!r} cannot be loaded: {error}") from None
            if size > vocab or vocab - size > max(1024, vocab // 20):  # models pad embeddings a little, not more
                raise ValueError(
                    f"The tokenizer {tokenizer_name!r} has {size} tokens but the model {self.model!r} {vocab}: they "
                    "do not belong together; use the model's own tokenizer (--tokenizer) or a matching model."
                )

    def tokenizer_name(self) -> str | None:
        """The tokenizer the task will use: ``--tokenizer``, else the registered env's default (read from its entry
        point's signature), else the model's own (``text_env/TextGeneration-v0``)."""
        if self.tokenizer is not None:
            return self.tokenizer
        import inspect

        import gymnasium as gym

        entry_point = gym.registry[self.env_id].entry_point
        factory = gym.envs.registration.load_env_creator(entry_point) if isinstance(entry_point, str) else entry_point
        if factory is None:
            return self.model
        default = inspect.signature(factory).parameters.get("tokenizer")
        if default is not None and isinstance(default.default, str):
            return default.default
        return self.model

    def task_kwargs(self) -> dict[str, Any]:
        """``gymnasium.make`` kwargs from the task flags (prompts, reward model, tokenizer, lengths, vocabulary)."""
        from text_env.rewards.spec import reward_from_spec

        kwargs: dict[str, Any] = {}
        if self.prompts is not None:
            kwargs["prompts"] = self.prompts
        if self.reward is not None:
            kwargs["reward_model"] = reward_from_spec(self.reward)
        if self.tokenizer is not None or self.env_id == "text_env/TextGeneration-v0":
            kwargs["tokenizer"] = self.tokenizer_name()
        for name in ("max_new_tokens", "max_prompt_tokens"):
            if getattr(self, name) is not None:
                kwargs[name] = getattr(self, name)
        if self.dense_reward_on():
            kwargs["dense_reward"] = True
        vocab = model_vocab_size(self.model)
        if vocab is not None:
            kwargs["vocab_size"] = vocab  # the action space is the model's output layer
        return kwargs

    def dense_reward_on(self) -> bool:
        """``dense_reward``, with ``None`` resolved: on when the reward is cheap to call at every token (the
        built-in tasks' own rewards, VADER and the vowel count; specs of :data:`~text_env.rewards.spec.CHEAP_KINDS`
        only)."""
        from text_env import task_for
        from text_env.rewards.spec import is_cheap_reward_spec

        if self.dense_reward is not None:
            return self.dense_reward
        if self.reward is None:
            task = task_for(self.env_id)
            return task is not None and task.dense_reward
        return is_cheap_reward_spec(self.reward)

    def resolved_gae_lambda(self) -> float:
        """``gae_lambda``, with ``None`` resolved: 0.5 with the dense reward, 1.0 with a sparse one.

        With the dense reward each token is paid its own change of the score at once, and a lambda of 0.5 adds only
        the next ~2 tokens' (random) changes to its advantage: the main job's held-out score rose ~0.1 at the same
        KL against lambda 1.0 (``docs/calibration.md``). With a sparse reward the whole return arrives at the last
        token, and 0.5 would give the first of 48 tokens 0.5^47 of it.
        """
        if self.gae_lambda is not None:
            return self.gae_lambda
        return 0.5 if self.dense_reward_on() else 1.0

    def resolved_compute_dtype(self) -> str:
        """``compute_dtype``, with ``auto`` resolved for ``device`` (:func:`native_bfloat16`)."""
        if self.compute_dtype != "auto":
            return self.compute_dtype
        return "bfloat16" if native_bfloat16(self.device) else "float32"

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir) / self.name

    @classmethod
    def from_yaml(cls, path: str | Path, **overrides: Any) -> TrainConfig:
        """Read a YAML mapping of field names to values; ``overrides`` win. Values are checked and converted to the
        fields' types (:func:`validated_config`): ``learning_rate: 5e-4`` (a string to PyYAML) is the float 0.0005."""
        import yaml

        with open(path, encoding="utf-8") as handle:
            values = yaml.safe_load(handle) or {}
        if not isinstance(values, dict):
            raise ValueError(f"{path}: the config must be a mapping of option names to values.")
        unknown = set(values) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"{path}: unknown options {sorted(unknown)}; see --help for the list.")
        return validated_config({**values, **overrides}, source=str(path))

    def to_yaml(self) -> str:
        import yaml

        return yaml.safe_dump(dataclasses.asdict(self), sort_keys=False)


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


#: SmolLM2-135M-Instruct's embedding rows (its tokenizer has as many tokens).
EMBEDDED_VOCAB_SIZE = 49152


#: Flag values that mean "none" for the options that can be unset (``--kl-target none``).
NONE_WORDS = ("none", "null", "off")


def task_settings(env_id: str) -> dict[str, Any]:
    """The registered task's recommended settings (:attr:`text_env.tasks.base.Task.training`), with a run name
    after the task (``arithmetic-v0``) for tasks other than the main job's."""
    from text_env import task_for

    task = task_for(env_id)
    settings: dict[str, Any] = {} if task is None else dict(task.training)
    if env_id != TrainConfig.env_id:
        settings.setdefault("name", env_id.rsplit("/", 1)[-1].lower())
    return settings


def validated_config(values: dict[str, Any], source: str = "options") -> TrainConfig:
    """A :class:`TrainConfig` from raw values (YAML scalars, flag strings), each checked and converted to its
    field's type by pydantic: ``"5e-4"`` becomes ``0.0005``, ``"none"`` unsets an optional option, and a wrong type
    raises a ``ValueError`` naming the option, the expected type and the value given.

    Values come from three layers: the main job's defaults, then the chosen task's own settings
    (:func:`task_settings`), then ``values`` (YAML and flags), which win."""
    from pydantic import TypeAdapter, ValidationError

    values = {**task_settings(str(values.get("env_id", TrainConfig.env_id))), **values}

    optional = {f.name for f in dataclasses.fields(TrainConfig) if "None" in str(f.type)}
    values = {
        name: None if name in optional and isinstance(value, str) and value.lower() in NONE_WORDS else value
        for name, value in values.items()
    }
    try:
        return TypeAdapter(TrainConfig).validate_python(values)
    except ValidationError as error:
        problems = []
        for item in error.errors():
            name = ".".join(str(part) for part in item["loc"]) or "config"
            message = str(item["msg"]).removeprefix("Value error, ")
            problems.append(f"{name}: {message} (got {item['input']!r})" if item["loc"] else message)
        raise ValueError(f"{source}: " + "; ".join(problems)) from None


#: Options that only some algorithms take: the constructor settings, and the adaptive KL controller of the critic
#: algorithms (:class:`~agents.KLPenaltyCallback`; the group algorithms hold a fixed ``kl_coef``).
ALGORITHM_OPTIONS = (
    "n_steps", "batch_size", "n_epochs", "gamma", "gae_lambda", "clip_range", "clip_range_high", "ent_coef",
    "vf_coef", "max_grad_norm", "group_size", "kl_estimator", "kl_in", "kl_target", "kl_horizon",
)  # fmt: skip


def algorithms_taking(option: str) -> list[str]:
    """The registered algorithms that use ``option`` of :data:`ALGORITHM_OPTIONS`."""
    if option in ("kl_target", "kl_horizon"):
        return [name for name, spec in ALGORITHMS.items() if spec.critic]
    return [name for name, spec in ALGORITHMS.items() if option in spec.hyperparameters()]


def unused_options(config: TrainConfig, given: set[str]) -> list[str]:
    """Options given (in YAML or as flags) with a value other than the default that ``config.algorithm`` does not
    use, each named with the algorithms that do: ``--algorithm grpo --kl-target 6`` would otherwise train without
    the target. (A task's own recommended settings are not checked: they apply where they can.)"""
    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    problems = []
    for option in ALGORITHM_OPTIONS:
        if option in given and getattr(config, option) != defaults[option]:
            takers = algorithms_taking(option)
            if config.algorithm not in takers:
                flag = "--" + option.replace("_", "-")
                problems.append(f"{flag} does not apply to {config.algorithm}; it is used by {', '.join(takers)}")
    return problems


#: The parts of the configuration, by the first option of each (fields are declared part by part).
OPTION_GROUPS = {
    "name": "run",
    "env_id": "task (a registered task brings its own recommended settings: text_env.Task.training)",
    "prompts": "task from flags (each overrides the registered env's own)",
    "model": "model",
    "kl_coef": "KL to the reference (critic algorithms: a reward penalty, adaptive with --kl-target)",
    "algorithm": "algorithm (an option the chosen algorithm does not use is an error)",
    "group_size": "group algorithms (grpo, dr_grpo, rloo)",
}


def build_parser() -> argparse.ArgumentParser:
    """One flag per :class:`TrainConfig` field, read as text and typed by :func:`validated_config`."""
    parser = argparse.ArgumentParser(
        prog="python -m agents.train",
        description="Fine-tune a causal LM with RL on a text_env task (default: PPO + KL penalty, SmolLM2, "
        "PositiveReview-v0). Options come from the defaults, then the task's own settings (--env-id), then --config "
        "YAML, then flags.",
    )
    parser.add_argument("--config", type=Path, help="YAML file of options (same names as the flags, with _)")
    group = parser.add_argument_group("run")
    for f in dataclasses.fields(TrainConfig):
        if f.name in OPTION_GROUPS:  # --help lists the options by part, in the order of the fields
            group = parser.add_argument_group(OPTION_GROUPS[f.name])
        flag = "--" + f.name.replace("_", "-")
        help_text = f"{f.metadata['help']} (default: {f.default})"
        if f.name == "overwrite":
            group.add_argument(flag, dest=f.name, action="store_true", default=argparse.SUPPRESS, help=help_text)
        elif str(f.type).startswith("bool"):  # --dense-reward / --no-dense-reward
            action = argparse.BooleanOptionalAction
            group.add_argument(flag, dest=f.name, action=action, default=argparse.SUPPRESS, help=help_text)
        else:
            group.add_argument(flag, dest=f.name, default=argparse.SUPPRESS, metavar=_metavar(f), help=help_text)
    return parser


def _metavar(f: dataclasses.Field[Any]) -> str:
    kind = str(f.type).replace(" | None", "").upper()
    return f"{kind}|none" if "None" in str(f.type) else kind


def resume_settings(args: dict[str, Any]) -> tuple[Path, dict[str, Any]]:
    """``--resume RUN_DIR``: the run's ``config.yaml`` and the flags that override it, with the run's own name and
    directory (written into again). Raises ``ValueError`` when there is nothing to resume."""
    from agents.common.checkpoint import latest_checkpoint

    run_dir = Path(args["resume"])
    config_path = run_dir / "config.yaml"
    if not config_path.is_file():
        raise ValueError(f"--resume {str(run_dir)!r}: no config.yaml there; give the directory of an earlier run.")
    if latest_checkpoint(run_dir / "checkpoints") is None:
        raise ValueError(
            f"--resume {str(run_dir)!r}: the run wrote no checkpoint (they come every --checkpoint-every rollouts): "
            "start it again instead."
        )
    overrides = {**args, "name": run_dir.name, "output_dir": str(run_dir.parent), "overwrite": True}
    return config_path, overrides


def parse_config(argv: list[str] | None = None) -> TrainConfig:
    """Defaults < ``--config`` YAML < flags. Errors exit with a message naming the bad option."""
    parser = build_parser()
    args = vars(parser.parse_args(argv))
    config_path = args.pop("config", None)
    try:
        given = set(args)
        if args.get("resume") is not None:
            if config_path is not None:
                raise ValueError("--resume reads the run's own config.yaml: drop --config.")
            config_path, args = resume_settings(args)
            given = set()  # the run's own options were checked when it started
        elif config_path is not None:
            import yaml

            given |= set(yaml.safe_load(Path(config_path).read_text(encoding="utf-8")) or {})
        config = TrainConfig.from_yaml(config_path, **args) if config_path else validated_config(args, "flags")
        problems = unused_options(config, given)
        if problems:
            raise ValueError("Invalid training configuration:\n  - " + "\n  - ".join(problems))
        config.check_environment()
    except (ValueError, OSError) as error:
        parser.error(str(error))
    return config
