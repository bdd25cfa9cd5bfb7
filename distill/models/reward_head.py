"""X-KD's variational reward head q_φ(r | s) = N(μ_φ(s), σ_φ(s)²) (SPEC §6).

Small on purpose (linear or one hidden layer): it reads detached state
features, so it never back-propagates into either model's body. Trained with
the student and checkpointed with it, but not part of the exported student.
"""

from __future__ import annotations

import torch
from torch import nn

LOG_SIGMA_RANGE = (-5.0, 5.0)  # keeps σ away from 0 and ∞ early in training


class RewardHead(nn.Module):
    def __init__(self, feature_dim: int, hidden: int, vocab_size: int, action_dim: int, state_action: bool):
        super().__init__()
        # State-action rewards append a learned embedding of the action y_t to the state features.
        self.action = nn.Embedding(vocab_size, action_dim) if state_action else None
        width = feature_dim + (action_dim if state_action else 0)
        self.net = nn.Linear(width, 2) if hidden == 0 else nn.Sequential(nn.Linear(width, hidden), nn.Tanh(), nn.Linear(hidden, 2))

    def forward(self, features: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(μ, log σ), each [B, L], from detached features [B, L, H] and actions [B, L]."""
        x = features.detach().float()
        if self.action is not None:
            x = torch.cat([x, self.action(actions)], dim=-1)
        mu, log_sigma = self.net(x).unbind(-1)
        return mu, log_sigma.clamp(*LOG_SIGMA_RANGE)
