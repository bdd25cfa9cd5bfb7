"""The only place that turns Hydra configs into the plain objects everything else takes.

Entry points call these; modules below them never see a DictConfig.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from distill.data.tasks import TaskSpec
from distill.errors import ConfigError
from distill.models.load import ModelSpec
from distill.train.loop import TrainerSettings

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"


def config_dir() -> str:
    """conf/ of a checkout or editable install; else the installed ``distill_conf`` package."""
    if (CONF_DIR / "train.yaml").exists():
        return str(CONF_DIR)
    import distill_conf  # a namespace package (conf/ has no __init__.py): use its path

    return str(Path(next(iter(distill_conf.__path__))))


def run_id(override_dirname: str) -> str:
    """Run directory name from the command-line overrides: the same command, the same dir (resume)."""
    if not override_dirname:
        return "default"
    safe = override_dirname.replace("/", "_")
    return safe if len(safe) <= 120 else safe[:100] + "-" + hashlib.sha256(safe.encode()).hexdigest()[:12]


MIN_POSITIONS = 256  # the tiny presets' position window on the default task (arith: 128 + 96 tokens)


def positions(max_source_length: int, max_target_length: int) -> int:
    """Position window of the tiny decoder-only presets: prompt and output of the task must fit in it.

    At least ``MIN_POSITIONS``, so the default task's models (and their cached bootstraps) are unchanged.
    """
    return max(MIN_POSITIONS, int(max_source_length) + int(max_target_length))


def register_resolvers() -> None:
    from distill.eval.entry import eval_dir

    for name, fn in (("distill.run_id", run_id), ("distill.eval_dir", eval_dir), ("distill.positions", positions)):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)


def check_required(cfg: DictConfig) -> None:
    """Every ``???`` must be filled before any model loads."""
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise ConfigError(f"missing required value(s): {', '.join(missing)}; set them on the command line, e.g. {missing[0]}=...")


def plain(node: Any) -> Any:
    try:
        return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node
    except Exception as exc:  # an interpolation that cannot resolve
        raise ConfigError(f"config cannot be resolved: {exc}".splitlines()[0]) from None


def task_spec(cfg: DictConfig) -> TaskSpec:
    return TaskSpec(**plain(cfg.task))


def model_spec(node: DictConfig) -> ModelSpec:
    values = plain(node)
    values.pop("sharding", None)  # placement across processes: the trainer's (teacher_sharding), not the model's
    return ModelSpec(**values)


def teacher_sharding(cfg: DictConfig) -> str:
    """``teacher.sharding`` of the teacher preset (``replicate`` for a preset that does not say)."""
    return OmegaConf.select(cfg, "teacher.sharding", default="replicate")


def _betas_as_tuple(values: dict) -> dict:
    if isinstance(values.get("adam_betas"), list):
        values["adam_betas"] = tuple(values["adam_betas"])
    return values


def trainer_settings(cfg: DictConfig) -> TrainerSettings:
    values = _betas_as_tuple(plain(cfg.trainer))
    values.pop("distributed", None)  # read by distributed_settings
    return TrainerSettings(**values)


def distributed_settings(cfg: DictConfig):
    from distill.train.distributed import DistributedSettings

    return DistributedSettings(**plain(cfg.trainer.distributed))


def bootstrap_trainer(cfg: DictConfig) -> dict:
    return _betas_as_tuple(plain(cfg.bootstrap_trainer))


def resume_mismatch(saved: dict, current: dict, ignore: tuple[str, ...]) -> str | None:
    """First dotted key whose value differs between two configs, ignoring keys that may change on resume."""
    def walk(a: Any, b: Any, prefix: str) -> str | None:
        if prefix in ignore:
            return None
        if isinstance(a, dict) and isinstance(b, dict):
            for key in sorted(set(a) | set(b)):
                found = walk(a.get(key), b.get(key), f"{prefix}.{key}" if prefix else key)
                if found:
                    return found
            return None
        return None if a == b else f"{prefix} ({a!r} then, {b!r} now)"

    return walk(saved, current, "")


def run_files(cfg: DictConfig, training: bool = True) -> dict[str, str]:
    """What Hydra would write into ``.hydra/`` (we write it once the run is accepted), and for a training
    run ``run_config.yaml`` (the resolved config; it also marks the directory as a run for the report)."""
    import yaml
    from hydra.core.hydra_config import HydraConfig

    hydra = HydraConfig.get()
    return {".hydra/config.yaml": OmegaConf.to_yaml(cfg),
            ".hydra/hydra.yaml": OmegaConf.to_yaml(OmegaConf.create({"hydra": hydra})),
            ".hydra/overrides.yaml": OmegaConf.to_yaml(hydra.overrides.task),
            **({"run_config.yaml": yaml.safe_dump(plain(cfg), sort_keys=False)} if training else {})}
