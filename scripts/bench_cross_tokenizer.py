"""scripts/bench.py section `cross`: the cost of a supervised-KD step across tokenizers, side by side in one run.

A 2×128 student and 4×128 teachers (random weights: the timing does not depend on them), for each student
tokenizer: the student's own tokenizer (ordinary KD), the same tokenizer through the cross-tokenizer path (one
vocabulary: the student's tokens), and other teacher tokenizers (re-tokenised text, alignment, the vocabulary
mapping, merged and two-piece spans). Students: the task's 300-token tiny tokenizer, and GPT-2's (50 257 tokens,
an LLM vocabulary) where ../shared/models/gpt2-tokenizer exists (``--gpt2``; the rows are skipped without it).
Median milliseconds of trajectories + loss + backward over the same batches, relative to ordinary KD at the same
student tokenizer.

    python scripts/bench_cross_tokenizer.py [--steps 10] [--batch 32] [--gpt2 PATH]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from distill.data.arith import ArithSpec, generate_splits  # noqa: E402
from distill.data.collate import Encoded  # noqa: E402
from distill.data.cross_tokenizer import CrossTokenizer  # noqa: E402
from distill.methods.supervised_kd import SupervisedKD  # noqa: E402
from distill.models.load import load_tokenizer  # noqa: E402
from distill.models.tokenizer import build_tokenizer  # noqa: E402
from distill.train.loop import Context  # noqa: E402

GPT2 = Path(__file__).resolve().parents[2] / "shared" / "models" / "gpt2-tokenizer"
DIVERGENCE = {"name": "fkl", "kd_temperature": 1.0, "chunk_size": 64, "beta": None, "normalize": False,
              "skew": None, "cross_tokenizer": False, "uld": None}


def _gpt2(vocab: int, layers: int, width: int, seed: int):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    return GPT2LMHeadModel(GPT2Config(vocab_size=vocab, n_positions=256, n_embd=width, n_layer=layers, n_head=4,
                                      resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0))


def _items(tokenizer, records, batch: int) -> list[Encoded]:
    items = []
    for i, r in enumerate(records[:batch]):
        prompt = tokenizer(f"Question: {r['question']}\nAnswer:", add_special_tokens=False)["input_ids"]
        target = tokenizer(" " + r["answer"], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        items.append(Encoded(prompt, target, index=i))
    return items


def _time(ctx, method, items, steps: int) -> float:
    times = []
    for step in range(steps + 2):
        started = time.perf_counter()
        with torch.no_grad():
            batch = method.trajectories(items, ctx)
        out = method.loss_terms(batch, ctx)
        out.total(out.reduced({"loss_mask": batch["loss_mask"].sum(),
                               "aligned_loss_mask": batch.get("aligned_loss_mask", batch["loss_mask"]).sum()})
                  ).backward()
        if step >= 2:  # warm-up
            times.append(time.perf_counter() - started)
    return 1000 * statistics.median(times)


def _rows(student_tokenizer, teachers, records, args) -> list[tuple[str, float]]:
    """(label, step ms) per (label, teacher tokenizer, cross) against one student tokenizer."""
    items = _items(student_tokenizer, records, args.batch)
    student = _gpt2(len(student_tokenizer), 2, 128, 0)
    rows = []
    for name, tokenizer, cross in teachers:
        teacher = _gpt2(len(tokenizer), 4, 128, 1).eval().requires_grad_(False)
        ctx = Context(student, teacher, student_tokenizer, False, torch.device("cpu"), {},
                      cross=CrossTokenizer.build(tokenizer, student_tokenizer) if cross else None)
        method = SupervisedKD({**DIVERGENCE, "cross_tokenizer": cross}, 0.0)
        rows.append((name, _time(ctx, method, items, args.steps)))
    return rows


def _table(title: str, rows: list[tuple[str, float]]) -> list[str]:
    base = rows[0][1]
    return [title, "", "| teacher | step ms | × ordinary |", "|---|---|---|",
            *[f"| {name} | {ms:.0f} | {ms / base:.2f} |" for name, ms in rows], ""]


def cross_section(args) -> list[str]:
    spec = ArithSpec(seed=1234, min_steps=2, max_steps=3, max_number=20, max_factor=3, operations=("add", "sub", "mul"))
    records = generate_splits(spec, {"train": 2000})["train"]
    texts = [f"Question: {r['question']}\nAnswer: {r['answer']}" for r in records]
    tmp = tempfile.mkdtemp()
    small, large = build_tokenizer(texts, 300, tmp), build_tokenizer(texts, 400, tmp)
    gpt2 = load_tokenizer(str(args.gpt2)) if Path(args.gpt2).is_dir() else None
    head = (f"## Cross-tokenizer supervised KD: step time, micro-batch {args.batch}, 2×128 student, 4×128 teacher, "
            f"median of {args.steps} steps")
    teachers = [("same tokenizer, ordinary KD", small, False), ("same tokenizer, cross-tokenizer path", small, True),
                ("teacher tokenizer of 400 tokens", large, True)]
    if gpt2 is not None:
        teachers.append(("teacher on GPT-2's tokenizer (50 257)", gpt2, True))
    lines = _table(f"{head}; student on the 300-token tiny tokenizer", _rows(small, teachers, records, args))
    if gpt2 is None:
        return lines + [f"(GPT-2's tokenizer not found at {args.gpt2}: its rows are skipped)"]
    teachers = [("same tokenizer, ordinary KD", gpt2, False), ("same tokenizer, cross-tokenizer path", gpt2, True),
                ("teacher tokenizer of 400 tokens", large, True)]
    return lines + _table(f"{head}; student on GPT-2's tokenizer (50 257)", _rows(gpt2, teachers, records, args))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--gpt2", type=Path, default=GPT2, help="GPT-2's tokenizer directory (rows skipped if absent)")
    print("\n".join(cross_section(parser.parse_args())))


if __name__ == "__main__":
    main()
