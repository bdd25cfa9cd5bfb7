"""The exported student: ``final/`` in Hugging Face format plus ``summary.json``."""

from __future__ import annotations

from pathlib import Path

from distill.io import atomic_dir, atomic_write_json, write_manifest, writing


def save_final(run_dir: Path, model, tokenizer, summary: dict, weights: dict | None = None) -> Path:
    """Write ``final/`` atomically (with a manifest that loading verifies), then the summary that points at it.
    ``weights``: the consolidated state dict of a sharded model (written instead of its own shards)."""
    final = run_dir / "final"
    with writing(final), atomic_dir(final) as tmp:
        model.save_pretrained(tmp, **({"state_dict": weights} if weights is not None else {}))
        tokenizer.save_pretrained(tmp)
        write_manifest(tmp, {"steps": summary.get("steps")})
    atomic_write_json(run_dir / "summary.json", {**summary, "final": str(final)})
    return final
