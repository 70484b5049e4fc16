"""The text-generation environment: a language model writes one token per step and is paid at the end."""

from __future__ import annotations

import copy
import json
import operator
import warnings
from typing import Any, SupportsFloat

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from text_env.prompts import PromptRecord, PromptSource, as_record, load_records
from text_env.rewards.base import RewardFn, RewardModel, as_reward_model, score_batch, success_batch
from text_env.tokenizers import end_of_turn_token_id, resolve_tokenizer

ObsType = dict[str, np.ndarray]


class UnsupportedRenderModeError(ValueError, TypeError):
    """A render mode the environment does not offer.

    Also a ``TypeError`` because SB3's ``make_vec_env`` first tries ``render_mode="rgb_array"`` and falls back to the
    env's default only on ``TypeError``: text has no pixels, and ``make_vec_env("text_env/...")`` must still work.
    """


class TextGenerationEnv(gym.Env[ObsType, int]):
    """Text generation as a Gymnasium environment: the agent writes a completion to a prompt one token at a time.

    ## Description
    Each episode draws a prompt record (:class:`~text_env.prompts.PromptRecord`: a prompt, an optional reference,
    meta), encodes the prompt (as a chat turn with ``chat_template=True``), and lets the agent append tokens until it
    writes EOS (or the chat template's end-of-turn token) or reaches ``max_new_tokens``. A reward model then scores
    (prompt, completion), or (prompt, completion, reference) when it takes references. This is the RL formulation of
    language model fine-tuning used by Ziegler et al. (2019) and RL4LMs (Ramamurthy et al., 2023).

    ## Action Space
    ``Discrete(V)``: the id of the next token. ``V`` is ``vocab_size`` (default ``len(tokenizer)``); set it to the
    model's embedding size when that is larger than the tokenizer. :meth:`action_masks` (for sb3-contrib's
    ``MaskablePPO``) masks out padding and special tokens other than EOS, and ids the tokenizer does not know.

    ## Observation Space
    ``Dict(input_ids=Box(0, V-1, (L,), int64), attention_mask=Box(0, 1, (L,), int64))`` with
    ``L = max_prompt_tokens + max_new_tokens``. The prompt is left-padded into the first ``max_prompt_tokens``
    slots, generated tokens follow it, and the rest is right padding: the real tokens always form one contiguous
    run ending at the last 1 of ``attention_mask``.

    ## Rewards
    0.0 at every step but the last; at the last step, ``reward_model([prompt], [completion])[0]`` (with
    ``[reference]`` as third argument for a reward model with ``uses_references``) as a Python float. The
    completion is decoded with special tokens (EOS, end-of-turn) skipped: with a chat template it is the
    assistant's text only. A reward that needs references on a prompt without one is an error naming the prompt.
    When the reward model knows success (verifiable tasks), the last step's ``info["success"]`` (and SB3's
    ``info["is_success"]``, logged as ``rollout/success_rate``) says whether the completion solved its prompt.

    ## Starting State
    A prompt record drawn uniformly with ``self.np_random``, or the one chosen by ``reset(options={"prompt_index":
    i})`` (``0 <= i < num_prompts``), ``reset(options={"record": {"prompt": ..., "reference": ...}})`` or
    ``reset(options={"prompt": text})`` (a prompt without reference). ``info`` holds ``"prompt"``, ``"reference"``
    (``None`` without one) and ``"meta"`` at reset and at every step. Choosing the prompt through the reset options
    is how several envs complete the same prompt (the prompt groups of :class:`agents.grpo.GRPO`) without touching
    their random generators.
    Prompts longer than ``max_prompt_tokens`` are left-truncated (their end is kept) with a one-time warning, or
    refused with ``truncation="error"``. A prompt that encodes to no token is replaced by the tokenizer's BOS
    token; without a BOS token it is an error.

    ## Episode End
    ``terminated=True`` when the agent writes EOS or the chat template's end-of-turn token (if ``stop_on_eos``;
    :attr:`stop_token_ids`) or after ``max_new_tokens`` tokens: reaching
    the length limit is the natural end of a completion, whose reward has been paid, so there is no value to
    bootstrap and ``truncated`` is always False.

    ## Arguments
    - ``prompts``: a list of strings, a ``.txt``/``.jsonl`` file or an iterable (list, generator, dataset) of
      ``{"prompt": str, "reference": Any, "meta": dict}`` records (``reference`` and ``meta`` optional).
    - ``tokenizer``: a transformers tokenizer, or a name: ``"smollm2-135m-instruct"``, ``"char"``, or a directory.
    - ``reward_model``: a :class:`~text_env.rewards.RewardModel` or a callable ``(prompts, completions) -> scores``
      or ``(prompts, completions, references) -> scores`` (:func:`~text_env.rewards.base.as_reward_model`).
    - ``max_prompt_tokens`` / ``max_new_tokens``: the two parts of the observation length.
    - ``stop_on_eos``: end the episode when EOS is written.
    - ``vocab_size``: size of the action space (default ``len(tokenizer)``); must be at least ``len(tokenizer)``.
    - ``allowed_token_ids``: if given, :meth:`action_masks` allows only these ids (and EOS).
    - ``truncation``: ``"left"`` (default) or ``"error"`` for prompts longer than ``max_prompt_tokens``.
    - ``render_mode``: ``"ansi"`` returns prompt + completion so far; ``"human"`` prints it.
    - ``eval_prompts``: the task's held-out prompts (same sources as ``prompts``), for evaluation; ``None`` if it
      has none (``agents.train`` then sets a slice of ``prompts`` aside and says so).
    - ``defer_scoring``: do not call the reward model; the last step returns reward 0.0 and
      ``info["score_pending"] = True``, and a vector-env wrapper scores every completion that finished in the same
      vector step in one batched call (``agents.common.vec_env.BatchedRewardVecEnv`` sets it for you).
    - ``dense_reward``: pay the score's change at every token, ``reward_t = score(completion[:t]) -
      score(completion[:t-1])`` (the empty completion counts 0), instead of the whole score at the end. The rewards
      of an episode sum to the same final score (potential-based shaping, Ng et al. 1999: the optimal policies, and
      the KL-regularised objective, are unchanged), but a token is no longer credited with a sentiment word written
      before it: less variance, less KL spent on tokens that did not earn the reward. The reward model is called at
      every step, so use it with cheap ones (VADER: ~15 us a call); ``info["score"]`` is the final score as before.
    - ``chat_template``: format each prompt as a user message with the tokenizer's own chat template and its
      generation prompt (``apply_chat_template(..., add_generation_prompt=True)``), as instruction-tuned models were
      trained; the template's end-of-turn token ends the episode like EOS. A tokenizer without a chat template is an
      error.
    - ``system_prompt``: with ``chat_template``, a system message before the prompt (``None``: the template's own
      default, if any).

    ## Version History
    - v0: initial version.

    >>> from text_env import TextGenerationEnv
    >>> env = TextGenerationEnv(["Hello"], "char", lambda p, c: [len(x) for x in c], max_new_tokens=3)
    >>> obs, info = env.reset(seed=0)
    >>> obs["input_ids"].shape, info["prompt"]
    ((67,), 'Hello')
    """

    metadata = {"render_modes": ["ansi", "human"]}

    def __init__(
        self,
        prompts: PromptSource,
        tokenizer: Any,
        reward_model: RewardModel | RewardFn,
        *,
        max_prompt_tokens: int = 64,
        max_new_tokens: int = 32,
        stop_on_eos: bool = True,
        vocab_size: int | None = None,
        allowed_token_ids: list[int] | None = None,
        truncation: str = "left",
        render_mode: str | None = None,
        defer_scoring: bool = False,
        eval_prompts: PromptSource | None = None,
        dense_reward: bool = False,
        chat_template: bool = False,
        system_prompt: str | None = None,
    ) -> None:
        for name, value in (("max_new_tokens", max_new_tokens), ("max_prompt_tokens", max_prompt_tokens)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise TypeError(
                    f"{name} must be an int, got {type(value).__name__} {value!r} (a YAML or JSON config may have "
                    f"written it as a float): pass {name}={int(value) if isinstance(value, float) else '...'}."
                )
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}.")
        if max_prompt_tokens < 1:
            raise ValueError(f"max_prompt_tokens must be >= 1, got {max_prompt_tokens}.")
        if truncation not in ("left", "error"):
            raise ValueError(f"truncation must be 'left' or 'error', got {truncation!r}.")
        if dense_reward and defer_scoring:
            raise ValueError(
                "dense_reward scores the completion at every step and defer_scoring scores it once, in the vector "
                "env, after the last: pass one of them (BatchedRewardVecEnv sets defer_scoring; use a plain vector env "
                "with dense_reward)."
            )
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise UnsupportedRenderModeError(
                f"render_mode must be one of {self.metadata['render_modes']} or None, got {render_mode!r}."
            )
        if system_prompt is not None and not chat_template:
            raise ValueError("system_prompt is a chat message: pass chat_template=True with it.")
        #: The task's prompt records; :attr:`prompts` are their prompt strings.
        self.records: list[PromptRecord] = load_records(prompts)
        self.prompts: list[str] = [record.prompt for record in self.records]
        self.eval_records: list[PromptRecord] | None = None if eval_prompts is None else load_records(eval_prompts)
        self.eval_prompts: list[str] | None = (
            None if self.eval_records is None else [record.prompt for record in self.eval_records]
        )
        self.tokenizer = resolve_tokenizer(tokenizer)
        self.chat_template = bool(chat_template)
        self.system_prompt = system_prompt
        if self.chat_template and not getattr(self.tokenizer, "chat_template", None):
            raise ValueError(
                f"chat_template=True, but the tokenizer {getattr(self.tokenizer, 'name_or_path', '')!r} has no chat "
                "template (a base model's tokenizer): use an instruction-tuned model's tokenizer (e.g. "
                "'smollm2-135m-instruct'), set tokenizer.chat_template, or pass chat_template=False."
            )
        self.reward_model = as_reward_model(reward_model)
        self.max_prompt_tokens = max_prompt_tokens
        self.max_new_tokens = max_new_tokens
        self.stop_on_eos = stop_on_eos
        self.truncation = truncation
        self.render_mode = render_mode
        self.defer_scoring = defer_scoring
        self.dense_reward = bool(dense_reward)
        self._paid = 0.0  # dense_reward: the score of the completion so far, already paid out

        tokenizer_size = len(self.tokenizer)
        self.vocab_size = tokenizer_size if vocab_size is None else int(vocab_size)
        if self.vocab_size < tokenizer_size:
            raise ValueError(
                f"vocab_size={self.vocab_size} is smaller than the tokenizer's {tokenizer_size} tokens: the tokenizer "
                "could produce ids outside the action space. Pass vocab_size >= len(tokenizer) (the model's "
                "embedding size), or a tokenizer that matches the model."
            )
        self.eos_token_id: int | None = self.tokenizer.eos_token_id
        #: Tokens that end the episode (with ``stop_on_eos``): EOS, and the chat template's end-of-turn token.
        self.stop_token_ids: frozenset[int] = frozenset(
            i
            for i in (self.eos_token_id, end_of_turn_token_id(self.tokenizer) if chat_template else None)
            if i is not None
        )
        pad_id = self.tokenizer.pad_token_id
        self.pad_token_id: int = int(pad_id if pad_id is not None else (self.eos_token_id or 0))

        self.seq_len = max_prompt_tokens + max_new_tokens
        token_box = spaces.Box(low=0, high=self.vocab_size - 1, shape=(self.seq_len,), dtype=np.int64)
        self.observation_space = spaces.Dict(  # type: ignore[assignment]  # narrower than Env's annotation
            {"input_ids": token_box, "attention_mask": spaces.Box(0, 1, shape=(self.seq_len,), dtype=np.int64)}
        )
        self.action_space = spaces.Discrete(self.vocab_size)  # type: ignore[assignment]  # Discrete[int64]
        self._action_mask = self._build_action_mask(allowed_token_ids)

        self._input_ids = np.full(self.seq_len, self.pad_token_id, dtype=np.int64)
        self._attention_mask = np.zeros(self.seq_len, dtype=np.int64)
        self._prompt = ""
        self._record = PromptRecord("")
        self._num_new = 0
        self._done = True
        self._started = False
        self._warned_truncation = False

    # ------------------------------------------------------------------ masks
    def _build_action_mask(self, allowed_token_ids: list[int] | None) -> np.ndarray:
        mask = np.zeros(self.vocab_size, dtype=bool)
        if allowed_token_ids is None:
            mask[: len(self.tokenizer)] = True  # ids past the tokenizer (embedding padding) stay masked
            mask[[i for i in self.tokenizer.all_special_ids if i != self.eos_token_id]] = False
        else:
            allowed = np.asarray(list(allowed_token_ids), dtype=np.int64)
            if allowed.size == 0 or allowed.min() < 0 or allowed.max() >= self.vocab_size:
                raise ValueError(f"allowed_token_ids must be non-empty ids in [0, {self.vocab_size}).")
            mask[allowed] = True
        mask[sorted(self.stop_token_ids)] = True
        mask.flags.writeable = False
        return mask

    def action_masks(self) -> np.ndarray:
        """Boolean array of length V: True for the tokens the agent may write (sb3-contrib ``MaskablePPO``)."""
        return self._action_mask

    # ------------------------------------------------------------------ episode
    def format_prompt(self, prompt: str) -> str:
        """The text the model sees for ``prompt``: the prompt itself, or with ``chat_template`` the conversation
        (system message, the prompt as the user's turn, the assistant's generation prompt) as the template renders
        it."""
        if not self.chat_template:
            return prompt
        messages = [{"role": "user", "content": prompt}]
        if self.system_prompt is not None:
            messages.insert(0, {"role": "system", "content": self.system_prompt})
        return str(self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False))

    def _encode_prompt(self, prompt: str) -> list[int]:
        ids = list(self.tokenizer(self.format_prompt(prompt), add_special_tokens=False)["input_ids"])
        if not ids:
            if self.tokenizer.bos_token_id is None:
                raise ValueError(
                    f"Prompt {prompt!r} encodes to no token and the tokenizer has no BOS token to stand in for it: "
                    "remove empty prompts or use a tokenizer with a BOS token."
                )
            ids = [self.tokenizer.bos_token_id]
        if len(ids) > self.max_prompt_tokens:
            if self.truncation == "error":
                raise ValueError(
                    f"Prompt {prompt[:60]!r}... has {len(ids)} tokens, more than max_prompt_tokens="
                    f"{self.max_prompt_tokens}: shorten it, raise max_prompt_tokens, or use truncation='left'."
                )
            if not self._warned_truncation:
                warnings.warn(
                    f"A prompt has {len(ids)} tokens, more than max_prompt_tokens={self.max_prompt_tokens}: keeping "
                    "its last tokens (left truncation). This warning is shown once per environment.",
                    stacklevel=3,
                )
                self._warned_truncation = True
            ids = ids[-self.max_prompt_tokens :]
        if max(ids) >= self.vocab_size:
            raise ValueError(
                f"The tokenizer produced id {max(ids)} outside the vocabulary of {self.vocab_size} tokens."
            )
        return ids

    def _observation(self) -> ObsType:
        return {"input_ids": self._input_ids.copy(), "attention_mask": self._attention_mask.copy()}

    def _warn_if_an_episode_was_cut(self) -> None:
        """Three episodes in a row reset at the same length, before their completions were scored, is what a
        ``TimeLimit`` wrapper does (``gym.make(..., max_episode_steps=k)`` with ``k < max_new_tokens``, invisible
        from inside the env): no reward is ever paid. Said once per env. (Single early resets, as env checkers make,
        are normal and stay silent.)"""
        if self._done or self._num_new < 2:  # finished, or not really started: not a cut
            self._cuts = 0 if self._done else getattr(self, "_cuts", 0)
            return
        same = self._num_new == getattr(self, "_cut_length", None)
        self._cuts = getattr(self, "_cuts", 0) + 1 if same else 1
        self._cut_length = self._num_new
        if self._cuts >= 3 and not getattr(self, "_warned_cut", False):
            self._warned_cut = True
            warnings.warn(
                f"Episodes keep being reset after {self._num_new} of max_new_tokens={self.max_new_tokens} tokens, "
                "before their completions are scored: no reward is paid for them. A TimeLimit wrapper does this when "
                "gym.make(..., max_episode_steps=k) has k < max_new_tokens: drop max_episode_steps (the env ends its "
                "own episodes) or lower max_new_tokens.",
                UserWarning,
                stacklevel=3,
            )

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[ObsType, dict[str, Any]]:
        super().reset(seed=seed)
        self._warn_if_an_episode_was_cut()
        options = options or {}
        unknown = set(options) - {"prompt", "prompt_index", "record"}
        if unknown or len(options) > 1:
            raise ValueError(
                "reset options take one of 'prompt' (a string), 'prompt_index' (an int) or 'record' (a "
                f"PromptRecord or a {{'prompt', 'reference', 'meta'}} mapping), got {sorted(options)}."
            )
        if "prompt" in options:
            if not isinstance(options["prompt"], str):
                raise TypeError(f"options['prompt'] must be a string, got {type(options['prompt']).__name__}.")
            record = PromptRecord(options["prompt"])
        elif "record" in options:
            record = as_record(options["record"], "options['record']")
        elif "prompt_index" in options:
            record = self.records[self._check_prompt_index(options["prompt_index"])]
        else:
            record = self.records[int(self.np_random.integers(len(self.records)))]
        prompt = record.prompt
        ids = self._encode_prompt(prompt)
        self._input_ids.fill(self.pad_token_id)
        self._attention_mask.fill(0)
        start = self.max_prompt_tokens - len(ids)  # left padding
        self._input_ids[start : self.max_prompt_tokens] = ids
        self._attention_mask[start : self.max_prompt_tokens] = 1
        self._prompt, self._record = prompt, record
        self._num_new = 0
        self._paid = 0.0
        self._done = False
        self._started = True
        return self._observation(), self._record_info()

    def _record_info(self) -> dict[str, Any]:
        # Copies: a caller may change its info, and Gymnasium's checker refuses infos that share objects.
        record = self._record
        return {
            "prompt": self._prompt,
            "reference": copy.deepcopy(record.reference),
            "meta": copy.deepcopy(record.meta),
        }

    @property
    def record(self) -> PromptRecord:
        """The prompt record of the current episode."""
        return self._record

    @property
    def num_prompts(self) -> int:
        """Number of prompts the env draws from: ``reset(options={"prompt_index": i})`` takes ``0 <= i <`` this."""
        return len(self.prompts)

    def _check_prompt_index(self, index: Any) -> int:
        if isinstance(index, (bool, np.bool_)):
            raise TypeError(f"options['prompt_index'] must be an integer, got the boolean {index!r}.")
        try:
            index = operator.index(index)
        except TypeError:
            raise TypeError(f"options['prompt_index'] must be an integer, got {type(index).__name__}.") from None
        if not 0 <= index < len(self.prompts):
            count = len(self.prompts)
            raise IndexError(f"options['prompt_index']={index} is outside the {count} prompts [0, {count}).")
        return index

    def _check_action(self, action: Any) -> int:
        if isinstance(action, (bool, np.bool_)) or (isinstance(action, np.ndarray) and action.dtype == bool):
            raise TypeError(f"Action must be an integer token id, got the boolean {action!r}.")
        if isinstance(action, np.ndarray):
            if action.size != 1:
                raise ValueError(f"Action must be one token id, got an array of shape {action.shape}.")
            action = action.reshape(())[()]
        try:
            token = operator.index(action)  # int, numpy integers; refuses floats
        except TypeError:
            raise TypeError(
                f"Action must be an integer token id, got {type(action).__name__} {action!r}. "
                "Cast it with int(...) if it is an integral float."
            ) from None
        if not 0 <= token < self.vocab_size:
            raise ValueError(f"Action {token} is outside the vocabulary: token ids go from 0 to {self.vocab_size - 1}.")
        return token

    def completion_ids(self) -> np.ndarray:
        """The token ids generated so far in this episode."""
        return self._input_ids[self.max_prompt_tokens : self.max_prompt_tokens + self._num_new].copy()

    def completion_text(self) -> str:
        """The completion so far, decoded with special tokens skipped."""
        return str(self.tokenizer.decode(self.completion_ids().tolist(), skip_special_tokens=True))

    def _write_action(self, action: Any) -> int:
        """Check that an episode is running and ``action`` is a token id, append it to the observation; the id."""
        if not self._started:
            raise RuntimeError("step() was called before reset(): call env.reset() to start an episode.")
        if self._done:
            raise RuntimeError("step() was called after the episode ended: call env.reset() to start a new one.")
        token = self._check_action(action)
        position = self.max_prompt_tokens + self._num_new
        self._input_ids[position] = token
        self._attention_mask[position] = 1
        self._num_new += 1
        return token

    def step(self, action: Any) -> tuple[ObsType, SupportsFloat, bool, bool, dict[str, Any]]:
        token = self._write_action(action)
        wrote_stop = self.stop_on_eos and token in self.stop_token_ids
        terminated = bool(wrote_stop or self._num_new >= self.max_new_tokens)
        info = self._record_info()
        reward = 0.0
        completion = self.completion_text() if terminated or self.dense_reward else ""
        if terminated:
            self._done = True
            info.update(completion=completion, num_new_tokens=self._num_new)
        if terminated and self.defer_scoring:
            info["score_pending"] = True  # scored with the other envs' completions, by the vector env
        elif terminated or self.dense_reward:
            score = self._score(self._prompt, completion)
            # Pay what is not paid yet, so the episode's rewards sum to the score: all of it at the end (sparse), or
            # its change since the previous token (dense_reward).
            reward, self._paid = score - self._paid, score
            if terminated:
                info["score"] = score
                success = success_batch(self.reward_model, [self._prompt], [completion], [self._record.reference])
                if success is not None:  # is_success: SB3 logs its mean as rollout/success_rate
                    info["success"] = info["is_success"] = bool(success[0])
        if self.render_mode == "human":
            self.render()
        return self._observation(), reward, terminated, False, info

    def _score(self, prompt: str, completion: str) -> float:
        references = [self._record.reference]
        try:
            return float(score_batch(self.reward_model, [prompt], [completion], references)[0])
        except (TypeError, ValueError) as error:  # NaN, a missing reference: name the pair
            raise type(error)(f"{error} The pair: prompt={prompt!r}, completion={completion!r}.") from None
        except Exception as error:
            raise RuntimeError(
                f"Reward model {self.reward_model!r} raised {type(error).__name__} while scoring prompt={prompt!r}, "
                f"completion={completion!r}: {error}"
            ) from error

    # ------------------------------------------------------------------ state, for exact resume
    def get_state(self) -> dict[str, Any]:
        """The episode in progress and the random generator, for checkpoints (see ``agents.common.checkpoint``).

        The episode's record goes in as JSON, so that a reference that a checkpoint could not restore faithfully (a
        set, an object) fails here, naming the prompt, instead of in a resumed run."""
        try:
            record = json.dumps(self._record.to_dict())
        except (TypeError, ValueError) as error:
            raise TypeError(
                f"The reference or meta of prompt {self._prompt[:80]!r} is not JSON-serialisable ({error}), so a "
                "checkpoint cannot store the episode: use JSON types (str, numbers, lists, dicts) in records."
            ) from None
        return {
            "input_ids": self._input_ids.copy(),
            "attention_mask": self._attention_mask.copy(),
            "prompt": self._prompt,
            "record": record,
            "num_new": self._num_new,
            "paid": self._paid,
            "done": self._done,
            "started": self._started,
            "np_random": self.np_random.bit_generator.state,
        }

    def fresh_copy(self) -> TextGenerationEnv:
        """An independent environment for a separate episode, sharing this one's prompts, tokenizer and reward
        model (cheap: no tokenizer or reward model is rebuilt). Call :meth:`reset` on it before stepping."""
        clone = copy.copy(self)
        clone._input_ids = self._input_ids.copy()
        clone._attention_mask = self._attention_mask.copy()
        clone._done, clone._started = True, False
        return clone

    def set_state(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`get_state` of an environment with the same settings."""
        if state["input_ids"].shape != self._input_ids.shape:
            raise ValueError(
                f"The saved episode has {state['input_ids'].shape[0]} token slots, this environment "
                f"{self.seq_len}: resume with the same max_prompt_tokens and max_new_tokens."
            )
        self._input_ids[:] = state["input_ids"]
        self._attention_mask[:] = state["attention_mask"]
        self._prompt, self._num_new = state["prompt"], state["num_new"]
        self._record = as_record(json.loads(state["record"]), "the checkpoint's episode record")
        self._paid = float(state["paid"])
        self._done, self._started = state["done"], state["started"]
        self.np_random.bit_generator.state = state["np_random"]

    # ------------------------------------------------------------------ render
    def render(self) -> str | None:
        text = self._prompt + self.completion_text()
        if self.render_mode == "ansi":
            return text
        if self.render_mode == "human":
            print(text)
        return None
