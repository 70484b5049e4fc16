"""The examples run, and the hand-written vector-env loop handles Gymnasium's next-step autoreset."""

from __future__ import annotations

import importlib.util
from pathlib import Path

EXAMPLES = Path(__file__).parent.parent / "examples"


def load(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_vector_env_loop_trains_each_episode_on_exactly_its_own_tokens():
    history = load("vector_env_loop").run(steps=40, verbose=False)
    assert len(history["rewards"]) > 16  # episodes ended and the envs were reset (8-token episodes, 40 steps)
    assert history["trained_tokens"] == history["env_tokens"]  # no action of a resetting step was counted
