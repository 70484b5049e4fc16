"""The reward-model interface: a batched scorer ``(prompts, completions[, references]) -> np.ndarray`` of floats.

Two kinds of reward model, told apart by the class attribute :attr:`RewardModel.uses_references` (for plain
callables: by their signature, :func:`as_reward_model`):

- ``score(prompts, completions)``: the completion alone decides (sentiment, length, a classifier);
- ``score(prompts, completions, references)`` with ``uses_references = True``: each prompt's reference decides (an
  answer, a target string, a word list; :class:`~text_env.prompts.PromptRecord`). Such a model may also say which
  completions *succeed* (``success(prompts, completions, references) -> bool array``: exact match, all words used),
  which the env returns as ``info["success"]`` and evaluations report as accuracy and pass@k.

Every reward call goes through :func:`score_batch`, which passes references to the models that take them and
refuses a prompt without one, naming it.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import numpy as np

RewardFn = Callable[..., "np.ndarray | Sequence[float]"]


class RewardModel:
    """Base class of reward models: score a batch of (prompt, completion) pairs, or (prompt, completion,
    reference) triples when :attr:`uses_references` is True.

    Subclasses implement :meth:`score`; calling the model checks the output (one finite float per pair).
    Any plain callable with the same signature is accepted by the environment as well.
    """

    #: ``score`` takes a third argument, the prompts' references (one per prompt, never ``None``).
    uses_references: ClassVar[bool] = False

    def score(self, prompts: Sequence[str], completions: Sequence[str]) -> np.ndarray:
        """One score per pair. Reward models with ``uses_references = True`` add a third parameter,
        ``references: Sequence[Any] | None = None``, which :func:`score_batch` always fills."""
        raise NotImplementedError

    def success(
        self, prompts: Sequence[str], completions: Sequence[str], references: Sequence[Any]
    ) -> np.ndarray | None:
        """Which completions solve their prompt (a bool array), or ``None`` when the reward has no notion of
        success (the default). Verifiable rewards override it: ``info["success"]``, accuracy and pass@k."""
        return None

    def __call__(
        self, prompts: Sequence[str], completions: Sequence[str], references: Sequence[Any] | None = None
    ) -> np.ndarray:
        if len(prompts) != len(completions):
            raise ValueError(
                f"Got {len(prompts)} prompts but {len(completions)} completions: pass one of each per pair."
            )
        return score_batch(self, prompts, completions, references)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    def __getstate__(self) -> dict[str, object]:
        """Pickling (subprocess and async vector envs send the env factory, reward model included, to each worker):
        fails with the fix named instead of a bare pickling error from inside the vector env."""
        import cloudpickle

        state = dict(self.__dict__)
        for name, value in state.items():
            try:
                cloudpickle.dumps(value)
            except Exception as error:  # pickling raises TypeError, PicklingError, AttributeError, ...
                raise TypeError(
                    f"{self!r} cannot be pickled (its attribute {name!r}: {error}), so it cannot be sent to a "
                    "subprocess or async vector env. Use DummyVecEnv / vectorization_mode='sync', or build the "
                    "reward model inside each worker (a reward spec string such as 'sentiment', or an env factory "
                    "that creates it)."
                ) from error
        return state


def check_references(reward_model: RewardModel, prompts: Sequence[str], references: Sequence[Any] | None) -> list[Any]:
    """The references of a reward model that takes them, one per prompt; an error names the first prompt without
    one (a plain string prompt, or a record whose ``reference`` is ``None``)."""
    if references is None:
        references = [None] * len(prompts)
    if len(references) != len(prompts):
        raise ValueError(f"Got {len(prompts)} prompts but {len(references)} references: pass one per prompt.")
    for prompt, reference in zip(prompts, references, strict=True):
        if reference is None:
            raise ValueError(
                f"Reward model {reward_model!r} needs a reference for each prompt, and prompt {prompt[:80]!r} has "
                'none: give prompts as records {"prompt": ..., "reference": ...} (a .jsonl file, a list of dicts or '
                "PromptRecords), or use a reward that scores the completion alone."
            )
    return list(references)


def score_batch(
    reward_model: RewardModel,
    prompts: Sequence[str],
    completions: Sequence[str],
    references: Sequence[Any] | None = None,
) -> np.ndarray:
    """Score a batch, passing references to a reward model that takes them; the output checked
    (:func:`check_scores`). The one place every reward call goes through (env, vector env, evaluation)."""
    if reward_model.uses_references:
        references = check_references(reward_model, prompts, references)
        scores = reward_model.score(prompts, completions, references)  # type: ignore[call-arg]
    else:
        scores = reward_model.score(prompts, completions)
    return check_scores(scores, len(prompts), reward_model)


def success_batch(
    reward_model: RewardModel,
    prompts: Sequence[str],
    completions: Sequence[str],
    references: Sequence[Any] | None = None,
) -> np.ndarray | None:
    """``reward_model.success`` as a bool array of one value per completion, or ``None`` when it has no notion of
    success."""
    if not reward_model.uses_references:
        return None
    successes = reward_model.success(prompts, completions, check_references(reward_model, prompts, references))
    if successes is None:
        return None
    array = np.asarray(successes, dtype=bool)
    if array.shape != (len(prompts),):
        raise ValueError(
            f"Reward model {reward_model!r} returned successes of shape {array.shape} for {len(prompts)} completions."
        )
    return array


def check_scores(scores: object, expected: int, source: object) -> np.ndarray:
    """Return ``scores`` as a float64 array of length ``expected``, or raise an error naming ``source``."""
    if hasattr(scores, "detach") and (getattr(scores, "requires_grad", False) or getattr(scores, "is_cuda", False)):
        raise TypeError(
            f"Reward model {source!r} returned a torch tensor that is on a GPU or requires grad: return "
            "scores.detach().cpu().numpy() (rewards are plain numbers, no gradient flows through them)."
        )
    array = np.asarray(scores, dtype=np.float64)
    if array.shape != (expected,):
        raise ValueError(
            f"Reward model {source!r} returned scores of shape {array.shape} for {expected} pairs: it must return "
            "one float per (prompt, completion) pair."
        )
    if not np.all(np.isfinite(array)):
        raise ValueError(f"Reward model {source!r} returned non-finite scores {array.tolist()}: scores must be finite.")
    return array


class FunctionReward(RewardModel):
    """Wrap a per-pair function ``fn(prompt, completion) -> float`` as a batched reward model."""

    def __init__(self, fn: Callable[[str, str], float], name: str | None = None) -> None:
        if not callable(fn):
            raise TypeError(f"FunctionReward needs a callable fn(prompt, completion) -> float, got {fn!r}.")
        self.fn = fn
        self.name = name or getattr(fn, "__name__", "fn")

    def score(self, prompts: Sequence[str], completions: Sequence[str]) -> np.ndarray:
        return np.array([float(self.fn(p, c)) for p, c in zip(prompts, completions, strict=True)])

    def __repr__(self) -> str:
        return f"FunctionReward({self.name})"


class CombinedReward(RewardModel):
    """Weighted sum of reward models: ``CombinedReward([(SentimentReward(), 1.0), (LengthReward(20), 0.5)])``."""

    def __init__(self, terms: Sequence[tuple[RewardModel | RewardFn, float]]) -> None:
        if not terms:
            raise ValueError("CombinedReward needs at least one (reward_model, weight) pair.")
        self.terms = [(as_reward_model(model), float(weight)) for model, weight in terms]
        self.uses_references = any(model.uses_references for model, _ in self.terms)  # type: ignore[misc]

    def score(
        self, prompts: Sequence[str], completions: Sequence[str], references: Sequence[Any] | None = None
    ) -> np.ndarray:
        total = np.zeros(len(prompts))
        for model, weight in self.terms:
            total += weight * score_batch(model, prompts, completions, references)
        return total

    def __repr__(self) -> str:
        return "CombinedReward(" + ", ".join(f"{weight}*{model!r}" for model, weight in self.terms) + ")"


class _CallableReward(RewardModel):
    """A plain batched callable, given the output checks of :class:`RewardModel`; it takes references when its
    signature does (:func:`takes_references`)."""

    def __init__(self, fn: RewardFn) -> None:
        self.fn = fn
        self.uses_references = takes_references(fn)  # type: ignore[misc]

    def score(
        self, prompts: Sequence[str], completions: Sequence[str], references: Sequence[Any] | None = None
    ) -> np.ndarray:
        if self.uses_references:
            return self.fn(prompts, completions, references)  # type: ignore[return-value]
        return self.fn(prompts, completions)  # type: ignore[return-value]

    def __repr__(self) -> str:
        return getattr(self.fn, "__name__", repr(self.fn))


def takes_references(fn: Callable[..., Any]) -> bool:
    """Whether a plain reward callable takes references: a parameter named ``references``, or a third positional
    parameter (``fn(prompts, completions, references)``, TRL reward functions' order). ``fn(prompts, completions)``,
    and callables whose signature cannot be read, take none."""
    try:
        parameters = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return False
    if any(p.name == "references" for p in parameters):
        return True
    positional = [p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(positional) >= 3 and positional[2].default is inspect.Parameter.empty


def as_reward_model(reward_model: RewardModel | RewardFn) -> RewardModel:
    """Accept a :class:`RewardModel` or any batched callable ``(prompts, completions) -> scores`` or
    ``(prompts, completions, references) -> scores``."""
    if isinstance(reward_model, RewardModel):
        return reward_model
    if callable(reward_model):
        return _CallableReward(reward_model)
    raise TypeError(
        f"reward_model must be a RewardModel or a callable (prompts, completions) -> scores, got {reward_model!r}."
    )
