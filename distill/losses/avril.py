"""AVRIL pieces used by X-KD (Chan & van der Schaar, 2021; SPEC §6), pure functions on [B, L] tensors."""

from __future__ import annotations

import math

import torch


def td_rewards(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor, kd_temperature: float,
               gamma: float, td_target: str) -> torch.Tensor:
    """TD-implied rewards δ_t = Q(s_t, y_t) − γ·Q(s_{t+1}, y_{t+1}) with Q = logits / τ.

    ``td_target="soft"`` uses logsumexp_a Q(s_{t+1}, a) for the next value. At
    the last output token (nothing follows) δ_T = Q(s_T, y_T).
    """
    q = logits.float() / kd_temperature
    q_taken = q.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    if td_target == "sarsa":
        next_value = q_taken
    elif td_target == "soft":
        next_value = torch.logsumexp(q, dim=-1)
    else:
        raise ValueError(f"td_target must be 'sarsa' or 'soft', got {td_target!r}")
    # s_{t+1} exists only where position t+1 is an output token too
    follows = torch.cat([mask[:, 1:], torch.zeros_like(mask[:, :1])], dim=1)
    shifted = torch.cat([next_value[:, 1:], torch.zeros_like(next_value[:, :1])], dim=1)
    return q_taken - gamma * shifted * follows


def gaussian_nll(value: torch.Tensor, mu: torch.Tensor, log_sigma: torch.Tensor) -> torch.Tensor:
    """−log N(value; μ, σ²) per element."""
    return 0.5 * math.log(2 * math.pi) + log_sigma + 0.5 * ((value - mu) * torch.exp(-log_sigma)) ** 2


def gaussian_kl_to_prior(mu: torch.Tensor, log_sigma: torch.Tensor, prior_std: float) -> torch.Tensor:
    """KL(N(μ, σ²) ‖ N(0, σ0²)) per element."""
    return math.log(prior_std) - log_sigma + (torch.exp(2 * log_sigma) + mu**2) / (2 * prior_std**2) - 0.5
