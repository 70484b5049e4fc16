"""RL Baselines3 Zoo trains the LM policy from the shipped hyperparameter file, out of the box."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("rl_zoo3", reason="RL Baselines3 Zoo is a dev extra: pip install -e '.[dev]'")


def test_the_zoo_trains_ppo_on_vowels_from_the_shipped_file(tmp_path: Path) -> None:
    from stable_baselines3 import PPO

    from agents import CausalLMPolicy

    command = [
        sys.executable, "-m", "rl_zoo3.train", "--algo", "ppo", "--env", "text_env/Vowels-v0",
        "--gym-packages", "text_env", "--conf-file", "agents.zoo.ppo", "-n", "1024", "--eval-freq", "-1",
        "--seed", "0", "--log-folder", str(tmp_path), "--n-eval-envs", "1",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    saved = list(tmp_path.glob("ppo/text_env-Vowels-v0_*/text_env-Vowels-v0.zip"))
    assert len(saved) == 1, sorted(str(p) for p in tmp_path.rglob("*"))
    model = PPO.load(saved[0])
    assert isinstance(model.policy, CausalLMPolicy) and model.num_timesteps >= 1024
