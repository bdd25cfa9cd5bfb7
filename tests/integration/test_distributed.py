"""More than one process (issue 12, docs/design.md, More than one process): 2 CPU processes (gloo) against 1 process with accumulation.

``torchrun --nproc_per_node 2`` × micro-batch 4 must make the same updates as one process × micro-batch 4 ×
2 accumulation steps, for every method (on-policy ones included: samples are keyed by example, not by rank), with
DDP and with FSDP2; a rank that dies fails the job fast, and re-running resumes from the last complete checkpoint.
Every process runs one thread (OMP_NUM_THREADS=1), the single-process reference too, so the comparison is not
blurred by thread-count-dependent float order. The differences found are printed (``pytest -s``).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from safetensors.torch import load_file

from .conftest import TINY, TINY_ARITH

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
ONE = [sys.executable, "-m", "distill"]
TWO = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "distill"]
STEPS = ["trainer.max_steps=4", "trainer.save_every=2", "trainer.distributed.timeout_s=30"]
METHODS = "method=sft,supervised_kd,seqkd,gkd,gkd_lambda1,minillm,xkd"  # gkd: λ = 0.5, xkd: its gkd base at 0.5


def _args(launcher: list[str], out: Path, *extra: str, sweep: bool = True) -> list[str]:
    where = f"hydra.sweep.dir={out}" if sweep else f"hydra.run.dir={out}"
    return [*launcher, "train", *(["-m"] if sweep else []), *TINY_ARITH, *TINY, *STEPS, where, *extra]


def _run(launcher: list[str], out: Path, *extra: str, env: dict | None = None, timeout: int = 240,
         sweep: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(_args(launcher, out, *extra, sweep=sweep), capture_output=True, text=True,
                          env={**ENV, **(env or {})}, timeout=timeout)


def _together(*commands: list[str], timeout: int = 300) -> list[tuple[int, str]]:
    """Run independent launches at once (their start-up and teardown overlap); (return code, stderr) each."""
    procs = [subprocess.Popen(c, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=ENV) for c in commands]
    return [(p.returncode, err) for p in procs for _, err in [p.communicate(timeout=timeout)]]


def _runs(sweep_dir: Path) -> dict[tuple[str, object], Path]:
    """Each finished run of a sweep, keyed by (method, λ)."""
    found = {}
    for config in sweep_dir.rglob("run_config.yaml"):
        method = yaml.safe_load(config.read_text())["method"]
        found[(method["_target_"].rsplit(".", 1)[-1], method.get("lmbda"))] = config.parent
    return found


def _max_difference(a: Path, b: Path) -> float:
    wa, wb = load_file(str(a / "final" / "model.safetensors")), load_file(str(b / "final" / "model.safetensors"))
    assert wa.keys() == wb.keys()
    return max(float((wa[k] - wb[k]).abs().max()) for k in wa)


def _losses(run: Path) -> list[float]:
    import json

    return [r["loss"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "loss" in r]


@pytest.fixture(scope="module")
def search_path(tmp_path_factory) -> str:
    """A test-only method preset beside conf/method, so one sweep holds gkd at λ = 1 and λ = 0.5."""
    root = tmp_path_factory.mktemp("conf")
    (root / "method").mkdir()
    (root / "method" / "gkd_lambda1.yaml").write_text("defaults:\n  - gkd\n  - _self_\nlmbda: 1.0\n")
    return f"hydra.searchpath=[file://{root}]"


@pytest.fixture(scope="module")
def runs(tmp_path_factory, cache_dir, search_path):
    """Every method once with 1 process × 2 accumulation steps and once with 2 processes (DDP)."""
    root = tmp_path_factory.mktemp("distributed")
    common = [METHODS, search_path, f"cache_dir={cache_dir}"]
    # At once: bootstraps and tokenizer are built under file locks, so the second launch waits and reuses them.
    for code, err in _together(_args(ONE, root / "one", *common, "trainer.grad_accum_steps=2"),
                               _args(TWO, root / "two", *common)):
        assert code == 0, err[-3000:]
    return {key: (path, _runs(root / "two")[key]) for key, path in _runs(root / "one").items()}


FSDP2 = ["trainer.distributed.strategy=fsdp2", "teacher.sharding=fsdp2"]


@pytest.fixture(scope="module")
def sharded(tmp_path_factory, cache_dir, search_path):
    """sft, gkd (λ = 1) and minillm with 2 processes, FSDP2 sharding student and teacher; beside them (at once)
    supervised_kd and gkd (λ = 1) with the loss fused with the sharded output projections."""
    root = tmp_path_factory.mktemp("fsdp")
    common = [search_path, f"cache_dir={cache_dir}", *FSDP2]
    for code, err in _together(_args(TWO, root / "full", "method=sft,gkd_lambda1,minillm", *common),
                               _args(TWO, root / "fused", "method=supervised_kd,gkd_lambda1", "fused_linear=true",
                                     *common)):
        assert code == 0, err[-3000:]
    return _runs(root / "full"), _runs(root / "fused")


def test_two_processes_make_the_same_update_as_one_with_two_accumulation_steps(runs):
    expected = {("SFT", None), ("SupervisedKD", None), ("SeqKD", None), ("MiniLLM", None), ("XKD", 0.5), ("GKD", 1.0),
                ("GKD", 0.5)}
    assert set(runs) == expected
    for key, (one, two) in sorted(runs.items(), key=str):
        difference = _max_difference(one, two)
        print(f"ddp 2 processes vs 1 process x 2 accumulation, {key}: max |w1 - w2| = {difference:.3g}")
        assert difference <= 1e-5, key
        assert _losses(two) == pytest.approx(_losses(one), rel=1e-5, abs=1e-6), key
        assert yaml.safe_load((two / "summary.json").read_text())["world_size"] == 2


def test_fsdp2_shards_student_and_teacher_and_makes_the_same_update(runs, sharded):
    full, fused = sharded
    assert set(full) == {("SFT", None), ("GKD", 1.0), ("MiniLLM", None)}
    assert set(fused) == {("SupervisedKD", None), ("GKD", 1.0)}
    for label, found in (("fsdp2", full), ("fsdp2, fused loss", fused)):
        for key, run in sorted(found.items(), key=str):
            difference = _max_difference(runs[key][0], run)
            print(f"{label}, 2 processes vs 1 process x 2 accumulation (full logits), {key}: max |w1 - w2| = "
                  f"{difference:.3g}")
            assert difference <= 1e-5, (label, key)
    for run in fused.values():  # the fused path was taken, not quietly declined
        assert "losses from hidden states, fused with the output projection" in (run / "train.log").read_text()
    from transformers import AutoModelForCausalLM  # final/ is consolidated: it loads without torch.distributed

    model = AutoModelForCausalLM.from_pretrained(full[("SFT", None)] / "final")
    assert sum(p.numel() for p in model.parameters()) > 0


def test_a_signal_or_a_dead_rank_stops_the_job_and_reruns_resume_bit_identically(sharded, tmp_path, cache_dir):
    run = tmp_path / "run"
    fsdp = ["method=gkd", "method.lmbda=1", "trainer.distributed.strategy=fsdp2", "teacher.sharding=fsdp2",
            f"cache_dir={cache_dir}"]
    # 1. SIGTERM reaches rank 1 only: every rank stops after step 1, with a checkpoint consolidated by rank 0.
    stopped = _run(TWO, run, *fsdp, sweep=False, env={"DISTILL_FAULT_INJECT": "term@1#1"})
    assert stopped.returncode != 0
    assert "stopped by SIGTERM at step 1 of 4" in stopped.stderr
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-00000001"]
    # 2. The rerun resumes; rank 1 then dies (SIGKILL) after step 3: the survivor fails fast, step 2 is kept.
    started = time.monotonic()
    killed = _run(TWO, run, *fsdp, sweep=False, env={"DISTILL_FAULT_INJECT": "kill@3#1"})
    elapsed = time.monotonic() - started
    assert killed.returncode != 0
    assert elapsed < 90, f"the surviving rank hung for {elapsed:.0f} s"
    errors = [line for line in killed.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and errors[0].startswith("error: rank 1 of this 2-process job stopped"), killed.stderr[-3000:]
    assert "[rank0]" not in killed.stderr  # no traceback from the survivor (torchrun's own summary follows)
    assert "step-00000002" in {p.name for p in (run / "checkpoints").iterdir()}
    assert not (run / "final").exists()
    # 3. The next rerun resumes from step 2 and ends with the uninterrupted run's weights, to the bit.
    resumed = _run(TWO, run, *fsdp, sweep=False)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "step-00000002 (step 2)" in (run / "train.log").read_text()
    difference = _max_difference(sharded[0][("GKD", 1.0)], run)
    print(f"fsdp2: SIGTERM at step 1, SIGKILL of rank 1 at step 3 (failed in {elapsed:.1f} s), resumed twice vs "
          f"uninterrupted: max |w1 - w2| = {difference:.3g}")
    assert difference == 0.0


def test_fsdp2_generation_gathers_the_student_once_not_per_token():
    worker = Path(__file__).with_name("fsdp2_generation_worker.py")
    done = subprocess.run([*TWO[:-2], str(worker)], capture_output=True, text=True, env=ENV, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    line = next(line for line in done.stdout.splitlines() if line.startswith("per_token="))
    counts = dict(field.split("=") for field in line.split())
    print(f"FSDP2 all-gathers while decoding 12 tokens: {counts['per_token']} per token by default, "
          f"{counts['gathered']} held for the whole generation")
    assert counts["same_tokens"] == "True"
    assert int(counts["gathered"]) <= 4  # one per unit: 3 blocks + the root
    assert int(counts["per_token"]) >= 12 * 3  # each block per token (the root stays gathered after a forward)


def test_a_setting_every_rank_refuses_is_one_line_from_rank_0(tmp_path):
    """Both ranks refuse OSD under torchrun; only rank 0 says so (torchrun's own failure summary follows)."""
    refused = _run(TWO, tmp_path / "run", "method=osd", sweep=False)
    errors = [line for line in refused.stderr.splitlines() if line.startswith("error: ")]
    assert refused.returncode != 0 and len(errors) == 1, refused.stderr[-3000:]
    assert "method osd serves one request stream" in errors[0]
    assert "[rank" not in refused.stderr and not (tmp_path / "run").exists(), refused.stderr


def test_a_teacher_cache_serves_each_rank_its_own_examples(tmp_path, cache_dir):
    """Two processes reading one cache (built once under its lock while both start) make the update of one
    process with two accumulation steps."""
    cached = ["method=supervised_kd", "teacher.cache=auto", "teacher_cache.k=16", f"cache_dir={cache_dir}"]
    for code, err in _together(_args(ONE, tmp_path / "one", *cached, "trainer.grad_accum_steps=2", sweep=False),
                               _args(TWO, tmp_path / "two", *cached, sweep=False)):
        assert code == 0, err[-3000:]
    difference = _max_difference(tmp_path / "one", tmp_path / "two")
    print(f"teacher cache, ddp 2 processes vs 1 process x 2 accumulation: max |w1 - w2| = {difference:.3g}")
    assert difference <= 1e-5
    assert _losses(tmp_path / "two") == pytest.approx(_losses(tmp_path / "one"), rel=1e-5, abs=1e-6)
    logs = [(tmp_path / run / "train.log").read_text() for run in ("one", "two")]
    # one of the three processes built it under the lock, the others reused it; rank 1 of the pair logs to no file,
    # so when it wins the lock both logs say "reusing"
    built, reused = (sum(phrase in log for log in logs) for phrase in ("teacher cache built", "reusing the teacher cache"))
    assert built <= 1 and built + reused == 2, logs
