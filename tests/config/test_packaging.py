"""The wheel must carry every package and every config file (an installed distill has no checkout)."""

from __future__ import annotations

import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_every_package_and_config_group_is_shipped():
    setup = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    packages = set(setup["packages"])
    on_disk = {".".join(p.parent.relative_to(REPO).parts) for p in (REPO / "distill").rglob("__init__.py")}
    assert on_disk <= packages, f"add to pyproject [tool.setuptools] packages: {sorted(on_disk - packages)}"
    assert setup["package-dir"]["distill_conf"] == "conf"
    patterns = setup["package-data"]["distill_conf"]
    yamls = [p.relative_to(REPO / "conf") for p in (REPO / "conf").rglob("*.yaml")]
    assert all(any(y.match(pattern) for pattern in patterns) for y in yamls)
