"""One list of settings that cannot change results: the report, resuming, bootstraps and run-dir names agree."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import yaml

from distill import config as C
from distill.settings_keys import (
    BOOTSTRAP_IGNORED,
    NON_RESULT_KEYS,
    OPTIMIZER_FIELDS,
    OPTIMIZER_KEYS,
    RESUME_IGNORED,
    covers,
)
from distill.train.loop import TrainerSettings

TRAIN_YAML = Path(C.config_dir()) / "train.yaml"
DIR_NAMING = ("method", "task", "student")  # they name the run directory itself, so its subdir leaves them out


def test_run_directory_names_leave_out_only_settings_that_cannot_change_results():
    """A key left out of a run dir's name must not change results, or two experiments would share a dir."""
    hydra = yaml.safe_load(TRAIN_YAML.read_text())["hydra"]
    excluded = hydra["job"]["config"]["override_dirname"]["exclude_keys"]
    assert [k for k in excluded if k not in DIR_NAMING and not covers(NON_RESULT_KEYS, k)] == []


def test_resume_and_bootstraps_derive_from_the_one_list():
    assert set(NON_RESULT_KEYS) - {"seed"} <= set(RESUME_IGNORED) and "seed" not in RESUME_IGNORED
    assert set(RESUME_IGNORED) - set(NON_RESULT_KEYS) == {"trainer.max_steps"}  # a resumed run may run longer
    trainer_keys = {k.removeprefix("trainer.") for k in NON_RESULT_KEYS if k.startswith("trainer.")}
    recipe_fields = {f.name for f in fields(TrainerSettings)}
    assert set(BOOTSTRAP_IGNORED) <= recipe_fields  # every ignored name is a real field of the SFT recipe
    assert set(BOOTSTRAP_IGNORED) == trainer_keys - {"distributed"}  # placement stays in the key: caches made
    # before the list existed keep their hashes


def test_optimizer_keys_are_trainer_fields():
    assert set(OPTIMIZER_FIELDS) <= {f.name for f in fields(TrainerSettings)}
    assert OPTIMIZER_KEYS == tuple(f"trainer.{k}" for k in OPTIMIZER_FIELDS)


def test_covers_means_the_node_and_everything_under_it():
    assert covers(("eval",), "eval") and covers(("eval",), "eval.split") and not covers(("eval",), "evaluation")
