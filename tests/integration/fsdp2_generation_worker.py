"""Run by torchrun (2 processes) from test_distributed.py: all-gathers of an FSDP2 student while it decodes
new tokens, per token as FSDP2 does by default and held once (``distributed.gathered``, what training uses).
Prints one line: ``per_token=<all-gathers> gathered=<all-gathers> same_tokens=<bool>``."""

from __future__ import annotations

import datetime

import torch
import torch.distributed as dist
from torch.distributed.fsdp._fully_shard import _fsdp_param_group
from transformers import GPT2Config, GPT2LMHeadModel

from distill.models.sampling import decode
from distill.train import distributed as D

NEW_TOKENS = 12
calls = {"all_gather": 0}
_original = _fsdp_param_group.foreach_all_gather


def _counted(*args, **kwargs):
    calls["all_gather"] += 1
    return _original(*args, **kwargs)


def _decode(model) -> torch.Tensor:
    prompts = {"input_ids": torch.randint(3, 60, (2, 5), generator=torch.Generator().manual_seed(1)),
               "attention_mask": torch.ones(2, 5, dtype=torch.long)}
    # eos_id outside the vocabulary: every row decodes all NEW_TOKENS (the count is per token)
    return decode(model, prompts, NEW_TOKENS, eos_id=10_000, pad_id=0, check_every=4)


def main() -> None:
    dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=60))
    _fsdp_param_group.foreach_all_gather = _counted
    torch.manual_seed(0)
    config = GPT2Config(n_layer=3, n_embd=32, n_head=2, n_positions=64, vocab_size=64, bos_token_id=1, eos_token_id=2)
    model = GPT2LMHeadModel(config).eval()
    D.fully_shard_model(model)
    one = D.Dist(rank=dist.get_rank(), world=2, strategy="fsdp2")
    with torch.no_grad():
        per_token_ids = _decode(model)
        per_token, calls["all_gather"] = calls["all_gather"], 0
        with D.gathered(one, model):  # the unshard on entry is counted
            gathered_ids = _decode(model)
        gathered = calls["all_gather"]
    if one.main:
        same = bool((per_token_ids == gathered_ids).all())
        print(f"per_token={per_token} gathered={gathered} same_tokens={same}", flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
