"""How well two tokenizers line up: the figures of docs/results/cross_tokenizer/README.md, "Offline pairs".

    python scripts/cross_tokenizer_pairs.py --teacher gpt2 --student tiny:300 [--texts arith|xsum|wmt] [--n 500]
    python scripts/cross_tokenizer_pairs.py --teacher qwen:PATH/qwen.tiktoken --student gpt2 --texts xsum

For the texts (arith test answers generated offline, or the first --n XSum summaries / WMT14 German references
from ../shared/data): the fraction of the student's token positions that start where a teacher token starts
(what the cross-tokenizer loss compares), and of the teacher's vocabulary how many tokens map one to one (equal
text), onto the student's first token of their text (projected), or nowhere (the bucket). A tokenizer is `tiny:N`
(the task's BPE at N tokens), `gpt2` (../shared/models/gpt2-tokenizer), a tokenizer directory, or
`qwen:FILE`: a tiktoken rank file (Qwen's `qwen.tiktoken`, which ships inside the `dashscope` wheel on PyPI)
turned into a byte-level BPE with Qwen's pre-tokenising pattern (``tiktoken_tokenizer``).
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from distill.data.cross_tokenizer import align, match_vocabularies, offsets, project_vocabularies  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared"
QWEN_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
                r"|\s+(?!\S)|\s+")


def _bpe_parts(ranks: dict[bytes, int], token: bytes) -> tuple[bytes, bytes]:
    """The merge that made ``token``: run byte-level BPE on its bytes with merges ranked below its own."""
    parts = [bytes([b]) for b in token]
    limit = ranks[token]
    while len(parts) > 2:
        best = min(((ranks.get(a + b, limit), i) for i, (a, b) in enumerate(zip(parts, parts[1:]))))
        if best[0] >= limit:
            break
        i = best[1]
        parts[i:i + 2] = [parts[i] + parts[i + 1]]
    return parts[0], parts[1]


def tiktoken_tokenizer(path: Path, pattern: str = QWEN_PATTERN):
    """A Hugging Face fast tokenizer from a tiktoken rank file (base64 token, rank per line): vocabulary and
    merges in GPT-2's byte-to-unicode spelling, the pattern as pre-tokeniser, ``<|endoftext|>`` as EOS and pad."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from distill.data.cross_tokenizer import _byte_decoder

    ranks = {base64.b64decode(t): int(r) for t, r in (line.split() for line in path.read_text().splitlines() if line)}
    spell = {byte: char for char, byte in _byte_decoder().items()}  # GPT-2's byte-to-unicode spelling
    text = lambda b: "".join(spell[x] for x in b)  # noqa: E731
    vocab = {text(token): rank for token, rank in ranks.items()}
    merges = [tuple(text(p) for p in _bpe_parts(ranks, token)) for token, _ in sorted(ranks.items(), key=lambda x: x[1])
              if len(token) > 1]
    model = Tokenizer(models.BPE(vocab, merges, fuse_unk=False))
    model.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(pattern), "isolated"),
                                                   pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    model.decoder = decoders.ByteLevel()
    out = PreTrainedTokenizerFast(tokenizer_object=model)
    out.add_special_tokens({"eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>"})
    return out


def load(spec: str, texts: list[str]):
    from distill.models.load import load_tokenizer
    from distill.models.tokenizer import build_tokenizer

    if spec.startswith("tiny:"):
        return build_tokenizer(texts, int(spec[5:]), tempfile.mkdtemp())
    if spec.startswith("qwen:"):
        return tiktoken_tokenizer(Path(spec[5:]))
    return load_tokenizer(str(SHARED / "models" / "gpt2-tokenizer") if spec == "gpt2" else spec)


def texts_for(name: str, n: int) -> tuple[list[str], list[str]]:
    """(texts to measure on, texts a tiny tokenizer is trained on)."""
    if name == "arith":
        from distill.data.arith import ArithSpec, generate_splits

        spec = ArithSpec(seed=1234, min_steps=2, max_steps=3, max_number=20, max_factor=3,
                         operations=("add", "sub", "mul"))  # conf/task/arith.yaml's generator
        splits = generate_splits(spec, {"train": 2000, "test": n})
        train = [f"Question: {r['question']}\nAnswer: {r['answer']}" for r in splits["train"]]
        return [" " + r["answer"] for r in splits["test"]], train
    path = {"xsum": SHARED / "data" / "xsum" / "test.jsonl", "wmt": SHARED / "data" / "wmt14_en_de" / "test.jsonl"}[name]
    rows = [json.loads(line) for line in path.read_text().splitlines()[:2 * n]]
    key = "summary" if name == "xsum" else "de"
    measured = [" " + str(r[key]) for r in rows[:n]]
    return measured, [str(r.get(key)) for r in rows[n:]] or measured


def figures(teacher, student, texts: list[str]) -> dict:
    aligned = total = 0
    for text in texts:
        _, t_spans = offsets(teacher, text)
        _, s_spans = offsets(student, text)
        aligned += len(align(t_spans, s_spans).student)
        total += len(s_spans)
    one_to_one = len(match_vocabularies(teacher, student)[0])
    mapped = len(project_vocabularies(teacher, student)[0])
    return {"texts": len(texts), "student_positions": total, "aligned_fraction": aligned / max(total, 1),
            "teacher_vocab": len(teacher), "student_vocab": len(student), "one_to_one": one_to_one,
            "projected": mapped - one_to_one, "unmapped": len(teacher) - mapped}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", required=True)
    parser.add_argument("--student", required=True)
    parser.add_argument("--texts", choices=("arith", "xsum", "wmt"), default="arith")
    parser.add_argument("--n", type=int, default=500)
    args = parser.parse_args()
    texts, train = texts_for(args.texts, args.n)
    out = figures(load(args.teacher, train), load(args.student, train), texts)
    print(json.dumps({"teacher": args.teacher, "student": args.student, "on": args.texts, **out}))


if __name__ == "__main__":
    main()
