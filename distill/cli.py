"""The `distill` command: ``train`` and ``eval`` are Hydra apps; ``rescore`` and ``report`` are plain commands.

    distill train [OVERRIDES...]          one run (``-m`` for a sweep)
    distill eval ckpt=DIR [OVERRIDES...]  score a checkpoint on a task split
    distill teacher-cache [OVERRIDES...]  the teacher's sparse distributions over a run's targets, once for a
                                          sweep (the run's own overrides; runs read it with teacher.cache=DIR|auto)
    distill rescore GENERATIONS.jsonl     recompute metrics.json, no model
    distill report DIR [DIR...] [--out OUT_DIR]
                                          report.md, runs.csv and plots from runs under DIR
                                          (OUT_DIR defaults to outputs/report)
    distill accelerate-config [NAME]      path of a shipped `accelerate launch --config_file` (names listed
                                          without NAME); more than one process: README "More than one GPU"
"""

from __future__ import annotations

import errno
import functools
import logging
import os
import signal
import sys
import threading
import traceback
from pathlib import Path

from distill.errors import ConfigError, DistillError, SignalInterrupt

USAGE = __doc__.split("\n\n", 1)[1]
log = logging.getLogger("distill")


# OS errors that are the environment's, not bugs: say which file and what to do, in one line.
ENVIRONMENT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOTDIR,
                      errno.EISDIR, errno.ENAMETOOLONG, errno.ELOOP}


TRAIN_RESUMES = "re-run the same command to continue (training resumes from its newest complete checkpoint)"
RERUN = "re-run the same command"


def _report_errors(fn=None, *, again: str = TRAIN_RESUMES):
    """One line on stderr and a non-zero exit for user errors; tracebacks only for bugs. ``again`` says how
    to carry on after an interruption or a full disk (training resumes; evaluation starts over)."""
    if fn is None:
        return functools.partial(_report_errors, again=again)

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except DistillError as exc:
            _exit(getattr(exc, "prefix", "error"), str(exc), exc.exit_code, exc.same_on_every_rank)
        except KeyboardInterrupt as exc:
            signum = getattr(exc, "signum", signal.SIGINT)
            _exit("interrupted", f"by {signal.Signals(signum).name}; nothing half-written is kept: {again}",
                  128 + signum)
        except OSError as exc:
            if exc.errno not in ENVIRONMENT_ERRNOS:
                raise
            _exit("error", f"cannot read or write {exc.filename or 'a file'}: {exc.strerror}; fix the path, free space "
                  f"or fix permissions, and {again}", 2, same_on_every_rank=False)

    return wrapper


def _rank() -> int:
    """This process's rank under torchrun / accelerate (0 alone)."""
    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0


def _exit(prefix: str, message: str, code: int, same_on_every_rank: bool = True) -> None:
    """Print one line and exit. Under a launcher, an error every process meets alike (a bad setting) is
    printed by rank 0 only; one of this process alone says which rank it is."""
    rank = _rank()
    if rank == 0:
        print(f"{prefix}: {message}", file=sys.stderr, flush=True)
    elif not same_on_every_rank:
        print(f"{prefix}: rank {rank}: {message}", file=sys.stderr, flush=True)
    sys.exit(code)


@_report_errors
def _train_job(cfg) -> dict:
    from distill.train.run import train

    return train(cfg)


@_report_errors(again=f"{RERUN} to evaluate again")
def _eval_job(cfg) -> dict:
    from distill.eval.entry import evaluate_checkpoint

    return evaluate_checkpoint(cfg)


@_report_errors(again=f"{RERUN}: the build resumes after its finished shards")
def _teacher_cache_job(cfg) -> str:
    from distill import config as C
    from distill.rundir import remove_created_if_empty
    from distill.train.teacher_cache import cache_job

    try:
        inputs = C.train_inputs(cfg)
        if not inputs.method.reads_teacher_cache:
            raise ConfigError(f"method {type(inputs.method).__name__.lower()} cannot use a teacher cache (on-policy "
                              "or live-teacher targets); build one for method=supervised_kd or method=gkd "
                              "method.lmbda=0")
        out = cache_job(inputs)
    finally:
        remove_created_if_empty()  # the cache has its own directory: the one Hydra made goes, refused or not
    print(f"teacher cache: {out}")
    return str(out)


def _quiet_libraries() -> None:
    """Our own progress bars and log lines replace the libraries' per-file ones."""
    import os

    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("WANDB_MODE", "offline")  # never prompt for a login
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


PATH_KEYS = ("ckpt", "cache_dir", "hydra.run.dir", "hydra.sweep.dir", "task.data_dir", "student.pretrained",
             "teacher.pretrained", "trainer.resume_from", "eval.speculative.draft")


def _quote_paths(overrides: list[str]) -> list[str]:
    """Quote path values that Hydra's override grammar rejects unquoted: ``=`` (sweep run dirs are named
    ``seed=0,beta=0.5`` and users pass them straight to ``ckpt=``) and non-ASCII letters (``…/ünï``).
    Other values are left alone, so ``-m ckpt=a,b`` still sweeps."""
    out = []
    for arg in overrides:
        key, sep, value = arg.partition("=")
        needs = "=" in value or not value.isascii()
        if sep and key.lstrip("+") in PATH_KEYS and needs and "'" not in value and "${" not in value:
            arg = f"{key}='{value}'"
        out.append(arg)
    return out


def _run_hydra(job, config_name: str, overrides: list[str]) -> int:
    import hydra
    from hydra.core.global_hydra import GlobalHydra

    from distill.config import config_dir, register_resolvers
    from distill.rundir import forget_existing, remove_created_if_empty

    register_resolvers()
    _quiet_libraries()
    GlobalHydra.instance().clear()
    app = hydra.main(config_path=config_dir(), config_name=config_name, version_base="1.3")(job)
    saved, saved_full_error = sys.argv, os.environ.get("HYDRA_FULL_ERROR")
    sys.argv = [f"distill {config_name}", *_quote_paths(overrides)]
    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra re-raises instead of printing a trace: we print one line
    try:
        app()
    except Exception as exc:
        _hydra_error(exc)
    except KeyboardInterrupt:
        remove_created_if_empty()
        raise
    finally:
        sys.argv = saved
        forget_existing()
        if saved_full_error is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = saved_full_error
    return 0


def _hydra_error(exc: Exception) -> None:
    """Hydra's own errors (bad overrides, unknown options, an output dir it cannot create) as one line."""
    from hydra.errors import HydraException, OverrideParseException
    from omegaconf.errors import OmegaConfBaseException

    if isinstance(exc, OverrideParseException):  # the grammar's message does not say which override it was
        reason = str(exc).splitlines()[0].removeprefix("LexerNoViableAltException: ")
        _exit("error", f"cannot parse the override {exc.override!r} ({reason}); a value with spaces, braces, '=' or "
              "non-ASCII letters must be quoted: key='value' (in a shell: \"key='value'\")", 2)
    if isinstance(exc, (HydraException, OmegaConfBaseException)):
        _exit("error", _hydra_hint(_one_line(str(exc))), 2)
    # Raised by Hydra itself (creating the run dir), not inside our job: the innermost frame that is not
    # the standard library's is Hydra's run_job.
    frames = [f.filename for f in traceback.extract_tb(exc.__traceback__)
              if "site-packages" in f.filename or os.sep + "distill" + os.sep in f.filename]
    from_hydra = bool(frames) and frames[-1].endswith(os.path.join("hydra", "core", "utils.py"))
    if isinstance(exc, OSError) and from_hydra:
        _exit("error", f"cannot create the output directory {exc.filename}: {exc.strerror}; "
              "set hydra.run.dir to a writable directory", 2)
    raise exc


# Method settings that are the value of another block (``method.teacher_decoding: ${teacher_generation.decoding}``):
# Hydra cannot override a key inside them, so the message names the block to set instead.
INTERPOLATED = {"method.teacher_decoding": "teacher_generation.decoding", "method.divergence": "divergence"}


def _hydra_hint(message: str) -> str:
    """Hydra's message, with what to type instead where Hydra's own advice does not work."""
    import re

    found = re.search(r"(?:override|at) '([\w.]+)'", message)
    key = found.group(1) if found else ""
    for inner, source in INTERPOLATED.items():
        if key.startswith(inner + "."):
            rest = key[len(inner) + 1:]
            return (f"{key} cannot be set: {inner} is {source} (one setting for every method); set "
                    f"{source}.{rest}=... instead")
    return message


def _one_line(message: str) -> str:
    """Hydra's multi-line messages ("Available options in 'method':\n\tgkd\n\t...") on one line."""
    out, listing = "", False
    for line in (part.strip() for part in message.splitlines()):
        if not line:
            continue
        if not out:
            out = line
        elif out.endswith(":"):
            out, listing = f"{out} {line}", True
        else:
            out += (", " if listing else "; ") + line
    return out


@_report_errors(again=RERUN)
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


REPORT_USAGE = ("usage: distill report DIR [DIR...] [--out OUT_DIR] [--baseline METHOD ...]  (OUT_DIR defaults to "
                "outputs/report; paired differences against each baseline, default sft)")


def _report_args(args: list[str]) -> tuple[list[str], str, list[str] | None]:
    """DIRs, --out and --baseline (repeatable); a bad option is a user error (one line), not a traceback."""
    dirs, out, baselines, rest = [], "outputs/report", None, list(args)
    while rest:
        arg = rest.pop(0)
        name, _, value = arg.partition("=")
        if name in ("--out", "-o", "--baseline"):
            if not value:
                if not rest:
                    raise ConfigError(f"{name} needs a value; {REPORT_USAGE}")
                value = rest.pop(0)
            if name == "--baseline":
                baselines = (baselines or []) + [value]
            else:
                out = value
        elif arg.startswith("-"):
            raise ConfigError(f"unknown option {arg!r}; {REPORT_USAGE}")
        else:
            dirs.append(arg)
    return dirs, out, baselines


@_report_errors(again=f"{RERUN} (the previous report stays as it was until the new one is complete)")
def _report(args: list[str]) -> int:
    if any(a in ("-h", "--help") for a in args):
        print(REPORT_USAGE)
        return 0
    dirs, out, baselines = _report_args(args)
    if not dirs:
        print(REPORT_USAGE, file=sys.stderr)
        return 2
    from distill.report import build_report

    result = build_report([Path(d) for d in dirs], Path(out), baselines)
    for warning in result["warnings"]:  # also listed in report.md
        print(f"warning: {warning}", file=sys.stderr)
    print(f"wrote {result['report']} ({len(result['plots'])} plots, runs.csv beside it)")
    print(f"{result['runs']} runs, {result['missing']} missing or partial")
    return 0


# DeepSpeed's engine owns backward and the optimizer step, which distill's loop does itself
# (docs/design.md, More than one process).
NOT_SHIPPED = {"zero2": "distill accelerate-config fsdp2, with fsdp_reshard_after_forward: false in a copy of it",
               "zero3": "distill accelerate-config fsdp2"}


@_report_errors(again=RERUN)
def _accelerate_config(args: list[str]) -> int:
    """Print the path of a shipped accelerate config (conf/accelerate/NAME.yaml), or list them."""
    from distill.config import config_dir

    folder = Path(config_dir()) / "accelerate"
    names = sorted(p.stem for p in folder.glob("*.yaml"))
    if not args:
        print("\n".join(names))
        return 0
    name = args[0].removesuffix(".yaml")
    if name in NOT_SHIPPED:
        raise ConfigError(f"DeepSpeed {name.upper()} does not compose with distill's training loop; the same sharding "
                          f"is FSDP2's: {NOT_SHIPPED[name]}")
    if name not in names:
        raise ConfigError(f"no accelerate config named {name!r}; choose one of: {', '.join(names)}")
    print(folder / f"{name}.yaml")
    return 0


def _on_sigterm(signum, frame) -> None:
    raise SignalInterrupt(signum)  # unwind like Ctrl-C: temporary files are cleaned, one line is printed


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.raiseExceptions = False  # a full disk must not turn every log line into a traceback
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _on_sigterm) if in_main_thread else None
    try:
        return _dispatch(argv)
    except KeyboardInterrupt as exc:  # a signal outside a command's own handling (while Hydra composes)
        signum = getattr(exc, "signum", signal.SIGINT)
        _exit("interrupted", f"by {signal.Signals(signum).name} before anything was written", 128 + signum)
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)


def _dispatch(argv: list[str]) -> int:
    if not argv:  # a command is required: usage, and a non-zero exit for scripts
        print(USAGE, file=sys.stderr)
        return 2
    if argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0
    command, rest = argv[0], argv[1:]
    if command in ("train", "eval"):
        return _run_hydra(_train_job if command == "train" else _eval_job, command, rest)
    if command == "teacher-cache":
        return _run_hydra(_teacher_cache_job, "train", rest)
    if command == "rescore":
        return _rescore(rest)
    if command == "report":
        return _report(rest)
    if command == "accelerate-config":
        return _accelerate_config(rest)
    print(f"error: unknown command {command!r}; use one of: train, eval, teacher-cache, rescore, report, "
          "accelerate-config",
          file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
