"""A checkpoint is data, never code, and nothing a resume cleans up is reached through a link (real CLI)."""

from __future__ import annotations

import pytest

from distill.io import read_manifest, verify_manifest, write_manifest
from tests.links import outside_dir, untouched

from .conftest import cli, train_args


class _Payload:
    """Unpickling it calls ``open(marker, "w")``: the marker exists exactly when the pickle's code ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _snapshot(root) -> dict:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _interrupted(run, cache_dir) -> None:
    """A finished tiny run made to look killed before its end: a re-run resumes from step 4."""
    assert cli(*train_args(run, cache_dir)) == 0
    (run / "summary.json").unlink()
    for path in sorted((run / "final").rglob("*"), reverse=True):
        path.rmdir() if path.is_dir() else path.unlink()
    (run / "final").rmdir()


@pytest.fixture(scope="module")
def planted(tmp_path_factory, cache_dir):
    """An interrupted run whose newest checkpoint holds a crafted state.pt, its manifest regenerated to verify."""
    import torch

    run = tmp_path_factory.mktemp("planted") / "run"
    _interrupted(run, cache_dir)
    newest = run / "checkpoints" / "step-00000004"
    marker = run.parent / "marker"
    torch.save({"step": 4, "optimizer": _Payload(marker)}, newest / "state.pt")
    write_manifest(newest, {k: v for k, v in read_manifest(newest).items() if k != "files"})
    assert verify_manifest(newest) is None
    return run, marker


def _one_error(capsys, needle: str) -> str:
    errors = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith("error: ") and needle in errors[0], errors
    return errors[0]


def test_rerunning_a_run_with_a_crafted_checkpoint_refuses_it_and_runs_nothing(planted, cache_dir, capsys):
    """Issue: state.pt was loaded with weights_only=False, so the pickle's code ran on resume."""
    run, marker = planted
    before = _snapshot(run)
    capsys.readouterr()
    assert cli(*train_args(run, cache_dir)) == 2
    line = _one_error(capsys, "holds objects a checkpoint cannot contain")
    assert str(run / "checkpoints" / "step-00000004" / "state.pt") in line
    assert not marker.exists() and _snapshot(run) == before


def test_resume_from_a_run_with_a_crafted_checkpoint_refuses_it_before_writing(planted, cache_dir, tmp_path, capsys):
    run, marker = planted
    fresh = tmp_path / "fresh"
    capsys.readouterr()
    assert cli(*train_args(fresh, cache_dir, f"trainer.resume_from={run}")) == 2
    _one_error(capsys, "state.pt holds objects a checkpoint cannot contain")
    assert not marker.exists() and not fresh.exists()


def test_links_in_a_run_directory_are_never_followed_by_a_rerun(tmp_path, cache_dir):
    """Issue: a corrupt-step-N link crashed every re-run (rmtree on a link); a .tmp-old-* link had the files of
    its target moved into the run; a step-* link was taken for a checkpoint."""
    run, outside = tmp_path / "run", outside_dir(tmp_path)
    _interrupted(run, cache_dir)
    ckpts = run / "checkpoints"
    weights = ckpts / "step-00000004" / "student" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1] + bytes([weights.read_bytes()[-1] ^ 1]))  # corrupt: set aside
    (ckpts / "corrupt-step-00000004").symlink_to(outside, target_is_directory=True)
    (ckpts / "step-00000009").symlink_to(outside, target_is_directory=True)
    (run / ".tmp-old-final-abc").symlink_to(outside, target_is_directory=True)
    assert cli(*train_args(run, cache_dir)) == 0
    assert untouched(outside)
    assert (ckpts / "corrupt-step-00000004").is_dir() and not (ckpts / "corrupt-step-00000004").is_symlink()
    assert (ckpts / "step-00000009").is_symlink() and not (run / ".tmp-old-final-abc").exists()
    assert not (run / "sentinel").exists() and (run / "final" / "model.safetensors").is_file()
