"""A standard RL loop without SB3: a hand-written REINFORCE update driving a causal LM through a Gymnasium
vector env (``gymnasium.make_vec``). The env is a plain Gymnasium env; the policy is any torch LM.

    python examples/vector_env_loop.py       # ~1 minute on CPU: reward on text_env/Vowels-v0 rises from ~0.1

Each step the LM reads the batch of observations (token ids + attention mask), samples the next token for every
env, and the vector env steps them. At each episode end the return is known, and REINFORCE (with a running-mean
baseline) pushes up the log-probability of the tokens of better-than-average episodes.

Gymnasium 1.x vector envs reset a finished env on the *next* step (``AutoresetMode.NEXT_STEP``): that step ignores
the env's action and returns the first observation of a new episode with reward 0. The loop therefore drops the
log-probability of an action sent to an env that is resetting; otherwise it would be credited to the next episode.
"""

from __future__ import annotations

import sys

import gymnasium as gym
import numpy as np
import torch
from transformers import AutoModelForCausalLM, GPT2Config

import text_env  # noqa: F401


def run(steps: int = 1500, seed: int = 0, verbose: bool = True) -> dict[str, list]:
    """Train for ``steps`` vector steps; returns the finished episodes' rewards, the number of log-probabilities
    each was trained with, and the number of tokens the env says it wrote."""
    torch.manual_seed(seed)
    envs = gym.make_vec("text_env/Vowels-v0", num_envs=16, vectorization_mode="sync")
    lm = AutoModelForCausalLM.from_config(
        GPT2Config(vocab_size=100, n_positions=64, n_embd=64, n_layer=2, n_head=2, bos_token_id=2, eos_token_id=1)
    )
    optimizer = torch.optim.Adam(lm.parameters(), lr=1e-3)
    obs, _ = envs.reset(seed=seed)
    step_log_probs: list[list[torch.Tensor]] = [[] for _ in range(envs.num_envs)]  # the current episode's tokens
    resetting = np.zeros(envs.num_envs, dtype=bool)  # the env ended last step: this step resets it
    baseline = 0.0
    history: dict[str, list] = {"rewards": [], "trained_tokens": [], "env_tokens": []}
    for step in range(steps):
        ids = torch.as_tensor(obs["input_ids"])  # (N, L)
        mask = torch.as_tensor(obs["attention_mask"])  # (N, L)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)  # left-padded prompts: positions along the real tokens
        logits = lm(input_ids=ids, attention_mask=mask, position_ids=positions).logits  # (N, L, V)
        last = mask.shape[1] - 1 - mask.flip(1).argmax(1)  # (N,) index of each row's last real token
        dist = torch.distributions.Categorical(logits=logits[torch.arange(len(ids)), last])  # (N, V)
        actions = dist.sample()  # (N,)
        log_probs = dist.log_prob(actions)  # (N,)
        obs, rewards, terminated, truncated, infos = envs.step(actions.numpy())
        losses = []
        for i in range(envs.num_envs):
            if resetting[i]:  # next-step autoreset: this action was ignored, a new episode starts
                continue
            step_log_probs[i].append(log_probs[i])
            if terminated[i] or truncated[i]:
                advantage = float(rewards[i]) - baseline
                losses.append(-advantage * torch.stack(step_log_probs[i]).sum())
                baseline = 0.95 * baseline + 0.05 * float(rewards[i])
                history["rewards"].append(float(rewards[i]))
                history["trained_tokens"].append(len(step_log_probs[i]))
                history["env_tokens"].append(int(infos["num_new_tokens"][i]))
                step_log_probs[i] = []
        resetting = terminated | truncated
        if losses:  # update once per batch of finished episodes, then start fresh graphs
            optimizer.zero_grad()
            torch.stack(losses).mean().backward()
            optimizer.step()
            step_log_probs = [[lp.detach() for lp in episode] for episode in step_log_probs]
        if verbose and step % 250 == 0 and history["rewards"]:
            print(f"step {step}: mean reward of the last 64 episodes {np.mean(history['rewards'][-64:]):.3f}")
    envs.close()
    return history


if __name__ == "__main__":
    result = run(int(sys.argv[1]) if len(sys.argv) > 1 else 1500)
    print(f"final mean reward {np.mean(result['rewards'][-64:]):.3f} (random policy ~0.1, optimum 1.0)")
