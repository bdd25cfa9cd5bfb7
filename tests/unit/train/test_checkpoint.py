import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from distill.io import MANIFEST, read_manifest, verify_manifest
from distill.train import checkpoint as ckpt
from distill.train import resume
from distill.train.schedule import make_scheduler


class _Tok:
    def save_pretrained(self, path):
        (path / "tokenizer.json").write_text("{}")


def _model(seed):
    torch.manual_seed(seed)
    return GPT2LMHeadModel(GPT2Config(vocab_size=20, n_positions=16, n_embd=8, n_layer=1, n_head=2,
                                      resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, eos_token_id=0, bos_token_id=0))


def _opt(model):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    return opt, make_scheduler(opt, 2, 10, "cosine", 0.1)


def _one_step(model, opt, sched):
    loss = model(input_ids=torch.tensor([[1, 2, 3]]), labels=torch.tensor([[1, 2, 3]])).loss
    loss.backward()
    opt.step()
    sched.step()
    opt.zero_grad()


def test_round_trip_restores_weights_optimizer_scheduler_and_rng(tmp_path):
    model = _model(0)
    opt, sched = _opt(model)
    _one_step(model, opt, sched)
    head = torch.nn.Linear(3, 2)
    path = ckpt.save_checkpoint(tmp_path, 1, model, _Tok(), opt, sched, {"head": head}, keep=2)
    expected_draw = torch.rand(3)

    other = _model(1)
    other_opt, other_sched = _opt(other)
    other_head = torch.nn.Linear(3, 2)
    step, method_state = ckpt.load_training_state(path, other, other_opt, other_sched, {"head": other_head})
    assert method_state is None
    assert step == 1
    assert torch.equal(torch.rand(3), expected_draw)
    for a, b in zip(model.state_dict().values(), other.state_dict().values()):
        assert torch.equal(a, b)
    assert torch.equal(head.weight, other_head.weight)
    assert other_sched.last_epoch == sched.last_epoch
    _one_step(model, opt, sched)
    _one_step(other, other_opt, other_sched)
    for a, b in zip(model.parameters(), other.parameters()):
        assert torch.equal(a, b)


def test_keeps_newest_and_ignores_incomplete_dirs(tmp_path):
    model = _model(0)
    opt, sched = _opt(model)
    for step in (1, 2, 3):
        ckpt.save_checkpoint(tmp_path, step, model, _Tok(), opt, sched, {}, keep=2)
    (tmp_path / ".tmp-step-00000009-abc").mkdir()  # what a crash mid-write leaves
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["step-00000002", "step-00000003"]
    assert ckpt.list_checkpoints(tmp_path / "missing") == []


def _three_checkpoints(tmp_path):
    model = _model(0)
    opt, sched = _opt(model)
    for step in (1, 2, 3):
        ckpt.save_checkpoint(tmp_path, step, model, _Tok(), opt, sched, {}, keep=3, info={"max_abs_weight": 1.5})
    return tmp_path / "step-00000003"


def _truncate(path):
    weights = path / "student" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])


def _flip_a_byte(path):
    weights = path / "student" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-7] ^= 0x01  # inside a tensor: the file still parses, the weights silently differ
    weights.write_bytes(bytes(data))


def _delete_state(path):
    (path / "state.pt").unlink()


def _add_a_file(path):
    (path / "student" / "pytorch_model.bin").write_bytes(b"stray")


def _empty_it(path):
    import shutil

    shutil.rmtree(path)
    path.mkdir()


@pytest.mark.parametrize("damage, reason", [(_truncate, "truncated"), (_flip_a_byte, "sha256"), (_delete_state, "missing"),
                                            (_add_a_file, "unexpected"), (_empty_it, "manifest")])
def test_a_damaged_newest_checkpoint_is_set_aside_and_the_previous_one_used(tmp_path, caplog, damage, reason):
    newest = _three_checkpoints(tmp_path)
    assert verify_manifest(newest) is None
    damage(newest)
    assert reason in verify_manifest(newest)
    with caplog.at_level("WARNING"):
        plan = resume.plan_start(True, None, tmp_path, "sig")
    assert plan.source.name == "step-00000002" and newest.exists()  # planning changes nothing
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "step-00000003" in warnings[0].getMessage()
    resume.apply(plan, tmp_path)
    assert (tmp_path / "corrupt-step-00000003").is_dir() and not newest.exists()  # kept for a look, never resumed


def test_manifest_lists_every_file_with_size_and_hash_and_the_recorded_info(tmp_path):
    newest = _three_checkpoints(tmp_path)
    manifest = read_manifest(newest)
    listed = set(manifest["files"])
    on_disk = {p.relative_to(newest).as_posix() for p in newest.rglob("*") if p.is_file()} - {MANIFEST}
    assert listed == on_disk and {"state.pt", "extra.pt", "student/model.safetensors"} <= listed
    assert manifest["step"] == 3 and manifest["max_abs_weight"] == 1.5


def test_checkpoint_files_get_the_usual_permissions(tmp_path):
    """Issue 10.18: safetensors writes 0600; a shared cluster needs the umask's permissions."""
    import os
    import stat

    newest = _three_checkpoints(tmp_path)
    mask = os.umask(0o022)
    os.umask(mask)
    for path in newest.rglob("*"):
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o777 if path.is_dir() else 0o666) & ~mask, (path, oct(mode))


class _Payload:
    """Unpickling it calls ``open(marker, "w")``: the marker exists exactly when the pickle's code ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _plant(path, name, form, marker):
    """Replace ``path/name`` by a crafted pickle and regenerate the manifest, so the checkpoint verifies."""
    import io
    import pickle

    payload = {"step": 1, "optimizer": _Payload(marker)}
    if form == "torch.save":
        buffer = io.BytesIO()
        torch.save(payload, buffer)
        (path / name).write_bytes(buffer.getvalue())
    else:
        (path / name).write_bytes(pickle.dumps(payload))
    info = {k: v for k, v in read_manifest(path).items() if k != "files"}
    from distill.io import write_manifest

    write_manifest(path, info)
    assert verify_manifest(path) is None


@pytest.mark.parametrize("form", ["torch.save", "pickle"])
@pytest.mark.parametrize("name", ["state.pt", "extra.pt"])
def test_a_crafted_pickle_in_a_checkpoint_is_refused_and_never_run(tmp_path, name, form):
    """Issue: extra.pt/state.pt were loaded with weights_only=False, so a crafted pickle ran its code on resume."""
    import pickle

    from distill.errors import ModelError

    live = tmp_path / "live-marker"
    pickle.loads(pickle.dumps(_Payload(live))).close()  # the payload is real: unpickled unrestricted, it runs
    assert live.exists()
    model = _model(0)
    opt, sched = _opt(model)
    path = ckpt.save_checkpoint(tmp_path / "ckpts", 1, model, _Tok(), opt, sched, {}, keep=2)
    marker = tmp_path / "marker"
    _plant(path, name, form, marker)
    for attempt in (lambda: resume.check_compatible(path, model),
                    lambda: ckpt.load_training_state(path, model, opt, sched, {})):
        with pytest.raises(ModelError) as caught:
            attempt()
        message = str(caught.value)
        assert str(path / name) in message and "holds objects a checkpoint cannot contain" in message
        assert "\n" not in message and not marker.exists()


def _rewrite_pickle(path, old: bytes, new: bytes) -> None:
    """Rename a global inside a torch zip file (what another numpy version writes)."""
    import io
    import zipfile

    out = io.BytesIO()
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as dst:
        for info in src.infolist():
            data = src.read(info)
            dst.writestr(info.filename, data.replace(old, new) if info.filename.endswith("data.pkl") else data)
    path.write_bytes(out.getvalue())


@pytest.mark.parametrize("numpy_name", ["numpy._core", "numpy.core"])
def test_a_checkpoint_written_by_the_previous_version_still_resumes(tmp_path, numpy_name):
    """The files exactly as the previous version wrote them (torch.save of numpy's RNG state, OSD's replay buffer
    under __method__), under numpy 2's name for ndarray's constructor and numpy 1's."""
    import random

    import numpy as np

    from distill.io import write_manifest

    model, head = _model(0), torch.nn.Linear(3, 2)
    opt, sched = _opt(model)
    _one_step(model, opt, sched)
    np.random.normal()  # numpy's state then caches a gaussian: every field of the tuple is used
    path = tmp_path / "step-00000001"
    model.save_pretrained(path / "student")
    method = {"replay": [([1, 2], [3], 0, [(0, torch.ones(4))])], "recent": [0.5]}
    torch.save({"head": head.state_dict(), ckpt.METHOD_STATE: method}, path / "extra.pt")
    torch.save({"step": 1, "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                "rng": {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state(),
                        "cuda": None}}, path / "state.pt")
    _rewrite_pickle(path / "state.pt", b"numpy._core.multiarray", f"{numpy_name}.multiarray".encode())
    write_manifest(path, {"step": 1})
    expected = (np.random.normal(), np.random.rand(), random.random(), torch.rand(2))

    other, other_head = _model(1), torch.nn.Linear(3, 2)
    other_opt, other_sched = _opt(other)
    resume.check_compatible(path, other)
    step, state = ckpt.load_training_state(path, other, other_opt, other_sched, {"head": other_head})
    assert step == 1 and state["recent"] == [0.5] and torch.equal(state["replay"][0][3][0][1], torch.ones(4))
    assert (np.random.normal(), np.random.rand(), random.random()) == expected[:3]
    assert torch.equal(torch.rand(2), expected[3]) and torch.equal(other_head.weight, head.weight)
    _one_step(model, opt, sched)
    _one_step(other, other_opt, other_sched)
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), other.parameters()))


def test_a_step_dir_that_is_a_link_is_not_a_checkpoint_and_pruning_leaves_its_target(tmp_path):
    """A linked step-* was listed: resumed from, and its files' fate left to prune."""
    model = _model(0)
    opt, sched = _opt(model)
    outside = tmp_path / "outside"
    real = ckpt.save_checkpoint(outside, 9, model, _Tok(), opt, sched, {}, keep=1)  # a valid checkpoint elsewhere
    (real / "sentinel").write_text("keep me")
    ckpts = tmp_path / "run" / "checkpoints"
    ckpts.mkdir(parents=True)
    (ckpts / "step-00000009").symlink_to(real, target_is_directory=True)
    (ckpts / "step-00000000").symlink_to(real, target_is_directory=True)
    for step in (1, 2, 3):
        ckpt.save_checkpoint(ckpts, step, model, _Tok(), opt, sched, {}, keep=2)
    assert [p.name for p in ckpt.list_checkpoints(ckpts)] == ["step-00000002", "step-00000003"]
    assert resume.plan_start(True, None, ckpts, "sig").source.name == "step-00000003"
    assert (real / "sentinel").read_text() == "keep me" and verify_manifest(real) == "unexpected file sentinel"
    assert (ckpts / "step-00000009").is_symlink() and (ckpts / "step-00000000").is_symlink()
