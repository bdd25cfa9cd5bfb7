"""Helpers to drive the real `distill` CLI with tiny, fast settings."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from distill.cli import main

# A few CPU steps on a small slice of the generated task; every knob is a real CLI override.
TINY_ARITH = ["task.generator.sizes.train=300", "task.generator.sizes.validation=8", "task.generator.sizes.test=8"]
TINY = [
    "tokenizer.vocab_size=300", "trainer.max_steps=4", "trainer.micro_batch_size=4", "trainer.warmup_steps=1",
    "trainer.log_every=1", "trainer.eval_every=2", "trainer.save_every=2", "trainer.eval_batches=1",
    "trainer.progress=false", "eval.progress=false", "eval.batch_size=8", "eval.max_new_tokens=12",
    "bootstrap_trainer.max_steps=3", "bootstrap_trainer.micro_batch_size=4", "bootstrap_trainer.warmup_steps=1",
]


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    """One cache for the session: tokenizers and SFT bootstraps are built once."""
    return tmp_path_factory.mktemp("cache")


def cli(*args: str) -> int:
    """Run `distill ARGS` in this process; SystemExit codes come back as return values."""
    try:
        return main(list(args))
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 1


def train_args(run_dir: Path, cache_dir: Path, *extra: str, arith: bool = True) -> list[str]:
    """`distill train` with tiny settings; ``arith=False`` for tasks that are not generated."""
    task = TINY_ARITH if arith else []
    return ["train", *task, *TINY, f"cache_dir={cache_dir}", f"hydra.run.dir={run_dir}", *extra]


def cli_subprocess(*args: str, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    full_env = {**os.environ, **(env or {})}  # same thread count as in-process runs: bitwise-equal weights
    return subprocess.run([sys.executable, "-m", "distill.cli", *args], capture_output=True, text=True,
                          env=full_env, timeout=timeout)
