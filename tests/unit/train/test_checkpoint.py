import torch
from transformers import GPT2Config, GPT2LMHeadModel

from distill.train import checkpoint as ckpt
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
    step = ckpt.load_training_state(path, other, other_opt, other_sched, {"head": other_head})
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
    assert ckpt.latest_checkpoint(tmp_path).name == "step-00000003"
    assert ckpt.latest_checkpoint(tmp_path / "missing") is None
