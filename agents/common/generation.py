"""Generate completions with a trained policy through the environment, and measure them.

Runs a batch of environment copies in lock-step (one policy call per token for the whole batch, through the
policy's prediction KV cache), so evaluation costs about as much as ``model.generate``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, cast

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3.common.utils import obs_as_tensor

from agents.common.episodes import stack_steps
from agents.common.policy import CausalLMPolicyBase, MaskableCausalLMPolicy, sample_token_ids
from agents.common.reference import ReferenceModel
from text_env.env import TextGenerationEnv
from text_env.prompts import PromptRecord, as_record


@dataclass
class GenerationResult:
    """Completions of ``prompts`` with their reward-model scores and, given a reference, their KL to it."""

    prompts: list[str]
    completions: list[str]
    scores: np.ndarray  # (N,) reward-model scores (unshaped)
    references: list[Any] = field(default_factory=list)  # (N,) the prompts' references (None without)
    successes: np.ndarray | None = None  # (N,) bool: the completion solved its prompt (verifiable rewards only)
    kl: np.ndarray | None = None  # (N,) summed per-token KL(pi || pi_ref) of each completion
    num_tokens: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))  # (N,)
    ref_log_likelihood: np.ndarray | None = None  # (N,) mean log pi_ref(a_t | s_t) over each completion's tokens

    def repetition(self, n: int = 3) -> float:
        """Mean over completions of the share of word n-grams that repeat an earlier n-gram of the same completion
        (0: no repeats; "great great great great" scores 0.5 at n=2): how much a completion stuffs words."""
        shares = []
        for completion in self.completions:
            words = completion.split()
            grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
            if grams:
                shares.append(1.0 - len(set(grams)) / len(grams))
        return float(np.mean(shares)) if shares else 0.0

    def distinct_n(self, n: int) -> float:
        """Distinct-n (Li et al. 2016): distinct word n-grams over all n-grams of all completions."""
        grams = [
            tuple(words[i : i + n])
            for c in self.completions
            for words in [c.split()]
            for i in range(len(words) - n + 1)
        ]
        return len(set(grams)) / len(grams) if grams else 0.0


def _policy_of(model_or_policy: object) -> CausalLMPolicyBase:
    policy = getattr(model_or_policy, "policy", model_or_policy)
    if not isinstance(policy, CausalLMPolicyBase):
        raise TypeError(f"Expected a CausalLMPolicy or an SB3 model using one, got {type(model_or_policy).__name__}.")
    return policy


class _Step(NamedTuple):
    """One lock-step generation step of a batch of ``B`` envs."""

    obs: dict[str, torch.Tensor]  # (B, L) each
    actions: torch.Tensor  # (B,)
    masks: np.ndarray | None  # (B, V) allowed tokens, or None
    active: np.ndarray  # (B,) the env was still generating
    logits: torch.Tensor  # (B, V) the policy's temperature-scaled (masked) logits that were sampled from


@torch.no_grad()
def _completion_kl(reference: ReferenceModel, steps: list[_Step]) -> tuple[np.ndarray, np.ndarray]:
    """Exact KL(pi || pi_ref) of each completion, summed over its tokens, and the mean reference log-likelihood of
    its tokens, ``(B,)`` each.

    The policy's logits are the ones generation sampled from; the reference scores the episodes in groups, one
    forward pass per episode, at most ``reference.chunk_rows`` rows at a time (bounds the ``(rows, V)`` tensors).
    """
    n_steps, batch = len(steps), len(steps[0].actions)
    group = max(1, reference.chunk_rows // n_steps)  # episodes per reference pass
    active = torch.as_tensor(np.stack([s.active for s in steps], 1))  # (B, T)
    kl, likelihood = [], []
    for start in range(0, batch, group):
        episodes = slice(start, start + group)
        # Episode-major rows (b, t) -> b * T + t, so that each episode's steps share one forward pass.
        obs = {key: stack_steps([s.obs[key][episodes] for s in steps]) for key in steps[0].obs}  # (b*T, L)
        actions = stack_steps([s.actions[episodes] for s in steps])  # (b*T,)
        step_masks = [s.masks[episodes] for s in steps if s.masks is not None]  # T x (b, V), or none
        masks = np.stack(step_masks, 1).reshape(-1, step_masks[0].shape[-1]) if step_masks else None  # (b*T, V)
        log_p = torch.log_softmax(stack_steps([s.logits[episodes] for s in steps]), -1)  # (b*T, V)
        log_q = torch.log_softmax(reference.logits(obs, actions, masks), -1)  # (b*T, V)
        token_kl = (log_p.exp() * (log_p - log_q)).nan_to_num(0.0).sum(-1)  # (b*T,) masked tokens: 0 * inf -> 0
        kl.append((token_kl.reshape(-1, n_steps) * active[episodes]).sum(1))  # (b,)
        token_log_q = log_q.gather(1, actions.long().reshape(-1, 1)).reshape(-1, n_steps)  # (b, T)
        on = active[episodes]  # (b, T)
        likelihood.append((token_log_q * on).sum(1) / on.sum(1).clamp(min=1))  # (b,)
    return torch.cat(kl).double().cpu().numpy(), torch.cat(likelihood).double().cpu().numpy()


@torch.no_grad()
def generate_completions(
    model_or_policy: object,
    env: gym.Env,
    prompts: Sequence[str | PromptRecord],
    *,
    deterministic: bool = False,
    reference: ReferenceModel | None = None,
    batch_size: int = 16,
) -> GenerationResult:
    """Write one completion per prompt with the policy (sampling, or greedy with ``deterministic=True``).

    :param prompts: prompt strings, or :class:`~text_env.prompts.PromptRecord` s (or their dicts) whose references
        the reward checks (verifiable tasks: ``successes`` is filled).
    :param env: the environment (or a wrapper of it) that defines tokenizer, lengths and reward model.
    :param reference: if given, also compute each completion's exact KL to it, summed over tokens:
        ``sum_t sum_v pi(v|s_t) (log pi(v|s_t) - log pi_ref(v|s_t))``, from the logits generation sampled from and
        one reference pass per episode. Keeps the ``(steps, batch_size, V)`` logits of a chunk in memory.
    """
    if isinstance(prompts, str):
        raise TypeError(f"prompts must be a list of strings, got the single string {prompts[:40]!r}: pass [prompt].")
    records = [as_record(p, f"prompts[{i}]") for i, p in enumerate(prompts)]
    policy = _policy_of(model_or_policy)
    base = env.unwrapped
    if not isinstance(base, TextGenerationEnv):
        raise TypeError(f"generate_completions needs a TextGenerationEnv, got {type(base).__name__}.")
    masked = isinstance(policy, MaskableCausalLMPolicy)
    policy.set_training_mode(False)
    completions: list[str] = []
    scores: list[np.ndarray] = []
    kls: list[np.ndarray] = []
    likelihoods: list[np.ndarray] = []
    lengths: list[int] = []
    successes: list[bool | None] = []
    for start in range(0, len(records), batch_size):
        chunk = records[start : start + batch_size]
        envs = [base.fresh_copy() for _ in chunk]
        observations = [e.reset(options={"record": r})[0] for e, r in zip(envs, chunk, strict=True)]
        chunk_successes: list[bool | None] = [None] * len(chunk)
        done = np.zeros(len(chunk), dtype=bool)
        chunk_scores, chunk_returns = np.zeros(len(chunk)), np.zeros(len(chunk))
        steps: list[_Step] = []
        while not done.all():
            batch = {k: np.stack([o[k] for o in observations]) for k in observations[0]}  # (B, L) each
            obs = cast(dict[str, torch.Tensor], obs_as_tensor(batch, policy.device))  # type: ignore[attr-defined]
            masks = np.stack([e.action_masks() for e in envs]) if masked else None
            logits = policy.next_token_logits(obs, masks)  # (B, V)
            if deterministic:
                actions = logits.argmax(-1)
            else:
                actions = sample_token_ids(torch.softmax(logits, -1))  # (B,)
            steps.append(_Step(obs, actions, masks, ~done, logits))
            for i, e in enumerate(envs):
                if done[i]:
                    continue
                observations[i], reward, terminated, truncated, info = e.step(int(actions[i]))
                chunk_returns[i] += float(reward)
                if terminated or truncated:
                    done[i] = True
                    # the completion's score: all of the return, or its last increment under dense_reward
                    chunk_scores[i] = info.get("score", chunk_returns[i])
                    chunk_successes[i] = info.get("success")
        completions.extend(e.completion_text() for e in envs)
        lengths.extend(len(e.completion_ids()) for e in envs)
        successes.extend(chunk_successes)
        scores.append(chunk_scores)
        if reference is not None:
            chunk_kl, chunk_likelihood = _completion_kl(reference, steps)
            kls.append(chunk_kl)
            likelihoods.append(chunk_likelihood)
    return GenerationResult(
        prompts=[r.prompt for r in records],
        completions=completions,
        references=[r.reference for r in records],
        successes=None if not successes or None in successes else np.asarray(successes, dtype=bool),
        scores=np.concatenate(scores) if scores else np.zeros(0),
        kl=np.concatenate(kls) if reference is not None and kls else None,
        ref_log_likelihood=np.concatenate(likelihoods) if reference is not None and likelihoods else None,
        num_tokens=np.asarray(lengths, dtype=np.int64),
    )
