"""The code version a run records: this checkout's commit, and how a table shows it."""

import subprocess
from pathlib import Path

from distill.provenance import code_version, short

ROOT = Path(__file__).resolve().parents[2]


def test_code_version_is_this_checkouts_head():
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True)
    version = code_version()
    if head.returncode != 0:  # a copy without .git: no commit to name
        assert version["commit"] is None and version["dirty"] is None
        return
    assert version["commit"] == head.stdout.strip() and isinstance(version["dirty"], bool)


def test_short_names_commit_dirtiness_or_version():
    assert short({"commit": "0123456789abcdef", "dirty": False, "version": "0.1.0"}) == "0123456"
    assert short({"commit": "0123456789abcdef", "dirty": True}) == "0123456+"
    assert short({"commit": None, "dirty": None, "version": "0.1.0"}) == "v0.1.0"
    assert short({"commit": None, "version": None}) is None and short(None) is None and short("abc") is None
