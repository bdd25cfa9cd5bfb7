"""conf/experiment presets and conf/hydra/launcher configs compose and resolve; methods instantiate."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from distill import config as C
from distill.train.run import instantiate_method

from .test_compose import CONF, _check_train, options

PAPER = {"paper_xsum": ("xsum", "greedy", 64), "paper_wmt": ("wmt14_en_de", "beam", 128),
         "paper_gsm8k": ("gsm8k", "greedy", 320)}


@pytest.fixture(scope="module", autouse=True)
def hydra_context():
    C.register_resolvers()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        yield


@pytest.mark.parametrize("name", options("experiment"))
def test_every_experiment_composes_and_resolves(name):
    cfg = compose(config_name="train", overrides=[f"experiment={name}"])
    _check_train(cfg)
    instantiate_method(cfg)
    sweeper = compose(config_name="train", overrides=[f"experiment={name}"], return_hydra_config=True).hydra.sweeper
    assert all(str(v).count(",") >= 1 for v in (sweeper.params or {}).values())  # every swept key lists values


@pytest.mark.parametrize("name", sorted(PAPER))
@pytest.mark.parametrize("student", ["t5_small", "t5_base", "t5_large"])
def test_paper_recipes_follow_the_paper(name, student):
    cfg = compose(config_name="train", overrides=[f"experiment={name}", f"student={student}"])
    task, strategy, length = PAPER[name]
    assert (cfg.task.name, cfg.task.decoding.strategy, cfg.task.max_target_length) == (task, strategy, length)
    assert cfg.teacher.pretrained == "google-t5/t5-3b" and cfg.student.name == student
    assert cfg.teacher.bootstrap.enabled and cfg.student.bootstrap.enabled  # both start from SFT checkpoints
    assert cfg.method.lmbda == 1.0
    if name == "paper_wmt":
        assert (cfg.divergence.name, cfg.divergence.beta, cfg.task.decoding.num_beams) == ("jsd", 0.1, 4)


def test_a_method_given_on_the_command_line_wins_over_the_recipe():
    cfg = compose(config_name="train", overrides=["experiment=paper_xsum", "method=xkd"])
    assert cfg.method._target_.endswith("XKD") and cfg.method.lmbda == 1.0


@pytest.mark.parametrize("launcher", ["local_parallel", "slurm"])
def test_launcher_configs_compose(launcher):
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    cfg = compose(config_name="train", overrides=[f"hydra/launcher={launcher}"], return_hydra_config=True)
    target = OmegaConf.select(cfg, "hydra.launcher._target_")
    assert target.endswith("JoblibLauncher" if launcher == "local_parallel" else "SlurmLauncher")


@pytest.mark.parametrize("method, drop", [("xkd", []), ("minillm", ["~method.lmbda"]),
                                          ("sft", ["~method.lmbda", "~method.sampling_temperature"])])
def test_paper_recipes_take_other_methods_as_the_readme_says(method, drop):
    cfg = compose(config_name="train", overrides=["experiment=paper_gsm8k", f"method={method}", *drop])
    assert type(instantiate_method(cfg)).__name__.lower() == method
