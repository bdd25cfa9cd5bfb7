"""distill.models.speculative on models whose next-token logits are a table row of the previous token: what is
counted at an EOS, vocabularies of different widths, and where the random draws come from."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from distill.errors import ModelError
from distill.models.keyed_random import row_keys
from distill.models.speculative import _Draws, check_draft_width, speculative_generate, target_alone

EOS = 1


class _Cache:
    def crop(self, tokens: int) -> None:  # the logits depend on the last token only: nothing to drop
        pass


class Bigram(torch.nn.Module):
    """Next-token logits = ``table[previous token]``; the table's width is the output layer's."""

    def __init__(self, table: torch.Tensor):
        super().__init__()
        self.table = torch.nn.Parameter(table.float(), requires_grad=False)
        self.config = SimpleNamespace(is_encoder_decoder=False, vocab_size=table.size(1))

    def get_output_embeddings(self):
        return None

    def forward(self, input_ids, attention_mask=None, position_ids=None, use_cache=True, past_key_values=None):
        return SimpleNamespace(logits=self.table[input_ids], past_key_values=past_key_values or _Cache())


def chain(following: dict[int, int], rows: int, width: int, tail: float | None = None) -> Bigram:
    """A near-deterministic model: after token a comes ``following[a]`` (then EOS); columns from ``rows`` on
    get the logit ``tail`` (padding rows of a wider output layer) when given."""
    table = torch.full((rows, width), -1e4)
    for a in range(rows):
        if following.get(a, EOS) < width:
            table[a, following.get(a, EOS)] = 0.0
    if tail is not None:
        table[:, rows:] = tail
    return Bigram(table)


CHAIN = {2: 3, 3: EOS, EOS: 4, 4: 5, 5: 2}  # 2 → 3 → EOS, and tokens the draft could go on proposing after it


@pytest.mark.parametrize("temperature", [None, 1.0])
def test_proposals_after_an_accepted_eos_are_not_counted(temperature):
    model = chain(CHAIN, 6, 6)
    result = speculative_generate(model, model, [2], 10, 4, EOS, temperature, row_keys(0, 0, [0]))
    assert result.tokens == [3, EOS]
    assert (result.proposed, result.accepted, len(result.alphas), len(result.overlaps_t1)) == (2, 2, 2, 2)
    assert result.alphas == [1.0, 1.0]


@pytest.mark.parametrize("temperature", [None, 1.0])
def test_a_wider_draft_never_proposes_a_token_the_target_cannot_score(temperature):
    """The draft's extra columns carry its largest logits; cut to the target's vocabulary it proposes within it."""
    target, draft = chain(CHAIN, 6, 6), chain(CHAIN, 6, 8, tail=5.0)
    result = speculative_generate(target, draft, [2], 10, 4, EOS, temperature, row_keys(0, 0, [0]))
    assert result.tokens == [3, EOS] and result.accepted == 2


def test_the_target_keeps_real_tokens_that_a_narrower_draft_lacks():
    """Tokens 6 and 7 are real (in the vocabulary) but past the draft's output layer: the target still outputs
    them, its p over all 8 tokens (the draft's q is 0 there)."""
    target, draft = chain({2: 7, 7: 6, 6: 3, 3: EOS}, 8, 8), chain({6: 3, 3: EOS}, 8, 6)
    alone = target_alone(target, [2], 10, EOS)
    result = speculative_generate(target, draft, [2], 10, 4, EOS)
    assert alone.tokens == [7, 6, 3, EOS] and result.tokens == alone.tokens


@pytest.mark.parametrize("temperature", [None, 1.0])
def test_padded_output_rows_are_never_drawn_by_either_model(temperature):
    """A target layer wider than the tokenizer's 6 tokens, its padding rows with the largest logits: they are
    masked for the target and the draft alike, and for the target decoding alone."""
    target, draft = chain(CHAIN, 6, 8, tail=5.0), chain(CHAIN, 6, 8, tail=5.0)
    key = row_keys(0, 0, [0])
    result = speculative_generate(target, draft, [2], 10, 4, EOS, temperature, key, vocab_size=6)
    alone = target_alone(target, [2], 10, EOS, temperature, key, vocab_size=6)
    assert result.tokens == alone.tokens == [3, EOS]
    assert result.alphas == [1.0, 1.0] and result.overlaps_t1 == pytest.approx([1.0, 1.0])


def test_a_draft_wider_than_the_target_is_refused_in_one_line():
    with pytest.raises(ModelError, match="eval.speculative.draft=/ckpt/draft") as error:
        check_draft_width(chain(CHAIN, 6, 6), chain(CHAIN, 6, 8), "/ckpt/draft")
    assert "\n" not in str(error.value)
    check_draft_width(chain(CHAIN, 6, 8), chain(CHAIN, 6, 6), "/ckpt/draft")  # narrower: fine


def test_draws_are_made_on_the_device_of_the_logits_not_the_keys():
    """A CPU key serving logits elsewhere (``meta`` stands in for an accelerator): no CPU generator or tensor
    meets them, the way torch.multinomial with a CPU torch.Generator met CUDA probabilities."""
    draws = _Draws(row_keys(0, 0, [0]))
    logits = torch.zeros(5, device="meta")
    assert draws.categorical(logits).device.type == "meta"
    assert draws.uniform(logits, 1).device.type == "meta"


RANDOM_OPS = ["multinomial", "rand", "randn", "randint", "bernoulli", "normal", "poisson"]


@pytest.fixture
def forbid_generator_draws(monkeypatch):
    """Call it once the models are built: from then on every draw from a torch.Generator or the global RNG
    raises (on an accelerator, a CPU generator's draw is refused)."""
    def refuse(*args, **kwargs):
        raise AssertionError("a draw from a torch.Generator or the global RNG")

    def forbid():
        for name in RANDOM_OPS:
            monkeypatch.setattr(torch, name, refuse)
        for name in ("uniform_", "exponential_", "random_", "normal_"):
            monkeypatch.setattr(torch.Tensor, name, refuse)

    return forbid


def _gpt2(width: int, seed: int, vocab: int):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=vocab, n_positions=64, n_embd=width, n_layer=1, n_head=2,
                                       eos_token_id=EOS, bos_token_id=EOS, pad_token_id=0))
    with torch.no_grad():
        model.lm_head.weight.mul_(6.0)  # spread the distributions: rejections happen
    return model.eval()


def test_sampled_decoding_is_keyed_reproducible_and_needs_no_generator(forbid_generator_draws):
    target, draft = _gpt2(16, 1, 12), _gpt2(8, 0, 12)
    forbid_generator_draws()
    runs = [[speculative_generate(target, draft, [2, 3, 4], 12, 3, EOS, 0.8, row_keys(7, 0, [i])) for i in range(6)]
            for _ in range(2)]
    assert [r.tokens for r in runs[0]] == [r.tokens for r in runs[1]]  # same key, same output
    assert [r.alphas for r in runs[0]] == [r.alphas for r in runs[1]]
    assert len({tuple(r.tokens) for r in runs[0]}) > 1  # different keys, different draws
    assert sum(r.accepted for r in runs[0]) < sum(r.proposed for r in runs[0])  # residual draws exercised
    alone = target_alone(target, [2, 3, 4], 12, EOS, 0.8, row_keys(7, 0, [0]))
    assert 1 <= len(alone.tokens) <= 12


def test_the_eval_and_osd_paths_sample_without_a_generator(forbid_generator_draws, tiny_tokenizer):
    from distill.data.collate import encode
    from distill.data.tasks import Example
    from distill.eval.speculative import speculative_records
    from distill.methods.osd import OSD
    from distill.train.loop import Context

    vocab, eos = len(tiny_tokenizer), tiny_tokenizer.eos_token_id
    target, draft = _gpt2(16, 1, vocab), _gpt2(8, 0, vocab)
    target.config.eos_token_id = draft.config.eos_token_id = eos
    items = encode(tiny_tokenizer, [Example("Question: 2 + 3?\nAnswer:", " 5"), Example("Question: 4 - 1?", " 3")],
                   32, 16)
    forbid_generator_draws()
    records = speculative_records(target, draft, tiny_tokenizer, items, 6, 2, 0.9, False, seed=0)
    assert [stats["matches_target"] for _, stats in records] == [None, None]  # two independent samples
    method = OSD({"name": "fkl", "kd_temperature": 1.0, "chunk_size": 8, "beta": None, "normalize": False,
                  "skew": None}, num_proposals=2, update_interval=2, positions="all", sampling_temperature=0.9,
                 max_new_tokens=6, replay_size=0, update=True)
    ctx = Context(draft, target, tiny_tokenizer, False, torch.device("cpu"), {})
    batch = method.trajectories(items, ctx)
    assert len(batch["log_records"]) == 2
