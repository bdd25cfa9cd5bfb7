"""One teacher pass for a whole sweep: the teacher's sparse distributions over a run's training targets, on disk.

`distill teacher-cache` runs the teacher once over the run's training examples (prompts and targets, gold or the
teacher's own SeqKD outputs) and keeps, per output token, a support S of teacher tokens (the top ``k``, or the
smallest set whose remaining mass is at most ``epsilon``, capped at ``k_max``), their log-probabilities at
``kd_temperature``, the log of the mass outside S, and the teacher's smallest log-probability (which bounds the
reverse-KL gradient error: docs/methods.md, "Sparse teachers"). Off-policy runs read it with
``teacher.cache=DIR|auto`` and never load the teacher.

Layout of a cache directory: ``shard-NNNNN/data/`` (each a `datasets` Arrow dataset: ``datasets.load_from_disk``
opens it, memory-mapped) and ``manifest.json``, written last, with what the cache was built from and the size and
sha256 of every file. Shards are published by an atomic rename, so a killed or failed build leaves only whole shards, and
the next build resumes after them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from distill.errors import ConfigError, DataError
from distill.fields import check_choice, check_count, check_range
from distill.io import MANIFEST, TMP_PREFIX, atomic_dir, read_manifest, verify_manifest, write_manifest
from distill.losses.logspace import log_probs
from distill.losses.sparse import SparseTeacher

log = logging.getLogger(__name__)

FORMAT = 1
DTYPES = ("float32", "float16")


@dataclass(frozen=True)
class CacheSettings:
    """The ``teacher_cache`` block of conf/train.yaml; fields documented there."""

    k: int | None
    epsilon: float | None
    k_max: int
    dtype: str
    dir: str | None
    batch_size: int
    shard_examples: int

    def __post_init__(self) -> None:
        if (self.k is None) == (self.epsilon is None):
            raise ConfigError("set exactly one of teacher_cache.k (a fixed support) and teacher_cache.epsilon (the "
                              "smallest support whose tail mass is at most ε)")
        if self.k is not None:
            check_count("teacher_cache", "k", self.k)
        else:
            check_range("teacher_cache", "epsilon", self.epsilon, 0.0, 1.0, low_open=True, high_open=True)
        check_count("teacher_cache", "k_max", self.k_max)
        check_choice("teacher_cache", "dtype", self.dtype, DTYPES)
        check_count("teacher_cache", "batch_size", self.batch_size)
        check_count("teacher_cache", "shard_examples", self.shard_examples)

    @property
    def policy(self) -> dict:
        return {"k": self.k} if self.k is not None else {"epsilon": self.epsilon, "k_max": self.k_max}


def support(log_p: torch.Tensor, settings: CacheSettings):
    """[N, V] teacher log-probabilities -> (ids, log p, log tail, log min): ``ids`` [N, width] with -1 in the
    empty slots of ragged supports; the tail is the log-sum-exp of everything not kept (-inf when none)."""
    vocab = log_p.size(-1)
    width = min(settings.k if settings.k is not None else settings.k_max, vocab)
    ordered, order = log_p.sort(-1, descending=True)
    if settings.k is not None:
        sizes = torch.full((log_p.size(0),), width, dtype=torch.long, device=log_p.device)
    else:  # the smallest n with mass outside the first n at most ε: 1 − Σ_{i<n} p_i ≤ ε
        outside = torch.logcumsumexp(ordered.flip(-1), -1).flip(-1)  # outside[n] = log Σ_{i≥n} p_i
        log_eps = torch.log(torch.tensor(settings.epsilon, dtype=ordered.dtype, device=ordered.device))
        sizes = (outside > log_eps).sum(-1).clamp(min=1, max=width)
    slot = torch.arange(width, device=log_p.device)
    kept = slot < sizes[:, None]
    ids = torch.where(kept, order[:, :width], torch.full_like(order[:, :width], -1))
    values = torch.where(kept, ordered[:, :width], torch.full_like(ordered[:, :width], float("-inf")))
    rest = ordered.masked_fill(torch.arange(vocab, device=log_p.device) < sizes[:, None], float("-inf"))
    return ids, values, torch.logsumexp(rest, -1), ordered[:, -1]


def items_digest(items, with_targets: bool = True) -> str:
    """sha256 of the examples a cache covers, in order: their prompts, and their targets when those are the
    dataset's (the teacher's own outputs come with the cache)."""
    digest = hashlib.sha256()
    for item in items:
        digest.update(json.dumps([item.index, item.prompt_ids, item.target_ids if with_targets else None]).encode())
    return digest.hexdigest()


def _rows(teacher, view_fn, batch, items, settings: CacheSettings, kd_temperature: float) -> list[dict]:
    """The cache rows of one batch: per example, its output positions' supports in order."""
    view = view_fn(teacher, batch)
    rows = []
    for b, item in enumerate(items):
        positions = view.mask[b].nonzero().squeeze(-1)
        log_p = log_probs(view.logits[b, positions].float(), kd_temperature)
        ids, values, tail, low = support(log_p, settings)
        keep = ids >= 0
        rows.append({"index": item.index, "target_ids": list(item.target_ids),
                     "ids": [r[m].tolist() for r, m in zip(ids, keep)],
                     "log_probs": [r[m].tolist() for r, m in zip(values, keep)],
                     "log_tail": tail.tolist(), "log_min": low.tolist()})
    return rows


def _write_shard(rows: list[dict], final: Path, dtype: str) -> None:
    """One shard, published by rename: a kill leaves no half-written shard."""
    import datasets

    value = datasets.Value(dtype)
    features = datasets.Features({
        "index": datasets.Value("int64"), "target_ids": datasets.Sequence(datasets.Value("int32")),
        "ids": datasets.Sequence(datasets.Sequence(datasets.Value("int32"))),
        "log_probs": datasets.Sequence(datasets.Sequence(value)),
        "log_tail": datasets.Sequence(datasets.Value("float32")), "log_min": datasets.Sequence(datasets.Value("float32"))})
    with atomic_dir(final) as tmp:
        datasets.Dataset.from_list(rows, features=features).save_to_disk(str(tmp / "data"))


def build(teacher, view_fn, collate_fn, items, settings: CacheSettings, out: Path, meta: dict, kd_temperature: float,
          progress=None) -> Path:
    """Write the cache of ``items`` into ``out`` (resuming after the shards already there); the manifest last.
    ``view_fn(model, batch)`` is the token view the run's losses use; ``collate_fn(items)`` its batches."""
    out.mkdir(parents=True, exist_ok=True)
    for leftover in out.glob(f"{TMP_PREFIX}*"):  # an interrupted shard write
        shutil.rmtree(leftover, ignore_errors=True)
    size = settings.shard_examples
    shards = [out / f"shard-{i:05d}" for i in range((len(items) + size - 1) // size)]
    teacher.eval()
    for number, shard in enumerate(shards):
        if shard.is_dir():
            continue
        part, rows = items[number * size:(number + 1) * size], []
        with torch.no_grad():
            for start in range(0, len(part), settings.batch_size):
                chunk = part[start:start + settings.batch_size]
                rows += _rows(teacher, view_fn, collate_fn(chunk), chunk, settings, kd_temperature)
                if progress is not None:
                    progress(number * size + start + len(chunk), len(items))
        _write_shard(rows, shard, settings.dtype)
        log.info("teacher cache: shard %d of %d written (%s)", number + 1, len(shards), shard)
    write_manifest(out, {**meta, "format": FORMAT, "examples": len(items), "kd_temperature": kd_temperature,
                         "policy": settings.policy, "dtype": settings.dtype, "shards": [s.name for s in shards],
                         "vocab_size": teacher.get_output_embeddings().weight.size(0)})
    return out


class TeacherCache:
    """An opened cache: checked against what the run expects, then looked up by example."""

    def __init__(self, path: Path, expected: dict):
        self.path = path
        manifest = read_manifest(path)
        if manifest is None:
            raise DataError(f"{path} is not a finished teacher cache (no readable {MANIFEST}); build it with "
                            "`distill teacher-cache` or use teacher.cache=auto")
        damage = verify_manifest(path)
        if damage is not None:
            raise DataError(f"teacher cache {path}: {damage}; delete it and build it again")
        for key, value in expected.items():
            if manifest.get(key) != value:
                raise DataError(f"teacher cache {path} was built for another {key.replace('_', ' ')} "
                                f"({manifest.get(key)!r}, this run: {value!r}); rebuild it or use teacher.cache=auto")
        self.manifest = manifest
        self._rows = self._open(manifest)

    def _open(self, manifest: dict) -> dict:
        import datasets

        by_index = {}
        for name in manifest["shards"]:
            table = datasets.load_from_disk(str(self.path / name / "data")).data.table  # the memory-mapped Arrow table
            for position, index in enumerate(table.column("index").to_pylist()):
                by_index[index] = (table, position)
        return by_index

    @property
    def vocab_size(self) -> int | None:
        """The teacher's output width (the student's logits beyond it are not compared)."""
        return self.manifest.get("vocab_size")

    def _table(self, items):
        """The cached rows of ``items``, in order, as one Arrow table (columns read without Python lists)."""
        import pyarrow

        parts = []
        for item in items:
            found = self._rows.get(item.index)
            if found is None:
                raise DataError(f"teacher cache {self.path} has no example {item.index}; rebuild it for this run")
            parts.append(found[0].slice(found[1], 1))
        return pyarrow.concat_tables(parts).combine_chunks()

    def with_targets(self, items) -> list:
        """The items with the cached targets (the teacher's outputs the cache was built on)."""
        from dataclasses import replace

        targets = self._table(items).column("target_ids").to_pylist()
        return [replace(item, target_ids=ids) for item, ids in zip(items, targets)]

    def _check(self, items, table, mask: torch.Tensor) -> None:
        """The rows were built on these targets and cover exactly the view's positions (else: rebuild)."""
        cached = table.column("target_ids").to_pylist()
        for item, ids in zip(items, cached):
            if ids != list(item.target_ids):
                raise DataError(f"teacher cache {self.path}: example {item.index} has other targets than this run's; "
                                "rebuild it (the targets source or the tokenizer changed)")
        counts = _numpy(table.column("log_tail").chunk(0).value_lengths())
        for item, count, wanted in zip(items, counts.tolist(), mask.sum(1).tolist()):
            if count != wanted:
                raise DataError(f"teacher cache {self.path}: example {item.index} has {count} cached positions, the "
                                f"run's view {wanted}; rebuild it")

    def sparse_teacher(self, items, targets: torch.Tensor, mask: torch.Tensor) -> SparseTeacher:
        """The cached rows of ``items`` at the view positions ``mask`` (the student's token view), padded."""
        table = self._table(items)
        self._check(items, table, mask)
        supports = table.column("ids").chunk(0).flatten()  # one list of kept ids per cached position, rows in order
        sizes = torch.from_numpy(_numpy(supports.value_lengths())).long()
        flat_ids = torch.from_numpy(_numpy(supports.flatten())).long()
        flat_values = torch.from_numpy(_numpy(table.column("log_probs").chunk(0).flatten().flatten())).float()
        row, column = mask.cpu().nonzero(as_tuple=True)  # row-major: the order the rows were written in
        width = max(int(sizes.max()) if sizes.numel() else 1, 1)
        # Positions outside the view's mask get an empty support and the whole mass in the tail on both sides:
        # a divergence of exactly 0 with a zero gradient (never NaN, which a mask could not cancel).
        ids = torch.full((*mask.shape, width), -1, dtype=torch.long)
        values = torch.full((*mask.shape, width), float("-inf"))
        owner = torch.repeat_interleave(torch.arange(sizes.numel()), sizes)
        slot = torch.arange(flat_ids.numel()) - torch.repeat_interleave(sizes.cumsum(0) - sizes, sizes)
        ids[row[owner], column[owner], slot] = flat_ids
        values[row[owner], column[owner], slot] = flat_values
        tail, low = torch.zeros(mask.shape), torch.zeros(mask.shape)
        tail[row, column] = torch.from_numpy(_numpy(table.column("log_tail").chunk(0).flatten())).float()
        low[row, column] = torch.from_numpy(_numpy(table.column("log_min").chunk(0).flatten())).float()
        device = mask.device
        return SparseTeacher(ids.to(device), values.to(device), tail.to(device), low.to(device), self.vocab_size)


def _numpy(array):
    """An Arrow array of numbers as a writable numpy array (torch.from_numpy warns on read-only buffers)."""
    return array.to_numpy(zero_copy_only=False).copy()
