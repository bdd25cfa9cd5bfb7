"""A directory outside the run directory that no cleanup, move or deletion may reach through a link."""

from __future__ import annotations

from pathlib import Path


def outside_dir(tmp_path: Path) -> Path:
    """``tmp_path/outside`` with a sentinel file and a would-be ``final/``, both of which must stay put."""
    outside = tmp_path / "outside"
    (outside / "final").mkdir(parents=True)
    (outside / "sentinel").write_text("keep me")
    return outside


def untouched(outside: Path) -> bool:
    return ((outside / "sentinel").read_text() == "keep me"
            and sorted(p.relative_to(outside).as_posix() for p in outside.rglob("*")) == ["final", "sentinel"])
