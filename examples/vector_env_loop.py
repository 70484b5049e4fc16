"""A standard RL loop without SB3: a hand-written REINFORCE update driving a causal LM through a Gymnasium
vector env (``gymnasium.make_vec``). The env is a plain Gymnasium env; the policy is any torch LM.

    python examples/vector_env_loop.py       # ~1 minute on CPU: reward on text_env/Vowels-v0 rises from ~0.1

Each step the LM reads the batch of observations (token ids + attention mask), samples the next token for every
env, and the vector env steps and auto-resets them. At each episode end the return is known, and REINFORCE
(with a running-mean baseline) pushes up the log-probability of the tokens of better-than-average episodes.
"""

import gymnasium as gym
import numpy as np
import torch
from transformers import AutoModelForCausalLM, GPT2Config

import text_env  # noqa: F401

torch.manual_seed(0)
envs = gym.make_vec("text_env/Vowels-v0", num_envs=16, vectorization_mode="sync")
lm = AutoModelForCausalLM.from_config(
    GPT2Config(vocab_size=100, n_positions=64, n_embd=64, n_layer=2, n_head=2, bos_token_id=2, eos_token_id=1)
)
optimizer = torch.optim.Adam(lm.parameters(), lr=1e-3)
obs, _ = envs.reset(seed=0)
step_log_probs = [[] for _ in range(envs.num_envs)]  # per env: log-probs of the current episode's tokens
baseline, finished = 0.0, []
for step in range(1500):
    ids = torch.as_tensor(obs["input_ids"])  # (N, L)
    mask = torch.as_tensor(obs["attention_mask"])  # (N, L)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)  # left-padded prompts: positions along the real tokens
    logits = lm(input_ids=ids, attention_mask=mask, position_ids=positions).logits  # (N, L, V)
    last = mask.shape[1] - 1 - mask.flip(1).argmax(1)  # (N,) index of each row's last real token
    dist = torch.distributions.Categorical(logits=logits[torch.arange(len(ids)), last])  # (N, V)
    actions = dist.sample()  # (N,)
    log_probs = dist.log_prob(actions)  # (N,)
    obs, rewards, terminated, truncated, _ = envs.step(actions.numpy())
    losses = []
    for i in range(envs.num_envs):
        step_log_probs[i].append(log_probs[i])
        if terminated[i] or truncated[i]:
            advantage = float(rewards[i]) - baseline
            losses.append(-advantage * torch.stack(step_log_probs[i]).sum())
            baseline = 0.95 * baseline + 0.05 * float(rewards[i])
            finished.append(float(rewards[i]))
            step_log_probs[i] = []
    if losses:  # update once per batch of finished episodes, then start fresh graphs
        optimizer.zero_grad()
        torch.stack(losses).mean().backward()
        optimizer.step()
        step_log_probs = [[lp.detach() for lp in episode] for episode in step_log_probs]
    if step % 250 == 0 and finished:
        print(f"step {step}: mean reward of the last 64 episodes {np.mean(finished[-64:]):.3f}")
print(f"final mean reward {np.mean(finished[-64:]):.3f} (random policy ~0.1, optimum 1.0)")
