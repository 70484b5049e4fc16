"""The training configuration: five parts in one dataclass, loadable from YAML, overridable from the command line.

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agents.cli.options import MAIN_ENV_ID, ModelOptions, RunOptions, TaskOptions, world_size
from agents.common import checks
from agents.common.kl import KLSettings
from agents.common.settings import AlgorithmSettings, PPOSettings
from agents.registry import ALGORITHMS, get_algorithm

#: The main job's algorithm.
DEFAULT_ALGORITHM = "ppo"
#: Flag values that mean "none" for the options that can be unset (``--kl-target none``).
NONE_WORDS = ("none", "null", "off")


@dataclass
class TrainConfig:
    """Options of ``python -m agents.train`` in five parts, each checked where it is defined: the run, the task,
    the model, the KL to the reference and the algorithm's own settings (its registry entry's settings class).

    Flags and YAML name the options flat (``--learning-rate``, ``kl_coef: 0.05``): :meth:`from_values` sorts them
    into the parts, :meth:`flat` and :meth:`to_yaml` write them back.
    """

    run: RunOptions = field(default_factory=RunOptions)
    task: TaskOptions = field(default_factory=TaskOptions)
    lm: ModelOptions = field(default_factory=ModelOptions)
    kl: KLSettings = field(default_factory=KLSettings)
    algorithm: str = DEFAULT_ALGORITHM
    settings: AlgorithmSettings = field(default_factory=PPOSettings)

    def __post_init__(self) -> None:
        """The checks across parts: the settings belong to the algorithm, the KL applies to it, and the envs and
        totals divide over the data-parallel ranks (``WORLD_SIZE``)."""
        spec = get_algorithm(self.algorithm)
        if type(self.settings) is not spec.settings:
            raise ValueError(
                f"{self.algorithm} takes {spec.settings.__name__}, got {type(self.settings).__name__}: build the "
                "config with TrainConfig.from_values, which picks the settings class."
            )
        problems = [kl_problem(self.algorithm, self.kl, flag, why) for flag, why in self.settings.kl_problems(self.kl)]
        world = world_size()
        if world > 1 and self.task.n_envs % world:
            problems.append(f"n_envs={self.task.n_envs} is a total over {world} ranks: use a multiple of {world}")
        problems += self.settings.run_problems(self.task.n_envs, world)
        if problems:
            raise ValueError("Invalid training configuration:\n  - " + "\n  - ".join(problems))

    # ------------------------------------------------------------------ building
    @classmethod
    def from_values(cls, values: dict[str, Any], source: str = "options", strict: bool = True) -> TrainConfig:
        """A config from flat option values (YAML scalars, flag strings), in three layers: each part's defaults
        (the algorithm's own for its settings), then the task's recommended settings
        (:attr:`text_env.Task.training`), then ``values``, which win.

        Each value is checked and converted to its field's type by pydantic (``"5e-4"`` becomes ``0.0005``,
        ``"none"`` unsets an optional option); a wrong type or range raises a ``ValueError`` naming the option.
        An option of ``values`` that the algorithm does not take, with a value other than its default, is an error
        naming the algorithms that take it (with ``strict=False`` it is dropped, as the task's options are: for one
        set of values shared by several algorithms, like ``agents.compare``'s).
        """
        unknown = set(values) - set(option_fields())
        if unknown:
            raise ValueError(f"{source}: unknown options {sorted(unknown)}; see --help for the list.")
        env_id = str(values.get("env_id", MAIN_ENV_ID))
        suggested = task_settings(env_id)
        algorithm = str(values.get("algorithm", suggested.get("algorithm", DEFAULT_ALGORITHM)))
        if algorithm not in ALGORITHMS:
            raise ValueError(f"{source}: algorithm must be one of {list(ALGORITHMS)}, got {algorithm!r}")
        takes = taken_options(algorithm)
        problems = [] if not strict else unused_options(algorithm, values)
        if problems:
            raise ValueError("Invalid training configuration:\n  - " + "\n  - ".join(problems))
        merged = {
            name: value
            for name, value in {**suggested, **values, "algorithm": algorithm}.items()
            if name in takes or name == "algorithm"
        }
        parts = {
            part: _validated(part_class, _values_of(part_class, merged), source) for part, part_class in PARTS.items()
        }
        settings_class = get_algorithm(algorithm).settings
        settings = _validated(settings_class, _values_of(settings_class, merged), source)
        return cls(**parts, algorithm=algorithm, settings=settings)

    @classmethod
    def from_yaml(cls, path: str | Path, strict: bool = True, **overrides: Any) -> TrainConfig:
        """Read a YAML mapping of option names to values; ``overrides`` win (:meth:`from_values`)."""
        return cls.from_values({**read_yaml(path), **overrides}, source=str(path), strict=strict)

    def flat(self) -> dict[str, Any]:
        """Every option by its flat name: the parts, the algorithm and its settings (those it takes)."""
        values: dict[str, Any] = {}
        for part in PARTS:
            options = getattr(self, part)
            values.update({flag: getattr(options, name) for name, flag in part_fields(type(options)).items()})
        return {**values, "algorithm": self.algorithm, **self.settings.options()}

    def to_yaml(self) -> str:
        import yaml

        return yaml.safe_dump(self.flat(), sort_keys=False)

    # ------------------------------------------------------------------ what the run uses
    @property
    def run_dir(self) -> Path:
        return self.run.run_dir

    def algorithm_kwargs(self) -> dict[str, Any]:
        """The algorithm's constructor arguments: its settings resolved for the task, and its KL term's."""
        return self.settings.algorithm_kwargs(self.kl, self.task.dense_reward_on())

    def env_kwargs(self) -> dict[str, Any]:
        """``gymnasium.make`` kwargs of the task for the model (:meth:`TaskOptions.env_kwargs`)."""
        return self.task.env_kwargs(self.lm.model)

    def check_environment(self) -> None:
        """Checks that need imports but no model weights: the task against the model, the device, optional
        packages."""
        self.task.check(self.lm.model)
        self.run.check_environment()
        self.lm.check_environment()


#: The parts besides the algorithm's settings, by attribute name.
PARTS: dict[str, type] = {"run": RunOptions, "task": TaskOptions, "lm": ModelOptions, "kl": KLSettings}


def part_fields(part_class: type) -> dict[str, str]:
    """A part's field names -> their flat option names (the same, except the KL settings' ``kl_*``)."""
    flags = getattr(part_class, "FLAGS", {})
    return {f.name: flags.get(f.name, f.name) for f in dataclasses.fields(part_class)}


def option_fields() -> dict[str, dataclasses.Field[Any]]:
    """Every flat option name -> its field (the first settings class that has it, for the algorithm options), in
    the order of ``--help``: run, task, model, KL, algorithm."""
    fields: dict[str, dataclasses.Field[Any]] = {}
    for part_class in PARTS.values():
        by_name = {f.name: f for f in dataclasses.fields(part_class)}
        fields.update({flag: by_name[name] for name, flag in part_fields(part_class).items()})
    fields["algorithm"] = ALGORITHM_FIELD
    for spec in ALGORITHMS.values():
        for f in dataclasses.fields(spec.settings):
            fields.setdefault(f.name, f)
    return fields


@dataclass
class _AlgorithmChoice:
    algorithm: str = checks.option(
        DEFAULT_ALGORITHM, ", ".join(ALGORITHMS) + " (an option it does not use is an error)"
    )


ALGORITHM_FIELD = dataclasses.fields(_AlgorithmChoice)[0]


def taken_options(algorithm: str) -> set[str]:
    """The flat options a config for ``algorithm`` has: every part's, and its settings'."""
    settings = {f.name for f in dataclasses.fields(get_algorithm(algorithm).settings)}
    parts = {flag for part_class in PARTS.values() for flag in part_fields(part_class).values()}
    return parts | settings | {"algorithm"}


#: The KLSettings field of each KL flag name (``kl_coef`` -> ``coef``).
KL_FIELD_OF_FLAG = {flag: name for name, flag in KLSettings.FLAGS.items()}


def kl_problem(algorithm: str, kl: KLSettings, flag: str, why: str) -> str:
    """One line for a KL option ``algorithm`` refuses: an option it never applies names those that do; a value it
    refuses of an option it applies (``--kl-coef 0`` for ``apo``) names the value."""
    users = algorithms_taking(flag)
    if algorithm in users:
        value = getattr(kl, KL_FIELD_OF_FLAG[flag])
        return f"--{flag.replace('_', '-')} {value} is invalid for {algorithm}: {why}"
    return f"--{flag.replace('_', '-')} does not apply to {algorithm}: {why}; it is used by " + ", ".join(users)


def algorithms_taking(option: str) -> list[str]:
    """The registered algorithms whose settings have ``option``, or, for a KL option, that can apply it."""
    if option in KL_FIELD_OF_FLAG:
        default = getattr(KLSettings, KL_FIELD_OF_FLAG[option])
        probe = KLSettings(**{KL_FIELD_OF_FLAG[option]: _probe_value(option, default)})
        return [name for name, spec in ALGORITHMS.items() if not spec.settings().kl_problems(probe)]
    return [name for name, spec in ALGORITHMS.items() if option in {f.name for f in dataclasses.fields(spec.settings)}]


def _probe_value(option: str, default: Any) -> Any:
    """A value of a KL option other than its default, to ask each algorithm whether it applies it."""
    if option == "kl_horizon":
        return default + 1
    return {"kl_target": 6.0, "kl_estimator": "k3", "kl_in": "loss"}.get(option, default)


def unused_options(algorithm: str, values: dict[str, Any]) -> list[str]:
    """Algorithm options in ``values`` (YAML and flags) that ``algorithm`` does not take, each with a value other
    than its default, named with the algorithms that do: ``--algorithm a2c --clip-range 0.1`` would otherwise train
    without it. (A task's recommended settings are not checked: they apply where they can. The KL options are
    checked by each algorithm's settings: :meth:`TrainConfig.__post_init__`.)"""
    fields, takes = option_fields(), taken_options(algorithm)
    problems = []
    for option, value in values.items():
        default = fields[option].default
        if option in takes or value == default or str(value).lower() == str(default).lower():
            continue
        takers = algorithms_taking(option)
        problems.append(
            f"--{option.replace('_', '-')} does not apply to {algorithm}; it is used by {', '.join(takers)}"
        )
    return problems


def _values_of(part_class: type, values: dict[str, Any]) -> dict[str, Any]:
    """A part's fields from flat option values; a "none" word unsets an optional field (``--kl-target none``)."""
    fields = {}
    for name, flag in part_fields(part_class).items():
        if flag in values:
            value = values[flag]
            unset = isinstance(value, str) and value.lower() in NONE_WORDS and _optional(part_class, name)
            fields[name] = None if unset else value
    return fields


def _optional(part_class: type, name: str) -> bool:
    return "None" in str({f.name: f.type for f in dataclasses.fields(part_class)}[name])


def _validated(part_class: type, values: dict[str, Any], source: str) -> Any:
    """``part_class(**values)``, each value checked and converted to its field's type by pydantic; errors name the
    option."""
    from pydantic import TypeAdapter, ValidationError

    try:
        return TypeAdapter(part_class).validate_python(values)
    except ValidationError as error:
        flags = part_fields(part_class)
        problems = []
        for item in error.errors():
            name = ".".join(flags.get(str(part), str(part)) for part in item["loc"]) or "config"
            message = str(item["msg"]).removeprefix("Value error, ")
            problems.append(f"{name}: {message} (got {item['input']!r})" if item["loc"] else message)
        raise ValueError(f"{source}: " + "; ".join(problems)) from None


def read_yaml(path: str | Path) -> dict[str, Any]:
    import yaml

    with open(path, encoding="utf-8") as handle:
        values = yaml.safe_load(handle) or {}
    if not isinstance(values, dict):
        raise ValueError(f"{path}: the config must be a mapping of option names to values.")
    return values


def task_settings(env_id: str) -> dict[str, Any]:
    """The registered task's recommended settings (:attr:`text_env.tasks.base.Task.training`), with a run name
    after the task (``arithmetic-v0``) for tasks other than the main job's."""
    from text_env import task_for

    task = task_for(env_id)
    settings: dict[str, Any] = {} if task is None else dict(task.training)
    if env_id != MAIN_ENV_ID:
        settings.setdefault("name", env_id.rsplit("/", 1)[-1].lower())
    return settings


#: The title of each part in ``--help``, by the first option of the part.
OPTION_GROUPS = {
    "name": "run",
    "env_id": "task (a registered task brings its own recommended settings: text_env.Task.training)",
    "prompts": "task from flags (each overrides the registered env's own)",
    "model": "model",
    "kl_coef": "KL to the reference (one set for every algorithm; each says what it cannot apply)",
    "algorithm": "algorithm (an option the chosen algorithm does not use is an error)",
}


def build_parser() -> argparse.ArgumentParser:
    """One flag per option (:func:`option_fields`), read as text and typed by :meth:`TrainConfig.from_values`."""
    parser = argparse.ArgumentParser(
        prog="python -m agents.train",
        description="Fine-tune a causal LM with RL on a text_env task (default: PPO + KL penalty, SmolLM2, "
        "PositiveReview-v0). Options come from the defaults, then the task's own settings (--env-id), then --config "
        "YAML, then flags.",
    )
    parser.add_argument("--config", type=Path, help="YAML file of options (same names as the flags, with _)")
    group = parser.add_argument_group("run")
    takers = {option: algorithms_taking(option) for option in option_fields()}
    for option, f in option_fields().items():
        if option in OPTION_GROUPS:  # --help lists the options by part
            group = parser.add_argument_group(OPTION_GROUPS[option])
        flag = "--" + option.replace("_", "-")
        used_by = "" if len(takers[option]) in (0, len(ALGORITHMS)) else f" [{', '.join(takers[option])}]"
        help_text = f"{f.metadata['help']} (default: {f.default}){used_by}"
        if option == "overwrite":
            group.add_argument(flag, dest=option, action="store_true", default=argparse.SUPPRESS, help=help_text)
        elif str(f.type).startswith("bool"):  # --dense-reward / --no-dense-reward
            action = argparse.BooleanOptionalAction
            group.add_argument(flag, dest=option, action=action, default=argparse.SUPPRESS, help=help_text)
        else:
            group.add_argument(flag, dest=option, default=argparse.SUPPRESS, metavar=_metavar(f), help=help_text)
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
    """Defaults < the task's settings < ``--config`` YAML < flags. Errors exit with a message naming the bad
    option, before any model is loaded."""
    parser = build_parser()
    args = vars(parser.parse_args(argv))
    config_path = args.pop("config", None)
    try:
        if args.get("resume") is not None:
            if config_path is not None:
                raise ValueError("--resume reads the run's own config.yaml: drop --config.")
            config_path, args = resume_settings(args)
        config = TrainConfig.from_yaml(config_path, **args) if config_path else TrainConfig.from_values(args, "flags")
        config.check_environment()
    except (ValueError, OSError) as error:
        parser.error(str(error))
    return config
