"""TRL 1.x's ``GRPOTrainer`` on the shape of this package's GRPO: seconds per iteration and peak RSS, as JSON.

Runs in ``.venv-peer-trl1`` (``benchmarks/peer/setup.sh``), started by ``benchmarks/peer_compare.py``.

Shape, as this package's GRPO in ``benchmarks/group_vs_ppo.py``: SmolLM2-135M-Instruct in float32, one iteration
samples 4 prompts x 4 completions (``generation_batch_size=16``, ``num_generations=4``) of exactly 48 tokens
(``min_new_tokens=48``, as the env's ``stop_on_eos=False``) at temperature 1 from the full distribution, then
trains 1 epoch (``num_iterations=1``) over 2 minibatches of 8 completions (``per_device_train_batch_size=8``,
``steps_per_generation=2``): 2 optimizer steps. Advantages normalised by the group's std, per-completion mean of
the token losses (``loss_type="grpo"``), k3 KL to a frozen reference copy in the loss with beta 0.04, learning
rate 1e-5, reward VADER on the completion (the same scorer as ``text_env.rewards.SentimentReward``).

Set against TRL's defaults: ``bf16=False`` (float32, as this package's default; ``--bf16`` for TRL's default) and
``gradient_checkpointing=False`` (this package does not checkpoint). Because the second minibatch is trained after
the first optimizer step, TRL recomputes the old log-probabilities with one extra no-grad forward pass over the 16
completions; this package keeps those of the sampling pass (the same float32 model, so they are exact).
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import (
    MINIBATCH,
    N_PROMPTS,
    NEW_TOKENS,
    VaderReward,
    load_tokenizer,
    model_dir,
    parser,
    peak_rss_mib,
    read_prompts,
    step_timer,
    versions,
)

GROUP_SIZE = 4


def main() -> None:
    cli = parser(__doc__)
    cli.add_argument("--bf16", action="store_true", help="bf16 autocast (TRL's default) instead of float32")
    cli.add_argument("--lora-r", type=int, default=0, help="LoRA rank on every linear layer, alpha 2r (0: full)")
    cli.add_argument("--chat", action="store_true", help="prompts as a user turn of the tokenizer's chat template")
    cli.add_argument(
        "--micro-batch", type=int, default=MINIBATCH,
        help=f"completions per forward+backward pass, gradients accumulated over {MINIBATCH} (a divisor of it)",
    )  # fmt: skip
    args = cli.parse_args()
    if args.micro_batch < 1 or MINIBATCH % args.micro_batch:
        cli.error(f"--micro-batch must divide the minibatch of {MINIBATCH} completions, got {args.micro_batch}")
    accumulation = MINIBATCH // args.micro_batch  # TRL's gradient_accumulation_steps
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl import GRPOConfig, GRPOTrainer

    torch.set_num_threads(args.threads)
    directory = model_dir(args.gguf_dir)
    tokenizer = load_tokenizer(directory)
    policy = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32)
    prompts: list = read_prompts(args.prompts)  # plain text: no chat template, as the env by default
    if args.chat:  # conversational prompts: TRL applies the chat template (its default system prompt included)
        prompts = [[{"role": "user", "content": prompt}] for prompt in prompts]
    dataset = Dataset.from_dict({"prompt": prompts})
    peft_config = None
    if args.lora_r > 0:
        from peft import LoraConfig

        peft_config = LoraConfig(
            r=args.lora_r, lora_alpha=2 * args.lora_r, target_modules="all-linear", task_type="CAUSAL_LM"
        )
    steps_per_iteration = N_PROMPTS // MINIBATCH
    timer = step_timer(steps_per_iteration)
    with tempfile.TemporaryDirectory() as output_dir:
        config = GRPOConfig(
            output_dir=output_dir,
            per_device_train_batch_size=args.micro_batch,  # completions per forward+backward pass
            gradient_accumulation_steps=accumulation,  # passes per optimizer step of MINIBATCH completions
            steps_per_generation=steps_per_iteration * accumulation,  # 16 completions sampled at once, 2 steps
            num_generations=GROUP_SIZE,
            num_iterations=1,
            max_completion_length=NEW_TOKENS,
            generation_kwargs={"min_new_tokens": NEW_TOKENS},
            temperature=1.0,
            top_k=0,
            top_p=1.0,
            beta=0.04,
            loss_type="grpo",
            scale_rewards="group",
            learning_rate=1e-5,
            max_steps=steps_per_iteration * (args.iterations + 1),
            bf16=args.bf16,
            gradient_checkpointing=False,
            use_cpu=True,
            report_to="none",
            save_strategy="no",
            logging_steps=1,
            log_completions=False,
            disable_tqdm=True,
            seed=0,
        )
        trainer = GRPOTrainer(
            model=policy, reward_funcs=VaderReward(), args=config, train_dataset=dataset, processing_class=tokenizer,
            callbacks=[timer], peft_config=peft_config,
        )  # fmt: skip
        trainer.train()
    seconds = timer.seconds()[1:]  # drop the warm-up iteration
    result = {
        "trainer": "TRL GRPOTrainer (policy, reference: 2 x SmolLM2-135M; reward VADER)",
        "seconds_per_iteration": sum(seconds) / len(seconds),
        "seconds": seconds,
        "peak_rss_mib": peak_rss_mib(),
        "precision": "bf16 autocast" if args.bf16 else "float32",
        "lora_r": args.lora_r,
        "chat_template": args.chat,
        "threads": torch.get_num_threads(),
        "versions": versions("torch", "transformers", "trl", "accelerate", "huggingface-hub", "peft"),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
