"""What conversations cost at the token level: rollout time per model token, multi-turn against single-turn, side by
side in one process.

    .venv/bin/python benchmarks/multi_turn.py                    # SmolLM2-135M-Instruct, bf16; ~2 minutes
    .venv/bin/python benchmarks/multi_turn.py --model tiny       # seconds

Both cases write the same number of model tokens per episode (48) with the same policy (KV cache, bf16), 16 envs,
one SB3 ``collect_rollouts`` of one episode per env: the single-turn env writes 48 tokens after its prompt; the
multi-turn env writes 4 turns of 12 tokens, after each of the first three of which the environment appends a reply
of ~12 tokens as a chat message (prefilled by the KV cache in one pass per row). The multi-turn episode's context is
therefore ~1.7x as long at its end. The figure to read is the ratio of seconds per model token. Results print and go
to ``benchmarks/multi_turn.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import torch

N_ENVS, TURNS, TURN_TOKENS, PROMPT_TOKENS = 16, 4, 12, 64
RESULTS = Path(__file__).with_name("multi_turn.json")
REPLY = "Thanks. Now continue with one more short sentence about it."


def reply_every_turn(messages: list[dict[str, str]], reference: Any) -> Any:
    from text_env import Reply

    return Reply(REPLY, 0.0, False)


def make_envs(multi_turn: bool, tokenizer: str) -> Any:
    from stable_baselines3.common.vec_env import DummyVecEnv

    from text_env import MultiTurnEnv, TextGenerationEnv, shipped_prompts

    prompts = shipped_prompts(split="train")[:N_ENVS]

    def make() -> Any:
        common = dict(max_prompt_tokens=PROMPT_TOKENS, stop_on_eos=False, chat_template=True)
        if multi_turn:  # 4 turns of 12 tokens, 3 replies: 48 model tokens and ~36 of the environment's
            return MultiTurnEnv(prompts, tokenizer, reply_every_turn, max_turns=TURNS, max_turn_tokens=TURN_TOKENS,
                                max_new_tokens=160, **common)  # fmt: skip
        return TextGenerationEnv(prompts, tokenizer, lambda p, c: [0.0] * len(p), max_new_tokens=48, **common)

    env = DummyVecEnv([make] * N_ENVS)
    env.seed(0)
    return env


def seconds_per_model_token(spec: Any, multi_turn: bool, tokenizer: str, repeats: int) -> tuple[float, float]:
    """Mean seconds per model token of a rollout of one episode per env, and the mean observation length at the
    episodes' ends."""
    from stable_baselines3 import PPO
    from stable_baselines3.common.callbacks import BaseCallback

    from agents import CausalLMPolicy, EpisodeRolloutBuffer

    env = make_envs(multi_turn, tokenizer)
    model = PPO(CausalLMPolicy, env, policy_kwargs=dict(model=spec, compute_dtype="bfloat16"), n_steps=48,
                batch_size=48 * 4, rollout_buffer_class=EpisodeRolloutBuffer, seed=0)  # fmt: skip
    lengths: list[int] = []

    class Lengths(BaseCallback):
        def _on_step(self) -> bool:
            for done, info in zip(self.locals["dones"], self.locals["infos"], strict=True):
                if done:
                    lengths.append(int(info["terminal_observation"]["attention_mask"].sum()))
            return True

    times = []
    for _ in range(repeats + 1):  # the first: warm-up
        callback = Lengths()
        model._setup_learn(total_timesteps=10**9, callback=None, reset_num_timesteps=True)
        callback.init_callback(model)
        model.rollout_buffer.reset()
        start = time.perf_counter()
        model.collect_rollouts(model.env, callback, model.rollout_buffer, n_rollout_steps=48)
        times.append(time.perf_counter() - start)
    return float(np.mean(times[1:])) / (48 * N_ENVS), float(np.mean(lengths))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=["smollm2", "tiny"], default="smollm2")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(2)
    if args.model == "tiny":
        from agents.testing import tiny_llama_config

        spec: Any = tiny_llama_config()
    else:
        spec = "smollm2-135m-instruct"
    single, single_length = seconds_per_model_token(spec, False, "smollm2-135m-instruct", args.repeats)
    multi, multi_length = seconds_per_model_token(spec, True, "smollm2-135m-instruct", args.repeats)
    result = {
        "date": str(date.today()),
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads",
        "model": args.model,
        "envs": N_ENVS,
        "model_tokens_per_episode": 48,
        "single_turn_ms_per_model_token": round(1000 * single, 3),
        "multi_turn_ms_per_model_token": round(1000 * multi, 3),
        "multi_over_single": round(multi / single, 3),
        "context_at_end_single": round(single_length, 1),
        "context_at_end_multi": round(multi_length, 1),
    }
    print(json.dumps(result, indent=1))
    RESULTS.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
