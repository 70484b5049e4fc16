"""The text level: one model turn per step over any task (TurnLevelEnv), and the same over OpenEnv's server API
(python -m text_env.serve) on 127.0.0.1, played through OpenEnv's own client."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import gymnasium as gym
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env

from text_env import TurnLevelEnv


def test_a_single_turn_task_takes_one_text_step():
    env = TurnLevelEnv("text_env/Arithmetic-v0")
    prompt, info = env.reset(seed=0)
    assert prompt == info["prompt"] and info["messages"] == [{"role": "user", "content": prompt}]
    answer = str(info["reference"])
    reply, reward, terminated, truncated, info = env.step(answer)
    assert (reply, reward, terminated, truncated, info["success"]) == ("", 1.0, True, False, True)
    env.reset(seed=0)
    assert env.step("no idea")[4]["success"] is False
    with pytest.raises(RuntimeError, match="after the episode ended"):
        env.step("again")


def test_a_conversation_takes_one_text_step_per_turn():
    env = TurnLevelEnv("text_env/GuessNumber-v0")
    prompt, info = env.reset(seed=3)
    low, high, turns, done = 1, 16, 0, False
    while not done:
        guess = (low + high) // 2
        reply, reward, terminated, truncated, info = env.step(str(guess))
        turns, done = turns + 1, terminated or truncated
        if reply == "Higher.":
            low = guess + 1
        elif reply == "Lower.":
            high = guess - 1
    assert terminated and info["success"] and reward == pytest.approx(1.0 - 0.1 * (turns - 1))
    assert info["messages"][-1] == {"role": "assistant", "content": str(guess)} and turns <= 5  # binary search


def test_the_text_level_passes_gymnasiums_checker():
    env = TurnLevelEnv("text_env/Vowels-v0")
    gym_check_env(env, skip_render_check=True)
    assert isinstance(env.observation_space, gym.spaces.Text)
    with pytest.raises(TypeError, match="a text_env token-level env"):
        TurnLevelEnv(gym.make("CartPole-v1"))


# ---------------------------------------------------------------------------- OpenEnv
def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_openenv_round_trip_on_the_loopback(tmp_path):
    pytest.importorskip("openenv", reason="the openenv extra")
    from text_env.serve import TextTaskClient, TextTurn

    port = free_port()
    log = (tmp_path / "server.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "-m", "text_env.serve", "text_env/GuessNumber-v0", "--port", str(port)],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:  # until the server accepts connections (it loads the tokenizer first)
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, (tmp_path / "server.log").read_text()
                time.sleep(0.2)
        with TextTaskClient(base_url=f"http://127.0.0.1:{port}").sync() as client:
            result = client.reset(seed=3)
            assert "thinking of" in result.observation.text and not result.done
            low, high = 1, 16
            for _ in range(6):
                guess = (low + high) // 2
                result = client.step(TextTurn(text=str(guess)))
                if result.done:
                    break
                low, high = (guess + 1, high) if result.observation.text == "Higher." else (low, guess - 1)
            assert result.done and result.observation.success and result.reward > 0.5
        # The port is taken now: a second server says so, and exits with code 2.
        second = subprocess.run(
            [sys.executable, "-m", "text_env.serve", "text_env/GuessNumber-v0", "--port", str(port)],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert second.returncode == 2 and f"Port {port} on 127.0.0.1 is in use" in second.stderr
    finally:
        server.terminate()
        server.wait(timeout=20)
