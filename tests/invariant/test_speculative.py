"""Speculative decoding (docs/design.md, Speculative decoding and OSD): exactly the target's output, greedy and in distribution."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from distill.data.collate import collate_prompts
from distill.models.generation import cut_at_eos
from distill.models.keyed_random import row_keys
from distill.models.sampling import decode
from distill.models.speculative import (
    _Draws,
    _verify,
    expected_tokens_per_target_forward,
    speculative_generate,
    speedup_model,
)

from .test_estimators import EOS, PROMPT, VOCAB, _model


@pytest.mark.parametrize("k", [1, 3, 5])
def test_greedy_speculative_output_is_the_targets_greedy_output(make_ctx, items, k):
    ctx = make_ctx()
    target, draft = ctx.teacher.eval(), ctx.student.eval()
    eos, pad = ctx.tokenizer.eos_token_id, ctx.tokenizer.pad_token_id
    rejected = 0
    for item in items:
        prompts = collate_prompts([item], pad, ctx.encoder_decoder)
        alone = cut_at_eos(decode(target, prompts, 16, eos, pad), eos)[0]
        result = speculative_generate(target, draft, item.prompt_ids, 16, k, eos)
        assert result.tokens == alone
        assert result.target_forwards <= len(result.tokens)
        assert sum(result.alphas) == result.accepted  # greedy α's term: 1 exactly where a proposal is accepted
        rejected += result.proposed - result.accepted
    assert rejected > 0  # draft and target disagree sometimes: rollbacks were exercised


def test_greedy_acceptance_rate_is_argmax_agreement_not_the_t1_overlap():
    """A draft that is the target with its output layer scaled by 0.3 has the target's argmax everywhere: every
    proposal is accepted, so α = 1 and the cost model's E = k + 1, while the T = 1 overlap is well below 1."""
    target = _model(1).eval()
    draft = copy.deepcopy(target)
    draft.lm_head = torch.nn.Linear(8, VOCAB, bias=False)  # untied from the embedding: only the head is scaled
    draft.lm_head.weight.data = target.lm_head.weight.data * 0.3
    results = [speculative_generate(target, draft, [a, b, c], 10, 4, EOS) for a in (2, 3, 4, 5) for b in (2, 3, 4, 5)
               for c in (2, 5)]
    alphas = [a for r in results for a in r.alphas]
    overlaps = [o for r in results for o in r.overlaps_t1]
    assert sum(r.accepted for r in results) == sum(r.proposed for r in results) > 0
    assert sum(alphas) / len(alphas) == 1.0
    assert sum(overlaps) / len(overlaps) < 0.9
    assert speedup_model(sum(alphas) / len(alphas), 4, 0.1) == pytest.approx(5 / 1.4)


def _first_two_tokens_of_the_target(target, temperature: float) -> dict[tuple, float]:
    """Exact P(y1, y2) of the target sampling at ``temperature`` (an output ending at EOS stops)."""
    with torch.no_grad():
        first = torch.softmax(target(input_ids=torch.tensor([PROMPT])).logits[0, -1] / temperature, -1)
        exact = {(EOS, None): float(first[EOS])}
        for a in range(VOCAB):
            if a == EOS:
                continue
            second = torch.softmax(target(input_ids=torch.tensor([PROMPT + [a]])).logits[0, -1] / temperature, -1)
            exact.update({(a, b): float(first[a] * second[b]) for b in range(VOCAB)})
    return exact


def test_sampled_speculative_output_follows_the_targets_distribution():
    """The first two tokens of 2 000 speculative samples (k = 2) at T = 0.7 against the target's exact P(y1, y2)."""
    temperature = 0.7
    target, draft = _model(1).eval(), _model(0).eval()
    exact = _first_two_tokens_of_the_target(target, temperature)
    draws, counts, proposed, accepted = 2000, {}, 0, 0
    for index in range(draws):
        result = speculative_generate(target, draft, PROMPT, 3, 2, EOS, temperature, row_keys(0, 0, [index]))
        key = (result.tokens[0], None if result.tokens[0] == EOS else result.tokens[1])
        counts[key] = counts.get(key, 0) + 1
        proposed, accepted = proposed + result.proposed, accepted + result.accepted
    cells = [c for c in exact if exact[c] * draws >= 5]  # chi-square needs expected counts ≥ 5
    rest = 1.0 - sum(exact[c] for c in cells)
    chi2 = sum((counts.get(c, 0) - draws * exact[c]) ** 2 / (draws * exact[c]) for c in cells)
    if rest * draws >= 5:
        other = draws - sum(counts.get(c, 0) for c in cells)
        chi2 += (other - draws * rest) ** 2 / (draws * rest)
    df = len(cells) - (0 if rest * draws >= 5 else 1)
    assert chi2 < df + 4 * math.sqrt(2 * df), (chi2, df)  # ~ the 0.999 quantile of χ²(df) for these df
    assert 0 < accepted < proposed  # both acceptance and the residual draw were exercised


def test_overlap_and_acceptance_by_hand():
    """Greedy accepts a proposal iff it is the target's argmax, and α's term is that agreement (p and q one-hot);
    the T = 1 overlap Σ_v min(p, q) is kept beside it."""
    p_rows = torch.log(torch.tensor([[0.5, 0.3, 0.2], [0.1, 0.8, 0.1], [0.6, 0.2, 0.2]]))
    q_rows = [torch.log(torch.tensor([0.4, 0.4, 0.2])), torch.log(torch.tensor([0.3, 0.3, 0.4]))]
    n, token, alphas, overlaps = _verify([0, 2], q_rows, p_rows, None)
    assert n == 1 and token == 1  # 0 = argmax p accepted; 2 ≠ argmax p rejected, corrected to 1
    assert alphas == [1.0, 0.0]
    assert overlaps == pytest.approx([0.4 + 0.3 + 0.2, 0.1 + 0.3 + 0.1])


def test_sampled_acceptance_term_is_the_overlap_at_the_sampling_temperature():
    p_rows = torch.log(torch.tensor([[0.5, 0.3, 0.2], [0.6, 0.2, 0.2]]))
    q_rows = [torch.log(torch.tensor([0.4, 0.4, 0.2]))]
    at = lambda rows, t: torch.softmax(rows / t, -1)  # noqa: E731
    _, _, alphas, overlaps = _verify([0], q_rows, p_rows, 0.5, _Draws(row_keys(0, 0, [0])))
    assert alphas == pytest.approx([float(torch.minimum(at(p_rows[0], 0.5), at(q_rows[0], 0.5)).sum())])
    assert overlaps == pytest.approx([0.4 + 0.3 + 0.2])


def test_cost_model_on_known_values():
    assert expected_tokens_per_target_forward(0.8, 4) == pytest.approx((1 - 0.8 ** 5) / 0.2)  # 3.3616
    assert speedup_model(0.8, 4, 0.1) == pytest.approx(3.3616 / 1.4)
    assert expected_tokens_per_target_forward(0.0, 4) == 1.0 and expected_tokens_per_target_forward(1.0, 4) == 5.0
    assert speedup_model(0.5, 2, 0.0) == pytest.approx(1.75)
