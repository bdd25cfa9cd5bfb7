"""AVRIL pieces of X-KD, revision 3 (Chan & van der Schaar, 2021; docs/methods.md): pure functions on tensors.

Implied rewards δ_t of a trajectory under a Q mapping (``q_form``):
  * ``logprob``: Q(s, a) = log π(a | s), so V(s) = logsumexp Q = 0 and
    δ_t = log π(y_t | s_t) (soft-Q / IQ-Learn with the normalised policy); with
    ``td_target=sarsa`` δ_t = log π(y_t|s_t) − γ·log π(y_{t+1}|s_{t+1}) (AVRIL's Q(s', a')
    with the demonstrated next action: the next state enters);
  * ``shaped``: Q = log π(a|s) + Φ(s): δ_t = log π(y_t|s_t) + Φ(s_t) − γ·Φ(s_{t+1}),
    with Φ = 0 after the last output token (AIRL-style shaping, Fu et al. 2018);
  * ``logits``: revision 1, Q = z/τ: δ_t = Q(s_t, y_t) − γ·next, next = Q(s_{t+1}, y_{t+1})
    (``sarsa``) or logsumexp Q(s_{t+1}, ·) (``soft``). Not invariant to per-state
    logit shifts; an ablation only.
The first two are unchanged when all logits of one state move by a constant
(softmax ignores it); the third moves by c(s_t) − γ·c(s_{t+1}).
"""

from __future__ import annotations

import math

import torch

Q_FORMS = ("logprob", "shaped", "logits")


def _taken(values: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return values.gather(-1, targets.unsqueeze(-1)).squeeze(-1)


def _next(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """values[:, t+1] where position t+1 is an output token too, else 0 (nothing follows the last one)."""
    follows = torch.cat([mask[:, 1:], torch.zeros_like(mask[:, :1])], dim=1)
    return torch.cat([values[:, 1:], torch.zeros_like(values[:, :1])], dim=1) * follows


TD_TARGETS = {"logprob": ("none", "sarsa"), "shaped": ("none",), "logits": ("sarsa", "soft")}  # first: default


def implied_rewards(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor, q_form: str,
                    kd_temperature: float = 1.0, gamma: float = 1.0, potential: torch.Tensor | None = None,
                    td_target: str | None = None) -> torch.Tensor:
    """[B, L] δ_t of the tokens ``targets`` under the policy softmax(logits / τ) (see the module docstring).

    ``potential`` is Φ(s_t) per position ([B, L]) for ``q_form="shaped"``. ``td_target`` (None: the q_form's
    default, ``TD_TARGETS``): ``sarsa`` subtracts γ·Q(s_{t+1}, y_{t+1}) of the demonstrated next action (with
    ``logprob``: γ·log π(y_{t+1} | s_{t+1}), still shift-invariant), ``soft`` γ·logsumexp Q(s_{t+1}, ·).
    """
    if q_form not in TD_TARGETS:
        raise ValueError(f"q_form must be one of {Q_FORMS}, got {q_form!r}")
    td_target = TD_TARGETS[q_form][0] if td_target is None else td_target
    if td_target not in TD_TARGETS[q_form]:
        raise ValueError(f"td_target={td_target!r} does not apply to q_form={q_form!r}; use one of {TD_TARGETS[q_form]}")
    scaled = logits.float() / kd_temperature
    if q_form in ("logprob", "shaped"):
        delta = _taken(torch.log_softmax(scaled, -1), targets)
        if q_form == "shaped":
            if potential is None:
                raise ValueError("q_form='shaped' needs the potential Φ(s_t)")
            return delta + potential - gamma * _next(potential, mask)
        return delta - gamma * _next(delta, mask) if td_target == "sarsa" else delta
    q_taken = _taken(scaled, targets)
    next_value = q_taken if td_target == "sarsa" else torch.logsumexp(scaled, dim=-1)
    return q_taken - gamma * _next(next_value, mask)


def gaussian_nll(value: torch.Tensor, mu: torch.Tensor, log_sigma: torch.Tensor) -> torch.Tensor:
    """−log N(value; μ, σ²) per element."""
    return 0.5 * math.log(2 * math.pi) + log_sigma + 0.5 * ((value - mu) * torch.exp(-log_sigma)) ** 2


def gaussian_kl_to_prior(mu: torch.Tensor, log_sigma: torch.Tensor, prior_std: float) -> torch.Tensor:
    """KL(N(μ, σ²) ‖ N(0, σ0²)) per element."""
    return math.log(prior_std) - log_sigma + (torch.exp(2 * log_sigma) + mu**2) / (2 * prior_std**2) - 0.5


def student_consistency(delta_student: torch.Tensor, mu: torch.Tensor, log_sigma: torch.Tensor,
                        min_std: float) -> torch.Tensor:
    """α term: −log N(δ^S; sg μ, max(sg σ, σ_min)²). Trains the student only; the floor keeps 1/σ² bounded.

    With μ = log p and σ = 1, E_{y~q}[∇] = ∇KL(q ‖ p) per state: an uncertainty-weighted reverse KL.
    """
    floor = torch.clamp(log_sigma.detach(), min=math.log(min_std))
    return gaussian_nll(delta_student, mu.detach(), floor)


def sequence_returns(delta: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[B] mean of δ_t over each output's tokens (with γ = 1 per-state offsets telescope)."""
    return (delta * mask).sum(1) / mask.sum(1).clamp(min=1)


def masked_correlation(x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Pearson correlation of x and y over the masked elements (0 when either is constant there); detached."""
    x, y, mask = x.detach().float(), y.detach().float(), mask.float()
    n = mask.sum().clamp(min=1)
    dx, dy = (x - (x * mask).sum() / n) * mask, (y - (y * mask).sum() / n) * mask
    denominator = (dx.pow(2).sum() * dy.pow(2).sum()).sqrt()
    return torch.where(denominator > 0, (dx * dy).sum() / denominator.clamp(min=1e-30), torch.zeros_like(denominator))


def gradient_norm_ratio(numerator: list, denominator: list, params: list[torch.Tensor]) -> torch.Tensor:
    """‖∇ Σ terms of ``numerator``‖ / ‖∇ Σ terms of ``denominator``‖ over ``params`` (detached; 0/0 = 0).

    Each ``Term`` is reduced as a mean over its own mask with its weight, on this micro-batch: the window's
    token count would scale both sides alike. The graph is kept for the training backward that follows.
    """
    params = [p for p in params if p.requires_grad]

    def norm(terms) -> torch.Tensor:
        total = sum(t.weight * (t.per_token * t.mask).sum() / t.mask.sum().clamp(min=1) for t in terms)
        grads = torch.autograd.grad(total, params, retain_graph=True, allow_unused=True)
        squares = [(g.float() ** 2).sum() for g in grads if g is not None]
        return torch.stack(squares).sum().sqrt() if squares else torch.zeros((), device=params[0].device)

    top, bottom = norm(numerator), norm(denominator)
    return torch.where(bottom > 0, top / bottom.clamp(min=1e-30), torch.zeros_like(bottom)).detach()
