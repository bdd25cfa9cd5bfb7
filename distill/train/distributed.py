"""More than one process: everything rank-aware lives here; methods and losses never ask.

Contract: docs/design.md, More than one process.

``distill train`` is launched unchanged by ``torchrun``, ``accelerate launch`` or a SLURM job. The launcher's
environment says how many processes there are (``WORLD_SIZE``/``RANK``/``LOCAL_RANK``; under SLURM without a
launcher, ``SLURM_NTASKS``/``SLURM_PROCID``, translated by submitit). One process is the default and costs nothing:
every helper below is then the identity.

Strategies (``trainer.distributed.strategy``):
  * ``ddp``   the student (and a method's own modules) replicated with torch's DistributedDataParallel engine,
              applied in place (``torch.distributed._composable.replicate``) so methods keep calling the model;
  * ``fsdp2`` the student sharded with ``fully_shard`` per transformer block and at the root; the teacher too when
              ``teacher.sharding=fsdp2`` (else it is replicated in eval mode). On-policy generation gathers the
              student once per micro-batch (``gathered``), not once per generated token.
The same update as one process: every rank reduces its tokens with the global count N (all-reduced), and the
loss is multiplied by the world size because both engines average gradients over ranks. DeepSpeed is refused
with one line: its engine owns backward and the optimizer step, which our loop does itself (FSDP2's full shard is
ZeRO-3's sharding; ``reshard_after_forward: false`` is ZeRO-2's).
"""

from __future__ import annotations

import atexit
import contextlib
import datetime
import logging
import os
import socket
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist

from distill.errors import ConfigError, PeerLost

log = logging.getLogger(__name__)

STRATEGIES = ("auto", "ddp", "fsdp2")
TEACHER_SHARDING = ("replicate", "fsdp2")


@dataclass(frozen=True)
class DistributedSettings:
    """Plain mirror of ``trainer.distributed`` in ``conf/train.yaml``; fields documented there."""

    strategy: str = "auto"
    timeout_s: float = 600.0

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ConfigError(f"trainer.distributed.strategy must be one of {', '.join(STRATEGIES)}, got {self.strategy!r}")
        if not self.timeout_s > 0:
            raise ConfigError(f"trainer.distributed.timeout_s must be > 0, got {self.timeout_s}")


@dataclass
class Dist:
    """This process's place in the job; ``Dist()`` is one process."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    strategy: str = "none"  # none | ddp | fsdp2
    teacher_sharding: str = "replicate"
    reshard_after_forward: bool = True  # FSDP2; false keeps weights gathered from forward to backward (ZeRO-2-like)
    peers: tuple = ()  # (host, pid) of every rank: which one stopped, when a collective fails

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def grad_scale(self) -> float:
        """Both engines average gradients over ranks; the loss is already divided by the global N."""
        return float(self.world)

    def _reduce(self, value: torch.Tensor, op) -> torch.Tensor:
        if not self.active:
            return value
        value = value.detach().clone()
        dist.all_reduce(value, op=op)
        return value

    def sum(self, value: torch.Tensor) -> torch.Tensor:
        return self._reduce(value, dist.ReduceOp.SUM)

    def max(self, value: torch.Tensor) -> torch.Tensor:
        return self._reduce(value, dist.ReduceOp.MAX)

    def job_totals(self, totals: dict) -> dict:
        """Logged values of the whole job: each rank's losses are partial sums (already divided by the global
        N); method statistics are averaged over ranks; gradient norms are the same on every rank."""
        if not self.active:
            return totals
        out = {}
        for key in sorted(totals):  # the same order on every rank: these are collectives
            value = totals[key]
            if key == "tokens" or key.startswith("grad_norm") or not torch.is_tensor(value):
                out[key] = value
            elif key == "loss" or key.startswith("loss/"):
                out[key] = self.sum(value)
            else:
                out[key] = self.sum(value) / self.world
        return out

    def broadcast(self, obj):
        """Rank 0's ``obj`` on every rank (a resume plan: only rank 0 reads and repairs the run dir)."""
        if not self.active:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]


def launcher_world() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun/accelerate, or from SLURM when no launcher set them."""
    if "WORLD_SIZE" not in os.environ and int(os.environ.get("SLURM_NTASKS", "1")) > 1:
        # Tasks started by srun (hydra/launcher=slurm with tasks_per_node > 1, or `srun distill train`):
        # submitit reads SLURM's task variables and exports torch's (RANK, WORLD_SIZE, MASTER_ADDR, ...).
        from submitit.helpers import TorchDistributedEnvironment

        os.environ.setdefault("SUBMITIT_EXECUTOR", "slurm")
        TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
    return (int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1")),
            int(os.environ.get("LOCAL_RANK", "0")))


def chosen_strategy(settings: DistributedSettings) -> str:
    """The strategy, reading what ``accelerate launch`` exported from its config file."""
    if os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() == "true":
        raise ConfigError("accelerate's config asks for DeepSpeed, which distill does not support (its engine owns "
                          "backward and the optimizer step); use distill's fsdp2.yaml (ZeRO-3's sharding) or ddp.yaml: "
                          "distill accelerate-config fsdp2")
    accelerate_fsdp = os.environ.get("ACCELERATE_USE_FSDP", "").lower() == "true"
    if accelerate_fsdp and os.environ.get("FSDP_VERSION", "1") != "2":
        raise ConfigError("accelerate's config asks for FSDP version 1; distill shards with FSDP2: set "
                          "fsdp_config.fsdp_version: 2 (or use distill accelerate-config fsdp2)")
    if settings.strategy != "auto":
        return settings.strategy
    return "fsdp2" if accelerate_fsdp else "ddp"


def setup(settings: DistributedSettings, device_name: str, teacher_sharding: str) -> Dist:
    """Join the job's process group (no-op for one process); returns this process's ``Dist``."""
    rank, world, local_rank = launcher_world()
    strategy = chosen_strategy(settings)
    if world == 1:
        if teacher_sharding != "replicate" or settings.strategy == "fsdp2":
            log.info("one process: trainer.distributed.strategy and teacher.sharding have no effect")
        return Dist()
    cuda = device_name != "cpu" and torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo", timeout=datetime.timedelta(seconds=settings.timeout_s))
        atexit.register(shutdown)
    if rank != 0:  # one voice: other ranks report warnings and errors only
        logging.getLogger("distill").setLevel(logging.WARNING)
    reshard = os.environ.get("FSDP_RESHARD_AFTER_FORWARD", "true").lower() != "false"  # from accelerate's config
    peers: list = [None] * world
    dist.all_gather_object(peers, (socket.gethostname(), os.getpid()))
    return Dist(rank, world, local_rank, strategy, teacher_sharding, reshard, tuple(peers))


# How a collective fails when another rank is gone (gloo, NCCL) or does not answer within the timeout.
PEER_FAILURES = ("closed by peer", "reset by peer", "Broken pipe", "timed out", "Timed out", "communicator was aborted",
                 "NCCL error", "Connection refused")


def lost_peer(exc: BaseException, dist_: Dist) -> PeerLost | None:
    """One line naming the rank that stopped, for a collective that failed because of it; else None."""
    text = str(exc)
    if not dist_.active or not isinstance(exc, RuntimeError) or not any(m in text for m in PEER_FAILURES):
        return None
    host = socket.gethostname()
    gone = [r for r, peer in enumerate(dist_.peers) if r != dist_.rank and peer and peer[0] == host
            and not _alive(peer[1])]
    if not gone and dist_.world == 2:
        gone = [1 - dist_.rank]
    who = f"rank {', '.join(map(str, gone))}" if gone else "another rank"
    reason = text.split("]", 1)[-1].split(". ", 1)[0].strip()[:120]
    return PeerLost(f"{who} of this {dist_.world}-process job stopped or stopped answering ({reason}); its own output "
                    "says why; re-run the same command to continue from the newest complete checkpoint")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def device_for(dist_: Dist, device_name: str) -> str:
    """Each rank on its own GPU (``cuda:LOCAL_RANK``) when the device is CUDA."""
    if dist_.active and device_name in ("auto", "cuda") and torch.cuda.is_available():
        return f"cuda:{dist_.local_rank}"
    return device_name


def check_teacher_sharding(value) -> None:
    if value not in TEACHER_SHARDING:
        raise ConfigError(f"teacher.sharding must be one of {', '.join(TEACHER_SHARDING)}, got {value!r}")


def check_single_stream(method, world: int) -> None:
    """Before anything starts: a method serving one request stream runs in one process."""
    if world > 1 and method.single_stream:
        raise ConfigError(f"method {type(method).__name__.lower()} serves one request stream and runs in one process; "
                          "launch it without torchrun/accelerate (WORLD_SIZE=1)")


def _blocks(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The repeated transformer blocks (every ModuleList's entries): FSDP2's unit of sharding."""
    return [block for module in model.modules() if isinstance(module, torch.nn.ModuleList) for block in module]


ROOT_RESHARDS = "_distill_root_reshards"  # on a sharded model: whether its root unit reshards after forward


def fully_shard_model(model: torch.nn.Module, reshard_after_forward: bool = True, trained: bool = True
                      ) -> torch.nn.Module:
    """Shard per block and at the root. A trained model's root unit (embeddings, final norm, output projection)
    stays gathered from forward to backward, FSDP2's own default for roots: backward needs it at once, and the
    fused loss uses the whole projection. A frozen teacher's reshards after its forward (no backward will come);
    its fused loss gathers the projection once per micro-batch (trajectories.teacher_target)."""
    from torch.distributed.fsdp import fully_shard

    for block in _blocks(model):
        fully_shard(block, reshard_after_forward=reshard_after_forward)
    setattr(model, ROOT_RESHARDS, not trained)
    return fully_shard(model, reshard_after_forward=not trained)


def wrap(dist_: Dist, student: torch.nn.Module, teacher: torch.nn.Module | None,
         extra_modules: dict[str, torch.nn.Module], device: torch.device) -> None:
    """Apply the strategy in place (before the optimizer is built: FSDP2 replaces parameters by shards)."""
    if not dist_.active:
        return
    if dist_.strategy == "fsdp2":
        for module in (student, *extra_modules.values()):
            fully_shard_model(module, dist_.reshard_after_forward)
    else:
        from torch.distributed._composable import replicate

        # No buffer broadcast: generation runs a different number of forwards on each rank.
        placement = {"device_id": device} if device.type == "cuda" else {}
        # broadcast_buffers=False is deprecated, but its successor still syncs at init (at the first forward)
        warnings.filterwarnings("ignore", message=".*broadcast_buffers.* is deprecated", category=FutureWarning)
        for module in (student, *extra_modules.values()):
            replicate(module, broadcast_buffers=False, **placement)
    if teacher is not None and dist_.teacher_sharding == "fsdp2":
        fully_shard_model(teacher, trained=False)


def _fsdp_modules(model: torch.nn.Module) -> list:
    from torch.distributed.fsdp import FSDPModule

    return [m for m in model.modules() if isinstance(m, FSDPModule)]


@contextlib.contextmanager
def gathered(dist_: Dist, *models: torch.nn.Module | None):
    """Hold FSDP2 models unsharded for a whole generation: one all-gather instead of one per token."""
    pairs = [(unit, unit is model) for model in models if model is not None and dist_.strategy == "fsdp2"
             for unit in _fsdp_modules(model)]
    for unit, _ in pairs:
        unit.set_reshard_after_forward(False, recurse=False)
        unit.unshard()
    try:
        yield
    finally:
        for unit, root in pairs:
            unit.reshard()
            # a root unit back to its own setting (fully_shard_model): a trained model's stays gathered until
            # backward, which the fused loss relies on (docs/design.md, More than one process)
            after = getattr(unit, ROOT_RESHARDS, True) if root else dist_.reshard_after_forward
            unit.set_reshard_after_forward(after, recurse=False)


def set_gradient_sync(dist_: Dist, modules, sync: bool) -> None:
    """Skip the gradient all-reduce on all but the last micro-batch of an accumulation window."""
    if not dist_.active:
        return
    for module in modules:
        module.set_requires_gradient_sync(sync)


def local_value(value):
    """A plain tensor from a DTensor (FSDP2's gradient norm)."""
    return value.full_tensor() if hasattr(value, "full_tensor") else value


def layout(dist_: Dist) -> dict:
    """Recorded in checkpoint manifests: a checkpoint resumes under the same layout."""
    return {"world_size": dist_.world, "strategy": dist_.strategy}


def _shard(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.to_local() if hasattr(tensor, "to_local") else tensor


def peak_weight(dist_: Dist, modules) -> float:
    """Largest |w| over the modules' parameters on all ranks (inf or nan if any is not finite)."""
    peaks = [_shard(p).detach().abs().max() for m in modules for p in m.parameters() if _shard(p).numel()]
    peak = torch.stack(peaks).max() if peaks else torch.zeros(())
    return float(dist_.max(peak))


@dataclass
class Consolidated:
    """Full (unsharded) states gathered from FSDP2 shards, on rank 0's CPU."""

    student: dict[str, torch.Tensor]
    extra: dict[str, dict[str, torch.Tensor]]
    optimizer: dict


def _container(student, extra_modules) -> torch.nn.Module:
    return torch.nn.ModuleDict({"student": student, **extra_modules})  # FQNs "student.…", "<name>.…"


def consolidated(dist_: Dist, student, extra_modules: dict, optimizer) -> Consolidated | None:
    """Under FSDP2, every rank calls this (a collective); None otherwise (each rank holds full weights)."""
    if dist_.strategy != "fsdp2":
        return None
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict, get_optimizer_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    container = _container(student, extra_modules)
    weights = _untied(container, get_model_state_dict(container, options=options))
    state = get_optimizer_state_dict(container, optimizer, options=options)
    split = {name: {k[len(name) + 1:]: v for k, v in weights.items() if k.startswith(name + ".")}
             for name in ("student", *extra_modules)}
    return Consolidated(split.pop("student"), split, state)


def load_consolidated(student, extra_modules: dict, optimizer, weights: dict, extra: dict, optimizer_state: dict) -> None:
    """Consolidated weights and optimizer state into FSDP2 modules (each rank keeps its shards)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict, set_optimizer_state_dict

    container = _container(student, extra_modules)
    full = {f"student.{k}": v for k, v in weights.items()}
    full.update({f"{name}.{k}": v for name in extra_modules for k, v in extra[name].items()})
    options = StateDictOptions(full_state_dict=True, strict=False)
    set_model_state_dict(container, full, options=options)
    set_optimizer_state_dict(container, optimizer, optimizer_state, options=StateDictOptions(full_state_dict=True))


def shutdown() -> None:
    """At exit: a sweep (``-m``) runs several jobs in one process group, joined once."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def full_weights(dist_: Dist, student: torch.nn.Module) -> dict[str, torch.Tensor] | None:
    """The student's consolidated weights for ``final/`` under FSDP2 (a collective); None otherwise."""
    if dist_.strategy != "fsdp2":
        return None
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return _untied(student, get_model_state_dict(student, options=StateDictOptions(full_state_dict=True, cpu_offload=True)))


def _untied(model: torch.nn.Module, weights: dict) -> dict:
    """Drop the second name of a tied weight (GPT-2's lm_head = wte), as save_pretrained does for a live model."""
    names = {name for name, _ in model.named_parameters(remove_duplicate=False)}
    duplicates = names - {name for name, _ in model.named_parameters()}
    return {k: v for k, v in weights.items() if k not in duplicates}


def check_layout(dist_: Dist, checkpoint) -> None:
    """A checkpoint resumes under the layout that wrote it: the global batch and the optimizer state's form
    depend on the number of processes and the strategy."""
    from distill.io import read_manifest

    manifest = read_manifest(checkpoint) or {}
    saved = (manifest.get("world_size", 1), manifest.get("strategy", "none"))
    if saved != (dist_.world, dist_.strategy):
        raise ConfigError(f"{checkpoint} was written by {saved[0]} process(es) with strategy {saved[1]}; resume it "
                          f"the same way (torchrun --nproc_per_node {saved[0]}), not with {dist_.world} ({dist_.strategy})")


def _process_start() -> float | None:
    """When this process started (Linux /proc), or None where that cannot be read."""
    try:
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        boot = next(float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime"))
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, StopIteration, IndexError):
        return None


def _made_since_this_process(path: Path, margin_s: float = 5.0) -> bool:
    """``path`` was created after this process started (less a margin: the launcher starts its ranks together)."""
    started = _process_start()
    try:
        return started is not None and path.stat().st_ctime >= started - margin_s
    except OSError:
        return False


class Follower:
    """A rank other than 0 in a run directory: it reads, never locks or writes (rank 0 holds the directory)."""

    accepted = False

    def __init__(self, path):
        self.path = Path(path)

    def __enter__(self):
        from distill.rundir import created_root

        self._created = created_root(self.path, existed=True)  # Hydra made it on this rank too
        return self

    def __exit__(self, exc_type, *exc) -> None:
        """A refused command: the directory Hydra made on this rank goes again (it is empty unless rank 0
        accepted the run, and then it stays)."""
        from distill.rundir import remove_empty

        if exc_type is None:
            return
        if self._created is not None:
            remove_empty(self.path, self._created)
        elif _made_since_this_process(self.path):
            # Rank 0's Hydra made it first (so this rank saw it existing), rank 0 refused and removed it, and this
            # rank's Hydra made it again: made by this launch, still empty, it goes.
            remove_empty(self.path, self.path)

    def accept(self, files: dict, fresh: bool) -> None:
        return None
