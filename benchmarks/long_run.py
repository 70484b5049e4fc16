"""Long-run check: 5,000 episodes of PPO with the LM policy and its KV caches on the tiny task, watching memory.

    make long-run          # ~2 minutes on 2 CPU cores; exit code 1 if a check fails

Passes when resident memory after warm-up (the first 10% of episodes) grows by less than 5% and the KV caches
stay bounded (never wider than the observation, never holding more rows than there are envs).
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env

import text_env  # noqa: F401
from agents import CausalLMPolicy, EpisodeRolloutBuffer, KLPenaltyCallback
from agents.cli.compare import tiny_lm_config
from agents.common.resources import current_rss_mib


class Watch(BaseCallback):
    """Records RSS, episodes and KV-cache sizes at every rollout end."""

    def __init__(self) -> None:
        super().__init__()
        self.samples: list[tuple[int, float]] = []
        self.max_width = 0
        self.max_rows = 0
        self.episodes = 0

    def _on_step(self) -> bool:
        self.episodes += int(np.sum(self.locals["dones"]))
        stats = self.model.policy.rollout_caches.stats()
        self.max_width = max(self.max_width, stats["width"])
        self.max_rows = max(self.max_rows, stats["rows"])
        return True

    def _on_rollout_end(self) -> None:
        self.samples.append((self.episodes, current_rss_mib()))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, default=5000)
    args = parser.parse_args()
    n_envs, new_tokens = 8, 8
    env = make_vec_env("text_env/Vowels-v0", n_envs=n_envs, seed=0)
    model = PPO(
        CausalLMPolicy,
        env,
        policy_kwargs=dict(model=tiny_lm_config()),
        n_steps=64,
        batch_size=64,
        n_epochs=2,
        learning_rate=1e-3,
        rollout_buffer_class=EpisodeRolloutBuffer,
        seed=0,
    )
    watch = Watch()
    model.learn(args.episodes * new_tokens, callback=[watch, KLPenaltyCallback(kl_coef=0.05)])
    warm = next(rss for episodes, rss in watch.samples if episodes >= args.episodes // 10)
    final = max(rss for episodes, rss in watch.samples if episodes >= args.episodes // 10)
    growth = final / warm - 1
    obs_len = env.observation_space["input_ids"].shape[0]
    print(
        f"episodes {watch.episodes}; RSS after warm-up {warm:.0f} MiB, max afterwards {final:.0f} MiB "
        f"({growth:+.1%}); widest KV cache {watch.max_width} columns (observation {obs_len}); "
        f"most cached rows {watch.max_rows} (envs {n_envs})"
    )
    ok = watch.episodes >= args.episodes and growth < 0.05 and watch.max_width <= obs_len and watch.max_rows <= n_envs
    print("long-run check:", "passed" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
