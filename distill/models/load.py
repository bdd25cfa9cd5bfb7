"""Model construction and loading: tiny presets from config, hub ids, local paths.

The Auto class (causal LM or seq2seq LM) follows the model's own config, so
a user names a model and never an architecture.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from distill.errors import ModelError

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class ModelSpec:
    """Plain mirror of ``conf/teacher/*.yaml`` / ``conf/student/*.yaml``; fields documented there."""

    name: str
    pretrained: str | None
    config: dict[str, Any] | None
    torch_dtype: str
    bootstrap: dict[str, Any]
    # A tiny preset's tokenizer: None, the task's tiny tokenizer (tokenizer.vocab_size); an integer, a tiny
    # tokenizer of that size; a path, that tokenizer. A teacher with another tokenizer than the student's needs
    # divergence.cross_tokenizer=true.
    tokenizer: Any = None

    def __post_init__(self) -> None:
        if self.tokenizer is not None and not isinstance(self.tokenizer, (int, str)) or isinstance(self.tokenizer,
                                                                                                   bool):
            raise ModelError(f"model preset {self.name}: tokenizer must be null, a vocabulary size or a path, got "
                             f"{self.tokenizer!r}")
        if (self.pretrained is None) == (self.config is None):
            raise ModelError(f"model preset {self.name}: set exactly one of `pretrained` (hub id or path) and `config` (tiny preset)")
        if self.torch_dtype not in DTYPES:
            raise ModelError(f"model preset {self.name}: torch_dtype must be one of {sorted(DTYPES)}, got {self.torch_dtype}")

    @property
    def is_tiny(self) -> bool:
        return self.config is not None


def _auto_config(name_or_path: str):
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(name_or_path)
    except (OSError, ValueError) as exc:
        if Path(name_or_path).expanduser().exists():
            raise ModelError(f"{name_or_path} is not a model directory (no usable config.json): {exc}".splitlines()[0]) from None
        raise ModelError(
            f"cannot load model {name_or_path!r}: not a local directory and not reachable on the hub "
            "(offline?); set the preset's `pretrained` to a local path or use a tiny preset (teacher=tiny / student=tiny)"
        ) from None


def spec_config(spec: ModelSpec):
    """The transformers config a preset will build or load, without building or loading weights."""
    from transformers import AutoConfig

    if spec.is_tiny:
        return AutoConfig.for_model(**spec.config)
    return _auto_config(spec.pretrained)


def position_limit(config) -> int | None:
    return getattr(config, "n_positions", None) or getattr(config, "max_position_embeddings", None)


def check_pair(student: ModelSpec, teacher: ModelSpec | None, max_output_length: int,
               length_key: str = "task.max_target_length") -> None:
    """Before anything is built: the output (``length_key`` tokens) fits the models' positions, and teacher and
    student share an architecture family (token-level distillation compares them position by position)."""
    configs = {"student": spec_config(student), **({"teacher": spec_config(teacher)} if teacher else {})}
    for role, config in configs.items():
        limit = position_limit(config)
        if not config.is_encoder_decoder and limit is not None and max_output_length >= limit:
            raise ModelError(f"{role} {(student if role == 'student' else teacher).name} has {limit} positions, too few "
                             f"for {max_output_length} output tokens; lower {length_key} or pick a larger model")
    if teacher is not None and configs["student"].is_encoder_decoder != configs["teacher"].is_encoder_decoder:
        kind = lambda c: "an encoder-decoder" if c.is_encoder_decoder else "decoder-only"  # noqa: E731
        same = "tiny_t5 or t5_*" if configs["student"].is_encoder_decoder else "tiny or qwen2.5_*"
        raise ModelError(f"student {student.name} is {kind(configs['student'])} but teacher {teacher.name} is "
                         f"{kind(configs['teacher'])}; distillation needs both of one kind: use teacher={same}")


def _auto_class(encoder_decoder: bool):
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

    return AutoModelForSeq2SeqLM if encoder_decoder else AutoModelForCausalLM


def build_tiny(spec: ModelSpec, tokenizer, seed: int) -> torch.nn.Module:
    """A randomly initialised preset whose vocabulary is the tokenizer's."""
    from transformers import AutoConfig

    special = {"pad_token_id": tokenizer.pad_token_id, "eos_token_id": tokenizer.eos_token_id,
               "bos_token_id": tokenizer.bos_token_id, "decoder_start_token_id": tokenizer.pad_token_id}
    config = AutoConfig.for_model(**spec.config, vocab_size=len(tokenizer), **special)
    torch.manual_seed(seed)
    model = _auto_class(config.is_encoder_decoder).from_config(config)
    _align_generation_config(model, tokenizer)
    return model


def _align_generation_config(model, tokenizer) -> None:
    gen = model.generation_config
    gen.pad_token_id = tokenizer.pad_token_id
    gen.eos_token_id = tokenizer.eos_token_id
    if model.config.is_encoder_decoder:
        gen.decoder_start_token_id = model.config.decoder_start_token_id


def load_model(name_or_path: str, torch_dtype: str = "float32"):
    """(model, tokenizer) from a hub id or a directory in ``save_pretrained`` format.

    A directory distill wrote (``final/``, bootstraps) carries a manifest: it is
    verified first, so a truncated or altered weights file is named as such.
    """
    from distill.io import MANIFEST, verify_manifest

    local = Path(name_or_path).expanduser()
    if (local / MANIFEST).is_file():
        problem = verify_manifest(local)
        if problem:
            raise ModelError(f"{local} is damaged ({problem}); re-create it (re-run the training command)")
    config = _auto_config(name_or_path)
    try:
        model = _auto_class(config.is_encoder_decoder).from_pretrained(name_or_path, dtype=DTYPES[torch_dtype])
    except Exception as exc:  # a truncated or foreign weights file surfaces as many exception types
        raise ModelError(f"cannot load model weights from {name_or_path} ({type(exc).__name__}: {exc}); "
                         "is the file complete?".replace("\n", " ")) from None
    tokenizer = load_tokenizer(name_or_path)
    _align_generation_config(model, tokenizer)
    return model, tokenizer


def load_tokenizer(name_or_path: str):
    """The tokenizer alone (no weights), with a pad token."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path)
    except OSError as exc:
        raise ModelError(f"cannot load model or tokenizer from {name_or_path}: {exc}".splitlines()[0]) from None
    if tokenizer.pad_token_id is None:  # GPT-2/Llama style tokenizers ship without a pad token
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def resolve_checkpoint(path: str | Path) -> Path:
    """The HF-format model directory behind a run dir, a ``final/`` dir or a ``checkpoints/step-N`` dir."""
    path = Path(path).expanduser()
    if not path.exists():
        raise ModelError(f"checkpoint {path} does not exist; pass ckpt=<run dir>, <run dir>/final or <run dir>/checkpoints/step-N")
    for candidate in (path, path / "final", path / "student"):
        if (candidate / "config.json").exists():
            return candidate
    raise ModelError(f"{path} is not a checkpoint (no config.json in it, in final/ or in student/)")


def check_same_vocabulary(teacher_tokenizer, student_tokenizer, roles: tuple[str, str] = ("teacher", "student")) -> None:
    """Token-level KD (and speculative decoding, roles target/draft) compares distributions index by index:
    the vocabularies must be identical."""
    t_vocab, s_vocab = teacher_tokenizer.get_vocab(), student_tokenizer.get_vocab()
    if t_vocab == s_vocab:
        return
    differing = sorted(set(t_vocab.items()) ^ set(s_vocab.items()))[:3]
    big, small = roles
    raise ModelError(
        f"{big} and {small} vocabularies differ ({big} {len(t_vocab)} tokens, {small} {len(s_vocab)}; "
        f"e.g. {differing}); they must share one tokenizer: pick a {big} and {small} of the same family"
        + (", or set divergence.cross_tokenizer=true (supervised_kd, gkd)" if roles == ("teacher", "student") else "")
    )


def parameter_count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def fit_lengths(model, max_source_length: int, max_output_length: int) -> tuple[int, int]:
    """Prompt and output budgets that fit the model's position window.

    Decoder-only models read prompt and output in one window of
    ``n_positions`` / ``max_position_embeddings``; the prompt budget shrinks
    to make room (its head and tail are kept). Encoder-decoders are unaffected.
    """
    config = model.config
    if config.is_encoder_decoder:
        return max_source_length, max_output_length
    limit = getattr(config, "n_positions", None) or getattr(config, "max_position_embeddings", None)
    if limit is None or max_source_length + max_output_length <= limit:
        return max_source_length, max_output_length
    if max_output_length >= limit:
        raise ModelError(f"output length {max_output_length} does not fit the model's {limit} positions; "
                         "lower task.max_target_length / eval.max_new_tokens")
    log.warning("prompt budget cut from %d to %d tokens to fit the model's %d positions",
                max_source_length, limit - max_output_length, limit)
    return limit - max_output_length, max_output_length


def weights_fingerprint(model: torch.nn.Module) -> str:
    """sha256 over every tensor of the state dict (name, dtype, shape, bytes), as it sits in memory.

    Names the weights themselves, not where they came from: a teacher retrained
    at the same path, or loaded in another dtype, gets a new fingerprint.
    About 1.6 GB/s on one CPU core; computed only where a cache key needs it.
    """
    import hashlib

    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        tensor = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy())  # buffer protocol: no copy
    return digest.hexdigest()
