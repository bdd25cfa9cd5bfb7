"""Policy-gradient pieces of GKD+RL and MiniLLM (Gu et al., 2024), as pure functions on tensors."""

from __future__ import annotations

import math

import torch


def discounted_future(rewards: torch.Tensor, mask: torch.Tensor, gamma: float, length_norm: bool) -> torch.Tensor:
    """R_{t+1} = Σ_{t'>t} γ^{t'−t} r_{t'} over output tokens; / (tokens after t) with ``length_norm``.

    Computed right to left: G_t = r_t + γ·G_{t+1} on masked rewards, then
    R_{t+1} = γ·G_{t+1}. Zero at the last output token (nothing follows it).
    """
    r = rewards * mask
    future = torch.zeros_like(r)
    running = torch.zeros_like(r[:, 0])
    for t in range(r.size(1) - 1, -1, -1):
        future[:, t] = gamma * running
        running = r[:, t] + gamma * running
    if length_norm:
        after = mask.flip(1).cumsum(1).flip(1) - mask  # output tokens strictly after t
        future = future / after.clamp(min=1)
    return future * mask


def importance_weights(log_q: torch.Tensor, log_p: torch.Tensor, teacher_mix: float, clip: float) -> torch.Tensor:
    """q(y_t) / ((1−α)q(y_t) + αp(y_t)) for tokens sampled from that mixture; detached and clipped."""
    if teacher_mix == 0:
        return torch.ones_like(log_q)
    log_mix = torch.logaddexp(log_q + math.log1p(-teacher_mix), log_p + math.log(teacher_mix))
    return (log_q - log_mix).exp().clamp(max=clip).detach()


def clipped_policy_gradient(log_q: torch.Tensor, old_log_q: torch.Tensor, advantage: torch.Tensor,
                            clip_ratio: float | None) -> torch.Tensor:
    """Per-token −A·ratio (PPO-clipped when ``clip_ratio`` is set); ratio = q_θ / q_sampling."""
    ratio = (log_q - old_log_q).exp()
    loss = -advantage * ratio
    if clip_ratio is None:
        return loss
    return torch.maximum(loss, -advantage * ratio.clamp(1 - clip_ratio, 1 + clip_ratio))


def leave_one_out_advantage(rewards: torch.Tensor, window_sum: torch.Tensor, window_count: torch.Tensor) -> torch.Tensor:
    """r_i − (mean reward of the window's other samples): REINFORCE's baseline without bias.

    ``window_sum`` and ``window_count`` are Σ r and the number of samples over
    the whole optimizer step (every micro-batch of the accumulation window, all
    ranks), so the advantage does not depend on how the window is split: with a
    per-micro-batch mean, micro-batch 1 gives advantage 0. A baseline that
    leaves the sample itself out keeps E[A·∇log q] = ∇E[r]. A window of one
    sample has no baseline.
    """
    others = (window_sum - rewards) / (window_count - 1).clamp(min=1)
    return torch.where(window_count > 1, rewards - others, rewards)
