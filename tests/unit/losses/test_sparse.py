"""Sparse teachers: exact at zero tail, never above the dense value, and the gradient bound holds on random and
adversarial teacher tails (small vocabularies, every divergence)."""

from __future__ import annotations

import pytest
import torch

from distill.losses.divergences import Divergence
from distill.losses.sparse import SparseTeacher, grad_l1_bound, sparse_divergence, student_outcomes

V, K = 12, 4
SETTINGS = {
    "fkl": {}, "rkl": {}, "tvd": {}, "skl": {"skew": 0.1}, "srkl": {"skew": 0.1},
    "jsd": {"beta": 0.3}, "jsd_normalized": {"beta": 0.7, "normalize": True},
    "jsd_beta0": {"beta": 0.0, "normalize": True}, "jsd_beta1": {"beta": 1.0, "normalize": True},
}


def divergence(case: str, tau: float = 1.0) -> Divergence:
    name = case.split("_")[0]
    return Divergence.from_config({"name": name, "kd_temperature": tau, "chunk_size": 3, "beta": None,
                                   "normalize": False, "skew": None, **SETTINGS[case]})


def sparse_from_dense(teacher_logits: torch.Tensor, k: int, tau: float = 1.0) -> SparseTeacher:
    """What a top-k cache keeps of a dense teacher at temperature τ."""
    log_p = torch.log_softmax(teacher_logits.double() / tau, -1)
    top, ids = log_p.topk(k, -1)
    rest = log_p.scatter(-1, ids, float("-inf"))
    return SparseTeacher(ids, top.float(), torch.logsumexp(rest, -1).float(), log_p.amin(-1).float())


def grads(fn, student_logits):
    z = student_logits.clone().requires_grad_(True)
    fn(z).sum().backward()
    return z.grad


@pytest.mark.parametrize("case", sorted(SETTINGS))
@pytest.mark.parametrize("tau", [1.0, 2.0])
def test_with_every_token_kept_it_is_the_dense_divergence(case, tau):
    torch.manual_seed(0)
    student, teacher = torch.randn(5, V) * 2, torch.randn(5, V) * 2
    div = divergence(case, tau)
    cache = sparse_from_dense(teacher, V, tau)  # k = V: the tail is empty on both sides
    assert torch.isneginf(cache.log_tail).all()
    dense, sparse = div(student, teacher), sparse_divergence(div, student, cache)
    assert torch.allclose(sparse, dense, rtol=1e-5, atol=1e-6)
    g_dense = grads(lambda z: div(z, teacher), student)
    g_sparse = grads(lambda z: sparse_divergence(div, z, cache), student)
    assert torch.allclose(g_sparse, g_dense, rtol=1e-4, atol=1e-6)
    assert torch.all(grad_l1_bound(div, student, cache) == 0)


@pytest.mark.parametrize("case", sorted(SETTINGS))
def test_the_sparse_value_never_exceeds_the_dense_one(case):
    torch.manual_seed(1)
    student, teacher = torch.randn(64, V) * 3, torch.randn(64, V) * 3
    div = divergence(case)
    sparse = sparse_divergence(div, student, sparse_from_dense(teacher, K))
    assert torch.all(sparse <= div(student, teacher) + 1e-5)


def _adversarial_teachers(student: torch.Tensor, base: torch.Tensor) -> list[torch.Tensor]:
    """Teacher logits with the same top-K as ``base`` and tails spread in the ways that hurt most: all tail mass
    on the tail token the student likes least, or most; tails proportional to the student (no error); and tails
    at the smallest probability the teacher allows beside one large tail token."""
    out = [base]
    kept = base.topk(K, -1).indices
    floor = base.gather(-1, kept).amin(-1, keepdim=True) - 0.5  # every tail token below the smallest kept
    tail = torch.ones_like(base, dtype=torch.bool).scatter(-1, kept, False)
    q = torch.softmax(student, -1).masked_fill(~tail, float("inf"))
    for pick in (q.argmin(-1, keepdim=True), q.masked_fill(~tail, -1.0).argmax(-1, keepdim=True)):
        spiked = torch.where(tail, floor - 12.0, base)  # tiny everywhere in the tail ...
        out.append(spiked.scatter(-1, pick, floor.squeeze(-1).unsqueeze(-1)))  # ... but one token
    proportional = torch.where(tail, student - student.masked_fill(~tail, -1e9).amax(-1, keepdim=True) + floor, base)
    out.append(proportional)
    return out


@pytest.mark.parametrize("case", sorted(SETTINGS))
@pytest.mark.parametrize("tau", [1.0, 0.5])
def test_the_gradient_error_stays_under_the_logged_bound(case, tau):
    torch.manual_seed(2)
    div = divergence(case, tau)
    checked = 0
    for trial in range(6):
        student = torch.randn(16, V) * (1 + trial)
        for teacher in _adversarial_teachers(student, torch.randn(16, V) * (1 + trial)):
            cache = sparse_from_dense(teacher, K, tau)
            error = (grads(lambda z, c=cache: sparse_divergence(div, z, c), student)
                     - grads(lambda z, t=teacher: div(z, t), student)).abs().sum(-1)
            bound = grad_l1_bound(div, student, cache)
            assert torch.all(error <= bound * (1 + 2e-3) + 1e-5), (case, (error - bound).max())  # float32 noise
            checked += int(torch.isfinite(bound).sum())
    assert checked > 0


def test_fkl_bound_is_twice_the_tail_mass_and_can_be_reached():
    """fkl: error = Σ_tail |p_v − r_v·p_tail| ≤ 2·p_tail, approached when the tail mass sits on the tail token
    the student likes least and the student's tail is spread thin."""
    student = torch.zeros(1, V)
    student[0, :K] = 5.0
    student[0, K] = -30.0  # the student gives this tail token almost nothing
    teacher = torch.full((1, V), -40.0)
    teacher[0, :K] = 2.0
    teacher[0, K] = 0.0  # all of the teacher's tail mass on it
    div = divergence("fkl")
    cache = sparse_from_dense(teacher, K)
    error = (grads(lambda z: sparse_divergence(div, z, cache), student)
             - grads(lambda z: div(z, teacher), student)).abs().sum(-1)
    bound = grad_l1_bound(div, student, cache)
    assert float(error / bound) > 0.99


def test_rkl_without_the_teachers_floor_is_unbounded_and_with_it_finite():
    torch.manual_seed(3)
    student, teacher = torch.randn(4, V), torch.randn(4, V)
    cache = sparse_from_dense(teacher, K)
    div = divergence("rkl")
    assert torch.isfinite(grad_l1_bound(div, student, cache)).all()
    floorless = SparseTeacher(cache.ids, cache.log_probs, cache.log_tail)
    assert torch.isinf(grad_l1_bound(div, student, floorless)).all()


def test_ragged_supports_and_the_student_outcomes_by_hand():
    """Empty slots (-1) are no outcome at all; q_S and q_tail partition the student's mass."""
    student = torch.log(torch.tensor([[0.5, 0.25, 0.125, 0.125]]))
    ids = torch.tensor([[1, -1, 0]])
    log_q_support, log_q_tail = student_outcomes(student, ids, 1.0)
    assert torch.allclose(log_q_support.exp(), torch.tensor([[0.25, 0.0, 0.5]]))
    assert torch.allclose(log_q_tail.exp(), torch.tensor([0.25]))
    teacher = SparseTeacher(ids, torch.log(torch.tensor([[0.5, 0.0, 0.25]])), torch.log(torch.tensor([0.25])))
    # fkl over (0.5, 0.25 | tail 0.25) against (0.25, 0.5 | 0.25): 0.5 ln 2 + 0.25 ln 0.5
    value = sparse_divergence(divergence("fkl"), student, teacher)
    assert value.item() == pytest.approx(0.5 * torch.log(torch.tensor(2.0)).item() + 0.25 * torch.log(torch.tensor(0.5)).item(), rel=1e-5)


@pytest.mark.parametrize("case", ["fkl", "jsd", "rkl"])
def test_from_hidden_states_it_is_the_same_loss_gradient_and_bound(case):
    """The fused path (hidden states and projection, a chunk of rows of logits at a time) against full logits."""
    torch.manual_seed(4)
    hidden, weight = torch.randn(2, 5, 6), torch.randn(V, 6)
    mask = torch.tensor([[1.0, 1, 0, 1, 1], [0, 1, 1, 1, 0]])
    cache = sparse_from_dense(torch.randn(2, 5, V) * 2, K)
    div = divergence(case)
    outputs = [_loss_bound_grads(div, hidden, weight, cache, mask, fused) for fused in (False, True)]
    for unfused, fused in zip(*outputs):
        assert torch.allclose(fused, unfused, rtol=1e-5, atol=1e-6)


def _loss_bound_grads(div, hidden, weight, teacher, mask, fused: bool) -> tuple:
    """(values, bound, ∂hidden, ∂weight) of the sparse loss from full logits or from hidden states (fused)."""
    from distill.losses.sparse import fused_grad_l1_bound, fused_sparse_divergence

    h, w = hidden.clone().requires_grad_(True), weight.clone().requires_grad_(True)
    if fused:
        values = fused_sparse_divergence(div, h, w, teacher, mask)
        bound = fused_grad_l1_bound(div, h.detach(), w.detach(), teacher, mask)
    else:
        logits = h @ w.T
        values = sparse_divergence(div, logits, teacher) * mask
        bound = grad_l1_bound(div, logits.detach(), teacher) * mask
    (values * torch.arange(1.0, 11.0).view(2, 5)).sum().backward()  # unequal upstream weights per position
    return values.detach(), bound, h.grad, w.grad


def test_a_student_padded_wider_than_the_teacher_is_compared_over_the_teachers_tokens():
    """Like the dense path's shared vocabulary: padding rows of the student's output layer are dropped."""
    torch.manual_seed(5)
    student, teacher = torch.randn(3, V), torch.randn(3, V)
    cache = sparse_from_dense(teacher, K)
    padded = torch.cat([student, torch.full((3, 4), 3.0)], -1)  # four padding logits that would take mass
    capped = SparseTeacher(cache.ids, cache.log_probs, cache.log_tail, cache.log_min, vocab_size=V)
    div = divergence("fkl")
    assert torch.allclose(sparse_divergence(div, padded, capped), sparse_divergence(div, student, cache))
    assert not torch.allclose(sparse_divergence(div, padded, cache), sparse_divergence(div, student, cache))


@pytest.mark.parametrize("case", ["fkl", "jsd", "rkl", "tvd"])
@pytest.mark.parametrize("own_column", [False, True])
def test_a_shared_support_is_the_same_support_kept_per_position(case, own_column):
    """Another tokenizer's matched tokens are one support for every position (``shared_ids``, kept once), plus at
    most one slot of a position's own: the loss, its gradient and the bound are those of the same support written
    out per position, on full logits and from hidden states."""
    torch.manual_seed(6)
    hidden, weight = torch.randn(2, 5, 6), torch.randn(V, 6)
    mask = torch.tensor([[1.0, 1, 0, 1, 1], [0, 1, 1, 1, 0]])
    shared = torch.tensor([7, 2, 9, 0])
    log_p = torch.log_softmax(torch.randn(2, 5, V) * 2, -1)
    own = torch.tensor([[[3], [-1], [5], [-1], [3]], [[-1], [11], [-1], [4], [-1]]])[..., :1 if own_column else 0]
    support = torch.cat([shared.expand(2, 5, 4), own], -1)
    values = log_p.gather(-1, support.clamp(min=0)).masked_fill(support < 0, float("-inf"))
    spare = torch.where(support >= 0, support, V)  # empty slots mark a spare column, not token 0
    kept = torch.zeros(2, 5, V + 1, dtype=torch.bool).scatter_(-1, spare, True)[..., :V]
    tail = torch.logsumexp(log_p.masked_fill(kept, float("-inf")), -1)
    written_out = SparseTeacher(support, values, tail, log_p.amin(-1))
    compact = SparseTeacher(own, values, tail, log_p.amin(-1), shared_ids=shared)
    assert torch.equal(compact.support_ids, support)
    div = divergence(case)
    results = [_loss_bound_grads(div, hidden, weight, teacher, mask, fused)
               for teacher in (written_out, compact) for fused in (False, True)]
    for reference, other in ((results[0], results[1]), (results[0], results[2]), (results[0], results[3])):
        for a, b in zip(reference, other):
            assert torch.allclose(a, b, rtol=1e-5, atol=1e-6)
    assert results[0][0].abs().sum() > 0 and results[0][2].abs().sum() > 0  # something was compared


@pytest.mark.parametrize("tau", [1.0, 2.0])
@pytest.mark.parametrize("shared", [None, torch.tensor([10, 1])])
def test_the_outcomes_hand_written_backward_is_autograds(tau, shared):
    """student_outcomes' one-pass backward against autograd through the plain formula (gather, masked
    logsumexp), with empty slots, a shared support, an empty tail and arbitrary upstream gradients."""
    torch.manual_seed(7)
    logits = torch.randn(4, V, dtype=torch.float64) * 2
    ids = torch.tensor([[3, -1, 5], [0, 2, -1], [-1, -1, -1], [4, 6, 8]])
    if shared is None:  # one row whose support is every token: its tail is empty
        ids = torch.cat([ids, torch.full((4, V - 3), -1)], -1)
        ids[3] = torch.arange(V)
    support = ids if shared is None else torch.cat([shared.expand(4, 2), ids], -1)

    def plain(z):
        log_q = (z / tau).log_softmax(-1)
        kept = log_q.gather(-1, support.clamp(min=0)).masked_fill(support < 0, float("-inf"))
        spare = torch.where(support >= 0, support, V)  # empty slots mark a spare column, not token 0
        marks = torch.zeros(4, V + 1, dtype=torch.bool).scatter_(-1, spare, True)[:, :V]
        outside = log_q.masked_fill(marks, float("-inf"))
        empty = torch.isneginf(outside).all(-1)
        tail = torch.where(empty[:, None], torch.zeros_like(outside), outside).logsumexp(-1)
        return kept, tail.masked_fill(empty, float("-inf"))

    up_support, up_tail = torch.randn(4, support.size(-1)), torch.randn(4)
    grads = []
    for fn in (plain, lambda z: student_outcomes(z, ids, tau, shared)):
        z = logits.float().clone().requires_grad_(True)
        kept, tail = fn(z)
        finite = lambda t: torch.where(torch.isfinite(t), t, torch.zeros_like(t))  # noqa: E731
        ((finite(kept) * up_support).sum() + (finite(tail) * up_tail).sum()).backward()
        grads.append((kept.detach(), tail.detach(), z.grad))
    assert torch.isneginf(grads[1][1]).any() == (shared is None)  # the full row's tail is empty
    for a, b in zip(*grads):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-6, equal_nan=False) or torch.equal(a, b)
