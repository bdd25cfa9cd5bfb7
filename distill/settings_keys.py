"""The one list of settings that cannot change what a run learns, and the lists derived from it.

Used by `distill report` (runs are grouped by everything else), by resuming (these may differ when a run
continues), by the bootstrap cache key (its recipe ignores the trainer's operational keys) and, as a check, by
Hydra's run-directory naming (conf/train.yaml's ``exclude_keys`` must lie inside this list; a test checks).
A key names a config node and everything under it.
"""

from __future__ import annotations

# How a run is operated, observed and stored.
OPERATION = ("trainer.device", "trainer.progress", "trainer.progress_interval", "trainer.resume", "trainer.resume_from",
             "trainer.log_every", "trainer.eval_every", "trainer.eval_batches", "trainer.save_every",
             "trainer.keep_checkpoints")
OBSERVATION = ("eval", "logger", "cache_dir", "teacher_cache.dir")
# Placement across processes and losses from hidden states instead of full logits: the same update up to float
# order (tested).
PLACEMENT = ("trainer.distributed", "teacher.sharding", "fused_linear")
# Batching of generation and chunking of the divergence kernels (results do not depend on them: tested).
BATCHING = ("teacher_generation.batch_size", "method.generation_batch_size", "divergence.chunk_size",
            "method.chunk_size", "teacher_cache.batch_size", "teacher_cache.shard_examples")
# Copies of other groups inside the method node (method.divergence = divergence, teacher_decoding =
# teacher_generation.decoding) and the class path: their originals are compared instead.
COPIES = ("method._target_", "method.divergence", "method.teacher_decoding")

NON_RESULT_KEYS = ("seed", *OPERATION, *OBSERVATION, *PLACEMENT, *BATCHING, *COPIES)

# Optimiser settings a run may change when it continues from a chosen checkpoint (trainer.resume_from).
OPTIMIZER_FIELDS = ("lr", "weight_decay", "adam_betas", "warmup_steps", "lr_schedule", "min_lr_ratio", "max_grad_norm")
OPTIMIZER_KEYS = tuple(f"trainer.{name}" for name in OPTIMIZER_FIELDS)
# A resumed run may differ in everything that cannot change results but the seed, and may run longer.
RESUME_IGNORED = (*(k for k in NON_RESULT_KEYS if k != "seed"), "trainer.max_steps")
# The SFT recipe fields a bootstrap's cache key leaves out (how the bootstrap is run, not what it learns).
BOOTSTRAP_IGNORED = tuple(k.removeprefix("trainer.") for k in OPERATION)


def covers(keys: tuple[str, ...], key: str) -> bool:
    """``key`` is one of ``keys`` or lies under one of them."""
    return any(key == k or key.startswith(k + ".") for k in keys)
