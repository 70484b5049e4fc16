"""Throughput and memory of the LM policy inside stock SB3, against the hardware limit, measured side by side.

    make bench                                   # SmolLM2-135M and a tiny model; ~12 minutes on 2 CPU cores
    .venv/bin/python benchmarks/throughput.py --models tiny --skip-memory   # seconds
    .venv/bin/python benchmarks/throughput.py --models                      # memory only, ~3 minutes

For each model, with 32 envs (``--envs``), prompts left-padded to 64 tokens and 48 new tokens per episode:

- rollout: generated tokens/s of SB3's ``collect_rollouts`` with ``CausalLMPolicy`` (one episode per env) and of
  ``model.generate`` in float32 (sampling, ``top_k=0``) on the same prompts, batch and lengths; their ratio; the
  same rollout with ``compute_dtype="bfloat16"``, and with LoRA r=16 in bf16 (the main job's policy), against the
  same float32 ``generate``;
- update: transitions/s of one epoch of ``PPO.train`` (minibatches of 4 episodes = 192 transitions) and of a
  plain forward + backward + AdamW step over the same sequences in the same minibatches; their ratio (float32);
  a second PPO epoch without and a third with activation checkpointing (``gradient_checkpointing=True``), both
  past the first call's one-off costs: their ratio;
- the same two ratios for the naive path (no KV cache; stock buffer and one forward pass per transition),
  timed on a slice of the work (it is tens of times slower) and reported per token/transition;
- memory (SmolLM2 only, each case in a fresh process, 16 envs: TRL's PPO shape): peak RSS of a PPO iteration with
  the KL reference (``--memory-cases``: full fine-tuning in float32, in bf16, with gradient checkpointing, and LoRA),
  with a breakdown.

Ratios are the figures to read: both sides run in the same process, one after the other, so machine noise
largely cancels. Results print as a table and go to ``benchmarks/results.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import torch

from agents.common.models import enable_activation_checkpointing
from agents.common.resources import peak_rss_mib

N_ENVS, PROMPT_TOKENS, NEW_TOKENS, MINIBATCH_EPISODES = 16, 64, 48, 4
RESULTS = Path(__file__).with_name("results.json")
#: Memory cases: (LoRA, compute dtype).
#: name: (LoRA, compute dtype, gradient checkpointing)
MEMORY_CASES = {
    "full": (False, "float32", False),
    "lora": (True, "float32", False),
    "full-bf16": (False, "bfloat16", False),
    "full-checkpointing": (False, "float32", True),
}


def tiny_config() -> Any:
    """A small Llama (same architecture family as SmolLM2) over SmolLM2's vocabulary, randomly initialised."""
    from agents.testing import tiny_llama_config

    return tiny_llama_config()


def make_env(stop_on_eos: bool = False, chat: bool = False) -> Any:
    """``N_ENVS`` review-opening envs; ``chat=True`` formats each opening as a user turn of SmolLM2's chat template
    (its default system prompt included: ~38 tokens a prompt instead of ~10, the suite's chat-formatted length)."""
    from stable_baselines3.common.vec_env import DummyVecEnv

    from text_env import TextGenerationEnv, shipped_prompts
    from text_env.rewards import SentimentReward

    prompts = shipped_prompts(split="train")
    reward = SentimentReward()

    def make() -> TextGenerationEnv:
        # stop_on_eos=False: every episode has exactly 48 new tokens, like generate(min_new_tokens=48)
        return TextGenerationEnv(
            prompts,
            "smollm2-135m-instruct",
            reward,
            max_prompt_tokens=PROMPT_TOKENS,
            max_new_tokens=NEW_TOKENS,
            stop_on_eos=stop_on_eos,
            chat_template=chat,
        )

    env = DummyVecEnv([make] * N_ENVS)
    env.seed(0)
    return env


def make_ppo(
    model_spec: Any,
    env: Any,
    *,
    fast: bool,
    lora: dict | None = None,
    compute_dtype: str = "float32",
    gradient_checkpointing: bool = False,
    head_dtype: str = "float32",
) -> Any:
    from stable_baselines3 import PPO

    from agents import CausalLMPolicy, EpisodeRolloutBuffer

    return PPO(
        CausalLMPolicy,
        env,
        policy_kwargs=dict(
            model=model_spec,
            kv_cache=fast,
            share_prefixes=fast,
            lora=lora,
            optimizer_class=torch.optim.AdamW,
            compute_dtype=compute_dtype,
            gradient_checkpointing=gradient_checkpointing,
            head_dtype=head_dtype,
        ),
        n_steps=NEW_TOKENS,
        batch_size=NEW_TOKENS * MINIBATCH_EPISODES,
        n_epochs=1,
        learning_rate=1e-5,
        rollout_buffer_class=EpisodeRolloutBuffer if fast else None,
        seed=0,
        verbose=0,
    )


def time_collect(model: Any, steps: int) -> float:
    """Seconds for ``steps`` steps of SB3's collect_rollouts over all envs."""
    from stable_baselines3.common.callbacks import BaseCallback

    class Stop(BaseCallback):
        def _on_step(self) -> bool:
            return steps >= NEW_TOKENS or self.n_calls < steps  # a full rollout, or stop after `steps` steps

    callback = Stop()
    model._setup_learn(total_timesteps=10**9, callback=None, reset_num_timesteps=True)
    callback.init_callback(model)
    model.rollout_buffer.reset()
    start = time.perf_counter()
    model.collect_rollouts(model.env, callback, model.rollout_buffer, n_rollout_steps=NEW_TOKENS)
    return time.perf_counter() - start


def time_generate(lm: Any, env: Any) -> float:
    """Seconds of ``model.generate`` with sampling (top_k=0) for the same batch, prompts and lengths."""
    obs = env.reset()
    ids = torch.as_tensor(obs["input_ids"][:, :PROMPT_TOKENS])
    mask = torch.as_tensor(obs["attention_mask"][:, :PROMPT_TOKENS])
    start = time.perf_counter()
    with torch.no_grad():
        lm.generate(
            input_ids=ids,
            attention_mask=mask,
            do_sample=True,
            top_k=0,
            top_p=1.0,
            max_new_tokens=NEW_TOKENS,
            min_new_tokens=NEW_TOKENS,
            pad_token_id=2,
        )
    return time.perf_counter() - start


def time_plain_update(lm: Any, buffer: Any) -> float:
    """Seconds of forward + backward + AdamW over the rollout's episodes, 4 episodes per step: the limit."""
    # The buffer is flattened env-major after PPO.train: (N_ENVS * NEW_TOKENS, L). Each env's last step holds its
    # whole episode (prompt + 47 generated tokens).
    ids = torch.as_tensor(buffer.observations["input_ids"].reshape(N_ENVS, NEW_TOKENS, -1)[:, -1])  # (N_ENVS, L)
    mask = torch.as_tensor(buffer.observations["attention_mask"].reshape(N_ENVS, NEW_TOKENS, -1)[:, -1])
    optimizer = torch.optim.AdamW([p for p in lm.parameters() if p.requires_grad], lr=1e-5)
    lm.train()
    start = time.perf_counter()
    for first in range(0, N_ENVS, MINIBATCH_EPISODES):
        batch_ids, batch_mask = ids[first : first + MINIBATCH_EPISODES], mask[first : first + MINIBATCH_EPISODES]
        keep = batch_mask.any(0)  # drop columns of padding common to the minibatch, as the policy does
        batch_ids, batch_mask = batch_ids[:, keep], batch_mask[:, keep]
        positions = (batch_mask.cumsum(-1) - 1).clamp(min=0)
        logits = lm(input_ids=batch_ids, attention_mask=batch_mask, position_ids=positions).logits[:, -NEW_TOKENS:]
        loss = torch.log_softmax(logits.float(), -1).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    lm.eval()
    return time.perf_counter() - start


def benchmark_model(name: str, spec: Any, naive_steps: int, naive_transitions: int) -> dict[str, Any]:
    """Rollout and update throughput, fast and naive, for one model."""
    env = make_env()
    fast = make_ppo(spec, env, fast=True)
    naive = make_ppo(spec, env, fast=False)
    naive.policy.load_state_dict(fast.policy.state_dict())
    transitions = N_ENVS * NEW_TOKENS
    time_collect(fast, 2)  # warm-up (allocator, first-call overheads)
    rollout = time_collect(fast, NEW_TOKENS)
    generate = time_generate(fast.policy.lm, env)
    fast_bf16 = make_ppo(spec, env, fast=True, compute_dtype="bfloat16")
    fast_bf16.policy.load_state_dict(fast.policy.state_dict())
    time_collect(fast_bf16, 2)
    rollout_bf16 = time_collect(fast_bf16, NEW_TOKENS)
    del fast_bf16
    lora_bf16 = make_ppo(
        spec, env, fast=True, compute_dtype="bfloat16", lora=dict(r=16, lora_alpha=32, target_modules="all-linear")
    )
    time_collect(lora_bf16, 2)
    rollout_lora_bf16 = time_collect(lora_bf16, NEW_TOKENS)
    del lora_bf16
    naive_rollout = time_collect(naive, naive_steps)
    # Update: one epoch of PPO.train on the fast model's full rollout buffer.
    fast.policy.set_training_mode(True)
    start = time.perf_counter()
    fast.train()
    update = time.perf_counter() - start
    # Activation checkpointing (policy_kwargs gradient_checkpointing=True): a second epoch without and a third with
    # it, both past the first call's one-off costs, so their ratio is the price of recomputing the layers.
    fast.policy.set_training_mode(True)
    start = time.perf_counter()
    fast.train()
    update_warm = time.perf_counter() - start
    enable_activation_checkpointing(fast.policy.lm)
    fast.policy.gradient_checkpointing = True  # what the setting does at construction
    fast.policy.set_training_mode(True)
    start = time.perf_counter()
    fast.train()
    update_checkpointing = time.perf_counter() - start
    plain_model = make_ppo(spec, env, fast=True).policy.lm  # fresh weights for the plain step
    plain = time_plain_update(plain_model, fast.rollout_buffer)
    # Naive update: random transitions, as the stock buffer samples them, one forward each, on a slice.
    rng = np.random.default_rng(0)
    batch = fast.rollout_buffer._get_samples(rng.permutation(transitions)[:naive_transitions])
    start = time.perf_counter()
    values, log_prob, entropy = naive.policy.evaluate_actions(batch.observations, batch.actions)
    (log_prob.mean() + values.mean() + entropy.mean()).backward()
    naive.policy.optimizer.step()
    naive_update = time.perf_counter() - start
    result = {
        "rollout_tokens_per_s": transitions / rollout,
        "generate_tokens_per_s": transitions / generate,
        "rollout_bf16_tokens_per_s": transitions / rollout_bf16,
        "rollout_lora_bf16_tokens_per_s": transitions / rollout_lora_bf16,
        "naive_rollout_tokens_per_s": N_ENVS * naive_steps / naive_rollout,
        "update_transitions_per_s": transitions / update,
        "update_warm_transitions_per_s": transitions / update_warm,
        "update_checkpointing_transitions_per_s": transitions / update_checkpointing,
        "plain_update_transitions_per_s": transitions / plain,
        "naive_update_transitions_per_s": naive_transitions / naive_update,
    }
    result["rollout_ratio"] = result["rollout_tokens_per_s"] / result["generate_tokens_per_s"]
    result["rollout_bf16_ratio"] = result["rollout_bf16_tokens_per_s"] / result["generate_tokens_per_s"]
    result["rollout_lora_bf16_ratio"] = result["rollout_lora_bf16_tokens_per_s"] / result["generate_tokens_per_s"]
    result["update_ratio"] = result["update_transitions_per_s"] / result["plain_update_transitions_per_s"]
    result["checkpointing_ratio"] = (  # with / without, both warm
        result["update_checkpointing_transitions_per_s"] / result["update_warm_transitions_per_s"]
    )
    result["naive_rollout_ratio"] = result["naive_rollout_tokens_per_s"] / result["generate_tokens_per_s"]
    result["naive_update_ratio"] = result["naive_update_transitions_per_s"] / result["plain_update_transitions_per_s"]
    print(f"[{name}] " + ", ".join(f"{k}={v:.3g}" for k, v in result.items()), flush=True)
    return result


def memory_case(lora: bool, compute_dtype: str = "float32", gradient_checkpointing: bool = False) -> dict[str, Any]:
    """One PPO iteration with the KL reference on SmolLM2 (run in a fresh process): peak RSS and a breakdown."""
    from agents import KLPenaltyCallback, MaskableEpisodeRolloutBuffer

    env = make_env()
    model = make_ppo(
        "smollm2-135m-instruct",
        env,
        fast=True,
        lora=dict(r=8, lora_alpha=32, target_modules="all-linear") if lora else None,
        compute_dtype=compute_dtype,
        gradient_checkpointing=gradient_checkpointing,
    )
    callback = KLPenaltyCallback(kl_coef=0.1)
    model.learn(N_ENVS * NEW_TOKENS, callback=callback)
    policy = model.policy
    mib = 2**20
    weights = sum(p.numel() * p.element_size() for p in policy.parameters()) / mib
    optimizer = (
        sum(
            t.numel() * t.element_size()
            for s in policy.optimizer.state.values()
            for t in s.values()
            if torch.is_tensor(t)
        )
        / mib
    )
    reference = (
        0.0
        if callback.reference.uses_disabled_adapters
        else sum(p.numel() * p.element_size() for p in callback.reference.lm.parameters()) / mib
    )
    buffer = model.rollout_buffer
    buffer_bytes = sum(v.nbytes for v in buffer.observations.values()) + sum(
        getattr(buffer, k).nbytes for k in ("actions", "rewards", "values", "log_probs", "advantages", "returns")
    )
    vocab = int(env.action_space.n)
    masks_bool = MaskableEpisodeRolloutBuffer(256, env.observation_space, env.action_space, n_envs=16).action_masks
    return {
        "lora": lora,
        "compute_dtype": compute_dtype,
        "gradient_checkpointing": gradient_checkpointing,
        "peak_rss_mib": peak_rss_mib(),
        "weights_mib": weights,
        "optimizer_state_mib": optimizer,
        "reference_mib": reference,
        "rollout_buffer_mib": buffer_bytes / mib,
        "action_masks_4096_transitions_mib": masks_bool.nbytes / mib,
        "action_masks_4096_transitions_float32_stock_mib": 4096 * vocab * 4 / mib,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--models", nargs="*", default=["tiny", "smollm2"], choices=["tiny", "smollm2"], help="none: memory only"
    )
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--envs", type=int, default=32, help="envs (batch rows) of the throughput cases")
    parser.add_argument(
        "--memory-cases", nargs="+", default=list(MEMORY_CASES), choices=list(MEMORY_CASES), help="memory cases run"
    )
    parser.add_argument("--memory-case", choices=list(MEMORY_CASES), help=argparse.SUPPRESS)  # child process
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    if args.memory_case:
        print(json.dumps(memory_case(*MEMORY_CASES[args.memory_case])))
        return
    # Sections not measured in this run (e.g. throughput with --models and no name) keep their last results.
    results: dict[str, Any] = json.loads(RESULTS.read_text()) if RESULTS.exists() else {"models": {}}
    machine = f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    machine += f", torch {torch.__version__}"
    if args.models:
        results.update(date=str(date.today()), machine=machine, envs=args.envs)
    global N_ENVS
    N_ENVS = args.envs  # throughput only: the memory cases run in their own processes with TRL's 16
    for name in args.models:
        spec = tiny_config() if name == "tiny" else "smollm2-135m-instruct"
        naive_steps, naive_transitions = (NEW_TOKENS, 192) if name == "tiny" else (6, 24)
        results["models"][name] = benchmark_model(name, spec, naive_steps, naive_transitions)
    if not args.skip_memory:

        def case_of(entry: dict[str, Any]) -> str:
            return entry.get("case", "lora" if entry["lora"] else "full")

        # Cases not run this time keep their last results.
        results["memory"] = [m for m in results.get("memory", []) if case_of(m) not in args.memory_cases]
        for case in args.memory_cases:
            out = subprocess.run(
                [sys.executable, __file__, "--memory-case", case], capture_output=True, text=True, check=True
            )
            entry = json.loads(out.stdout.strip().splitlines()[-1])
            results["memory"].append({"date": str(date.today()), "case": case, **entry})
    RESULTS.write_text(json.dumps(results, indent=2))
    print_table(results)


def print_table(results: dict[str, Any]) -> None:
    envs = results.get("envs", 16)
    print(f"\nThroughput ({results['machine']}, {results['date']}); {envs} envs, 64 prompt + 48 new tokens")
    print(
        "| model | path | rollout tok/s | generate tok/s | rollout ratio | update trans/s | plain trans/s | "
        "update ratio |\n|---|---|---|---|---|---|---|---|"
    )
    for name, r in results["models"].items():
        print(
            f"| {name} | fast | {r['rollout_tokens_per_s']:.0f} | {r['generate_tokens_per_s']:.0f} | "
            f"{r['rollout_ratio']:.2f} | {r['update_transitions_per_s']:.0f} | "
            f"{r['plain_update_transitions_per_s']:.0f} | {r['update_ratio']:.2f} |"
        )
        for key, label in (("rollout_bf16", "fast, bf16"), ("rollout_lora_bf16", "fast, LoRA r=16, bf16")):
            if f"{key}_tokens_per_s" in r:
                print(
                    f"| {name} | {label} | {r[f'{key}_tokens_per_s']:.0f} | {r['generate_tokens_per_s']:.0f} | "
                    f"{r[f'{key}_ratio']:.2f} | | | |"
                )
        print(
            f"| {name} | naive | {r['naive_rollout_tokens_per_s']:.0f} | {r['generate_tokens_per_s']:.0f} | "
            f"{r['naive_rollout_ratio']:.2f} | {r['naive_update_transitions_per_s']:.1f} | "
            f"{r['plain_update_transitions_per_s']:.0f} | {r['naive_update_ratio']:.3f} |"
        )
    for name, r in results["models"].items():
        if "checkpointing_ratio" in r:
            print(
                f"{name}: PPO epoch with gradient checkpointing {r['update_checkpointing_transitions_per_s']:.0f} "
                f"transitions/s, without {r['update_warm_transitions_per_s']:.0f} (both warm): "
                f"{r['checkpointing_ratio']:.2f}x"
            )
    for m in results.get("memory", []):
        print(
            f"memory ({'LoRA' if m['lora'] else 'full'}, {m.get('compute_dtype', 'float32')}"
            f"{', gradient checkpointing' if m.get('gradient_checkpointing') else ''}): "
            f"peak RSS {m['peak_rss_mib']:.0f} MiB; weights "
            f"{m['weights_mib']:.0f}, optimizer {m['optimizer_state_mib']:.0f}, reference {m['reference_mib']:.0f}, "
            f"rollout buffer {m['rollout_buffer_mib']:.1f}, masks for 4096 transitions "
            f"{m['action_masks_4096_transitions_mib']:.0f} (stock float32: "
            f"{m['action_masks_4096_transitions_float32_stock_mib']:.0f})"
        )


if __name__ == "__main__":
    main()
