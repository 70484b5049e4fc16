"""Serve any registered task over OpenEnv's environment server API, for OpenEnv clients and the trainers that use
them (TRL's ``environment_factory``, AgileRL, ...): one model turn per step, as text (:class:`~text_env.TurnLevelEnv`).

    python -m text_env.serve text_env/GuessNumber-v0 --port 8000          # 127.0.0.1 unless --host says otherwise

Needs the ``openenv`` extra. A client plays it with OpenEnv's own client classes::

    from text_env.serve import TextTaskClient, TextTurn
    with TextTaskClient(base_url="http://127.0.0.1:8000").sync() as client:
        result = client.reset(seed=0)            # result.observation.text: the prompt
        result = client.step(TextTurn(text="8"))  # the environment's reply, reward, done
"""

from __future__ import annotations

import argparse
import importlib.util
import socket
import sys
from typing import Any
from uuid import uuid4

if importlib.util.find_spec("openenv") is None:  # pragma: no cover  (the message is tested with the module hidden)
    raise ModuleNotFoundError(
        "text_env.serve needs OpenEnv's server: pip install 'text-env-rl[openenv]' (openenv-core).", name="openenv"
    )

import gymnasium
from openenv.core.client_types import StepResult
from openenv.core.env_client import EnvClient
from openenv.core.env_server.http_server import create_app
from openenv.core.env_server.interfaces import Environment
from openenv.core.env_server.types import Action, Observation, State
from pydantic import Field

from text_env.turn_level import TurnLevelEnv


class TextTurn(Action):
    """The model's turn."""

    text: str = Field(..., description="what the model writes this turn")


class TextObservation(Observation):
    """What the model reads: the prompt after reset, then the environment's reply ('' at the end)."""

    text: str = Field(default="", description="the prompt, or the environment's reply")
    messages: list[dict[str, str]] = Field(default_factory=list, description="the conversation as chat messages")
    success: bool | None = Field(default=None, description="the task solved (verifiable tasks), at the end")


class TextTaskEnvironment(Environment[TextTurn, TextObservation, State]):
    """One registered task as an OpenEnv environment, each session with its own :class:`TurnLevelEnv`."""

    SUPPORTS_CONCURRENT_SESSIONS = True

    def __init__(self, env_id: str, **make_kwargs: Any) -> None:
        super().__init__()
        self.env = TurnLevelEnv(env_id, **make_kwargs)
        self._state = State(episode_id=str(uuid4()), step_count=0)

    def reset(self, seed: int | None = None, episode_id: str | None = None, **kwargs: Any) -> TextObservation:
        prompt, info = self.env.reset(seed=seed)
        self._state = State(episode_id=episode_id or str(uuid4()), step_count=0)
        return TextObservation(text=prompt, messages=info["messages"], done=False, reward=0.0)

    def step(self, action: TextTurn, timeout_s: float | None = None, **kwargs: Any) -> TextObservation:
        reply, reward, terminated, truncated, info = self.env.step(action.text)
        self._state.step_count += 1
        done = bool(terminated or truncated)
        metadata = {"terminated": bool(terminated), "truncated": bool(truncated)}
        return TextObservation(
            text=reply, messages=info["messages"], success=info.get("success") if done else None, done=done,
            reward=float(reward), metadata=metadata,
        )  # fmt: skip

    @property
    def state(self) -> State:
        return self._state


class TextTaskClient(EnvClient[TextTurn, TextObservation, State]):
    """OpenEnv client of :func:`serve`'s server (``.sync()`` for the blocking API)."""

    def _step_payload(self, action: TextTurn) -> dict[str, Any]:
        return {"text": action.text}

    def _parse_result(self, payload: dict[str, Any]) -> StepResult[TextObservation]:
        data = payload.get("observation", {})
        observation = TextObservation(
            text=data.get("text", ""), messages=data.get("messages", []), success=data.get("success"),
            done=payload.get("done", False), reward=payload.get("reward"), metadata=data.get("metadata", {}),
        )  # fmt: skip
        return StepResult(observation=observation, reward=payload.get("reward"), done=payload.get("done", False))

    def _parse_state(self, payload: dict[str, Any]) -> State:
        return State(**payload)


def make_app(env_id: str, max_sessions: int = 4, **make_kwargs: Any) -> Any:
    """The FastAPI app serving ``env_id``: each OpenEnv session (up to ``max_sessions`` at once) gets its own env."""
    TurnLevelEnv(env_id, **make_kwargs).close()  # fail here, with the env's own message, not in a session

    def factory() -> TextTaskEnvironment:
        return TextTaskEnvironment(env_id, **make_kwargs)

    return create_app(
        factory, TextTurn, TextObservation, env_name=env_id.split("/")[-1], max_concurrent_envs=max_sessions
    )


def check_port(host: str, port: int) -> None:
    """Raise a clear error when ``host:port`` is taken (uvicorn would log it and exit)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, port))
        except OSError as error:
            raise OSError(
                f"Port {port} on {host} is in use ({error.strerror}): stop what uses it, or pass another --port."
            ) from None


def main(argv: list[str] | None = None) -> int:
    import uvicorn

    parser = argparse.ArgumentParser(prog="python -m text_env.serve", description=__doc__.split("\n\n")[0])
    parser.add_argument("env_id", help="a registered id, e.g. text_env/GuessNumber-v0")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: this machine only)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--max-sessions", type=int, default=4, help="concurrent client sessions")
    args = parser.parse_args(argv)
    try:
        check_port(args.host, args.port)
        app = make_app(args.env_id, max_sessions=args.max_sessions)
    except (OSError, ValueError, TypeError, gymnasium.error.Error) as error:
        parser.error(str(error))
    print(f"[serve] {args.env_id} on http://{args.host}:{args.port} (OpenEnv: /reset, /step, /state, /ws)")
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


if __name__ == "__main__":
    sys.exit(main())
