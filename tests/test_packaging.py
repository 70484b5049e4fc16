"""Packaging: ``pip install text-env-rl`` gives the environments alone, the rest comes as extras (pyproject.toml), and
every third-party import is declared. No model loads (the LoRA test builds a 2-layer GPT-2 from its config)."""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
#: Distributions imported under another name than their normalised one.
IMPORT_NAMES = {"pyyaml": "yaml", "vadersentiment": "vaderSentiment", "openenv_core": "openenv"}
#: Files of the core package that import an extra's package (imported only when that task is made), and the extra.
OPTIONAL_FILES = {
    "text_env/tasks/reasoning_gym.py": ("reasoning",),
    "text_env/serve.py": ("openenv",),
    "agents/cli/benchmark.py": ("benchmark",),
    "agents/cli/train_ray.py": ("ray",),
}
#: Declared dependencies that none of our modules imports, and what needs them.
NOT_IMPORTED = {
    "gguf": "transformers, to load the embedded model's GGUF file (text_env.embedded)",
    "accelerate": "transformers, to load the embedded model's GGUF file (text_env.embedded)",
    "rl_zoo3": "python -m rl_zoo3.train with agents/zoo (tests/test_zoo.py runs it in a subprocess)",
    "tensorboard": "SB3's logger, for --tensorboard-log",
    "rich": "SB3's progress bar, learn(progress_bar=True) (tests/test_grpo.py)",
    "ruff": "make lint",
    "arch": "rliable's stratified bootstrap (agents/cli/benchmark.py); rliable 1.2 declares arch<8",
    "pandas": "rliable.library's import, pinned below 3 (agents/cli/benchmark.py)",
    **dict.fromkeys(
        ("fastapi", "fastmcp", "httpx", "requests", "websockets"),
        "openenv-core's server and client (text_env/serve.py), which the Makefile installs with --no-deps",
    ),
    "mypy": "make lint",
}
#: What ``import text_env`` and a step of its tiny task must not import: the extras' packages.
EXTRAS_MODULES = [
    "stable_baselines3", "sb3_contrib", "peft", "matplotlib", "scipy", "pydantic", "tensorboard", "reasoning_gym",
]  # fmt: skip


def load_pyproject() -> dict[str, Any]:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10: tomli, if it is there
        tomllib = pytest.importorskip("tomli", reason="reading pyproject.toml needs tomllib (3.11+) or tomli")
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def declared(*extras: str) -> set[str]:
    """Normalised names of the distributions ``pip install 'text-env-rl[extras]'`` asks for (the core ones
    included; extras that name ``text-env-rl[...]`` expanded)."""
    project = load_pyproject()["project"]
    names: set[str] = set()
    todo, seen = ["", *extras], set()
    while todo:
        extra = todo.pop()
        if extra in seen:
            continue
        seen.add(extra)
        for requirement in project["optional-dependencies"][extra] if extra else project["dependencies"]:
            match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[([^\]]*)\])?", requirement)
            assert match, requirement
            name, wanted = match.groups()
            if normalise(name) == normalise(project["name"]):
                todo += [part.strip() for part in (wanted or "").split(",") if part.strip()]
            else:
                names.add(normalise(name))
    return names


def third_party_imports(folder: str) -> dict[str, set[str]]:
    """Top-level modules imported anywhere under ``folder`` (module level and inside functions), except the
    standard library and our own, with the files that import each."""
    found: dict[str, set[str]] = {}
    for path in sorted((ROOT / folder).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [node.module]
            else:
                continue
            for module in modules:
                top = module.split(".")[0]
                if top not in sys.stdlib_module_names and top not in ("text_env", "agents", "conftest"):
                    found.setdefault(top, set()).add(str(path.relative_to(ROOT)))
    return found


@pytest.mark.parametrize(
    ("folder", "extras"),
    [("text_env", ()), ("agents", ("agents", "lora", "plots", "zoo", "tensorboard")), ("tests", ("dev",))],
)
def test_every_third_party_import_is_declared(folder, extras):
    provided = {IMPORT_NAMES.get(name, name) for name in declared(*extras)}
    missing = {module: sorted(files) for module, files in third_party_imports(folder).items() if module not in provided}
    for module, files in list(missing.items()):  # modules of an extra, imported only by the files that need it
        if all(path in OPTIONAL_FILES for path in files):
            if all(module in {IMPORT_NAMES.get(n, n) for n in declared(*OPTIONAL_FILES[path])} for path in files):
                del missing[module]
    where = f"the extras {list(extras)}" if extras else "the core dependencies"
    assert not missing, f"{folder}/ imports modules that {where} in pyproject.toml do not declare: {missing}"


def test_every_declared_dependency_is_imported_or_needed_by_a_named_tool():
    imported = set().union(*(third_party_imports(folder) for folder in ("text_env", "agents", "tests")))
    unused = {name for name in declared("all", "dev") if IMPORT_NAMES.get(name, name) not in imported}
    assert unused <= NOT_IMPORTED.keys(), f"declared but imported nowhere: {sorted(unused - NOT_IMPORTED.keys())}"


def test_all_has_every_user_facing_extra_and_dev_adds_test_tools():
    extras = load_pyproject()["project"]["optional-dependencies"]
    # docs: the site's build tools, for developers (in dev); openenv: openenv-core with its web UI and LLM client,
    # whose server's dependencies `all` has (openenv-server; the Makefile adds openenv-core with --no-deps).
    users = set(extras) - {"all", "dev", "docs", "openenv"}
    assert declared("all") == declared(*users)
    assert declared("all") | {"pytest", "hypothesis", "ruff", "mypy"} <= declared("dev")
    assert not {"stable_baselines3", "sb3_contrib", "peft", "matplotlib", "scipy", "pydantic"} & declared()


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)


def test_the_tiny_task_runs_without_importing_any_extra():
    code = f"""
import json, sys
import gymnasium
import text_env
env = gymnasium.make("text_env/Vowels-v0")
env.reset(seed=0)
env.step(env.action_space.sample())
print(json.dumps([name for name in {EXTRAS_MODULES!r} if name in sys.modules]))
"""
    done = run_python(code)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.splitlines()[-1]) == []


def test_the_library_and_command_lines_import_peft_and_matplotlib_only_when_used():
    # Not scipy or tensorboard: whenever they are installed, transformers' modeling code (an object-detection loss)
    # and SB3's logger import them.
    code = """
import json, sys
import agents, agents.cli.train, agents.cli.compare, agents.cli.evaluate, agents.cli.generate
print(json.dumps([name for name in ("peft", "matplotlib", "rl_zoo3") if name in sys.modules]))
"""
    done = run_python(code)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.splitlines()[-1]) == []


def test_agents_without_stable_baselines3_names_the_extra():
    done = run_python("import sys; sys.modules['stable_baselines3'] = None; import agents")
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert "agents needs stable_baselines3" in last and "pip install 'text-env-rl[agents]'" in last


def test_lora_without_peft_names_the_extra_and_the_way_around(monkeypatch, char_env, tiny_config):
    from stable_baselines3 import PPO

    from agents import CausalLMPolicy

    monkeypatch.setitem(sys.modules, "peft", None)  # import peft now raises ImportError
    message = r"LoRA \(r=16\) needs peft: pip install 'text-env-rl\[lora\]'.*--lora-r 0"
    with pytest.raises(ModuleNotFoundError, match=message):
        PPO(CausalLMPolicy, char_env, n_steps=6, policy_kwargs=dict(model=tiny_config, lora=dict(r=16, lora_alpha=32)))


@pytest.mark.parametrize(
    ("argv", "module"), [([], "matplotlib"), (["--env-id", "text_env/PositiveReview-v0"], "scipy")]
)
def test_the_comparison_without_its_plots_extra_exits_2_before_any_run(argv, module, monkeypatch, capsys, tmp_path):
    from agents.cli import compare

    monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(SystemExit) as exit_info:
        compare.main([*argv, "--out", str(tmp_path / "out")])
    assert exit_info.value.code == 2
    assert f"needs {module}: pip install 'text-env-rl[plots]'" in capsys.readouterr().err.strip().splitlines()[-1]
    assert not (tmp_path / "out").exists()
