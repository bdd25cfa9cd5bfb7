"""Every config group option composes, resolves, and fits the plain objects the code builds from it."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from distill import config as C
from distill.eval.entry import settings as eval_settings

CONF = Path(C.config_dir())


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


@pytest.fixture(scope="module", autouse=True)
def hydra_context():
    C.register_resolvers()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        yield


def _check_train(cfg) -> None:
    assert not OmegaConf.missing_keys(cfg)
    C.task_spec(cfg)
    C.trainer_settings(cfg)
    C.model_spec(cfg.teacher)
    C.model_spec(cfg.student)
    eval_settings(cfg)
    assert set(C.bootstrap_trainer(cfg)) <= set(C.trainer_settings(cfg).__dataclass_fields__)
    OmegaConf.to_container(cfg, resolve=True)


def test_every_group_has_options():
    for group in ("method", "task", "teacher", "student", "divergence", "logger", "evaluation"):
        assert options(group), group
    assert {"arith", "xsum", "wmt14_en_de", "gsm8k"} <= set(options("task"))
    assert {"tiny", "tiny_t5", "t5_small", "t5_base", "t5_large", "t5_xl"} <= set(options("teacher"))
    assert {"tiny", "tiny_t5"} <= set(options("student"))


@pytest.mark.parametrize("group", ["teacher", "student", "logger"])
def test_each_model_and_logger_option_composes(group):
    for option in options(group):
        _check_train(compose("train", overrides=[f"{group}={option}"]))


def test_every_pair_of_method_task_and_divergence_composes():
    # every pair of options across the three groups, the third at its default: the groups refer to each other only
    # pairwise (a method's loss to its divergence, a method's lengths to its task), and all 210 triples cost 20 s
    groups = {"method": options("method"), "task": options("task"), "divergence": options("divergence")}
    for first, second in itertools.combinations(groups, 2):
        for a, b in itertools.product(groups[first], groups[second]):
            cfg = compose("train", overrides=[f"{first}={a}", f"{second}={b}"])
            _check_train(cfg)
            if "task" in (first, second):
                assert cfg.task.name == (a if first == "task" else b)


def test_defaults_are_the_offline_tiny_setup():
    cfg = compose("train")
    assert cfg.task.name == "arith" and cfg.teacher.name == "tiny" and cfg.student.name == "tiny"
    assert cfg.teacher.pretrained is None and cfg.teacher.bootstrap.enabled
    assert cfg.logger.wandb is None


def test_wandb_logger_never_prompts():
    cfg = compose("train", overrides=["logger=wandb"])
    assert cfg.logger.wandb.mode in ("offline", "disabled")


def test_eval_config_requires_ckpt_and_composes_for_every_task():
    cfg = compose("eval")
    assert OmegaConf.missing_keys(cfg) == {"ckpt"}
    for task in options("task"):
        cfg = compose("eval", overrides=[f"task={task}", "ckpt=/some/run"])
        assert not OmegaConf.missing_keys(cfg)
        C.task_spec(cfg)
        eval_settings(cfg)


def test_missing_values_are_reported_before_anything_loads():
    with pytest.raises(C.ConfigError, match="ckpt"):
        C.check_required(compose("eval"))


def test_run_id_is_stable_and_bounded():
    assert C.run_id("") == "default"
    assert C.run_id("a=1,b=2") == "a=1,b=2"
    long = ",".join(f"key{i}=value/{i}" for i in range(40))
    assert C.run_id(long) == C.run_id(long) and len(C.run_id(long)) <= 120 and "/" not in C.run_id(long)


def test_resume_mismatch_names_the_first_differing_key():
    saved = {"trainer": {"lr": 1.0, "resume": True}, "seed": 0}
    assert C.resume_mismatch(saved, {"trainer": {"lr": 1.0, "resume": False}, "seed": 0}, ("trainer.resume",)) is None
    assert C.resume_mismatch(saved, {"trainer": {"lr": 2.0, "resume": True}, "seed": 0}, ()).startswith("trainer.lr")
    # a setting added to distill since the run began, now off, is no difference; turned on, it is
    newer = {"trainer": {"lr": 1.0, "resume": True, "new_flag": False}, "seed": 0, "cache": None}
    assert C.resume_mismatch(saved, newer, ()) is None
    assert C.resume_mismatch(saved, {**newer, "cache": "auto"}, ()).startswith("cache (None then, 'auto' now)")


@pytest.mark.parametrize("task, positions", [("arith", 256), ("gsm8k", 576), ("wmt14_en_de", 384), ("xsum", 1088)])
def test_tiny_presets_have_room_for_each_task(task, positions):
    """Issue 14.7: gsm8k's 320 output tokens did not fit the tiny presets' 256 positions."""
    cfg = compose(config_name="train", overrides=[f"task={task}"])
    for role in ("student", "teacher"):
        assert OmegaConf.select(cfg, f"{role}.config.n_positions") == positions


@pytest.mark.parametrize("task", options("task"))
def test_every_tasks_prompt_and_output_fit_the_tiny_presets(task):
    """Any task in conf/task/, not a hand-kept list: the decoder-only preset's positions hold prompt + output."""
    cfg = compose(config_name="train", overrides=[f"task={task}"])
    need = cfg.task.max_source_length + cfg.task.max_target_length
    for role in ("student", "teacher"):
        assert OmegaConf.select(cfg, f"{role}.config.n_positions") >= need
