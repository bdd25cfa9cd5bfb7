"""scripts/bench.py section 4b: the fused loss under FSDP2, peak memory against full logits, one run.

Run by section 4 (bench_distributed.py) as ``torchrun --nproc_per_node 2 scripts/bench_fsdp_fused.py MODE ...``,
once per MODE (fused | full) in fresh processes: Qwen2-shaped student and teacher (random weights, ``--layers``
layers, vocabulary ``--vocab``), each sharded with FSDP2 as a run shards them (``fully_shard`` per block and at
the root, distill.train.distributed.fully_shard_model), the teacher frozen; one supervised-KD step as the trainer
takes it (the teacher's view under no_grad, the student's view, fkl per token, backward), a warm-up step first.
Rank 0 prints one JSON line: the peak RSS above the warmed-up process during the step, and the step's seconds.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_memory import PeakRSS, rss_mib  # noqa: E402

QWEN = {"model_type": "qwen2", "intermediate_size": 512, "num_attention_heads": 4, "num_key_value_heads": 2,
        "max_position_embeddings": 1024, "tie_word_embeddings": True, "hidden_act": "silu"}


def _model(hidden: int, layers: int, vocab: int, seed: int):
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(seed)
    config = dict(QWEN)
    kind = config.pop("model_type")
    return AutoModelForCausalLM.from_config(AutoConfig.for_model(kind, hidden_size=hidden, num_hidden_layers=layers,
                                                                 vocab_size=vocab, **config))


def _step(student, teacher, batch, fused: bool, divergence) -> None:
    from distill.losses.kd import divergence_term
    from distill.models.forward import TokenView, token_view, view_targets

    with torch.no_grad():
        teacher_view = token_view(teacher, batch, fused=fused)
    view = token_view(student, batch, fused=fused)
    if fused:
        weight = teacher.get_output_embeddings().weight
        weight = weight.full_tensor() if hasattr(weight, "full_tensor") else weight  # as teacher_target does
        target = TokenView(None, *view_targets(teacher, batch), head_input=teacher_view.head_input,
                           head_weight=weight)
    else:
        target = teacher_view.logits
    term = divergence_term(divergence, view, target)
    ((term.per_token * term.mask).sum() / term.mask.sum()).backward()


def main() -> None:
    import torch.distributed as dist

    from distill.losses.divergences import Divergence
    from distill.train.distributed import fully_shard_model

    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["fused", "full"])
    parser.add_argument("--vocab", type=int, default=32_000)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=256)
    args = parser.parse_args()
    dist.init_process_group("gloo")
    student = fully_shard_model(_model(256, args.layers, args.vocab, 0))
    teacher = fully_shard_model(_model(384, args.layers, args.vocab, 1), trained=False).eval().requires_grad_(False)
    generator = torch.Generator().manual_seed(dist.get_rank())
    ids = torch.randint(0, args.vocab, (args.batch, args.tokens), generator=generator)
    mask = torch.ones_like(ids)
    mask[:, : args.tokens // 4] = 0  # the prompt: no loss there
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "loss_mask": mask}
    divergence = Divergence("fkl", 1.0, 64)
    fused = args.mode == "fused"
    _step(student, teacher, batch, fused, divergence)  # warm-up: lazy init, gradients allocated
    base, sampler = rss_mib(), PeakRSS()
    started = time.perf_counter()
    _step(student, teacher, batch, fused, divergence)
    seconds, peak = time.perf_counter() - started, sampler.stop() - base
    peaks = [None] * dist.get_world_size()
    dist.all_gather_object(peaks, {"peak_mib": peak, "seconds": seconds})
    if dist.get_rank() == 0:
        print(json.dumps({"peak_mib": max(p["peak_mib"] for p in peaks),
                          "seconds": max(p["seconds"] for p in peaks)}), flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
