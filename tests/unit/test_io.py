"""distill.io: atomic directory/file writes and JSONL reading."""

from __future__ import annotations

import json
import os
import stat

import pytest

from distill.errors import DataError
from distill.io import (
    append_jsonl,
    atomic_dir,
    atomic_write_json,
    atomic_write_jsonl,
    atomic_write_text,
    build_once,
    read_jsonl,
)
from tests.links import outside_dir, untouched


def test_atomic_dir_creates_final_only_on_success(tmp_path):
    final = tmp_path / "nested" / "ckpt"
    with atomic_dir(final) as tmp:
        assert tmp != final and tmp.parent == final.parent
        (tmp / "weights.bin").write_bytes(b"abc")
        assert not final.exists(), "final must not appear before the block ends"
    assert (final / "weights.bin").read_bytes() == b"abc"
    assert sorted(p.name for p in final.parent.iterdir()) == ["ckpt"], "no temp sibling left behind"


def test_atomic_dir_leaves_nothing_when_the_block_raises(tmp_path):
    final = tmp_path / "ckpt"
    with pytest.raises(RuntimeError, match="crash"):
        with atomic_dir(final) as tmp:
            (tmp / "half-written").write_text("x")
            raise RuntimeError("crash")
    assert not final.exists()
    assert list(tmp_path.iterdir()) == []


def test_atomic_dir_failure_keeps_the_previous_version(tmp_path):
    final = tmp_path / "ckpt"
    final.mkdir()
    (final / "old.txt").write_text("old")
    with pytest.raises(ValueError):
        with atomic_dir(final) as tmp:
            (tmp / "new.txt").write_text("new")
            raise ValueError
    assert sorted(p.name for p in final.iterdir()) == ["old.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def test_atomic_dir_replaces_an_existing_dir_on_success(tmp_path):
    final = tmp_path / "ckpt"
    final.mkdir()
    (final / "old.txt").write_text("old")
    (final / "sub").mkdir()
    (final / "sub" / "deep.txt").write_text("deep")
    with atomic_dir(final) as tmp:
        (tmp / "new.txt").write_text("new")
    assert sorted(p.name for p in final.iterdir()) == ["new.txt"]
    assert (final / "new.txt").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def test_atomic_write_text_and_json(tmp_path):
    path = tmp_path / "a" / "out.json"
    atomic_write_json(path, {"b": [1, 2], "ü": "ß"})
    assert json.loads(path.read_text(encoding="utf-8")) == {"b": [1, 2], "ü": "ß"}
    atomic_write_text(path, "replaced")
    assert path.read_text() == "replaced"
    assert sorted(p.name for p in path.parent.iterdir()) == ["out.json"]


def test_jsonl_write_append_read_round_trip(tmp_path):
    path = tmp_path / "r.jsonl"
    records = [{"x": 1, "s": "line\nbreak"}, {"x": 2, "s": "Grüße"}]
    atomic_write_jsonl(path, records)
    append_jsonl(path, {"x": 3, "s": ""})
    assert read_jsonl(path) == records + [{"x": 3, "s": ""}]
    assert len(path.read_text(encoding="utf-8").splitlines()) == 3


def test_read_jsonl_skips_blank_lines(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text('{"a": 1}\n\n   \n{"a": 2}\n', encoding="utf-8")
    assert read_jsonl(path) == [{"a": 1}, {"a": 2}]


def test_read_jsonl_malformed_line_names_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"a": 1}\n\n{"a": 2\n{"a": 3}\n', encoding="utf-8")  # line 3 is broken (blank line 2 counts)
    with pytest.raises(DataError) as info:
        read_jsonl(path)
    message = str(info.value)
    assert message.startswith(f"{path}:3:")
    assert "malformed JSON" in message
    assert "\n" not in message


def test_read_jsonl_non_object_line(tmp_path):
    path = tmp_path / "list.jsonl"
    path.write_text('{"a": 1}\n[1, 2]\n', encoding="utf-8")
    with pytest.raises(DataError, match=r":2: expected a JSON object, got list"):
        read_jsonl(path)


def test_read_jsonl_missing_required_field(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text('{"src": "a", "tgt": "b"}\n{"src": "c"}\n', encoding="utf-8")
    assert read_jsonl(path, required_fields=("src",)) == [{"src": "a", "tgt": "b"}, {"src": "c"}]
    with pytest.raises(DataError) as info:
        read_jsonl(path, required_fields=("src", "tgt"))
    message = str(info.value)
    assert f"{path}:2:" in message and "'tgt'" in message
    assert "'src'" not in message.split(";")[0], "only the missing field is named as missing"


def test_read_jsonl_missing_file(tmp_path):
    # A missing file is a plain OSError here; callers (tasks._local) check existence first.
    with pytest.raises(FileNotFoundError):
        read_jsonl(tmp_path / "absent.jsonl")


def test_atomic_writes_get_the_usual_permissions_not_temp_file_ones(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
        with atomic_dir(tmp_path / "d") as tmp:
            (tmp / "f").write_text("y")
    finally:
        os.umask(old)
    # mkstemp would leave 0600 and mkdtemp 0700: colleagues could not read results
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "d").stat().st_mode) == 0o755


def test_build_once_builds_a_missing_entry_and_then_only_reuses_it(tmp_path):
    marker, calls = tmp_path / "entry" / "done.json", []

    def build():
        calls.append(1)
        marker.parent.mkdir(parents=True)
        marker.write_text("{}")

    assert build_once(marker, build) is True
    assert build_once(marker, build) is False
    assert calls == [1] and (tmp_path / "entry.lock").exists()


def test_atomic_dir_fsyncs_every_file_and_directory_before_publishing(tmp_path, monkeypatch):
    """Issue 10.10: a power loss after the rename must not publish files whose data never reached the disk."""
    import os

    from distill import io

    events = []
    real_fsync, real_replace = io.fsync_path, os.replace
    monkeypatch.setattr(io, "fsync_path", lambda path: (events.append(("fsync", str(path))), real_fsync(path)))
    monkeypatch.setattr(io.os, "replace", lambda a, b: (events.append(("replace", str(b))), real_replace(a, b)))
    final = tmp_path / "out"
    with atomic_dir(final) as tmp:
        (tmp / "sub").mkdir()
        (tmp / "sub" / "weights.bin").write_bytes(b"w")
        (tmp / "config.json").write_text("{}")
    publish = events.index(("replace", str(final)))
    synced = {path for kind, path in events[:publish] if kind == "fsync"}
    assert {str(tmp / "sub" / "weights.bin"), str(tmp / "config.json"), str(tmp / "sub"), str(tmp)} <= synced
    assert ("fsync", str(tmp_path)) in events[publish:]  # the rename itself is made durable


def test_files_a_library_creates_private_are_published_with_the_usual_mode(tmp_path):
    """Issue 10.18: safetensors creates model.safetensors 0600; results are shared on clusters."""
    import os
    import stat

    with atomic_dir(tmp_path / "final") as tmp:
        fd = os.open(tmp / "model.safetensors", os.O_WRONLY | os.O_CREAT, 0o600)
        os.close(fd)
    mask = os.umask(0o022)
    os.umask(mask)
    assert stat.S_IMODE((tmp_path / "final" / "model.safetensors").stat().st_mode) == 0o666 & ~mask


def test_a_crash_between_the_two_renames_of_a_replacement_keeps_a_complete_copy(tmp_path):
    """Review of issue 10: `final` was renamed aside, then the process died; the next start deleted both."""
    import os

    from distill.io import remove_temporaries

    with atomic_dir(tmp_path / "final") as tmp:
        (tmp / "model.bin").write_text("old weights")
    aside = tmp_path / ".tmp-old-final-abc123"
    aside.mkdir()
    os.replace(tmp_path / "final", aside / "final")  # the state a kill between the renames leaves
    (tmp_path / ".tmp-final-xyz").mkdir()  # and the new copy, never renamed into place
    remove_temporaries(tmp_path)
    assert (tmp_path / "final" / "model.bin").read_text() == "old weights"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["final"]


def test_a_linked_tmp_old_dir_is_unlinked_and_nothing_moves_out_of_its_target(tmp_path):
    """A .tmp-old-* link used to be iterated: the files of the directory it points to were moved into the run."""
    from distill.io import remove_temporaries

    run, outside = tmp_path / "run", outside_dir(tmp_path)
    run.mkdir()
    (run / ".tmp-old-final-abc").symlink_to(outside, target_is_directory=True)
    (run / ".tmp-other").symlink_to(outside, target_is_directory=True)
    assert sorted(p.name for p in remove_temporaries(run)) == [".tmp-old-final-abc", ".tmp-other"]
    assert list(run.iterdir()) == [] and untouched(outside)


def test_a_link_inside_a_tmp_old_dir_is_not_restored(tmp_path):
    """Restoring it would put a link to another directory in the run's place of final/."""
    from distill.io import remove_temporaries

    run, outside = tmp_path / "run", outside_dir(tmp_path)
    (run / ".tmp-old-final-abc").mkdir(parents=True)
    (run / ".tmp-old-final-abc" / "final").symlink_to(outside / "final", target_is_directory=True)
    remove_temporaries(run)
    assert list(run.iterdir()) == [] and untouched(outside)


@pytest.mark.parametrize("dangling", [False, True])
def test_atomic_dir_replaces_a_link_at_final_and_leaves_its_target(tmp_path, dangling):
    """A dangling link at final/ made the publishing rename fail (a directory cannot replace a link)."""
    outside = outside_dir(tmp_path)
    (tmp_path / "run").mkdir()
    final = tmp_path / "run" / "final"
    final.symlink_to(tmp_path / "nowhere" if dangling else outside / "final", target_is_directory=True)
    with atomic_dir(final) as tmp:
        (tmp / "model.bin").write_text("new")
    assert not final.is_symlink() and (final / "model.bin").read_text() == "new"
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["final"] and untouched(outside)
