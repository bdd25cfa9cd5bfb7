"""Shared set-up of scripts/bench.py sections 2 and 3: the real config, data and tiny presets.

Everything is composed from ``conf/`` exactly as ``distill train`` composes
it, then built with the same functions the entry point calls. The teacher is
the bootstrapped tiny teacher when it is already cached (``cache_dir``),
otherwise the random-init preset (no 15-minute bootstrap inside a benchmark);
the student is the random-init tiny preset. Which one was used is printed.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

from hydra import compose, initialize_config_dir

from distill import config as C
from distill.train.bootstrap import bootstrap_key, bootstrap_recipe, initial_model, initial_tokenizer, prepare_model
from distill.train.loop import Context, resolve_device
from distill.train.run import instantiate_method
from distill.train.sources import model_sources

logging.getLogger("distill").setLevel(logging.WARNING)


def compose_config(overrides: list[str]):
    C.register_resolvers()
    with initialize_config_dir(config_dir=C.config_dir(), version_base=None):
        return compose(config_name="train", overrides=overrides)


def teacher_is_cached(spec, sources) -> bool:
    key = bootstrap_key(spec, sources, bootstrap_recipe(spec, sources), initial_tokenizer(spec, sources), "teacher")
    return (sources.cache_dir / "bootstrap" / f"teacher-{spec.name}-{key}" / "final" / "config.json").exists()


def build(overrides: list[str], device: str = "cpu", max_train: int | None = None):
    """(cfg, method, ctx, train_data, teacher_label) for one composed run, models on ``device``.

    ``max_train`` keeps the first examples only after everything is built (a
    ``task.max_train_examples`` override would change the teacher's cache key).
    """
    from distill.train.bootstrap import encode_records

    cfg = compose_config(overrides)
    method = instantiate_method(cfg)
    sources = model_sources(C.source_settings(cfg), C.task_spec(cfg))
    student, tokenizer = initial_model(C.model_spec(cfg.student), sources)
    teacher_spec = C.model_spec(cfg.teacher)
    cached = teacher_is_cached(teacher_spec, sources)
    label = "bootstrapped tiny teacher (cached)" if cached else "random-init tiny teacher (no cached bootstrap)"
    if not cached:
        teacher_spec = replace(teacher_spec, bootstrap={**teacher_spec.bootstrap, "enabled": False})
    teacher, _ = prepare_model(teacher_spec, "teacher", sources)
    torch_device = resolve_device(device)
    teacher.to(torch_device).eval().requires_grad_(False)
    ctx = Context(student.to(torch_device), teacher, tokenizer, bool(student.config.is_encoder_decoder), torch_device,
                  extra_modules={}, cache_dir=Path(sources.cache_dir))
    train_data = encode_records(sources.task, sources.train_records[:max_train], tokenizer, student)
    return cfg, method, ctx, train_data, label
