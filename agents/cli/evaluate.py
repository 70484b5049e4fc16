"""Evaluate a model on a task's held-out prompts: score, exact KL to a reference, distinct-n, repetition, fluency.

    python -m agents.evaluate runs/positive-review/model                  # PositiveReview's test split
    python -m agents.evaluate runs/x/model --env-id text_env/TextGeneration-v0 --prompts p.jsonl --reward sentiment
    python -m agents.evaluate smollm2-135m-instruct --samples 4           # the base model itself

The model is a ``from_pretrained`` directory (``export_pretrained`` / ``runs/<name>/model``) or the embedded name.
The held-out prompts are chosen as in training (``--eval-prompts-file``, else the task's own, else a slice of its
prompts). Prints the metrics and writes them, with sample completions, as JSON (``--out``).

The KL and the reference log-likelihood are measured against ``--reference``, by default (``auto``) the model's
own base: the ``model:`` of ``runs/<name>/config.yaml`` for a run export ``runs/<name>/model``, else
smollm2-135m-instruct if the model has its vocabulary, else none (those two metrics are then left out). A reference
needs the model's vocabulary: another is refused before any weights load.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

#: ``--reference`` values that name no model.
AUTO, NONE = "auto", "none"


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
    parser.add_argument(
        "--reference",
        default=AUTO,
        help="the KL reference: a from_pretrained directory or smollm2-135m-instruct (same vocabulary as the model), "
        "'none' (no KL metrics), or 'auto': the base model of a run export (runs/<name>/config.yaml), else "
        "smollm2-135m-instruct if the vocabulary matches, else none (default: auto)",
    )
    parser.add_argument("--eval-prompts", type=int, default=64, help="held-out prompts (0: all)")
    parser.add_argument("--samples", type=int, default=2, help="completions per prompt (pass@k: k = this)")
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
    from agents.cli.options import ModelOptions, TaskOptions
    from agents.cli.train import held_out_prompts
    from agents.common.evaluation import summarize
    from agents.common.generation import generate_completions
    from agents.common.policy import CausalLMPolicy
    from agents.common.reference import ReferenceModel

    task_options = TaskOptions(
        env_id=args.env_id, prompts=args.prompts, eval_prompts_file=args.eval_prompts_file, reward=args.reward,
        tokenizer=args.tokenizer, max_new_tokens=args.max_new_tokens, eval_prompts=args.eval_prompts,
        eval_samples=args.samples,
    )  # fmt: skip
    ModelOptions(model=args.model, lora_r=0, temperature=args.temperature)  # clear errors before any weights load
    task_options.check(args.model)
    reference_spec, why = resolve_reference(args.model, args.reference)
    print(f"[evaluate] {why}")
    task = task_options.env_kwargs(args.model)
    env = gym.make(args.env_id, **task)
    prompts = held_out_prompts(task_options, env.unwrapped, task)
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    policy = CausalLMPolicy(
        env.observation_space, env.action_space, lambda _: 0.0, model=args.model, temperature=args.temperature,
        value_head=False,
    )  # fmt: skip
    reference = None if reference_spec is None else ReferenceModel(policy, model=reference_spec)
    result = generate_completions(policy, env, prompts * args.samples, reference=reference, batch_size=args.batch_size)
    metrics = summarize(result, text_env.task_for(args.env_id))  # the task's own metrics too (accuracy, pass@k)
    report = {
        "model": args.model,
        "env_id": args.env_id,
        "reference": reference_spec,
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


def run_base_model(model: str) -> tuple[str, Path] | None:
    """The base model of a run export (``model: <base>`` in ``runs/<name>/config.yaml`` for ``runs/<name>/model``)
    and that config's path, or ``None`` when ``model`` is not a run export."""
    import yaml

    path = Path(model)
    config_path = path.parent / "config.yaml"
    if path.name != "model" or not path.is_dir() or not config_path.is_file():
        return None
    try:
        values = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return None
    base = values.get("model") if isinstance(values, dict) else None
    return (base, config_path) if isinstance(base, str) and base else None


def _vocab_size(spec: str, name: str) -> int | None:
    """:func:`~agents.cli.options.model_vocab_size` (from the config, no weights), its errors naming ``name``."""
    from agents.cli.options import model_vocab_size

    try:
        return model_vocab_size(spec)
    except ValueError as error:
        raise ValueError(str(error).replace("--model", name, 1)) from None


def resolve_reference(model: str, reference: str) -> tuple[str | None, str]:
    """The reference model spec for ``--reference`` (``None``: no reference) and one line saying which and why.

    An explicit reference must have the model's vocabulary (the KL compares the two next-token distributions): a
    ``ValueError`` otherwise, read from the configs before any weights load. ``auto``: the run's base model
    (:func:`run_base_model`), else smollm2-135m-instruct if its vocabulary is the model's, else none.
    """
    from agents.cli.options import EMBEDDED_VOCAB_SIZE
    from text_env.embedded import EMBEDDED_MODEL

    if reference.lower() == NONE:
        return None, "no KL reference (--reference none): no kl or ref_log_likelihood metrics"
    vocab = _vocab_size(model, "model")
    if reference.lower() != AUTO:
        reference_vocab = _vocab_size(reference, "--reference")
        if vocab is not None and reference_vocab is not None and vocab != reference_vocab:
            raise ValueError(
                f"--reference {reference!r} has a vocabulary of {reference_vocab} tokens and the model {model!r} one "
                f"of {vocab}: the KL needs the same vocabulary; give the model's base, or --reference auto or none."
            )
        return reference, f"KL reference: {reference}"
    why_not_base = f"{model} is not a run export (runs/<name>/model)"
    run = run_base_model(model)
    if run is not None:
        base, config_path = run
        if base == EMBEDDED_MODEL or Path(base).is_dir():
            base_vocab = _vocab_size(base, f"{config_path}: model")
            if vocab is None or base_vocab is None or base_vocab == vocab:
                return base, f"KL reference: {base}, the run's base model ({config_path}); --reference DIR for another"
        why_not_base = f"its run's base model {base!r} ({config_path}) is not here or has another vocabulary"
    if vocab == EMBEDDED_VOCAB_SIZE:
        return (
            EMBEDDED_MODEL,
            f"KL reference: {EMBEDDED_MODEL} (same vocabulary as the model); --reference DIR for another",
        )
    return None, (
        f"no KL reference, so no kl or ref_log_likelihood metrics: {why_not_base}, and its vocabulary "
        f"({'unknown' if vocab is None else vocab}) is not {EMBEDDED_MODEL}'s ({EMBEDDED_VOCAB_SIZE}); "
        "--reference DIR (a model with the same vocabulary) gives one"
    )


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
