"""Fused linear divergences and cross-entropy (issue 13) against the unfused path on small shapes: the same
values and the same gradients for the student's hidden states and projection (tied or not), a masked mean's
fast path and the general recomputing path alike."""

from __future__ import annotations

import pytest
import torch

from distill.losses import divergences as D
from distill.losses.fused_linear import fused_cross_entropy, fused_divergence
from distill.losses.reduction import reduce_tokens

CHUNKS = {"fkl": (D._fkl_chunk, None, 1.0), "rkl": (D._rkl_chunk, None, 1.0), "jsd": (D._jsd_chunk, 0.3, 1.0),
          "tvd": (D._tvd_chunk, None, 1.0), "skl": (D._skl_chunk, 0.1, 1.0), "srkl": (D._srkl_chunk, 0.1, 1.0),
          "jsd_normalized": (D._jsd_chunk, 0.3, 1.0 / (0.3 * 0.7))}
UNFUSED = {"fkl": lambda s, t: D.fkl(s, t, 2.0, 5), "rkl": lambda s, t: D.rkl(s, t, 2.0, 5),
           "jsd": lambda s, t: D.jsd(s, t, 0.3, kd_temperature=2.0, chunk_size=5),
           "tvd": lambda s, t: D.tvd(s, t, 2.0, 5), "skl": lambda s, t: D.skl(s, t, 0.1, 2.0, 5),
           "srkl": lambda s, t: D.srkl(s, t, 0.1, 2.0, 5),
           "jsd_normalized": lambda s, t: D.jsd(s, t, 0.3, normalize=True, kd_temperature=2.0, chunk_size=5)}


def _setup(seed=0, batch=3, length=7, d_s=12, d_t=20, vocab=50):
    g = torch.Generator().manual_seed(seed)
    hs = torch.randn(batch, length, d_s, generator=g, requires_grad=True)
    ws = (torch.randn(vocab, d_s, generator=g) * 0.5).requires_grad_()
    ht = torch.randn(batch, length, d_t, generator=g)
    wt = torch.randn(vocab, d_t, generator=g) * 0.5
    mask = (torch.rand(batch, length, generator=g) > 0.3).float()
    mask[0, 0] = 1.0
    return hs, ws, ht, wt, mask


def _grads(loss, *tensors):
    return torch.autograd.grad(loss, tensors)


def _close(a, b, rel=1e-5):
    a, b = a.detach(), b.detach()
    scale = b.abs().max().clamp(min=1e-12)
    assert float((a - b).abs().max() / scale) <= rel


@pytest.mark.parametrize("name", sorted(CHUNKS))
def test_fused_divergence_matches_the_unfused_path(name):
    chunk_fn, param, scale = CHUNKS[name]
    hs, ws, ht, wt, mask = _setup()
    logits_s, logits_t = hs @ ws.T, ht @ wt.T
    zeroed = logits_s.masked_fill(mask[..., None] == 0, 0.0)  # what token_view hands the unfused divergence
    reference = UNFUSED[name](zeroed, logits_t)
    fused = fused_divergence(chunk_fn, hs, ws, ht, wt, mask, param, kd_temperature=2.0, chunk_size=4, scale=scale)
    _close(fused[mask > 0], reference[mask > 0])
    assert (fused[mask == 0] == 0).all()
    n = mask.sum()
    expected = _grads(reduce_tokens(reference, mask, n) * 0.7, hs, ws)
    got = _grads(reduce_tokens(fused, mask, n) * 0.7, hs, ws)  # a masked mean: the fast path
    for a, b in zip(got, expected):
        _close(a, b)


def test_an_upstream_gradient_that_is_not_a_masked_mean_recomputes_exactly():
    hs, ws, ht, wt, mask = _setup(seed=1)
    weights = torch.rand(mask.shape, generator=torch.Generator().manual_seed(5)) * mask
    reference = D.fkl((hs @ ws.T).masked_fill(mask[..., None] == 0, 0.0), ht @ wt.T, 1.0, 5)
    fused = fused_divergence(D._fkl_chunk, hs, ws, ht, wt, mask, chunk_size=3)
    for a, b in zip(_grads((fused * weights).sum(), hs, ws), _grads((reference * weights).sum(), hs, ws)):
        _close(a, b)


def test_fused_cross_entropy_matches_log_softmax_and_ties_the_embedding():
    hs, ws, _, _, mask = _setup(seed=2)
    targets = torch.randint(0, 50, mask.shape, generator=torch.Generator().manual_seed(3))
    embedded = lambda: ws[targets].sum()  # noqa: E731  a tied projection: the same tensor also embeds tokens
    reference = -torch.log_softmax(hs @ ws.T, -1).gather(-1, targets[..., None]).squeeze(-1)
    fused = fused_cross_entropy(hs, ws, targets, mask, chunk_size=4)
    _close(fused[mask > 0], reference[mask > 0])
    n = mask.sum()
    expected = _grads(reduce_tokens(reference, mask, n) + embedded(), hs, ws)
    got = _grads(reduce_tokens(fused, mask, n) + embedded(), hs, ws)
    for a, b in zip(got, expected):
        _close(a, b)


def test_bf16_inputs_give_float32_values_close_to_float32():
    hs, ws, ht, wt, mask = _setup(seed=4)
    full = fused_divergence(D._fkl_chunk, hs, ws, ht, wt, mask)
    half = fused_divergence(D._fkl_chunk, hs.bfloat16(), ws.bfloat16(), ht.bfloat16(), wt.bfloat16(), mask)
    assert half.dtype == torch.float32
    _close(half[mask > 0], full[mask > 0], rel=0.05)


def test_no_logits_larger_than_one_chunk_are_saved_for_backward():
    hs, ws, ht, wt, mask = _setup(batch=4, length=64, vocab=400)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel()) or t, lambda t: t):
        fused_divergence(D._fkl_chunk, hs, ws, ht, wt, mask, chunk_size=8)
    assert max(saved) < 4 * 64 * 400 / 4  # hidden states and weights only, never [tokens × vocab]


def test_a_second_backward_through_the_same_graph_gives_the_same_gradients():
    """retain_graph: the first backward hands over the saved weight gradient scaled in place; a later one
    recomputes it, exactly, for the same and for another upstream gradient."""
    hs, ws, ht, wt, mask = _setup(seed=6)
    weights = torch.rand(mask.shape, generator=torch.Generator().manual_seed(7)) * mask
    reference = lambda: D.fkl((hs @ ws.T).masked_fill(mask[..., None] == 0, 0.0), ht @ wt.T, 1.0, 5)  # noqa: E731
    expected_mean = _grads(reduce_tokens(reference(), mask, mask.sum()), hs, ws)
    expected_weighted = _grads((reference() * weights).sum(), hs, ws)
    fused = fused_divergence(D._fkl_chunk, hs, ws, ht, wt, mask, chunk_size=3)
    mean = reduce_tokens(fused, mask, mask.sum())
    first = torch.autograd.grad(mean, (hs, ws), retain_graph=True)
    second = torch.autograd.grad(mean, (hs, ws), retain_graph=True)
    weighted = _grads((fused * weights).sum(), hs, ws)
    for got, expected in zip(first + second + weighted, expected_mean * 2 + expected_weighted):
        _close(got, expected)
