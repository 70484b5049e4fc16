"""The training CLI: options, YAML, clear errors before any model loads, and an end-to-end run on the tiny task."""

from __future__ import annotations

import json
import sys

import gymnasium as gym
import pytest
from conftest import tiny_gpt2_config
from transformers import AutoModelForCausalLM

from agents.cli.config import TrainConfig, build_parser, option_fields, parse_config
from agents.cli.train import build_model, main


def test_help_documents_every_option(capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for name in option_fields():  # every part's options and every algorithm's
        assert "--" + name.replace("_", "-") in text, name
    for name in ("--kl-coef", "--group-size", "--vf-coef", "--run-dir"):
        assert (name in text) is (name != "--run-dir")


@pytest.fixture
def no_model_loads(monkeypatch):
    """Any model construction fails: the two transformers entry points every load goes through (by name, by config),
    patched on the class itself, so no import-by-name can bypass them. No CUDA either."""
    from transformers import AutoModelForCausalLM

    def no_model(*args, **kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", no_model)
    monkeypatch.setattr(AutoModelForCausalLM, "from_config", no_model)
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)


def test_the_no_model_guard_fires_on_a_load_through_the_policy(no_model_loads):
    """The guard above catches a deliberately wrong ordering: building the policy (which loads the model through
    ``agents.common.policy``'s own import of ``load_causal_lm``) before the options are checked."""
    import gymnasium as gym
    from stable_baselines3 import PPO

    from agents import CausalLMPolicy

    with pytest.raises(AssertionError, match="a model was loaded"):
        PPO(CausalLMPolicy, gym.make("text_env/Vowels-v0"), policy_kwargs=dict(model=tiny_gpt2_config()))


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--algorithm", "sac"], "algorithm must be one of"),
        (["--learning-rate", "-1"], "learning_rate must be > 0"),
        (["--n-envs", "0"], "n_envs must be >= 1"),
        (["--env-id", "text_env/Nope-v0"], "Unknown env_id"),
        (["--device", "tpu"], "device must be one of"),
        (["--device", "cuda"], "no CUDA GPU"),
        (["--algorithm", "grpo", "--n-envs", "6", "--group-size", "4"], "needs group_size >= 2 dividing n_envs"),
        (["--kl-in", "logits"], "kl_in must be"),
        (["--head-dtype", "float16"], "head_dtype must be one of"),
        # the task flags
        (["--env-id", "text_env/Vowels-v0"], "do not belong together"),  # char tokenizer, SmolLM2's 49,152 rows
        (["--env-id", "text_env/TextGeneration-v0"], "give --prompts and --reward"),
        (["--reward", "sentimental"], "Unknown reward 'sentimental'"),
        (["--reward", "length:forty"], "whole number of words"),
        (["--prompts", "no/such/file.txt"], "is not a file"),
        (["--model", "no/such/dir"], "neither 'smollm2-135m-instruct' nor a local directory"),
        (["--max-new-tokens", "0"], "max_new_tokens must be >= 1"),
    ],
)
def test_bad_options_fail_with_a_clear_message_before_loading_a_model(argv, message, capsys, no_model_loads):
    with pytest.raises(SystemExit) as exit_info:
        parse_config(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_boolean_options_are_switches_that_reach_the_task(tmp_path):
    config = parse_config(["--dense-reward"])
    assert config.task.dense_reward is True and config.env_kwargs()["dense_reward"] is True
    path = tmp_path / "c.yaml"
    path.write_text("dense_reward: true\n")
    assert parse_config(["--config", str(path), "--no-dense-reward"]).task.dense_reward is False
    assert "dense_reward" not in parse_config(["--config", str(path), "--no-dense-reward"]).env_kwargs()


def test_gradient_checkpointing_switch_reaches_the_policy():
    config = parse_config(["--gradient-checkpointing", "--lora-r", "0"])
    assert config.lm.gradient_checkpointing is True and parse_config([]).lm.gradient_checkpointing is False
    model = build_model(config, gym.make("text_env/Vowels-v0"), model=tiny_gpt2_config())
    assert model.policy.gradient_checkpointing and model.policy.trunk.h[0].gradient_checkpointing


@pytest.mark.parametrize(
    ("argv", "dense"),
    [
        ([], True),  # PositiveReview-v0's VADER: ~15 us a call
        (["--reward", "sentiment+0.2*length:40"], True),
        (["--reward", "embedding:a wonderful film"], False),  # a neural model at every token: off unless asked
        (["--reward", "embedding:a wonderful film", "--dense-reward"], True),
        (["--no-dense-reward"], False),
    ],
)
def test_dense_reward_is_on_by_default_only_for_cheap_rewards(argv, dense):
    assert parse_config(argv).task.dense_reward_on() is dense


@pytest.mark.parametrize(
    ("argv", "gae_lambda"),
    [
        ([], 0.5),  # dense VADER: each token is paid its own change at once
        (["--no-dense-reward"], 1.0),  # sparse: the whole return arrives at the last token
        (["--reward", "embedding:a wonderful film"], 1.0),
        (["--gae-lambda", "0.9"], 0.9),
    ],
)
def test_gae_lambda_default_follows_the_reward_density(argv, gae_lambda):
    config = parse_config([*argv, "--lora-r", "0"])
    assert config.algorithm_kwargs()["gae_lambda"] == gae_lambda
    model = build_model(config, gym.make("text_env/Vowels-v0"), model=tiny_gpt2_config())
    assert model.gae_lambda == gae_lambda


def test_lora_without_peft_exits_before_any_model_loads(monkeypatch, capsys):
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "peft" else real_find_spec(name, *a)
    )
    with pytest.raises(SystemExit) as exit_info:
        parse_config(["--lora-r", "8"])
    assert exit_info.value.code == 2 and "text-env-rl[lora]" in capsys.readouterr().err


def test_dense_reward_default_follows_the_task():
    from agents.cli.options import TaskOptions

    assert TaskOptions(env_id="text_env/Vowels-v0").dense_reward_on() is True
    assert TaskOptions(env_id="my_pkg/Neural-v0").dense_reward_on() is False  # its reward: unknown


def test_a_task_brings_its_own_settings_and_flags_win(tmp_path, no_model_loads):
    """Defaults < the task's recommended settings (text_env.Task.training) < YAML < flags."""
    from text_env import TASKS

    vowels = parse_config(["--env-id", "text_env/Vowels-v0", "--model", "smollm2-135m-instruct", "--tokenizer",
                           "smollm2-135m-instruct"])  # fmt: skip
    assert (vowels.kl.coef, vowels.settings.gae_lambda, vowels.run.name) == (0.0, 1.0, "vowels-v0")
    main_job = parse_config([])
    assert (main_job.kl.coef, main_job.settings.gae_lambda, main_job.run.name) == (0.1, None, "positive-review")
    arithmetic = parse_config(["--env-id", "text_env/Arithmetic-v0", "--kl-coef", "0.3"])
    assert arithmetic.algorithm == "grpo" and arithmetic.kl.coef == 0.3  # the task's algorithm, the flag's beta
    ppo_on_arithmetic = parse_config(["--env-id", "text_env/Arithmetic-v0", "--algorithm", "ppo"])
    assert ppo_on_arithmetic.kl.coef == 0.02 and not hasattr(ppo_on_arithmetic.settings, "group_size")
    path = tmp_path / "c.yaml"
    path.write_text("env_id: text_env/Arithmetic-v0\nlearning_rate: 0.001\n")
    from_yaml = parse_config(["--config", str(path)])
    n_steps = TASKS["text_env/Arithmetic-v0"].training["n_steps"]
    assert from_yaml.settings.learning_rate == 0.001 and from_yaml.settings.n_steps == n_steps
    fields = set(option_fields())
    for task in TASKS.values():  # every recommended setting is an option of agents.train
        assert set(task.training) <= fields, task.env_id


def test_keep_freed_memory_is_on_unless_switched_off():
    assert parse_config([]).run.keep_freed_memory
    assert not parse_config(["--no-keep-freed-memory"]).run.keep_freed_memory


def test_yaml_config_then_flags(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("algorithm: a2c\nlearning_rate: 0.001\nkl_target: null\n")
    config = parse_config(["--config", str(path), "--learning-rate", "0.002"])
    assert (config.algorithm, config.settings.learning_rate, config.kl.target) == ("a2c", 0.002, None)
    assert TrainConfig.from_yaml(path).settings.learning_rate == 0.001
    path.write_text("algorithmm: a2c\n")
    with pytest.raises(ValueError, match="unknown options"):
        TrainConfig.from_yaml(path)


@pytest.mark.parametrize("algorithm", ["ppo", "rloo", "nlpo"])
def test_end_to_end_on_the_tiny_task(tmp_path, algorithm, monkeypatch):
    calls = []  # keep_freed_memory is process-wide: recorded here (conftest applies it to the session)
    monkeypatch.setattr("agents.common.resources.keep_freed_memory", lambda: calls.append(1) or True)
    model_dir = tmp_path / "tiny"
    AutoModelForCausalLM.from_config(tiny_gpt2_config()).save_pretrained(model_dir)
    group = {
        "rloo": ["--group-size", "2", "--kl-estimator", "k3", "--kl-in", "loss"],
        "nlpo": ["--top-p", "0.8", "--mask-update-interval", "2"],
    }.get(algorithm, [])
    argv = ["--algorithm", algorithm, *group, "--env-id", "text_env/Vowels-v0", "--model", str(model_dir),
        "--budget-minutes", "0.1", "--n-envs", "4", "--n-steps", "16", "--batch-size", "32", "--eval-prompts", "4",
        "--eval-every", "2",
        "--output-dir", str(tmp_path / "runs"), "--name", "t",
    ]  # fmt: skip
    keep = algorithm != "nlpo"  # one run with --no-keep-freed-memory
    assert main(argv + ([] if keep else ["--no-keep-freed-memory"])) == 0
    run = tmp_path / "runs" / "t"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["timesteps"] > 0 and {"score", "kl", "distinct_1"} <= set(summary["after"])
    assert summary["algorithm"] == algorithm and summary["seed"] == 0 and "torch" in summary["versions"]
    assert summary["keep_freed_memory"] == keep and len(calls) == int(keep)  # on by default, applied in setup
    gae_lambda = summary["algorithm_settings"].get("gae_lambda")
    assert gae_lambda == (None if algorithm == "rloo" else 1.0)  # Vowels-v0's own; RLOO has no critic
    assert (run / "training.png").stat().st_size > 1000
    assert (run / "model" / "config.json").is_file() and (run / "logs" / "progress.csv").is_file()
    assert AutoModelForCausalLM.from_pretrained(run / "model").config.n_layer == 2


def test_tensorboard_without_the_package_fails_before_any_model_loads(capsys, no_model_loads, monkeypatch):
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name: None if name == "tensorboard" else real_find_spec(name)
    )
    with pytest.raises(SystemExit) as exit_info:
        parse_config(["--tensorboard-log", "runs/tb"])
    assert exit_info.value.code == 2
    assert "pip install 'text-env-rl[tensorboard]'" in capsys.readouterr().err


def test_a_task_assembled_from_flags_trains_and_is_evaluated_on_prompts_set_aside(tmp_path, capsys):
    model_dir = tmp_path / "tiny"
    AutoModelForCausalLM.from_config(tiny_gpt2_config()).save_pretrained(model_dir)
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(f'{{"prompt": "Tell me {i}: "}}\n' for i in range(20)), encoding="utf-8")
    argv = [
        "--env-id", "text_env/TextGeneration-v0", "--prompts", str(prompts), "--reward", "keyword:a+0.5*length:3",
        "--tokenizer", "char", "--model", str(model_dir), "--max-new-tokens", "6", "--max-prompt-tokens", "16",
        "--budget-minutes", "0.05", "--n-envs", "2", "--n-steps", "12", "--batch-size", "12",
        "--output-dir", str(tmp_path / "runs"), "--name", "byo",
    ]  # fmt: skip
    assert main(argv) == 0
    assert "evaluating on its last 2 of 20 prompts, set aside from training" in capsys.readouterr().out
    summary = json.loads((tmp_path / "runs" / "byo" / "summary.json").read_text())
    assert summary["held_out_prompts"] == 2 and summary["samples"][0]["prompt"] == "Tell me 18: "


def test_a_second_run_with_the_same_name_gets_its_own_directory(tmp_path, monkeypatch):
    from agents.cli import train

    monkeypatch.setattr(train, "learn", lambda run: 0.0)  # set-up and outputs only
    monkeypatch.setattr(train, "write_outputs", lambda run, seconds: {"dir": str(run.config.run_dir)})
    model_dir = tmp_path / "tiny"
    AutoModelForCausalLM.from_config(tiny_gpt2_config()).save_pretrained(model_dir)
    argv = ["--env-id", "text_env/Vowels-v0", "--model", str(model_dir), "--output-dir", str(tmp_path), "--name", "r"]
    first = train.run(parse_config(argv))
    second = train.run(parse_config(argv))
    again = train.run(parse_config([*argv, "--overwrite"]))
    assert (first["dir"], second["dir"], again["dir"]) == (
        str(tmp_path / "r"),
        str(tmp_path / "r-2"),
        str(tmp_path / "r"),
    )


@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [
        ("learning_rate: abc\n", "learning_rate: Input should be a valid number"),
        ("n_envs: 2.5\n", "n_envs: Input should be a valid integer"),
        ("kl_target: [1, 2]\n", "kl_target"),
        ("overwrite: maybe\n", "overwrite: Input should be a valid boolean"),
        ("learning_rate: -1e-3\n", "learning_rate must be > 0"),
    ],
)
def test_yaml_values_of_the_wrong_type_are_named(tmp_path, capsys, yaml_text, message):
    path = tmp_path / "c.yaml"
    path.write_text(yaml_text)
    with pytest.raises(SystemExit) as exit_info:
        parse_config(["--config", str(path)])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_yaml_scientific_notation_and_null_are_typed(tmp_path):
    """PyYAML reads 5e-4 (no dot) as a string; the config still gets the float."""
    path = tmp_path / "c.yaml"
    path.write_text("learning_rate: 5e-4\nkl_target: 2.5\nn_envs: '16'\n")
    assert parse_config(["--config", str(path)]).kl.target == 2.5
    path.write_text("algorithm: grpo\nlearning_rate: 5e-4\nkl_target: null\nn_envs: '16'\nclip_range_high: 0.28\n")
    config = parse_config(["--config", str(path), "--max-new-tokens", "none"])
    assert config.settings.learning_rate == 5e-4 and isinstance(config.settings.learning_rate, float)
    values = (config.kl.target, config.task.n_envs, config.settings.clip_range_high, config.task.max_new_tokens)
    assert values == (None, 16, 0.28, None)
    assert parse_config(["--n-envs", "8", "--kl-target", "3"]).kl.target == 3.0


def test_auto_compute_dtype_is_bfloat16_only_where_the_cpu_runs_it_natively(tmp_path, monkeypatch):
    from agents.cli import options as config_module
    from agents.cli.options import ModelOptions

    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("flags\t\t: fpu sse avx2 avx512f\n")
    assert not config_module.native_bfloat16("cpu", cpuinfo)
    cpuinfo.write_text("flags\t\t: fpu sse avx2 avx512f avx512_bf16\n")
    assert config_module.native_bfloat16("cpu", cpuinfo)
    assert not config_module.native_bfloat16("cpu", tmp_path / "missing")  # not Linux: stay in float32
    for native, expected in ((True, "bfloat16"), (False, "float32")):
        monkeypatch.setattr(config_module, "native_bfloat16", lambda device, native=native: native)
        assert ModelOptions().resolved_compute_dtype("cpu") == expected
        assert ModelOptions(compute_dtype="float32").resolved_compute_dtype("cpu") == "float32"


def test_head_dtype_flag_reaches_the_policy_and_defaults_to_float32():
    head = lambda argv: parse_config(argv).lm.policy_kwargs("cpu")["head_dtype"]  # noqa: E731
    assert head([]) == "float32"
    assert head(["--head-dtype", "bfloat16"]) == "bfloat16"


FLAKY_REWARD = '''
import numpy as np

STATE = {"calls": 0, "nan_from_call": None}


def score(prompts, completions):
    """Counts vowels; returns NaN from the given call on (None: never)."""
    STATE["calls"] += 1
    if STATE["nan_from_call"] is not None and STATE["calls"] >= STATE["nan_from_call"]:
        return np.full(len(prompts), np.nan)
    return np.array([sum(ch in "aeiou" for ch in c) / 8 for c in completions])
'''


def _tiny_run_argv(tmp_path, *extra, model_dir=None):
    model_dir = model_dir or tmp_path / "tiny"
    if not model_dir.exists():
        AutoModelForCausalLM.from_config(tiny_gpt2_config()).save_pretrained(model_dir)
    return [
        "--env-id", "text_env/Vowels-v0", "--model", str(model_dir), "--reward", "python:flaky_reward:score",
        "--n-envs", "2", "--n-steps", "8", "--batch-size", "16", "--eval-prompts", "2", "--eval-every", "100",
        "--checkpoint-every", "1", "--budget-minutes", "10", "--output-dir", str(tmp_path / "runs"), "--name", "t",
        "--compute-dtype", "float32", *extra,
    ]  # fmt: skip


@pytest.fixture
def flaky_reward(tmp_path, monkeypatch):
    (tmp_path / "flaky_reward.py").write_text(FLAKY_REWARD)
    monkeypatch.syspath_prepend(str(tmp_path))
    import importlib

    module = importlib.import_module("flaky_reward")
    yield module.STATE
    sys.modules.pop("flaky_reward", None)  # the next test imports a fresh one


def test_a_nan_reward_stops_the_run_naming_its_pair_and_keeps_the_last_checkpoint(tmp_path, flaky_reward, capsys):
    from stable_baselines3 import PPO

    from agents.common.checkpoint import latest_checkpoint, load_checkpoint

    flaky_reward["nan_from_call"] = 13  # after the first evaluation, 2 calls per rollout: a few rollouts in
    assert main(_tiny_run_argv(tmp_path, "--total-timesteps", "160")) == 1
    error = capsys.readouterr().err
    assert "non-finite scores [nan]" in error and "prompt=" in error and "completion=" in error
    assert "is intact" in error and "--resume" in error
    newest = latest_checkpoint(tmp_path / "runs" / "t" / "checkpoints")
    assert f"The last checkpoint, {newest}, is intact" in error
    stopped_at = int(error.split("Training stopped after ")[1].split()[0])
    model, kl_callback = load_checkpoint(PPO, newest, make_vec_env_for_resume())
    # saved at the start of the failing rollout (16 env steps each), before the NaN
    assert model.num_timesteps % 16 == 0 and stopped_at - 16 < model.num_timesteps <= stopped_at
    assert kl_callback is not None


def make_vec_env_for_resume():
    from stable_baselines3.common.env_util import make_vec_env

    return make_vec_env("text_env/Vowels-v0", n_envs=2, seed=0)


def test_resume_continues_exactly_where_a_straight_run_goes(tmp_path, flaky_reward):
    import torch

    straight = tmp_path / "straight"
    straight.mkdir()
    tiny = tmp_path / "tiny"  # one base model for both runs
    assert main(_tiny_run_argv(straight, "--total-timesteps", "96", "--eval-every", "2", model_dir=tiny)) == 0
    (tmp_path / "cut").mkdir()
    # 3 rollouts, evaluated at other points; the newest checkpoint is at the start of the third
    assert main(_tiny_run_argv(tmp_path / "cut", "--total-timesteps", "48", "--eval-every", "1", model_dir=tiny)) == 0
    cut = tmp_path / "cut" / "runs" / "t"
    assert main(["--resume", str(cut), "--total-timesteps", "96"]) == 0
    summary = json.loads((cut / "summary.json").read_text())
    assert summary["timesteps"] == 96 and summary["before"]["timesteps"] == 0  # the first run's evaluation kept
    weights = [
        AutoModelForCausalLM.from_pretrained(run / "model").state_dict() for run in (straight / "runs" / "t", cut)
    ]
    for name, value in weights[0].items():
        assert torch.allclose(weights[1][name], value, rtol=0, atol=1e-6), (
            name,
            (weights[1][name] - value).abs().max(),
        )


@pytest.mark.parametrize(("has_config", "message"), [(False, "no config.yaml there"), (True, "wrote no checkpoint")])
def test_resume_without_a_run_or_checkpoint_exits_2(tmp_path, capsys, has_config, message):
    if has_config:
        (tmp_path / "config.yaml").write_text("seed: 0\n")
    with pytest.raises(SystemExit) as exit_info:
        parse_config(["--resume", str(tmp_path)])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_an_overwritten_run_drops_the_earlier_runs_checkpoints(tmp_path, flaky_reward):
    """Otherwise --resume, and the message of a failed run, would take an earlier run's newest checkpoint."""
    stale = tmp_path / "runs" / "t" / "checkpoints" / "checkpoint_999999.zip"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"an earlier run's")
    assert main(_tiny_run_argv(tmp_path, "--total-timesteps", "48", "--overwrite")) == 0
    assert not stale.exists() and sorted(p.name for p in stale.parent.iterdir()) == [
        "checkpoint_16.zip",
        "checkpoint_32.zip",
    ]


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["--algorithm", "grpo", "--kl-target", "6"], "--kl-target does not apply to grpo: the group algorithms"),
        (["--algorithm", "grpo", "--kl-target", "6"], "it is used by ppo, a2c, trpo, maskable_ppo"),
        (["--algorithm", "ppo", "--kl-in", "loss"], "--kl-in does not apply to ppo"),
        (["--algorithm", "a2c", "--clip-range", "0.1"], "--clip-range does not apply to a2c; it is used by ppo"),
        (["--algorithm", "ppo", "--group-size", "8"], "--group-size does not apply to ppo; it is used by grpo"),
        (["--algorithm", "a2c", "--batch-size", "64"], "--batch-size does not apply to a2c"),
    ],
)
def test_an_option_the_algorithm_does_not_use_is_an_error(argv, words, capsys, no_model_loads):
    with pytest.raises(SystemExit) as exit_info:
        parse_config(argv)
    assert exit_info.value.code == 2 and words in capsys.readouterr().err


def test_options_at_their_default_and_task_settings_are_not_errors(no_model_loads):
    assert parse_config(["--algorithm", "grpo", "--kl-horizon", "10000"]).algorithm == "grpo"  # the default value
    assert parse_config(["--env-id", "text_env/Arithmetic-v0", "--algorithm", "ppo"]).settings.n_epochs == 1  # task


def test_a_resumed_group_run_takes_its_micro_batch_size_from_the_command_line(tmp_path, flaky_reward, monkeypatch):
    """A memory knob (``per_process``) may change on ``--resume`` (e.g. after running out of memory), where the
    checkpoint's other settings win: the resumed updates run in micro-batches of one completion (8 tokens)."""
    from agents import GRPO

    group = ["--algorithm", "grpo", "--group-size", "2"]
    assert main(_tiny_run_argv(tmp_path, *group, "--total-timesteps", "32")) == 0
    passes: list[int] = []
    real = GRPO._backward_part
    monkeypatch.setattr(
        GRPO, "_backward_part", lambda self, part, *args: passes.append(part.n_completions) or real(self, part, *args)
    )
    assert main(["--resume", str(tmp_path / "runs" / "t"), "--total-timesteps", "64", "--micro-batch-size", "8"]) == 0
    assert passes and set(passes) == {1}  # one completion per forward+backward pass after the resume
