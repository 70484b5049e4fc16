"""Conversations in the token-level environment: the model writes a turn token by token, the environment answers.

A task supplies a *responder*: when the model ends a turn (its end-of-turn token or EOS, or ``max_turn_tokens``),
``responder(messages, reference)`` reads the conversation so far and returns a :class:`Reply`: the environment's
text, a reward paid at this turn, whether the episode is over, and whether it succeeded. The reply is formatted
(with ``chat_template=True`` as the template renders a user message and the next assistant header) and appended to
the observation as several tokens at once. Those tokens are observations, never actions: an algorithm trains on the
model's tokens only.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any, NamedTuple, SupportsFloat

import numpy as np

from text_env.env import ObsType, TextGenerationEnv
from text_env.prompts import PromptSource


class Reply(NamedTuple):
    """The environment's answer to a model turn, a named tuple of four fields:

    - ``text``: what the environment says (a game's feedback, a tool's result, a user's reply); unused when
      ``done``;
    - ``reward``: paid at the step that ended the turn;
    - ``done``: the episode is over (the game is won or lost): ``terminated``;
    - ``success``: whether the task is solved so far (the last reply's value is the episode's ``info["success"]``;
      ``None``: the task does not say).
    """

    text: str
    reward: float = 0.0
    done: bool = False
    success: bool | None = None


#: ``responder(messages, reference) -> Reply`` (or a ``(text, reward, done)`` tuple). ``messages`` is the
#: conversation so far as chat messages (``{"role": "user" | "assistant", "content": str}``, the prompt first, the
#: model's last turn last); ``reference`` the episode record's reference.
Responder = Callable[[list[dict[str, str]], Any], "Reply | tuple[str, float, bool]"]


def _no_reward(prompts: list[str], completions: list[str]) -> list[float]:
    return [0.0] * len(prompts)


class MultiTurnEnv(TextGenerationEnv):
    """A :class:`~text_env.TextGenerationEnv` whose episodes are conversations of several model turns.

    ## Description
    The model writes a turn one token per step. When it writes its end-of-turn token (``chat_template=True``) or EOS,
    or has written ``max_turn_tokens`` tokens in the turn, the responder answers; its reply's tokens are appended to
    the observation (an observation can grow by many tokens in one step), and the model writes its next turn.

    ## Action Space
    ``Discrete(V)``: one token id, as in :class:`~text_env.TextGenerationEnv`.

    ## Observation Space
    As in :class:`~text_env.TextGenerationEnv`: the prompt, then the conversation's tokens (the model's and the
    environment's) in the ``max_new_tokens`` slots after it. :meth:`environment_token_mask` says which of them the
    environment wrote.

    ## Rewards
    Each reply's ``reward``, paid at the step that ended the model's turn (0 elsewhere). ``info["score"]`` at the
    end is the episode's total.

    ## Episode End
    ``terminated`` when a reply says ``done`` (the game is over, won or lost). ``truncated`` when a limit cuts a
    conversation that could have gone on: ``max_turns`` model turns without ``done``, or no room for the reply and a
    next turn in the ``max_new_tokens`` slots. ``info["success"]`` (and SB3's ``is_success``) is the last reply's
    ``success``, when the task reports it.

    ## Arguments
    Those of :class:`~text_env.TextGenerationEnv` except ``reward_model``, ``dense_reward`` and ``defer_scoring``
    (the responder pays the rewards), and:

    - ``responder``: ``(messages, reference) -> Reply`` (see :data:`Responder`).
    - ``max_turns``: model turns per episode at most.
    - ``max_turn_tokens``: tokens per model turn at most (``None``: ``max_new_tokens``).
    - ``reply_format``: without a chat template, how a reply is written into the text (``"{text}"`` is the reply).

    ## Version History
    - v0: initial version.
    """

    def __init__(
        self,
        prompts: PromptSource,
        tokenizer: Any,
        responder: Responder,
        *,
        max_turns: int = 4,
        max_turn_tokens: int | None = None,
        reply_format: str = "\n{text}\n",
        **kwargs: Any,
    ) -> None:
        for name in ("reward_model", "dense_reward", "defer_scoring"):
            if name in kwargs:
                raise TypeError(f"MultiTurnEnv takes no {name}: the responder's replies pay the rewards.")
        if max_turns < 1:
            raise ValueError(f"max_turns must be >= 1, got {max_turns}.")
        if max_turn_tokens is not None and max_turn_tokens < 1:
            raise ValueError(f"max_turn_tokens must be >= 1 or None, got {max_turn_tokens}.")
        if "{text}" not in reply_format:
            raise ValueError(f"reply_format must contain '{{text}}', got {reply_format!r}.")
        super().__init__(prompts, tokenizer, _no_reward, **kwargs)
        self.responder = responder
        self.max_turns = max_turns
        self.max_turn_tokens = max_turn_tokens or self.max_new_tokens
        self.reply_format = reply_format
        self._messages: list[dict[str, str]] = []
        self._turn_start = 0  # index into the generated slots where the model's current turn starts
        self._env_mask = np.zeros(self.max_new_tokens, dtype=bool)  # generated slots the environment wrote
        self._return = 0.0
        self._success: bool | None = None

    # ------------------------------------------------------------------ episode
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[ObsType, dict[str, Any]]:
        obs, info = super().reset(seed=seed, options=options)
        self._messages = [{"role": "user", "content": self._prompt}]
        if self.system_prompt is not None:
            self._messages.insert(0, {"role": "system", "content": self.system_prompt})
        self._turn_start = 0
        self._env_mask[:] = False
        self._return, self._success = 0.0, None
        return obs, info

    def step(self, action: Any) -> tuple[ObsType, SupportsFloat, bool, bool, dict[str, Any]]:
        token = self._write_action(action)
        turn_length = self._num_new - self._turn_start
        wrote_stop = self.stop_on_eos and token in self.stop_token_ids
        room = self.max_new_tokens - self._num_new
        info = self._record_info()
        if not (wrote_stop or turn_length >= self.max_turn_tokens or room == 0):
            return self._observation(), 0.0, False, False, info

        turn_ids = self._input_ids[self.max_prompt_tokens + self._turn_start : self.max_prompt_tokens + self._num_new]
        turn_text = str(self.tokenizer.decode(turn_ids.tolist(), skip_special_tokens=True))
        self._messages.append({"role": "assistant", "content": turn_text})
        reply = self._ask(turn_ids)
        self._return += float(reply.reward)
        if reply.success is not None:
            self._success = bool(reply.success)
        terminated, truncated = bool(reply.done), False
        if not terminated:
            reply_ids = self._reply_ids(turn_ids, reply.text)
            if self.turns >= self.max_turns or len(reply_ids) >= room:  # a next turn needs one slot at least
                truncated = True
            else:
                start = self.max_prompt_tokens + self._num_new
                self._input_ids[start : start + len(reply_ids)] = reply_ids
                self._attention_mask[start : start + len(reply_ids)] = 1
                self._env_mask[self._num_new : self._num_new + len(reply_ids)] = True
                self._num_new += len(reply_ids)
                self._turn_start = self._num_new
                self._messages.append({"role": "user", "content": reply.text})
        info.update(reply=reply.text, turn=self.turns)
        if terminated or truncated:
            self._done = True
            info.update(
                completion=self.completion_text(), num_new_tokens=self._num_new, score=self._return,
                transcript=copy.deepcopy(self._messages),
            )  # fmt: skip
            if self._success is not None:
                info["success"] = info["is_success"] = self._success
        if self.render_mode == "human":
            self.render()
        return self._observation(), float(reply.reward), terminated, truncated, info

    def _ask(self, turn_ids: np.ndarray) -> Reply:
        messages = copy.deepcopy(self._messages)
        try:
            answer = self.responder(messages, copy.deepcopy(self._record.reference))
        except Exception as error:
            raise RuntimeError(
                f"The responder {self.responder!r} raised {type(error).__name__} on the turn "
                f"{messages[-1]['content']!r} of prompt {self._prompt!r}: {error}"
            ) from error
        reply = answer if isinstance(answer, Reply) else Reply(*answer)
        if not isinstance(reply.text, str):
            raise TypeError(
                f"A reply's text must be a string, got {type(reply.text).__name__} from {self.responder!r}."
            )
        try:
            reward = float(reply.reward)
        except (TypeError, ValueError):
            reward = float("nan")
        if not np.isfinite(reward):
            raise ValueError(
                f"The responder {self.responder!r} returned the reward {reply.reward!r} for the turn "
                f"{messages[-1]['content']!r}: a reply's reward must be a finite number."
            )
        return reply._replace(reward=reward)

    def _reply_ids(self, turn_ids: np.ndarray, text: str) -> list[int]:
        """The tokens the environment appends for its reply ``text`` after the model's turn ``turn_ids``.

        With a chat template: what the template renders after the model's turn (the rest of the assistant message
        the model did not write itself, e.g. the newline after its end-of-turn token or the end-of-turn token when
        the turn was cut), then the user message and the next assistant header, so that the observation is the
        conversation as the template renders it."""
        if not self.chat_template:
            return list(self.tokenizer(self.reply_format.format(text=text), add_special_tokens=False)["input_ids"])
        render = self.tokenizer.apply_chat_template
        before = str(render(self._messages, tokenize=False))
        after = str(
            render([*self._messages, {"role": "user", "content": text}], add_generation_prompt=True, tokenize=False)
        )
        if not after.startswith(before):
            raise ValueError(
                "The chat template does not render a conversation as the start of its continuation, so the "
                "environment cannot append a reply: use a template that does (ChatML does)."
            )
        written = str(self.tokenizer.decode(turn_ids.tolist(), skip_special_tokens=False))
        found = before.rfind(written)
        rest_of_turn = before[found + len(written) :] if found >= 0 else ""
        return list(self.tokenizer(rest_of_turn + after[len(before) :], add_special_tokens=False)["input_ids"])

    # ------------------------------------------------------------------ views
    @property
    def turns(self) -> int:
        """Model turns that ended so far in this episode."""
        return sum(message["role"] == "assistant" for message in self._messages)

    def environment_token_mask(self) -> np.ndarray:
        """``(max_new_tokens,)`` True for the slots after the prompt that the environment wrote (its replies)."""
        return self._env_mask.copy()

    def transcript(self) -> list[dict[str, str]]:
        """The conversation so far as chat messages."""
        return copy.deepcopy(self._messages)

    def completion_text(self) -> str:
        """The model's turns so far, one a line (the environment's replies are in :meth:`transcript`)."""
        return "\n".join(message["content"] for message in self._messages if message["role"] == "assistant")

    # ------------------------------------------------------------------ state, for exact resume
    def get_state(self) -> dict[str, Any]:
        return {
            **super().get_state(),
            "messages": copy.deepcopy(self._messages),
            "turn_start": self._turn_start,
            "env_mask": self._env_mask.copy(),
            "return": self._return,
            "success": self._success,
        }

    def set_state(self, state: dict[str, Any]) -> None:
        super().set_state(state)
        self._messages = copy.deepcopy(state["messages"])
        self._turn_start = int(state["turn_start"])
        self._env_mask[:] = state["env_mask"]
        self._return, self._success = float(state["return"]), state["success"]

    def fresh_copy(self) -> MultiTurnEnv:
        clone = super().fresh_copy()
        assert isinstance(clone, MultiTurnEnv)
        clone._env_mask = self._env_mask.copy()
        clone._messages = []
        return clone
