"""Evaluate a model on a task's held-out prompts: score, exact KL to a reference, distinct-n, repetition, fluency.

    python -m agents.evaluate runs/positive-review/model                  # PositiveReview's test split
    python -m agents.evaluate runs/x/model --env-id text_env/TextGeneration-v0 --prompts p.jsonl --reward sentiment
    python -m agents.evaluate smollm2-135m-instruct --samples 4           # the base model itself

The model is a ``from_pretrained`` directory (``export_pretrained`` / ``runs/<name>/model``) or the embedded name.
The held-out prompts are chosen as in training (``--eval-prompts-file``, else the task's own, else a slice of its
prompts). Prints the metrics and writes them, with sample completions, as JSON (``--out``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m agents.evaluate", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("model", help="a from_pretrained directory, or smollm2-135m-instruct")
    parser.add_argument("--env-id", default="text_env/PositiveReview-v0")
    parser.add_argument("--prompts", help="training prompts file (tasks assembled from flags)")
    parser.add_argument("--eval-prompts-file", help="held-out prompts file (.txt or .jsonl)")
    parser.add_argument("--reward", help="reward spec, as for agents.train")
    parser.add_argument("--tokenizer", help="tokenizer name or directory (default: the task's, else the model's)")
    parser.add_argument("--max-new-tokens", type=int)
    parser.add_argument("--reference", default="smollm2-135m-instruct", help="the KL reference (a model spec)")
    parser.add_argument("--eval-prompts", type=int, default=64, help="held-out prompts (0: all)")
    parser.add_argument("--samples", type=int, default=2, help="completions per prompt")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="JSON file for the metrics and samples")
    return parser


def evaluate(args: argparse.Namespace) -> dict[str, Any]:
    import gymnasium as gym
    import numpy as np
    import torch

    import text_env  # noqa: F401  (registers the ids)
    from agents.cli.config import TrainConfig
    from agents.cli.train import held_out_prompts
    from agents.common.evaluation import summarize
    from agents.common.generation import generate_completions
    from agents.common.policy import CausalLMPolicy
    from agents.common.reference import ReferenceModel

    config = TrainConfig(
        model=args.model, env_id=args.env_id, prompts=args.prompts, eval_prompts_file=args.eval_prompts_file,
        reward=args.reward, tokenizer=args.tokenizer, max_new_tokens=args.max_new_tokens,
        eval_prompts=args.eval_prompts, eval_samples=args.samples, temperature=args.temperature, lora_r=0,
    )  # fmt: skip
    config.check_environment()  # clear errors before any weights load
    task = config.task_kwargs()
    env = gym.make(config.env_id, **task)
    prompts = held_out_prompts(config, env.unwrapped, task)
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    policy = CausalLMPolicy(
        env.observation_space, env.action_space, lambda _: 0.0, model=args.model, temperature=args.temperature,
        value_head=False,
    )  # fmt: skip
    reference = ReferenceModel(policy, model=args.reference)
    result = generate_completions(policy, env, prompts * args.samples, reference=reference, batch_size=args.batch_size)
    metrics = summarize(result)
    report = {
        "model": args.model,
        "env_id": args.env_id,
        "reference": args.reference,
        "prompts": len(prompts),
        "samples_per_prompt": args.samples,
        "metrics": metrics,
        "samples": [
            {"prompt": p, "completion": c, "score": float(s)}
            for p, c, s in zip(result.prompts[:10], result.completions[:10], result.scores[:10], strict=True)
        ],
    }
    print(f"{args.model} on {len(prompts)} held-out prompts x {args.samples} samples:")
    for key, value in metrics.items():
        print(f"  {key:<20}{value:>10.3f}")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2), encoding="utf-8")
    return report


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.samples < 1 or args.batch_size < 1:
        parser.error("--samples and --batch-size must be >= 1")
    try:
        evaluate(args)
    except ValueError as error:  # option problems, found before any weights load
        parser.error(str(error))
    return 0


if __name__ == "__main__":
    sys.exit(main())
