"""Resume planning and its renames never follow a link out of the run directory."""

import pytest

from distill.errors import ConfigError
from distill.train import resume

from .test_checkpoint import _flip_a_byte, _three_checkpoints


def _outside(tmp_path):
    """A directory beyond the run, holding a sentinel file that must survive."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "sentinel").write_text("keep me")
    return outside


@pytest.mark.parametrize("dangling", [False, True])
def test_a_linked_corrupt_step_is_unlinked_not_followed(tmp_path, dangling):
    """A corrupt-step-N link made every re-run crash (shutil.rmtree on a link), or the rename fail if dangling."""
    ckpts = tmp_path / "run" / "checkpoints"
    ckpts.mkdir(parents=True)
    newest = _three_checkpoints(ckpts)
    _flip_a_byte(newest)
    outside = _outside(tmp_path)
    link = ckpts / "corrupt-step-00000003"
    link.symlink_to(tmp_path / "nowhere" if dangling else outside, target_is_directory=True)
    plan = resume.plan_start(True, None, ckpts, "sig")
    resume.apply(plan, ckpts)
    assert plan.source.name == "step-00000002"
    assert link.is_dir() and not link.is_symlink() and (link / "manifest.json").is_file()
    assert (outside / "sentinel").read_text() == "keep me" and sorted(p.name for p in outside.iterdir()) == ["sentinel"]


def test_superseded_metrics_are_not_written_through_a_link(tmp_path):
    run = tmp_path / "run"
    ckpts = run / "checkpoints"
    ckpts.mkdir(parents=True)
    _three_checkpoints(ckpts)
    (run / "metrics.jsonl").write_text('{"step": 1}\n')
    outside = _outside(tmp_path)
    (run / "metrics.superseded.jsonl").symlink_to(outside / "sentinel")
    plan = resume.plan_start(True, "1", ckpts, "sig")
    resume.apply(plan, ckpts)
    assert [p.name for p in plan.supersede] == ["step-00000002", "step-00000003"]
    assert (outside / "sentinel").read_text() == "keep me"
    superseded = run / "metrics.superseded.jsonl"
    assert not superseded.is_symlink() and superseded.read_text() == '{"step": 1}\n'


def test_resume_from_a_step_that_is_a_link_is_refused(tmp_path):
    ckpts = tmp_path / "run" / "checkpoints"
    ckpts.mkdir(parents=True)
    newest = _three_checkpoints(ckpts)
    (ckpts / "step-00000007").symlink_to(newest, target_is_directory=True)
    with pytest.raises(ConfigError, match="no checkpoint at .*step-00000007"):
        resume.plan_start(True, "7", ckpts, "sig")
