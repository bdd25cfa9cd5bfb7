"""One forward pass, returned in the target-aligned view every loss uses.

Row t of ``logits`` is the distribution that predicts ``targets[:, t]``;
``mask`` is 1 exactly on output tokens (EOS included). Decoder-only models
predict token t from position t-1, so their view drops the first position.
Logits at masked positions are set to 0 (in place): whatever a model puts
there (inf from an overflow at padding, NaN) never reaches a loss, and their
gradient is exactly 0 rather than 0·inf = NaN.
"""

from __future__ import annotations

import inspect
from contextlib import contextmanager
from dataclasses import dataclass

import torch


@dataclass
class TokenView:
    logits: torch.Tensor | None  # [B, L, V]; None in a fused view (head_input and head_weight instead)
    targets: torch.Tensor  # [B, L] token ids
    mask: torch.Tensor  # [B, L] float, 1 on output tokens
    hidden: torch.Tensor | None = None  # [B, L, H] last hidden state at the predicting position (state s_t)
    action_hidden: torch.Tensor | None = None  # [B, L, H] at y_t's own position (has seen s_t and y_t)
    # Fused view (distill.losses.fused_linear): what the output projection would see, and the projection;
    # logits = head_input @ head_weight.T, formed a chunk of rows at a time inside the loss, never whole.
    head_input: torch.Tensor | None = None  # [B, L, H]
    head_weight: torch.Tensor | None = None  # [V, H]

    @property
    def fused(self) -> bool:
        return self.logits is None


# Encoder–decoder families whose logits are exactly lm_head(decoder output · scale): T5's forward multiplies the
# decoder output by d_model^-0.5 when the head is tied (config.scale_decoder_outputs); nothing follows the head.
FUSED_SEQ2SEQ_TYPES = ("t5", "mt5")


def fused_head_unsupported(model) -> str | None:
    """Why ``model``'s logits cannot be formed from its last hidden state and output weight alone (None: they can).

    The fused path needs logits = h · Wᵀ exactly: no bias, no soft-capping or scaling after the projection, and a
    forward that can skip the full logits (decoder-only models with ``logits_to_keep``; T5, whose head is swapped
    for a pass-through during the forward)."""
    if model.config.is_encoder_decoder and model.config.model_type not in FUSED_SEQ2SEQ_TYPES:
        return f"{model.config.model_type}: only {', '.join(FUSED_SEQ2SEQ_TYPES)} among encoder-decoder models"
    if not model.config.is_encoder_decoder and "logits_to_keep" not in inspect.signature(model.forward).parameters:
        return f"{type(model).__name__}.forward cannot skip the full logits (no logits_to_keep)"
    head = model.get_output_embeddings()
    if head is None or getattr(head, "bias", None) is not None:
        return "the output projection has a bias"
    if getattr(model.config, "final_logit_softcapping", None) or getattr(model.config, "logit_scale", None):
        return "the logits are soft-capped or scaled after the projection"
    return None


FUSED_AUTO_VOCAB = 16_384  # fused_linear=auto: from this vocabulary size on, full logits dominate a step's memory


def fused_linear_choice(setting, student, teacher, unfusable: str | None = None) -> tuple[bool, str]:
    """(use the fused path, why) for ``fused_linear`` = auto | true | false; true where it cannot work is an error.
    ``unfusable``: why this run's losses need full logits whatever the models allow (the method's, or a cached
    teacher's), None when they can come from hidden states. FSDP2 needs no exception: its root unit (embeddings,
    final norm, output projection) stays gathered from the forward to the end of backward, so the view's head
    weight is the whole projection, and the gradients the loss puts on it are reduce-scattered with the rest."""
    from distill.errors import ConfigError

    if setting is False:
        return False, "fused_linear=false"
    reasons = [f"{role}: {why}" for role, model in (("student", student), ("teacher", teacher)) if model is not None
               for why in [fused_head_unsupported(model)] if why]
    if unfusable:
        reasons.append(unfusable)
    if reasons and setting is True:
        raise ConfigError(f"fused_linear=true is not possible here ({'; '.join(reasons)}); use fused_linear=auto or false")
    if reasons:
        return False, "; ".join(reasons)
    vocab = student.get_output_embeddings().weight.size(0)
    if setting == "auto" and vocab < FUSED_AUTO_VOCAB:
        return False, f"vocabulary {vocab} < {FUSED_AUTO_VOCAB}: full logits are small"
    return True, f"vocabulary {vocab}"


def check_fused_setting(setting) -> None:
    from distill.errors import ConfigError

    if setting not in ("auto", True, False):
        raise ConfigError(f"fused_linear must be auto, true or false, got {setting!r}")


def token_view(model, batch: dict[str, torch.Tensor], output_hidden: bool = False, fused: bool = False) -> TokenView:
    """Logits, targets and mask aligned row by row; with ``output_hidden`` the last hidden states too.
    ``fused``: no logits; the projection's input and weight instead (the caller checked fused_head_unsupported)."""
    if fused:
        return _fused_view(model, batch)
    if model.config.is_encoder_decoder:
        return _seq2seq_view(model, batch, output_hidden)
    attention = batch["attention_mask"]
    # Positions from the mask: left-padded batches (prompts + generated outputs) get the same
    # positions as right-padded ones; for right padding this equals the default arange.
    positions = (attention.cumsum(-1) - 1).clamp(min=0)
    out = model(input_ids=batch["input_ids"], attention_mask=attention, position_ids=positions,
                output_hidden_states=output_hidden)
    hidden = out.hidden_states[-1] if output_hidden else None
    targets, mask = view_targets(model, batch)
    return TokenView(_zero_masked(out.logits[:, :-1], mask), targets, mask,
                     hidden[:, :-1] if output_hidden else None, hidden[:, 1:] if output_hidden else None)


def _fused_view(model, batch: dict[str, torch.Tensor]) -> TokenView:
    """The view without logits. Decoder-only: logits_to_keep=1 leaves one position's logits, not [B, L, V].
    T5: the forward runs with a pass-through head, so its "logits" are the head's input (scaling included)."""
    if model.config.is_encoder_decoder:
        with _passthrough_head(model) as head:
            view = _seq2seq_view(model, batch, False, zero_masked=False)
        return TokenView(None, view.targets, view.mask, head_input=view.logits, head_weight=_whole(head.weight))
    attention = batch["attention_mask"]
    positions = (attention.cumsum(-1) - 1).clamp(min=0)
    out = model(input_ids=batch["input_ids"], attention_mask=attention, position_ids=positions,
                output_hidden_states=True, logits_to_keep=1)
    hidden = out.hidden_states[-1]  # after the final norm: what the output projection sees
    return TokenView(None, *view_targets(model, batch), head_input=hidden[:, :-1],
                     head_weight=_whole(model.get_output_embeddings().weight))


def _whole(weight: torch.Tensor) -> torch.Tensor:
    """The output projection as the forward used it. Under FSDP2 the root unit holding it stays gathered from
    forward to backward, so this is the unsharded parameter whose gradient FSDP2 reduce-scatters; a shard here
    would take the loss's gradient without that reduction, so it is refused rather than gathered. A frozen
    teacher's may be a shard: nothing flows back to it, and its loss gathers it once (trajectories.teacher_target)."""
    if hasattr(weight, "full_tensor") and weight.requires_grad:
        raise RuntimeError("the output projection was resharded after the forward; the fused loss needs the FSDP2 "
                           "root unit to stay gathered until backward (fused_linear=false avoids it)")
    return weight


class _PassThrough(torch.nn.Module):
    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return hidden


@contextmanager
def _passthrough_head(model):
    """The model's output projection replaced by the identity for one forward (no parameters change: DDP's
    hooks and the optimizer still see the real head, which the fused loss then uses)."""
    head = model.get_output_embeddings()
    model.set_output_embeddings(_PassThrough())
    try:
        yield head
    finally:
        model.set_output_embeddings(head)


def view_targets(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(targets, mask) of ``model``'s view of ``batch``, row-aligned with its logits."""
    if model.config.is_encoder_decoder:
        return batch["labels"], batch["loss_mask"].float()
    return batch["input_ids"][:, 1:], batch["loss_mask"][:, 1:].float()


def _seq2seq_view(model, batch: dict[str, torch.Tensor], output_hidden: bool, zero_masked: bool = True) -> TokenView:
    labels, mask = view_targets(model, batch)
    decoder_input_ids = model.prepare_decoder_input_ids_from_labels(labels=labels)
    decoder_attention = _decoder_attention(batch)
    if output_hidden:  # one more decoder position: the hidden state at the last output token's own position
        decoder_input_ids = torch.cat([decoder_input_ids, labels[:, -1:].clamp(min=0)], 1)
        decoder_attention = torch.cat([decoder_attention, _output_tokens(batch)[:, -1:]], 1)
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                decoder_input_ids=decoder_input_ids, decoder_attention_mask=decoder_attention,
                output_hidden_states=output_hidden)
    length = labels.size(1)
    logits = out.logits[:, :length]
    hidden = out.decoder_hidden_states[-1] if output_hidden else None
    return TokenView(_zero_masked(logits, mask) if zero_masked else logits, labels, mask,
                     hidden[:, :length] if output_hidden else None,
                     hidden[:, 1:] if output_hidden else None)


def _zero_masked(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Zeros at masked rows, in place: the output projection's backward needs its input, not its output,
    so autograd allows it, and it costs no second copy of the logits."""
    return logits.masked_fill_(mask[..., None] == 0, 0.0)


def _output_tokens(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """1 on every output token: ``output_mask`` where a method trains on some of them only (OSD's kept
    positions, weighted, in ``loss_mask``), else ``loss_mask``."""
    return (batch.get("output_mask", batch["loss_mask"]) > 0).long()


def _decoder_attention(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    # The decoder input is labels shifted right by one (start token first), so
    # the attention mask covers the start token plus all but the last label.
    mask = _output_tokens(batch)
    return torch.cat([torch.ones_like(mask[:, :1]), mask[:, :-1]], dim=1)
