"""The repository stands on its own: code and docs cite docs/design.md's sections, and every cited section exists."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CITATION = re.compile(r"docs/design\.md, ([A-Z][\w -]*?)(?:[).\]\"]|$)", re.M)
LINK = re.compile(r"\[design: ([^\]]+)\]\((?:\.\./)*(?:docs/)?design\.md\)")


def _tracked_text_files() -> list[Path]:
    listed = subprocess.run(["git", "-C", str(ROOT), "ls-files"], capture_output=True, text=True)
    names = listed.stdout.split() if listed.returncode == 0 else [str(p.relative_to(ROOT)) for p in ROOT.rglob("*")]
    return [ROOT / n for n in names if n.endswith((".py", ".md", ".yaml", ".sh", ".toml")) and (ROOT / n).is_file()]


def _sections() -> set[str]:
    text = (ROOT / "docs" / "design.md").read_text()
    return {line[3:].strip() for line in text.splitlines() if line.startswith("## ")}


def test_no_file_cites_a_spec_outside_the_repository():
    marker = "SPEC " + "§"  # split, so this file does not match itself
    offenders = [str(p.relative_to(ROOT)) for p in _tracked_text_files() if marker in p.read_text(errors="replace")]
    assert offenders == []


def test_every_cited_design_section_exists():
    sections, missing = _sections(), []
    for path in _tracked_text_files():
        text = path.read_text(errors="replace")
        for name in CITATION.findall(text) + LINK.findall(text):
            if name.strip() not in sections:
                missing.append(f"{path.relative_to(ROOT)}: {name}")
    assert missing == []
    assert {"Reduction", "Divergences", "Methods", "X-KD", "Errors", "Outputs"} <= sections
