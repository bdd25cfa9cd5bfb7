"""A bootstrap on the CPU is cached per intra-op thread count (distill/train/bootstrap.py, cpu_threads): the same
recipe trained on 1 and on 2 threads gives weights that differ in their last bits, which thousands of steps turn
into another model, so one cache entry must never stand for both."""

from __future__ import annotations

import torch
from hydra import compose, initialize_config_dir

from distill import config as C
from distill.train.bootstrap import bootstrap_key, bootstrap_recipe, initial_tokenizer
from distill.train.sources import model_sources

from .conftest import TINY_ARITH


def _key(cache_dir, threads: int) -> str:
    C.register_resolvers()
    with initialize_config_dir(config_dir=C.config_dir(), version_base="1.3"):
        cfg = compose("train", overrides=[*TINY_ARITH, f"cache_dir={cache_dir}", "trainer.device=cpu"])
    sources = model_sources(C.source_settings(cfg), C.task_spec(cfg))
    spec = C.model_spec(cfg.teacher)
    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return bootstrap_key(spec, sources, bootstrap_recipe(spec, sources), initial_tokenizer(spec, sources), "teacher")
    finally:
        torch.set_num_threads(saved)


def test_the_cpu_thread_count_is_part_of_a_bootstraps_cache_key(cache_dir):
    one, two = _key(cache_dir, 1), _key(cache_dir, 2)
    assert one != two
    assert _key(cache_dir, 1) == one  # and nothing else moves it
