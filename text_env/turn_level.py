"""Every task at the text level: one model turn per step, text in and text out.

:class:`TurnLevelEnv` wraps any token-level task (:class:`~text_env.TextGenerationEnv`, or a conversation,
:class:`~text_env.MultiTurnEnv`) for loops that produce whole turns as text: ``transformers``' ``generate``, a model
behind an HTTP API, a hand-written policy, or another trainer through OpenEnv (:mod:`text_env.serve`). The token
level stays the one implementation of each task: a turn's text is encoded and written token by token, then the
end-of-turn token, so rewards, success and the environment's replies are the same as at the token level.
"""

from __future__ import annotations

import string
from typing import Any, SupportsFloat

import gymnasium as gym
from gymnasium import spaces

from text_env.env import TextGenerationEnv
from text_env.multi_turn import MultiTurnEnv
from text_env.tokenizers import end_of_turn_token_id

#: Longest text an observation or a turn can hold (characters).
MAX_TEXT = 100_000


class TurnLevelEnv(gym.Env[str, str]):
    """A token-level task with one model turn per step, as text.

    ## Description
    ``reset()`` returns the prompt; ``step(turn)`` writes the model's turn into the wrapped env (its tokens, then the
    end-of-turn token unless the turn filled the token budget) and returns what the environment says next: its reply
    in a conversation, or ``""`` when the episode is over. ``info["messages"]`` is the conversation so far as chat
    messages, ready for a chat model's template.

    ## Action Space
    ``Text(0..100000)`` over the characters of the task's prompts and printable ASCII: the model's turn. Any string
    is accepted in ``step`` (a model may write characters outside that set).

    ## Observation Space
    ``Text(0..100000)`` over the same characters: the prompt at reset, then each reply.

    ## Rewards
    The rewards the token-level env paid during the turn, summed.

    ## Episode End
    As the wrapped env's: ``terminated`` when the task is over, ``truncated`` when a limit cut it.

    ## Arguments
    - ``env``: a token-level env, or a registered id (``"text_env/Reverse-v0"``) with ``gymnasium.make`` kwargs.

    ## Version History
    - v0: initial version.
    """

    metadata = {"render_modes": []}

    def __init__(self, env: gym.Env | str, **make_kwargs: Any) -> None:
        inner = gym.make(env, **make_kwargs) if isinstance(env, str) else env
        base = inner.unwrapped
        if not isinstance(base, TextGenerationEnv):
            raise TypeError(f"TurnLevelEnv wraps a text_env token-level env, got {type(base).__name__}.")
        if not base.stop_on_eos or not base.stop_token_ids:
            raise ValueError(
                "TurnLevelEnv ends a turn with the env's end-of-turn or EOS token: build the env with stop_on_eos=True "
                "and a tokenizer with an EOS token."
            )
        self.env = inner
        self.base = base
        charset = set(string.printable)
        for record in [*base.records, *(base.eval_records or [])]:
            charset.update(record.prompt)
        self.observation_space = spaces.Text(MAX_TEXT, min_length=0, charset=frozenset(charset))
        self.action_space = spaces.Text(MAX_TEXT, min_length=0, charset=frozenset(charset))
        end_of_turn = end_of_turn_token_id(base.tokenizer) if base.chat_template else None
        self._end_of_turn = end_of_turn if end_of_turn is not None else base.eos_token_id  # closes every turn
        self._done = True

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
        super().reset(seed=seed)
        _, info = self.env.reset(seed=seed, options=options)
        self._done = False
        return info["prompt"], {**info, "messages": self._messages()}

    def step(self, action: str) -> tuple[str, SupportsFloat, bool, bool, dict[str, Any]]:
        if self._done:
            raise RuntimeError("step() was called after the episode ended (or before reset()): call env.reset().")
        if not isinstance(action, str):
            raise TypeError(f"A turn is a string, got {type(action).__name__}.")
        tokens = list(self.base.tokenizer(action, add_special_tokens=False)["input_ids"]) + [self._end_of_turn]
        turns_before = self._turns()
        total, terminated, truncated = 0.0, False, False
        info: dict[str, Any] = {}
        for token in tokens:
            _, reward, terminated, truncated, info = self.env.step(token)
            total += float(reward)
            if terminated or truncated or self._turns() > turns_before:
                break  # the turn ended: by the end-of-turn token, its length limit, or the episode's end
        self._done = bool(terminated or truncated)
        reply = "" if self._done else str(info.get("reply", ""))
        return reply, total, bool(terminated), bool(truncated), {**info, "messages": self._messages()}

    def _turns(self) -> int:
        """Model turns the wrapped env has seen end (a single-turn env: 0 until its episode ends)."""
        return self.base.turns if isinstance(self.base, MultiTurnEnv) else 0

    def _messages(self) -> list[dict[str, str]]:
        if isinstance(self.base, MultiTurnEnv):
            return self.base.transcript()
        messages = [{"role": "user", "content": self.base.record.prompt}]
        if self.base.system_prompt is not None:
            messages.insert(0, {"role": "system", "content": self.base.system_prompt})
        return messages

    def close(self) -> None:
        self.env.close()
