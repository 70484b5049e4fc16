"""The reward-model interface: a batched scorer ``(prompts, completions) -> np.ndarray`` of floats."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

RewardFn = Callable[[Sequence[str], Sequence[str]], "np.ndarray | Sequence[float]"]


class RewardModel:
    """Base class of reward models: score a batch of (prompt, completion) pairs.

    Subclasses implement :meth:`score`; calling the model checks the output (one finite float per pair).
    Any plain callable with the same signature is accepted by the environment as well.
    """

    def score(self, prompts: Sequence[str], completions: Sequence[str]) -> np.ndarray:
        raise NotImplementedError

    def __call__(self, prompts: Sequence[str], completions: Sequence[str]) -> np.ndarray:
        if len(prompts) != len(completions):
            raise ValueError(
                f"Got {len(prompts)} prompts but {len(completions)} completions: pass one of each per pair."
            )
        return check_scores(self.score(prompts, completions), len(prompts), self)

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

    def score(self, prompts: Sequence[str], completions: Sequence[str]) -> np.ndarray:
        total = np.zeros(len(prompts))
        for model, weight in self.terms:
            total += weight * model(prompts, completions)
        return total

    def __repr__(self) -> str:
        return "CombinedReward(" + ", ".join(f"{weight}*{model!r}" for model, weight in self.terms) + ")"


class _CallableReward(RewardModel):
    """A plain batched callable, given the output checks of :class:`RewardModel`."""

    def __init__(self, fn: RewardFn) -> None:
        self.fn = fn

    def score(self, prompts: Sequence[str], completions: Sequence[str]) -> np.ndarray:
        return self.fn(prompts, completions)  # type: ignore[return-value]

    def __repr__(self) -> str:
        return getattr(self.fn, "__name__", repr(self.fn))


def as_reward_model(reward_model: RewardModel | RewardFn) -> RewardModel:
    """Accept a :class:`RewardModel` or any batched callable ``(prompts, completions) -> scores``."""
    if isinstance(reward_model, RewardModel):
        return reward_model
    if callable(reward_model):
        return _CallableReward(reward_model)
    raise TypeError(
        f"reward_model must be a RewardModel or a callable (prompts, completions) -> scores, got {reward_model!r}."
    )
