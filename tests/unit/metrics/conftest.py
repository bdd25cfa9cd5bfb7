"""Fixtures for metric tests: small slices of the shared real test sets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

# tests/unit/metrics/conftest.py -> parents[3] is the repo root; shared/ is its sibling.
SHARED_DATA = Path(__file__).resolve().parents[3] / ".." / "shared" / "data"
N_REAL = 50


def _read_jsonl(task: str, limit: int | None) -> list[dict]:
    """First ``limit`` rows of shared/data/<task>/test.jsonl, or skip if absent."""
    path = SHARED_DATA / task / "test.jsonl"
    if not path.is_file():
        pytest.skip(f"shared data not available: {path}")
    rows = []
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if limit is not None and len(rows) >= limit:
                break
            rows.append(json.loads(line))
    return rows


@pytest.fixture(scope="session")
def xsum_rows() -> list[dict]:
    """First 50 XSum test examples (document, summary)."""
    return _read_jsonl("xsum", N_REAL)


@pytest.fixture(scope="session")
def wmt_rows() -> list[dict]:
    """First 50 WMT14 en-de test examples (en, de)."""
    return _read_jsonl("wmt14_en_de", N_REAL)


@pytest.fixture(scope="session")
def gsm8k_rows() -> list[dict]:
    """All GSM8K test examples (question, answer)."""
    return _read_jsonl("gsm8k", None)
