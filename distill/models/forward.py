"""One forward pass, returned in the target-aligned view every loss uses.

Row t of ``logits`` is the distribution that predicts ``targets[:, t]``;
``mask`` is 1 exactly on output tokens (EOS included). Decoder-only models
predict token t from position t-1, so their view drops the first position.
Logits at masked positions are set to 0 (in place): whatever a model puts
there (inf from an overflow at padding, NaN) never reaches a loss, and their
gradient is exactly 0 rather than 0·inf = NaN.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class TokenView:
    logits: torch.Tensor  # [B, L, V]
    targets: torch.Tensor  # [B, L] token ids
    mask: torch.Tensor  # [B, L] float, 1 on output tokens
    hidden: torch.Tensor | None = None  # [B, L, H] last hidden state at the predicting position (state s_t)
    action_hidden: torch.Tensor | None = None  # [B, L, H] at y_t's own position (has seen s_t and y_t)


def token_view(model, batch: dict[str, torch.Tensor], output_hidden: bool = False) -> TokenView:
    """Logits, targets and mask aligned row by row; with ``output_hidden`` the last hidden states too."""
    if model.config.is_encoder_decoder:
        return _seq2seq_view(model, batch, output_hidden)
    attention = batch["attention_mask"]
    # Positions from the mask: left-padded batches (prompts + generated outputs) get the same
    # positions as right-padded ones; for right padding this equals the default arange.
    positions = (attention.cumsum(-1) - 1).clamp(min=0)
    out = model(input_ids=batch["input_ids"], attention_mask=attention, position_ids=positions,
                output_hidden_states=output_hidden)
    hidden = out.hidden_states[-1] if output_hidden else None
    mask = batch["loss_mask"][:, 1:].float()
    return TokenView(_zero_masked(out.logits[:, :-1], mask), batch["input_ids"][:, 1:], mask,
                     hidden[:, :-1] if output_hidden else None, hidden[:, 1:] if output_hidden else None)


def _seq2seq_view(model, batch: dict[str, torch.Tensor], output_hidden: bool) -> TokenView:
    labels, mask = batch["labels"], batch["loss_mask"].float()
    decoder_input_ids = model.prepare_decoder_input_ids_from_labels(labels=labels)
    decoder_attention = _decoder_attention(batch)
    if output_hidden:  # one more decoder position: the hidden state at the last output token's own position
        decoder_input_ids = torch.cat([decoder_input_ids, labels[:, -1:].clamp(min=0)], 1)
        decoder_attention = torch.cat([decoder_attention, batch["loss_mask"][:, -1:]], 1)
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                decoder_input_ids=decoder_input_ids, decoder_attention_mask=decoder_attention,
                output_hidden_states=output_hidden)
    length = labels.size(1)
    logits = out.logits[:, :length]
    hidden = out.decoder_hidden_states[-1] if output_hidden else None
    return TokenView(_zero_masked(logits, mask), labels, mask, hidden[:, :length] if output_hidden else None,
                     hidden[:, 1:] if output_hidden else None)


def _zero_masked(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Zeros at masked rows, in place: the output projection's backward needs its input, not its output,
    so autograd allows it, and it costs no second copy of the logits."""
    return logits.masked_fill_(mask[..., None] == 0, 0.0)


def _decoder_attention(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    # The decoder input is labels shifted right by one (start token first), so
    # the attention mask covers the start token plus all but the last label.
    mask = batch["loss_mask"]
    return torch.cat([torch.ones_like(mask[:, :1]), mask[:, :-1]], dim=1)
