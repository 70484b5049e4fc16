"""TRL 0.24's ``PPOTrainer`` on TRL's PPO shape: seconds per iteration and peak RSS, as one line of JSON.

Runs in ``.venv-peer-trl024`` (``benchmarks/peer/setup.sh``), started by ``benchmarks/peer_compare.py``.

Shape, as this package's PPO in ``benchmarks/group_vs_ppo.py``: SmolLM2-135M-Instruct in float32, 16 review
openings per iteration (``per_device_train_batch_size=16``), 48 new tokens sampled at temperature 1 from the full
distribution, 4 PPO epochs over 2 minibatches of 8 (8 optimizer steps), per-token k1 KL penalty 0.05 against a
frozen reference copy, learning rate 1e-5. Prompts are left-padded to the longest of the batch (TRL's collator;
the openings have 4 to 19 tokens): this package's env pads them to 64 tokens, but its policy trims the padding
common to a batch, so both compute on the same lengths. ``--pad-prompts-to 64`` pads TRL's prompts to 64 tokens
instead (sequences of 112 tokens, ~1.7x the tokens of the other two: the setting of the 96.9 s in issue 11).

What TRL's ``PPOTrainer`` requires and this package does not: the value model and the reward model are
``nn.Module`` s. As in TRL's own PPO example, both are ``AutoModelForSequenceClassification`` on the same SmolLM2
(a fresh, untrained 1-output head). So TRL runs four 135M models (policy, reference, value, reward) where this
package runs two (policy with a value head on the shared trunk, reference) plus VADER, and its reward is a neural
forward pass (timed separately below) instead of a lexicon lookup.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # "PPOTrainer will move to trl.experimental"

sys.path.insert(0, str(Path(__file__).parent))
from common import (
    MINIBATCH,
    N_PROMPTS,
    NEW_TOKENS,
    load_tokenizer,
    model_dir,
    parser,
    peak_rss_mib,
    read_prompts,
    step_timer,
    versions,
)


def timed(durations: list[float], function: Any) -> Any:
    """``function``, recording the wall-clock of each call in ``durations``."""

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            durations.append(time.perf_counter() - start)

    return wrapper


def main() -> None:
    cli = parser(__doc__)
    cli.add_argument("--pad-prompts-to", type=int, default=0, help="left-pad prompts to this length (0: longest)")
    args = cli.parse_args()
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, DataCollatorWithPadding
    from trl import PPOConfig, PPOTrainer

    torch.set_num_threads(args.threads)
    directory = model_dir(args.gguf_dir)
    tokenizer = load_tokenizer(directory)
    policy = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32)
    reference = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32)
    value_model = AutoModelForSequenceClassification.from_pretrained(directory, num_labels=1, dtype=torch.float32)
    reward_model = AutoModelForSequenceClassification.from_pretrained(directory, num_labels=1, dtype=torch.float32)
    prompts = read_prompts(args.prompts)
    # add_special_tokens=False: the env encodes prompts the same way
    dataset = Dataset.from_dict({"input_ids": [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]})

    generate_seconds: list[float] = []
    reward_seconds: list[float] = []
    policy.generate = timed(generate_seconds, policy.generate)  # one call per iteration (16 prompts <= 64)
    reward_model.model.forward = timed(reward_seconds, reward_model.model.forward)  # TRL calls the backbone
    collator = None  # TRL's default: DataCollatorWithPadding, to the longest prompt of the batch
    if args.pad_prompts_to:
        collator = DataCollatorWithPadding(tokenizer, padding="max_length", max_length=args.pad_prompts_to)
    timer = step_timer(1)  # PPOTrainer ends one "step" per PPO iteration
    with tempfile.TemporaryDirectory() as output_dir:
        config = PPOConfig(
            output_dir=output_dir,
            per_device_train_batch_size=N_PROMPTS,  # TRL 0.24: local_batch_size = this x gradient_accumulation_steps
            gradient_accumulation_steps=1,
            num_mini_batches=N_PROMPTS // MINIBATCH,  # minibatches of 8, one optimizer step each
            num_ppo_epochs=4,
            response_length=NEW_TOKENS,
            temperature=1.0,
            learning_rate=1e-5,
            kl_coef=0.05,
            kl_estimator="k1",
            total_episodes=N_PROMPTS * (args.iterations + 1),
            local_rollout_forward_batch_size=N_PROMPTS,
            num_sample_generations=0,  # no evaluation generations inside the timed loop
            bf16=False,  # float32 (TRL's OnPolicyConfig would default to bf16 autocast)
            gradient_checkpointing=False,  # PPOTrainer does not enable it anyway
            use_cpu=True,
            report_to="none",
            save_strategy="no",
            logging_steps=1,
            disable_tqdm=True,
            seed=0,
        )
        trainer = PPOTrainer(
            args=config, processing_class=tokenizer, model=policy, ref_model=reference, reward_model=reward_model,
            value_model=value_model, train_dataset=dataset, eval_dataset=dataset, callbacks=[timer],
            data_collator=collator,
        )  # fmt: skip
        trainer.train()
    seconds = timer.seconds()[1:]  # drop the warm-up iteration
    result = {
        "trainer": "TRL PPOTrainer (policy, reference, value model and reward model: 4 x SmolLM2-135M)",
        "seconds_per_iteration": sum(seconds) / len(seconds),
        "seconds": seconds,
        "generate_seconds_per_iteration": sum(generate_seconds[1:]) / len(seconds),
        "reward_model_seconds_per_iteration": sum(reward_seconds[1:]) / len(seconds),
        "peak_rss_mib": peak_rss_mib(),
        "prompt_padding": args.pad_prompts_to or "longest in batch",
        "reward": "SmolLM2-135M sequence-classification head (untrained), as PPOTrainer needs an nn.Module",
        "threads": torch.get_num_threads(),
        "versions": versions("torch", "transformers", "trl", "accelerate", "huggingface-hub"),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
