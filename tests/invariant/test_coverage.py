"""Every method in conf/method/ is under every per-method invariant suite, or exempt with a reason written here.

The list of methods is read from conf/method/*.yaml (each file's ``_target_``), never kept by hand: a new method
YAML fails this test until the suites build it or an exemption says why they cannot.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml

from distill import config as C
from distill.methods.base import Method

from . import test_fused_linear_methods, test_host_syncs, test_methods, test_sampling

METHOD_CONF = Path(C.config_dir()) / "method"


def _classes(builders: dict) -> set[str]:
    """The method classes a suite's builders make (a builder may come paired with the suite's expectation)."""
    built = [(entry[0] if isinstance(entry, tuple) else entry)() for entry in builders.values()]
    return {type(method).__name__ for method in built}


# suite -> the method classes it runs (built from the suite's own tables)
SUITES = {
    "masked positions never contribute": lambda: _classes(test_methods.METHODS),
    "micro-batch × accumulation gives one update": lambda: _classes(
        {**{k: test_methods.METHODS[k] for k in test_methods.DETERMINISTIC}, **test_methods.ON_POLICY}),
    "the teacher runs once per batch": lambda: _classes(test_sampling.METHODS),
    "no host syncs in a step": lambda: _classes(test_host_syncs.METHODS),
    "fused loss equals the unfused one": lambda: _classes(test_fused_linear_methods.METHODS),
}
EXEMPT = {  # (method yaml, suite): why the suite does not apply, and what tests the method instead
    ("osd", "masked positions never contribute"): "its loss mask is the kept verification positions: "
    "test_methods.test_osd_trains_on_the_kept_positions_with_the_verification_logits",
    ("osd", "micro-batch × accumulation gives one update"): "single-stream: update_interval requests make one "
    "step, with no micro-batches or accumulation (distill/methods/base.py)",
    ("osd", "the teacher runs once per batch"): "the target runs inside speculative verification, once per "
    "proposal block (test_speculative), and never for the update",
    ("osd", "no host syncs in a step"): "speculative decoding decides acceptance on the host, per block",
    ("osd", "fused loss equals the unfused one"): "never fused: the verified target rows arrive as logits",
    ("minillm", "fused loss equals the unfused one"): "never fused: importance weights need full logits",
    ("xkd", "fused loss equals the unfused one"): "never fused: implied rewards need full logits",
}


def method_targets(conf_dir: Path) -> dict[str, str]:
    """conf/method/NAME.yaml -> the class name its ``_target_`` builds."""
    return {p.stem: yaml.safe_load(p.read_text())["_target_"].rsplit(".", 1)[1] for p in sorted(conf_dir.glob("*.yaml"))}


def uncovered(conf_dir: Path) -> list[str]:
    """``method: suite`` for every suite that neither runs a method of conf_dir nor exempts it."""
    covered = {suite: classes() for suite, classes in SUITES.items()}
    return [f"{name}: {suite}" for name, cls in method_targets(conf_dir).items() for suite in SUITES
            if cls not in covered[suite] and (name, suite) not in EXEMPT]


def test_every_method_yaml_is_covered_by_every_invariant_suite():
    assert uncovered(METHOD_CONF) == []


def test_a_new_method_yaml_without_coverage_fails(tmp_path):
    shutil.copytree(METHOD_CONF, tmp_path / "method")
    (tmp_path / "method" / "mine.yaml").write_text("_target_: distill.methods.mine.Mine\n")
    assert uncovered(tmp_path / "method") == [f"mine: {suite}" for suite in SUITES]


def test_exemptions_name_real_methods_and_suites():
    names = set(method_targets(METHOD_CONF))
    assert {name for name, _ in EXEMPT} <= names and {suite for _, suite in EXEMPT} <= set(SUITES)


def test_every_method_class_keeps_the_contract():
    """Each YAML's class is a Method, and defines the required members itself (checked at class creation)."""
    import importlib

    for name, cls in method_targets(METHOD_CONF).items():
        target = yaml.safe_load((METHOD_CONF / f"{name}.yaml").read_text())["_target_"]
        module = target.rsplit(".", 1)[0]
        assert issubclass(getattr(importlib.import_module(module), cls), Method), name
        assert module == f"distill.methods.{name}", f"{name}.yaml builds {target}: a method is one file of its name"


def test_the_report_orders_every_method():
    from distill.report.aggregate import METHODS

    assert set(method_targets(METHOD_CONF)) <= set(METHODS)
