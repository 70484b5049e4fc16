"""The pieces every algorithm shares: the LM policy and its KV caches, episode buffers and layouts, the KL reference
and penalty, evaluation and generation, export and checkpoints, and the record of what SB3 internals they rely on
(:mod:`agents.common.sb3_contract`). Algorithms live beside this package (SB3's own in SB3, :mod:`agents.grpo`),
and the command line on top (:mod:`agents.cli`)."""
