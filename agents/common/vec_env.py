"""One reward-model call per vector step: completions that finish together are scored together.

A ``TextGenerationEnv`` scores its completion when its episode ends, one pair per call: with 32 envs, a neural
reward model runs 32 batches of one. :class:`BatchedRewardVecEnv` switches its envs to ``defer_scoring`` and, after
each vector step, scores every completion that finished in it with one ``reward_model.score(prompts, completions)``
call, then writes the scores where the envs would have: the step's reward, ``info["score"]``, and the episode
return that SB3's ``Monitor`` put in ``info["episode"]["r"]`` (so ``ep_info_buffer`` and logged returns are right;
the Monitor's own CSV file, if any, still has the unscored return).

    venv = BatchedRewardVecEnv(make_vec_env("text_env/PositiveReview-v0", n_envs=32))
    PPO(CausalLMPolicy, venv, ...)
"""

from __future__ import annotations

from typing import Any

import numpy as np
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper
from stable_baselines3.common.vec_env.base_vec_env import VecEnvStepReturn

from text_env.rewards.base import RewardModel, check_references, check_scores, success_batch


class BatchedRewardVecEnv(VecEnvWrapper):
    """Score the completions that finish in the same vector step with one reward-model call.

    :param venv: a vector env of ``TextGenerationEnv`` (e.g. from ``make_vec_env``); all envs must share one reward
        model (the one of env 0 is used, in this process).
    :param reward_model: the reward model to call instead of the envs' own.
    """

    def __init__(self, venv: VecEnv, reward_model: RewardModel | None = None) -> None:
        super().__init__(venv)
        try:
            if any(venv.get_attr("dense_reward")):
                raise ValueError(
                    "BatchedRewardVecEnv scores each completion once, at its end; these envs have dense_reward=True "
                    "(a score at every token): use the vector env without BatchedRewardVecEnv."
                )
            # Gymnasium's set_wrapper_attr reaches the TextGenerationEnv under wrappers such as SB3's Monitor
            # (VecEnv.set_attr would set the attribute on the outermost wrapper only).
            venv.env_method("set_wrapper_attr", "defer_scoring", True)
            if not all(venv.get_attr("defer_scoring")):
                raise AttributeError("defer_scoring did not reach the environments")
            self.reward_model: RewardModel = reward_model or venv.get_attr("reward_model", indices=0)[0]
        except AttributeError as error:
            raise TypeError(f"BatchedRewardVecEnv needs text_env.TextGenerationEnv environments: {error}") from error
        self.calls = 0  # reward-model calls made (statistics)

    def reset(self) -> Any:
        return self.venv.reset()

    def step_wait(self) -> VecEnvStepReturn:
        obs, rewards, dones, infos = self.venv.step_wait()
        pending = [i for i, info in enumerate(infos) if info.pop("score_pending", False)]
        if pending:
            prompts = [infos[i]["prompt"] for i in pending]
            completions = [infos[i]["completion"] for i in pending]
            references = [infos[i].get("reference") for i in pending]
            if self.reward_model.uses_references:
                references = check_references(self.reward_model, prompts, references)
            try:
                if self.reward_model.uses_references:
                    raw = self.reward_model.score(prompts, completions, references)  # type: ignore[call-arg]
                else:
                    raw = self.reward_model.score(prompts, completions)
            except Exception as error:
                raise RuntimeError(
                    f"Reward model {self.reward_model!r} raised {type(error).__name__} while scoring {len(pending)} "
                    f"completions (first: prompt={prompts[0]!r}, completion={completions[0]!r}): {error}"
                ) from error
            try:
                scores = check_scores(raw, len(pending), self.reward_model)
            except ValueError as error:  # e.g. NaN: name the first pair whose score is not finite
                values = np.asarray(raw, dtype=np.float64).reshape(-1)
                bad = int(np.flatnonzero(~np.isfinite(values))[0]) if values.shape == (len(pending),) else 0
                raise ValueError(
                    f"{error} First bad pair: prompt={prompts[bad]!r}, completion={completions[bad]!r}."
                ) from None
            self.calls += 1
            successes = success_batch(self.reward_model, prompts, completions, references)
            for n, (i, score) in enumerate(zip(pending, scores, strict=True)):
                if successes is not None:
                    infos[i]["success"] = infos[i]["is_success"] = bool(successes[n])
                rewards[i] += np.float32(score)
                infos[i]["score"] = float(score)
                if "episode" in infos[i]:  # SB3's Monitor summed the episode without its score
                    infos[i]["episode"]["r"] = round(infos[i]["episode"]["r"] + float(score), 6)
        return obs, rewards, dones, infos
