"""X-KD's heads (docs/design.md, X-KD): the reward q_φ(r | s, a) = N(μ, σ²), and the potential Φ_ψ(s).

Small on purpose (linear or one hidden layer). They read detached features,
so they never back-propagate into either model's body. Trained with the
student and checkpointed with it, but not part of the exported student.
The reward head reads the hidden state at y_t's own position, which has seen
(x, y_≤t): the reward is state–action, r(s_t, y_t), without an action
embedding. The potential reads the state s_t (the position that predicts y_t).
"""

from __future__ import annotations

import torch
from torch import nn

LOG_SIGMA_RANGE = (-5.0, 5.0)  # keeps σ away from 0 and ∞ early in training


def _mlp(width: int, hidden: int, outputs: int) -> nn.Module:
    if hidden == 0:
        return nn.Linear(width, outputs)
    return nn.Sequential(nn.Linear(width, hidden), nn.Tanh(), nn.Linear(hidden, outputs))


class RewardHead(nn.Module):
    def __init__(self, feature_dim: int, hidden: int):
        super().__init__()
        self.net = _mlp(feature_dim, hidden, 2)

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(μ, log σ), each [...], from detached features [..., H]."""
        mu, log_sigma = self.net(features.detach().float()).unbind(-1)
        return mu, log_sigma.clamp(*LOG_SIGMA_RANGE)


class PotentialHead(nn.Module):
    """Φ_ψ(s) for ``q_form=shaped``: the shaping freedom of the Q-values, modelled explicitly."""

    def __init__(self, feature_dim: int, hidden: int):
        super().__init__()
        self.net = _mlp(feature_dim, hidden, 1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net(features.detach().float()).squeeze(-1)
