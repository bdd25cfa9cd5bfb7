"""SLURM (issue 12): the multi-process launcher config composes, and the sbatch script it builds starts one
`distill train` task per GPU; the tasks find their ranks from SLURM's variables. No cluster is needed."""

from __future__ import annotations

import os

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from distill import config as C
from distill.train.distributed import launcher_world

from .test_compose import CONF

submitit = pytest.importorskip("submitit")
pytest.importorskip("hydra_plugins.hydra_submitit_launcher")


@pytest.fixture(autouse=True)
def fake_srun(tmp_path, monkeypatch):
    """submitit's SLURM executor checks that srun exists; this machine has none (nothing is ever run)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 1\n")
    (bin_dir / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")


def _sbatch(tmp_path, overrides: list[str]) -> str:
    """The submission script the plugin would hand to sbatch: its parameter mapping, then submitit's text."""
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf

    C.register_resolvers()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides, return_hydra_config=True)
    params = OmegaConf.to_container(cfg.hydra.launcher, resolve=False)
    params = {k: v for k, v in params.items() if k not in ("_target_", "submitit_folder", "max_num_timeout")}
    base = set(OmegaConf.structured(BaseQueueConf).keys())
    executor = submitit.AutoExecutor(folder=tmp_path, cluster="slurm")
    executor.update_parameters(**{k if k in base else f"slurm_{k}": v for k, v in params.items() if v is not None})
    return executor._executor._make_submission_file_text("distill-job", "uid")


def test_slurm_multigpu_builds_one_task_per_gpu(tmp_path):
    text = _sbatch(tmp_path, ["hydra/launcher=slurm_multigpu", "hydra.launcher.partition=gpu",
                              "hydra.launcher.tasks_per_node=4", "hydra.launcher.gpus_per_node=4"])
    assert "#SBATCH --ntasks-per-node=4" in text
    assert "#SBATCH --gpus-per-node=4" in text
    assert "#SBATCH --partition=gpu" in text
    assert "srun" in text and "distill-job" in text


def test_single_process_slurm_stays_one_task(tmp_path):
    text = _sbatch(tmp_path, ["hydra/launcher=slurm"])
    assert "#SBATCH --ntasks-per-node=1" in text


def test_a_slurm_task_takes_its_rank_from_slurm(monkeypatch):
    # launcher_world exports RANK, WORLD_SIZE, MASTER_ADDR, ... into os.environ: into a copy here, or every later
    # in-process `distill train` of the suite would wait for 8 ranks.
    monkeypatch.setattr(os, "environ", dict(os.environ))
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "SUBMITIT_EXECUTOR"):
        monkeypatch.delenv(key, raising=False)
    slurm = {"SLURM_NTASKS": "8", "SLURM_PROCID": "5", "SLURM_LOCALID": "1", "SLURM_JOB_ID": "77",
             "SLURM_JOB_NODELIST": "gpu[3-6]", "SLURM_NODEID": "2", "SLURM_JOB_NUM_NODES": "4"}
    for key, value in slurm.items():
        monkeypatch.setenv(key, value)
    assert launcher_world() == (5, 8, 1)
    assert os.environ["MASTER_ADDR"] == "gpu3"  # the first node hosts the rendezvous
    assert int(os.environ["MASTER_PORT"]) > 0
