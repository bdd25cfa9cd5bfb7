"""docs/design.md, Methods: policy-gradient estimators are unbiased at sampling temperature T ≠ 1.

On a 6-token vocabulary the exact objective is enumerable: every output of
length ≤ 2. The Monte Carlo mean of the methods' own gradients over K
independent optimizer steps (each keyed differently) must match the exact
gradient of the objective of the tempered policy q_T = softmax(z / T).
The statistic is the projection of the estimate on the exact gradient,
s = <g, e> / <e, e>, which is 1 for an unbiased estimator; using T = 1
log-probabilities for samples drawn at T = 0.7 moves it far from 1.
"""

from __future__ import annotations

import math

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from distill.data.collate import Encoded
from distill.train.loop import Context

from .conftest import batch_loss
from .test_methods import gkd, minillm

PAD, EOS, VOCAB, T = 0, 1, 6, 0.7
PROMPT = [2, 3, 4]


class _Tok:
    pad_token_id, eos_token_id = PAD, EOS

    def batch_decode(self, rows, skip_special_tokens=True):
        return [" ".join(str(t) for t in row if t not in (PAD, EOS)) for row in rows]


def _model(seed: int) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=VOCAB, n_positions=16, n_embd=8, n_layer=1, n_head=2, resid_pdrop=0.0,
                                       embd_pdrop=0.0, attn_pdrop=0.0, pad_token_id=PAD, eos_token_id=EOS, bos_token_id=EOS))
    with torch.no_grad():  # spread the output distribution so every token is sampled now and then
        model.lm_head.weight.mul_(8.0)
    return model


def _ctx() -> Context:
    return Context(_model(0), _model(1).eval(), _Tok(), False, torch.device("cpu"), {})


def _flat_grad(model) -> torch.Tensor:
    return torch.cat([p.grad.reshape(-1) for p in model.parameters() if p.grad is not None])


def _estimates(method, ctx, steps: int, batch: int) -> list[tuple[torch.Tensor, float]]:
    """(gradient of the step's loss, N) for ``steps`` optimizer steps of ``batch`` independent samples."""
    items = [Encoded(PROMPT, [5, EOS], index=i, reference="5") for i in range(batch)]
    out = []
    for step in range(steps):
        ctx.step = step
        _, _, _, counts = batch_loss(method, ctx, items)
        out.append((_flat_grad(ctx.student), float(counts["loss_mask"])))
    return out


def _projection_stats(samples: list[torch.Tensor], exact: torch.Tensor) -> tuple[float, float]:
    s = torch.stack([g @ exact / (exact @ exact) for g in samples])
    return float(s.mean()), float(s.std() / math.sqrt(len(s)))


def _next_token_log_probs(model, prefixes: list[list[int]]) -> torch.Tensor:
    """[len(prefixes), V] log q_T of the next token after prompt + prefix (equal lengths)."""
    ids = torch.tensor([PROMPT + p for p in prefixes])
    return torch.log_softmax(model(input_ids=ids).logits[:, -1] / T, -1)


def test_gkd_rl_reinforce_is_unbiased_at_temperature_07(monkeypatch):
    """With α = 0 the loss is −E_{q_T}[r]: its gradient is −∇ q_T(4 | x) for r = [output is token 4]."""
    import distill.metrics

    monkeypatch.setattr(distill.metrics, "sequence_rewards", lambda m, preds, refs: [float(p == "4") for p in preds])
    ctx = _ctx()
    method = gkd(lmbda=1.0, alpha=0.0, max_new_tokens=1, sampling_temperature=T)
    estimates = [g for g, _ in _estimates(method, ctx, steps=24, batch=256)]
    ctx.student.zero_grad()
    (-_next_token_log_probs(ctx.student, [[]])[0, 4].exp()).backward()
    mean, se = _projection_stats(estimates, _flat_grad(ctx.student))
    assert se < 0.1, "too few samples to tell a biased estimator apart"
    assert abs(mean - 1.0) < 4 * se, (mean, se)


def _exact_sequence_kl(ctx) -> torch.Tensor:
    """KL(q_T ‖ p_T) over every output of at most two tokens (EOS ends an output early)."""
    first_q, first_p = (_next_token_log_probs(m, [[]])[0] for m in (ctx.student, ctx.teacher))
    seconds = [[a] for a in range(VOCAB) if a != EOS]
    second_q, second_p = (_next_token_log_probs(m, seconds) for m in (ctx.student, ctx.teacher))
    kl = (first_q.exp() * (first_q - first_p)).sum()
    for row, (a,) in enumerate(seconds):
        kl = kl + first_q[a].exp() * (second_q[row].exp() * (second_q[row] - second_p[row])).sum()
    return kl


def test_minillm_gradient_is_unbiased_at_temperature_07():
    """teacher_mix = 0, γ = 1, no length normalisation: E[gradient] = ∇ KL(q_T ‖ p_T) per sequence."""
    ctx = _ctx()
    method = minillm(teacher_mix=0.0, sampling_temperature=T, max_new_tokens=2, gamma=1.0, length_norm=False,
                     ptx_weight=0.0)
    batch = 256
    # The loop divides by the step's token count N; N / batch turns each step back into a per-sequence mean.
    estimates = [g * tokens / batch for g, tokens in _estimates(method, ctx, steps=24, batch=batch)]
    ctx.student.zero_grad()
    _exact_sequence_kl(ctx).backward()
    mean, se = _projection_stats(estimates, _flat_grad(ctx.student))
    assert se < 0.1, "too few samples to tell a biased estimator apart"
    assert abs(mean - 1.0) < 4 * se, (mean, se)


@pytest.mark.parametrize("temperature", [0.7, 1.3])
def test_the_sampled_tokens_follow_the_tempered_student(temperature):
    """The samples the estimators see are drawn from q_T (keyed noise, Gumbel-max): a chi-square check."""
    ctx = _ctx()
    method = gkd(lmbda=1.0, alpha=1.0, max_new_tokens=1, sampling_temperature=temperature)
    items = [Encoded(PROMPT, [5, EOS], index=i) for i in range(4000)]
    with torch.no_grad():
        tokens = method.trajectories(items, ctx)["generated"][:, 0]
        expected = torch.softmax(ctx.student(input_ids=torch.tensor([PROMPT])).logits[0, -1] / temperature, -1)
    counts = torch.bincount(tokens, minlength=VOCAB).double()
    chi2 = float(((counts - 4000 * expected) ** 2 / (4000 * expected)).sum())
    assert chi2 < 20.5  # chi-square, 5 degrees of freedom: p = 0.001
