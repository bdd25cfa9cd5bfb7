"""Which code produced a run: the git commit of the checkout distill runs from, and whether it had local changes.

Written into every run's summary.json and shown by `distill report`, so a table's rows can each name their commit
(docs/design.md, "Outputs"). An installed wheel has no checkout: the package version stands in.
"""

from __future__ import annotations

import subprocess
from functools import lru_cache
from importlib import metadata
from pathlib import Path

_ROOT = Path(__file__).resolve().parent.parent


def _git(*args: str) -> str | None:
    """Output of a git command in the package's checkout, or None when there is no git or no checkout."""
    try:
        done = subprocess.run(["git", "-C", str(_ROOT), *args], capture_output=True, text=True, timeout=10,
                              check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


@lru_cache(maxsize=1)
def code_version() -> dict:
    """``{"commit": sha or None, "dirty": bool or None, "version": package version or None}``.

    ``dirty`` counts changes to tracked files only: untracked outputs and caches in the checkout are not code.
    """
    commit = _git("rev-parse", "HEAD") if (_ROOT / "distill").is_dir() else None
    status = _git("status", "--porcelain", "--untracked-files=no") if commit else None
    try:
        version = metadata.version("distill")
    except metadata.PackageNotFoundError:
        version = None
    return {"commit": commit, "dirty": None if status is None else bool(status), "version": version}


def short(code: dict | None) -> str | None:
    """A commit as a table shows it: 7 hex digits, ``+`` when the tree had changes; the version without a commit."""
    if not isinstance(code, dict):
        return None
    commit = code.get("commit")
    if isinstance(commit, str) and commit:
        return commit[:7] + ("+" if code.get("dirty") else "")
    version = code.get("version")
    return f"v{version}" if isinstance(version, str) else None
