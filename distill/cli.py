"""The `distill` command: ``train`` and ``eval`` are Hydra apps; ``rescore`` is a plain command.

    distill train [OVERRIDES...]          one run (``-m`` for a sweep)
    distill eval ckpt=DIR [OVERRIDES...]  score a checkpoint on a task split
    distill rescore GENERATIONS.jsonl     recompute metrics.json, no model
"""

from __future__ import annotations

import functools
import logging
import sys
from pathlib import Path

from distill.errors import DistillError

USAGE = __doc__.split("\n\n", 1)[1]
log = logging.getLogger("distill")


def _report_errors(fn):
    """One line on stderr and a non-zero exit for user errors (SPEC §9); tracebacks only for bugs."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except DistillError as exc:
            print(f"error: {exc}", file=sys.stderr, flush=True)
            sys.exit(exc.exit_code)

    return wrapper


@_report_errors
def _train_job(cfg) -> dict:
    from distill.train.run import train

    summary = train(cfg)
    if cfg.eval.after_train:
        from distill.eval.entry import evaluate_after_train

        summary["eval"] = evaluate_after_train(cfg)
    return summary


@_report_errors
def _eval_job(cfg) -> dict:
    from distill.eval.entry import evaluate_checkpoint

    return evaluate_checkpoint(cfg)


def _quiet_libraries() -> None:
    """Our own progress bars and log lines replace the libraries' per-file ones."""
    import os

    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("WANDB_MODE", "offline")  # never prompt for a login
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


def _run_hydra(job, config_name: str, overrides: list[str]) -> int:
    import hydra
    from hydra.core.global_hydra import GlobalHydra

    from distill.config import config_dir, register_resolvers

    register_resolvers()
    _quiet_libraries()
    GlobalHydra.instance().clear()
    app = hydra.main(config_path=config_dir(), config_name=config_name, version_base="1.3")(job)
    saved = sys.argv
    sys.argv = [f"distill {config_name}", *overrides]
    try:
        app()
    finally:
        sys.argv = saved
    return 0


@_report_errors
def _rescore(paths: list[str]) -> int:
    from distill.eval.run import rescore

    if not paths:
        print("usage: distill rescore GENERATIONS.jsonl [...]", file=sys.stderr)
        return 2
    for path in paths:
        metrics = rescore(Path(path))
        shown = {k: v for k, v in metrics.items() if isinstance(v, float)}
        print(f"{path}: {shown}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0
    command, rest = argv[0], argv[1:]
    if command in ("train", "eval"):
        return _run_hydra(_train_job if command == "train" else _eval_job, command, rest)
    if command == "rescore":
        return _rescore(rest)
    print(f"error: unknown command {command!r}; use one of: train, eval, rescore", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
