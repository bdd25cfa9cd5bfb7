"""A run's teacher cache: what it must have been built from, building it (`distill teacher-cache`, or
``teacher.cache=auto``), and opening it for the run (``teacher.cache=DIR``). Format: distill.data.teacher_cache.

The cache is checked against the run before it serves it: the teacher (its bootstrap key, or its weights' path
and files), the tokenizer, the training examples (prompts, and the targets when they are the dataset's), the
targets' source (the dataset, or the teacher's outputs with their decoding) and kd_temperature.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, replace
from pathlib import Path
from types import SimpleNamespace

from distill.data.teacher_cache import TeacherCache, build, items_digest
from distill.io import MANIFEST, build_once
from distill.models.forward import token_view
from distill.models.load import check_same_vocabulary, spec_config
from distill.train.bootstrap import bootstrap_key, bootstrap_recipe, init_seed, initial_tokenizer, prepare_model

log = logging.getLogger(__name__)


def teacher_identity(spec, sources) -> str:
    """Names the teacher's weights without loading them: its bootstrap key, its files, or its preset and seed."""
    if spec.bootstrap["enabled"]:
        key = bootstrap_key(spec, sources, bootstrap_recipe(spec, sources), initial_tokenizer(spec, sources), "teacher")
        return f"bootstrap:{spec.name}-{key}"
    if spec.pretrained is not None:
        path = Path(spec.pretrained).expanduser()
        files = sorted((f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in path.glob("*") if f.is_file()) \
            if path.is_dir() else []
        return f"pretrained:{spec.pretrained}:{hashlib.sha256(json.dumps(files).encode()).hexdigest()[:16]}"
    return f"tiny:{spec.name}:{hashlib.sha256(repr(spec).encode()).hexdigest()[:16]}:seed{init_seed(spec, sources)}"


def targets_source(method) -> str | dict:
    """The dataset's targets, or the teacher's own outputs with the decoding that made them."""
    if getattr(method, "seq_kd", False):
        return {"teacher_outputs": asdict(method.teacher_decoding)}
    return "dataset"


def expected(inputs, sources, tokenizer, items) -> dict:
    """What a cache serving this run must have been built from (the manifest's keys)."""
    source = targets_source(inputs.method)
    vocab = hashlib.sha256(json.dumps(sorted(tokenizer.get_vocab().items())).encode()).hexdigest()[:16]
    return {"teacher": teacher_identity(inputs.teacher, sources), "tokenizer": vocab, "targets": source,
            "items": items_digest(items, with_targets=source == "dataset"),
            "kd_temperature": inputs.method.divergence.kd_temperature}


def auto_dir(cache_dir: Path, wanted: dict, settings) -> Path:
    key = json.dumps({**wanted, "policy": settings.policy, "dtype": settings.dtype}, sort_keys=True)
    return cache_dir / "teacher_cache" / hashlib.sha256(key.encode()).hexdigest()[:20]


def build_cache(inputs, sources, ctx, items, out: Path, wanted: dict, progress: bool = True) -> Path:
    """Load the teacher, make the targets (the teacher's outputs for seq_kd, every example), write the cache."""
    from distill.data.trajectories import teacher_outputs
    from distill.train.progress import progress_bar

    teacher, teacher_tokenizer = prepare_model(inputs.teacher, "teacher", sources)
    check_same_vocabulary(teacher_tokenizer, ctx.tokenizer)
    work = replace(ctx, teacher=teacher.to(ctx.device).eval(), teacher_cache=None)
    if isinstance(wanted["targets"], dict):
        method = inputs.method
        items = teacher_outputs(work, items, method.teacher_decoding, method.generation_batch_size, progress)
    log.info("teacher cache: %d examples, %s, %s -> %s", len(items), inputs.cache_settings.policy,
             inputs.cache_settings.dtype, out)
    with progress_bar(progress, len(items), description="teacher cache", unit="example") as bar:
        def advance(done: int, _total: int) -> None:
            bar.advance(done - bar.done)

        build(work.teacher, token_view, work.collate, items, inputs.cache_settings, out, wanted,
              wanted["kd_temperature"], advance)
    return out


def open_for_run(inputs, sources, ctx, items) -> TeacherCache:
    """The run's cache: ``teacher.cache=DIR`` opened and checked, or ``auto`` built once under cache_dir."""
    wanted = expected(inputs, sources, ctx.tokenizer, items)
    if inputs.teacher_cache != "auto":
        return TeacherCache(Path(inputs.teacher_cache).expanduser(), wanted)
    out = auto_dir(sources.cache_dir, wanted, inputs.cache_settings)
    if build_once(out / MANIFEST, lambda: build_cache(inputs, sources, ctx, items, out, wanted,
                                                       inputs.trainer.progress)):
        log.info("teacher cache built: %s", out)
    else:
        log.info("reusing the teacher cache %s", out)
    return TeacherCache(out, wanted)


def cache_job(inputs) -> Path:
    """`distill teacher-cache`: the cache a run with these settings would read, built (or resumed) now."""
    from distill.train.loop import Context, resolve_device
    from distill.train.sources import model_sources, training_items

    sources = model_sources(inputs.sources, inputs.task)
    tokenizer = initial_tokenizer(inputs.student, sources)
    student = SimpleNamespace(config=spec_config(inputs.student))  # the encoding needs only its config
    items = training_items(inputs.task, sources, tokenizer, student, inputs.method)
    wanted = expected(inputs, sources, tokenizer, items)
    settings = inputs.cache_settings
    out = Path(settings.dir).expanduser() if settings.dir else auto_dir(sources.cache_dir, wanted, settings)
    device = resolve_device(inputs.trainer.device)
    ctx = Context(None, None, tokenizer, bool(student.config.is_encoder_decoder), device, extra_modules={},
                  cache_dir=sources.cache_dir, seed=inputs.seed)
    return build_cache(inputs, sources, ctx, items, out, wanted, inputs.trainer.progress)
