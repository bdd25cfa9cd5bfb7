"""The `distill` command: ``train`` and ``eval`` are Hydra apps; ``rescore`` and ``report`` are plain commands.

    distill train [OVERRIDES...]          one run (``-m`` for a sweep)
    distill eval ckpt=DIR [OVERRIDES...]  score a checkpoint on a task split
    distill rescore GENERATIONS.jsonl     recompute metrics.json, no model
    distill report DIR [DIR...] [--out OUT_DIR]
                                          report.md, runs.csv and plots from runs under DIR
                                          (OUT_DIR defaults to outputs/report)
"""

from __future__ import annotations

import functools
import logging
import sys
from pathlib import Path

from distill.errors import ConfigError, DistillError

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


PATH_KEYS = ("ckpt", "cache_dir", "hydra.run.dir", "hydra.sweep.dir")


def _quote_paths(overrides: list[str]) -> list[str]:
    """Quote path values holding ``=``, which Hydra's override grammar rejects: sweep
    run dirs are named ``seed=0,beta=0.5`` and users pass them straight to ``ckpt=``.
    A value without ``=`` is left alone, so ``-m ckpt=a,b`` still sweeps."""
    out = []
    for arg in overrides:
        key, sep, value = arg.partition("=")
        if sep and key in PATH_KEYS and "=" in value and "'" not in value and "${" not in value:
            arg = f"{key}='{value}'"
        out.append(arg)
    return out


def _run_hydra(job, config_name: str, overrides: list[str]) -> int:
    import hydra
    from hydra.core.global_hydra import GlobalHydra

    from distill.config import config_dir, register_resolvers

    register_resolvers()
    _quiet_libraries()
    GlobalHydra.instance().clear()
    app = hydra.main(config_path=config_dir(), config_name=config_name, version_base="1.3")(job)
    saved = sys.argv
    sys.argv = [f"distill {config_name}", *_quote_paths(overrides)]
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


REPORT_USAGE = "usage: distill report DIR [DIR...] [--out OUT_DIR]  (OUT_DIR defaults to outputs/report)"


def _report_args(args: list[str]) -> tuple[list[str], str]:
    """DIRs and --out; a bad option is a user error (one line), not a traceback."""
    dirs, out, rest = [], "outputs/report", list(args)
    while rest:
        arg = rest.pop(0)
        if arg == "--out" or arg == "-o":
            if not rest:
                raise ConfigError(f"--out needs a directory; {REPORT_USAGE}")
            out = rest.pop(0)
        elif arg.startswith("--out="):
            out = arg.split("=", 1)[1]
        elif arg.startswith("-"):
            raise ConfigError(f"unknown option {arg!r}; {REPORT_USAGE}")
        else:
            dirs.append(arg)
    return dirs, out


@_report_errors
def _report(args: list[str]) -> int:
    if any(a in ("-h", "--help") for a in args):
        print(REPORT_USAGE)
        return 0
    dirs, out = _report_args(args)
    if not dirs:
        print(REPORT_USAGE, file=sys.stderr)
        return 2
    from distill.report import build_report

    result = build_report([Path(d) for d in dirs], Path(out))
    print(f"wrote {result['report']} ({len(result['plots'])} plots, runs.csv beside it)")
    print(f"{result['runs']} runs, {result['missing']} missing or partial")
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
    if command == "report":
        return _report(rest)
    print(f"error: unknown command {command!r}; use one of: train, eval, rescore, report", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
