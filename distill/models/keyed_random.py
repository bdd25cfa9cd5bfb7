"""Counter-based randomness: draws that are pure functions of (seed, step, example, position).

On-policy methods sample outputs, and the GKD coin decides per optimizer
step whether to sample at all. If those draws came from one global RNG
stream, the samples of example i would depend on which other examples share
its micro-batch, so micro-batch 8 × accumulation 1 and 2 × 4 (or 2 ranks)
would train on different outputs. Here every draw is a hash of its key:
  * ``row_keys(seed, step, indices)`` names each row's stream; the training
    loop keys a row by its position in the run's stream of examples
    (step · window + slot), unique even when a window holds one example twice;
  * ``keyed_uniform(keys, position, size)`` gives its uniforms at one
    decoding position, computed on the device with integer ops (no host
    round-trip, no generator state to checkpoint);
  * ``step_uniform(seed, step, salt)`` is one number per optimizer step,
    identical wherever it is computed (every micro-batch, every rank).
The mixer is Wellons' lowbias32 with its constants below 2^31, so every
int64 product of a 32-bit value stays below 2^63 (no overflow).
"""

from __future__ import annotations

import hashlib

import torch

_MASK32 = 0xFFFFFFFF
_C1, _C2 = 0x21F0AAAD, 0x735A2D97  # lowbias32 (bias 0.107), both < 2^31


def _mix32(x: torch.Tensor) -> torch.Tensor:
    """A bijection of [0, 2^32) with full avalanche; works in place on a fresh int64 tensor."""
    x ^= x >> 16
    x.mul_(_C1).bitwise_and_(_MASK32)
    x ^= x >> 15
    x.mul_(_C2).bitwise_and_(_MASK32)
    x ^= x >> 15
    return x


def _hash_ints(*parts: int) -> int:
    """A 64-bit key from Python ints (host side, a few per example)."""
    digest = hashlib.blake2b(":".join(str(p) for p in parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def row_keys(seed: int, step: int, indices: list[int], salt: str = "sample", device=None) -> torch.Tensor:
    """[B, 2] int64 keys (two 32-bit halves) naming each example's random stream at this step."""
    keys = [_hash_ints(salt, seed, step, index) for index in indices]
    pairs = [[k & _MASK32, (k >> 32) & _MASK32] for k in keys]
    return torch.tensor(pairs, dtype=torch.int64, device=device).reshape(len(indices), 2)


def keyed_uniform(keys: torch.Tensor, position: int, size: int) -> torch.Tensor:
    """[B, size] float32 uniforms in (0, 1) for decoding position ``position`` of each row's stream."""
    lo, hi = keys[:, :1], keys[:, 1:]
    state = _mix32(lo ^ _mix32(hi ^ ((position * 0x9E3779B9) & _MASK32)))  # [B, 1]: per row and position
    bits = _mix32(state ^ torch.arange(size, device=keys.device, dtype=torch.int64))
    # 24 random bits, centred in their bin: never exactly 0 or 1.
    return ((bits >> 8).to(torch.float32) + 0.5) * (1.0 / (1 << 24))


def step_uniform(seed: int, step: int, salt: str) -> float:
    """One uniform in [0, 1) per (seed, step, salt), the same on every micro-batch and rank."""
    return _hash_ints(salt, seed, step) / 2.0**64


def step_coin(seed: int, step: int, probability: float, salt: str) -> bool:
    """True with ``probability``, once per optimizer step: every micro-batch and rank agree (GKD's λ coin)."""
    if probability <= 0.0:
        return False
    if probability >= 1.0:
        return True
    return step_uniform(seed, step, salt) < probability
