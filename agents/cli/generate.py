"""Generate completions with any exported model: prompts from arguments or a file, sampling as you choose.

    python -m agents.generate runs/positive-review/model "The movie was" "I watched this film"
    python -m agents.generate runs/x/model --prompts-file prompts.txt --samples 4 --top-p 0.9 --out out.jsonl
    python -m agents.generate smollm2-135m-instruct "The plot" --greedy

The model is a ``from_pretrained`` directory (``export_pretrained`` / ``runs/<name>/model``, LoRA already merged)
or the embedded name. Decoding is transformers' own ``generate`` (temperature, top-p, top-k or greedy), on the raw
prompt text as the environments feed it (no chat template). Prints each completion and, with ``--out``, writes
one JSON object per line: ``{"prompt", "sample", "completion"}``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m agents.generate", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("model", help="a from_pretrained directory, or smollm2-135m-instruct")
    parser.add_argument("prompts", nargs="*", help="prompt texts (or --prompts-file)")
    parser.add_argument("--prompts-file", type=Path, help="a .txt (one prompt a line) or .jsonl prompts file")
    parser.add_argument("--tokenizer", help="tokenizer name or directory (default: the model's own)")
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--samples", type=int, default=1, help="completions per prompt")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling (1.0: off)")
    parser.add_argument("--top-k", type=int, default=0, help="top-k sampling (0: off)")
    parser.add_argument("--greedy", action="store_true", help="greedy decoding instead of sampling")
    parser.add_argument("--batch-size", type=int, default=16, help="prompts generated together")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu", help="torch device: cpu, cuda, ...")
    parser.add_argument("--out", type=Path, help="JSONL file for the completions")
    return parser


def check_options(args: argparse.Namespace) -> list[str]:
    """The prompts, after every option has been checked (before any weights load). Raises ``ValueError``."""
    from text_env import load_prompts

    problems = []
    if args.max_new_tokens < 1 or args.samples < 1 or args.batch_size < 1:
        problems.append("--max-new-tokens, --samples and --batch-size must be >= 1")
    if not args.greedy and args.temperature <= 0:
        problems.append(f"--temperature must be > 0 (got {args.temperature}); for greedy decoding use --greedy")
    if not 0 < args.top_p <= 1:
        problems.append(f"--top-p must be in (0, 1], got {args.top_p}")
    if args.top_k < 0:
        problems.append(f"--top-k must be >= 0 (0: off), got {args.top_k}")
    if problems:
        raise ValueError("; ".join(problems))
    prompts = list(args.prompts)
    if args.prompts_file is not None:
        if not args.prompts_file.is_file():
            raise ValueError(f"--prompts-file {str(args.prompts_file)!r} is not a file (.txt or .jsonl).")
        prompts += load_prompts(args.prompts_file)
    if not prompts:
        raise ValueError('no prompts: give them as arguments ("The movie was") or with --prompts-file FILE')
    from agents.cli.options import model_vocab_size

    model_vocab_size(args.model)  # the model exists (a directory or the embedded name) and has a readable config
    return prompts


def generate(args: argparse.Namespace, prompts: list[str]) -> list[dict[str, Any]]:
    """Completions of every prompt, ``args.samples`` each, in batches of ``args.batch_size`` prompts."""
    import torch

    from agents.common.models import load_causal_lm
    from text_env.tokenizers import resolve_tokenizer

    tokenizer = resolve_tokenizer(args.tokenizer or args.model)
    lm = load_causal_lm(args.model).to(args.device).eval()
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    sampling: dict[str, Any] = (
        dict(do_sample=False)
        if args.greedy
        else dict(do_sample=True, temperature=args.temperature, top_p=args.top_p, top_k=args.top_k)
    )
    torch.manual_seed(args.seed)
    rows = []
    for start in range(0, len(prompts), args.batch_size):
        batch = prompts[start : start + args.batch_size]
        encoded = tokenizer(batch, return_tensors="pt", padding=True, padding_side="left").to(args.device)
        with torch.no_grad():
            output = lm.generate(
                **encoded,
                max_new_tokens=args.max_new_tokens,
                num_return_sequences=args.samples,
                pad_token_id=pad_id,
                **sampling,
            )  # (len(batch) * samples, prompt_len + new_tokens), samples of a prompt adjacent
        new_tokens = output[:, encoded["input_ids"].shape[1] :]
        texts = tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
        for index, text in enumerate(texts):
            rows.append({"prompt": batch[index // args.samples], "sample": index % args.samples, "completion": text})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        prompts = check_options(args)
    except ValueError as error:  # option problems, found before any weights load
        parser.error(str(error))
    rows = generate(args, prompts)
    for row in rows:
        print(f"{row['prompt']!r} -> {row['completion']!r}")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        lines = [json.dumps(row, ensure_ascii=False) for row in rows]
        args.out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
