"""Shared fixtures for the unit tests: repo paths, task specs from conf/, a tiny tokenizer."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

# tests/unit/conftest.py -> parents[2] is the repo root; shared/ is its sibling.
REPO_ROOT = Path(__file__).resolve().parents[2]
CONF_DIR = REPO_ROOT / "conf"
SHARED = REPO_ROOT.parent / "shared"
SHARED_DATA = SHARED / "data"
GPT2_TOKENIZER_DIR = SHARED / "models" / "gpt2-tokenizer"

TOKENIZER_VOCAB = 400


def task_config(name: str, **overrides) -> dict:
    """conf/task/<name>.yaml as a dict, with ``overrides`` applied on top."""
    with (CONF_DIR / "task" / f"{name}.yaml").open(encoding="utf-8") as handle:
        cfg = yaml.safe_load(handle)
    cfg.update(overrides)
    return cfg


def task_spec(name: str, **overrides):
    from distill.data.tasks import TaskSpec

    return TaskSpec(**task_config(name, **overrides))


def shared_data_dir(task: str) -> Path:
    """/work/shared/data/<task>, or skip the test if the shared data is absent."""
    path = SHARED_DATA / task
    if not path.is_dir():
        pytest.skip(f"shared data not available: {path}")
    return path


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def make_task_spec():
    """Factory: ``make_task_spec("gsm8k", data_dir=...)`` builds a TaskSpec from conf/task/gsm8k.yaml."""
    return task_spec


@pytest.fixture(scope="session")
def load_task_config():
    """Factory: the raw dict of conf/task/<name>.yaml with overrides applied."""
    return task_config


@pytest.fixture(scope="session")
def shared_data():
    """Factory: ``shared_data("gsm8k")`` is the shared data dir, or skips the test."""
    return shared_data_dir


@pytest.fixture(scope="session")
def gpt2_tokenizer_dir() -> Path:
    if not (GPT2_TOKENIZER_DIR / "tokenizer.json").is_file():
        pytest.skip(f"shared GPT-2 tokenizer not available: {GPT2_TOKENIZER_DIR}")
    return GPT2_TOKENIZER_DIR


@pytest.fixture(scope="session")
def tiny_corpus() -> list[str]:
    """Small, fixed text mix: arith problems plus a little prose (ASCII and not)."""
    from distill.data.arith import ArithSpec, generate_splits

    spec = ArithSpec(seed=7, min_steps=1, max_steps=3, max_number=20, max_factor=3, operations=("add", "sub", "mul"))
    texts = ["Question: \nAnswer:", "question: ", "Document: \nSummary:", "translate English to German: "]
    for record in generate_splits(spec, {"train": 200})["train"]:
        texts += [record["question"], record["answer"]]
    texts += ["The quick brown fox jumps over the lazy dog.", "Grüße aus München, schöne Straße!"] * 5
    return texts


@pytest.fixture(scope="session")
def tokenizer_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("tokcache")


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_corpus, tokenizer_cache):
    from distill.models.tokenizer import build_tokenizer

    return build_tokenizer(tiny_corpus, TOKENIZER_VOCAB, tokenizer_cache)
