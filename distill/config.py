"""The only place that turns Hydra configs into the plain objects everything else takes.

Entry points call these; modules below them never see a DictConfig.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from distill.data.tasks import TaskSpec
from distill.errors import ConfigError
from distill.fields import build, check_count, check_field_types, check_keys
from distill.models.load import ModelSpec
from distill.train.loop import TrainerSettings

log = logging.getLogger("distill.config")

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


def eval_dir(ckpt: str, task: str, split: str, variant: str) -> str:
    """Where `distill eval` writes: beside the run that produced the checkpoint when there is one."""
    path = Path(ckpt).expanduser()
    run = path.parent if path.name == "final" else path.parent.parent if path.parent.name == "checkpoints" else path
    name = f"{task}-{split}" + (f"-{path.name}" if path.parent.name == "checkpoints" else "")
    if not run.is_dir():
        return str(Path("outputs") / "eval" / run_id(str(ckpt)) / name / run_id(variant))
    return str(run / "eval" / name / run_id(variant))


MIN_POSITIONS = 256  # the tiny presets' position window on the default task (arith: 128 + 96 tokens)


def positions(max_source_length: int, max_target_length: int) -> int:
    """Position window of the tiny decoder-only presets: prompt and output of the task must fit in it.

    At least ``MIN_POSITIONS``, so the default task's models (and their cached bootstraps) are unchanged.
    """
    return max(MIN_POSITIONS, int(max_source_length) + int(max_target_length))


def register_resolvers() -> None:
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
    return build(TaskSpec, plain(cfg.task), "task")


def model_spec(node: DictConfig, role: str | None = None) -> ModelSpec:
    """A teacher or student preset. ``pretrained=PATH`` on a preset built from ``config`` (tiny, tiny_t5) wins:
    the model comes from PATH and the preset's ``config`` is dropped (one info line says so)."""
    values = plain(node)
    role = role or str(values.get("name", "model"))
    values.pop("sharding", None)  # placement across processes: the trainer's (teacher_sharding), not the model's
    values.pop("cache", None)  # where the teacher's distributions come from: the run's (teacher_cache_inputs)
    if isinstance(values, dict) and values.get("pretrained") is not None and values.get("config") is not None:
        log.info("%s.pretrained=%s: the model is loaded from there; the %s preset's config is not used%s", role,
                 values["pretrained"], values.get("name"),
                 f" (its bootstrap SFT still runs: add {role}.bootstrap.enabled=false to use the weights as they are)"
                 if (values.get("bootstrap") or {}).get("enabled") else "")
        values["config"] = None
    spec = build(ModelSpec, values, role)
    check_field_types(spec, role)
    check_keys(spec.bootstrap, ("enabled", "trainer"), f"{role}.bootstrap", required=("enabled",))
    if not isinstance(spec.bootstrap["enabled"], bool):
        raise ConfigError(f"{role}.bootstrap.enabled must be true or false, got {spec.bootstrap['enabled']!r}")
    return spec


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
    return build(TrainerSettings, values, "trainer")


def distributed_settings(cfg: DictConfig):
    from distill.train.distributed import DistributedSettings

    return build(DistributedSettings, plain(cfg.trainer.distributed), "trainer.distributed")


def bootstrap_trainer(cfg: DictConfig) -> dict:
    return _betas_as_tuple(plain(cfg.bootstrap_trainer))


def source_settings(cfg: DictConfig, trainer: TrainerSettings | None = None):
    """What a run's models and data come from (tokenizer size, caches, seeds, the SFT recipe), typed once."""
    from distill.train.sources import SourceSettings

    return SourceSettings(cfg.tokenizer.vocab_size, Path(cfg.cache_dir).expanduser(), cfg.seed, cfg.bootstrap_seed,
                          bootstrap_trainer(cfg), trainer or trainer_settings(cfg))


def resume_mismatch(saved: dict, current: dict, ignore: tuple[str, ...]) -> str | None:
    """First dotted key whose value differs between two configs, ignoring keys that may change on resume. A setting
    the saved config does not have at all, now off (null or false), is one added to distill since: no difference."""
    def walk(a: Any, b: Any, prefix: str) -> str | None:
        if prefix in ignore:
            return None
        if isinstance(a, dict) and isinstance(b, dict):
            for key in sorted(set(a) | set(b)):
                if key not in a and b[key] in (None, False):
                    continue
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


# The blocks of conf/train.yaml and conf/eval.yaml: a top-level key outside these is refused (``+foo=1``).
TRAIN_KEYS = ("method", "task", "teacher", "student", "divergence", "logger", "eval", "seed", "cache_dir",
              "fused_linear", "tokenizer", "trainer", "teacher_generation", "bootstrap_seed", "bootstrap_trainer",
              "teacher_cache")
EVAL_KEYS = ("ckpt", "seed", "device", "task", "eval")
MIN_VOCAB = 261  # the byte alphabet (256) and 4 special tokens, plus at least one merge


@dataclass(frozen=True)
class TrainInputs:
    """Everything a training run reads from its config, typed and checked (``train_inputs``)."""

    trainer: TrainerSettings
    distributed: Any
    teacher_sharding: str
    task: TaskSpec
    student: ModelSpec
    teacher: ModelSpec
    method: Any
    eval: Any
    seed: int
    sources: Any  # distill.train.sources.SourceSettings
    fused_linear: Any  # auto | true | false
    wandb: dict | None  # logger.wandb, or None when W&B is off
    resolved: dict  # the whole resolved config: run_config.yaml, the resume guard
    teacher_cache: str | None  # teacher.cache: a cache directory, auto, or None (the live teacher)
    cache_settings: Any  # distill.data.teacher_cache.CacheSettings (teacher_cache block)
    cross_tokenizer: bool = False  # divergence.cross_tokenizer: a teacher with another tokenizer
    files: dict[str, str] | None = None  # what the run dir gets once accepted (run_files; set inside Hydra)


def train_inputs(cfg: DictConfig, world: int = 1) -> TrainInputs:
    """Check every block of a training config before any model loads or anything is written: one line
    naming the key for an unknown key, a wrong type, a value out of range (NaN included)."""
    from distill.eval.settings import decodings
    from distill.losses.divergences import Divergence
    from distill.models.forward import check_fused_setting
    from distill.models.generation import Decoding
    from distill.train.distributed import check_single_stream, check_teacher_sharding

    check_required(cfg)
    check_keys(plain(cfg), TRAIN_KEYS, "")
    _check_seeds(cfg, ("seed", "bootstrap_seed"))
    tokenizer = plain(cfg.tokenizer)
    check_keys(tokenizer, ("vocab_size",), "tokenizer", required=("vocab_size",))
    check_count("tokenizer", "vocab_size", tokenizer["vocab_size"], low=MIN_VOCAB)
    _check_path("cache_dir", cfg.cache_dir)
    check_fused_setting(cfg.fused_linear)
    trainer, task = trainer_settings(cfg), task_spec(cfg)
    distributed = distributed_settings(cfg)
    generation = plain(cfg.teacher_generation)
    check_keys(generation, ("decoding", "batch_size"), "teacher_generation", required=("decoding", "batch_size"))
    Decoding.from_config(generation["decoding"], "teacher_generation.decoding")
    check_count("teacher_generation", "batch_size", generation["batch_size"])
    Divergence.from_config(plain(cfg.divergence))
    student, teacher = model_spec(cfg.student, "student"), model_spec(cfg.teacher, "teacher")
    sharding = teacher_sharding(cfg)
    check_teacher_sharding(sharding)
    for role, spec in (("student", student), ("teacher", teacher)):
        bootstrap_recipe_settings(cfg, spec, role, trainer)
    _check_logger(plain(cfg.logger))
    settings = eval_settings(cfg.eval)
    settings.check_split(task.splits)
    decodings(task, settings)
    method = instantiate_method(cfg)
    check_single_stream(method, world)
    cache, cache_settings = teacher_cache_inputs(cfg, method)
    if plain(cfg.divergence).get("cross_tokenizer") and not method.cross_tokenizer:
        raise ConfigError(f"method {type(method).__name__.lower()} cannot use divergence.cross_tokenizer=true yet; "
                          "supervised_kd and gkd (without seq_kd) can")
    resolved = plain(cfg)
    return TrainInputs(trainer, distributed, sharding, task, student, teacher, method, settings, cfg.seed,
                       source_settings(cfg, trainer), cfg.fused_linear, plain(cfg.logger.wandb) or None, resolved,
                       cache, cache_settings, cross_tokenizer=bool(plain(cfg.divergence).get("cross_tokenizer")))


def teacher_cache_inputs(cfg: DictConfig, method=None):
    """(teacher.cache, the teacher_cache block) checked; a method that cannot read a cache is refused here."""
    from distill.data.teacher_cache import CacheSettings

    settings = build(CacheSettings, plain(cfg.teacher_cache), "teacher_cache")
    cache = OmegaConf.select(cfg, "teacher.cache", default=None)
    if cache is None:
        return None, settings
    _check_path("teacher.cache", cache)
    if method is not None and not method.reads_teacher_cache:
        raise ConfigError(f"method {type(method).__name__.lower()} cannot read teacher.cache: its teacher "
                          "distributions depend on outputs generated during training (on-policy) or on the live "
                          "teacher; a cache serves supervised_kd and gkd with method.lmbda=0 (and alpha=1)")
    return cache, settings


def eval_inputs(cfg: DictConfig):
    """(task, eval settings) of ``distill eval``, checked like ``train_inputs``."""
    from distill.eval.settings import decodings
    from distill.train.loop import check_device_name

    check_required(cfg)
    check_keys(plain(cfg), EVAL_KEYS, "")
    _check_seeds(cfg, ("seed",))
    _check_path("ckpt", cfg.ckpt)
    check_device_name("device", cfg.device)
    task, settings = task_spec(cfg), eval_settings(cfg.eval)
    settings.check_split(task.splits)
    decodings(task, settings)
    return task, settings


def eval_settings(node: DictConfig):
    from distill.eval.settings import EvalSettings

    return build(EvalSettings, plain(node), "eval")


def bootstrap_recipe_settings(cfg: DictConfig, spec: ModelSpec, role: str, trainer: TrainerSettings) -> TrainerSettings:
    """The SFT recipe of a bootstrapped preset (``bootstrap_trainer`` under ``<role>.bootstrap.trainer``), checked
    with errors naming the key the user set."""
    from dataclasses import replace

    from distill.errors import DistillError

    shared, own = bootstrap_trainer(cfg), _betas_as_tuple(dict(spec.bootstrap.get("trainer") or {}))
    fields = [f for f in TrainerSettings.__dataclass_fields__ if f != "distributed"]
    check_keys(shared, fields, "bootstrap_trainer")
    check_keys(own, fields, f"{role}.bootstrap.trainer")
    try:
        return replace(trainer, resume=True, resume_from=None, **{**shared, **own})
    except DistillError as exc:  # TrainerSettings names trainer.KEY: say where that value came from
        key = str(exc).split(" ", 1)[0].removeprefix("trainer.")
        section = f"{role}.bootstrap.trainer" if key in own else "bootstrap_trainer"
        raise ConfigError(str(exc).replace(f"trainer.{key}", f"{section}.{key}", 1)) from None


def _check_seeds(cfg: DictConfig, keys: tuple[str, ...]) -> None:
    for key in keys:
        check_count("", key, plain(cfg[key]), low=0)


def _check_path(key: str, value: Any) -> None:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{key} must be a path, got {value!r}")


def _check_logger(values: dict) -> None:
    check_keys(values, ("wandb",), "logger")
    wandb = values.get("wandb")
    if wandb is None:
        return
    check_keys(wandb, ("mode", "project", "entity", "name", "id"), "logger.wandb")
    if wandb.get("mode") not in ("offline", "online", "disabled"):
        raise ConfigError(f"logger.wandb.mode must be offline, online or disabled, got {wandb.get('mode')!r}")


def instantiate_method(cfg: DictConfig):
    """The method object with plain-Python arguments. Keys and types are checked against the method's
    constructor first (naming ``method.KEY``); its own range checks run inside it."""
    from hydra.utils import get_class, instantiate

    from distill.fields import check_arguments

    values = plain(cfg.method)
    target = values.pop("_target_", None)
    try:
        cls = get_class(target)
    except Exception:
        raise ConfigError(f"method._target_={target!r} is not an importable class; pick a method= option") from None
    check_arguments(cls, values, "method")
    try:
        return instantiate(cfg.method, _convert_="all")
    except Exception as exc:  # Hydra wraps the constructor's error; surface ours unwrapped
        cause = exc
        while cause.__cause__ is not None and not isinstance(cause, ConfigError):
            cause = cause.__cause__
        if isinstance(cause, ConfigError):
            raise cause from None
        raise
