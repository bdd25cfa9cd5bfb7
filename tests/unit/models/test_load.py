"""distill.models.load: presets, tiny models, checkpoint resolution, vocabulary checks, offline errors."""

from __future__ import annotations

import json
import sys

import pytest
import torch
import yaml

from distill.errors import ModelError
from distill.models.load import (
    ModelSpec,
    build_tiny,
    check_same_vocabulary,
    load_model,
    parameter_count,
    resolve_checkpoint,
)
from distill.train.distributed import TEACHER_SHARDING

TINY_GPT2 = {"model_type": "gpt2", "n_layer": 1, "n_embd": 16, "n_head": 2, "n_positions": 64}
TINY_T5 = {"model_type": "t5", "d_model": 16, "d_kv": 8, "d_ff": 32, "num_layers": 1, "num_heads": 2}


def spec(**overrides) -> ModelSpec:
    fields = {"name": "t", "pretrained": None, "config": TINY_GPT2, "torch_dtype": "float32", "bootstrap": {"enabled": False}}
    fields.update(overrides)
    return ModelSpec(**fields)


def preset_files(repo_root):
    return sorted((repo_root / "conf" / "teacher").glob("*.yaml")) + sorted((repo_root / "conf" / "student").glob("*.yaml"))


# ---------------------------------------------------------------------------
# ModelSpec


def test_every_preset_yaml_is_a_valid_modelspec(repo_root):
    files = preset_files(repo_root)
    assert files
    for path in files:
        values = yaml.safe_load(path.read_text(encoding="utf-8"))
        if path.parent.name == "teacher":  # placement and a cache: the run's, read by distill.config
            assert values.pop("sharding") in TEACHER_SHARDING, path
            assert values.pop("cache") is None, path  # a preset never names a cache: a run does
        s = ModelSpec(**values)
        assert s.is_tiny == (s.config is not None), path


@pytest.mark.parametrize(
    "overrides, fragment",
    [
        ({"pretrained": "gpt2", "config": TINY_GPT2}, "exactly one"),
        ({"pretrained": None, "config": None}, "exactly one"),
        ({"torch_dtype": "float64"}, "torch_dtype"),
        ({"torch_dtype": "fp16"}, "torch_dtype"),
    ],
)
def test_modelspec_validation(overrides, fragment):
    with pytest.raises(ModelError, match=fragment) as info:
        spec(**overrides)
    assert "\n" not in str(info.value)




# ---------------------------------------------------------------------------
# build_tiny


@pytest.mark.parametrize("config, encoder_decoder", [(TINY_GPT2, False), (TINY_T5, True)], ids=["gpt2", "t5"])
def test_build_tiny_uses_the_tokenizers_vocabulary(tiny_tokenizer, config, encoder_decoder):
    model = build_tiny(spec(config=config), tiny_tokenizer, seed=0)
    assert model.config.is_encoder_decoder is encoder_decoder
    assert model.config.vocab_size == len(tiny_tokenizer)
    assert model.get_input_embeddings().weight.shape[0] == len(tiny_tokenizer)
    assert model.get_output_embeddings().weight.shape[0] == len(tiny_tokenizer)
    assert model.config.pad_token_id == tiny_tokenizer.pad_token_id
    assert model.config.eos_token_id == tiny_tokenizer.eos_token_id
    assert model.generation_config.pad_token_id == tiny_tokenizer.pad_token_id
    assert model.generation_config.eos_token_id == tiny_tokenizer.eos_token_id
    if encoder_decoder:
        assert model.generation_config.decoder_start_token_id == tiny_tokenizer.pad_token_id


def test_build_tiny_is_seeded(tiny_tokenizer):
    a = build_tiny(spec(), tiny_tokenizer, seed=3)
    b = build_tiny(spec(), tiny_tokenizer, seed=3)
    c = build_tiny(spec(), tiny_tokenizer, seed=4)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)
    assert parameter_count(a) == sum(p.numel() for p in a.parameters()) > 0


# ---------------------------------------------------------------------------
# resolve_checkpoint


def write_config(directory):
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    return directory


def test_resolve_run_dir_with_final(tmp_path):
    run = tmp_path / "run"
    final = write_config(run / "final")
    (run / "checkpoints" / "step-10").mkdir(parents=True)
    assert resolve_checkpoint(run) == final


def test_resolve_final_dir_itself(tmp_path):
    final = write_config(tmp_path / "run" / "final")
    assert resolve_checkpoint(final) == final


def test_resolve_checkpoint_step_dir_with_student(tmp_path):
    step = tmp_path / "run" / "checkpoints" / "step-200"
    student = write_config(step / "student")
    (step / "optimizer.pt").write_bytes(b"")
    assert resolve_checkpoint(step) == student


def test_resolve_accepts_str_and_user_paths(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    final = write_config(tmp_path / "run" / "final")
    assert resolve_checkpoint(str(tmp_path / "run")) == final
    assert resolve_checkpoint("~/run").resolve() == final.resolve()


def test_resolve_missing_path(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(ModelError) as info:
        resolve_checkpoint(missing)
    message = str(info.value)
    assert str(missing) in message and "does not exist" in message
    assert "ckpt=" in message  # says what to pass instead
    assert "\n" not in message


def test_resolve_empty_dir(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelError) as info:
        resolve_checkpoint(empty)
    message = str(info.value)
    assert str(empty) in message and "not a checkpoint" in message
    assert "\n" not in message


def test_save_then_load_model_from_run_dir(tiny_tokenizer, tmp_path):
    """A run dir's final/ in save_pretrained format loads back to the same model and tokenizer."""
    model = build_tiny(spec(), tiny_tokenizer, seed=1).eval()
    final = tmp_path / "run" / "final"
    model.save_pretrained(final)
    tiny_tokenizer.save_pretrained(final)
    loaded, tokenizer = load_model(str(resolve_checkpoint(tmp_path / "run")))
    check_same_vocabulary(tiny_tokenizer, tokenizer)
    ids = torch.tensor([tiny_tokenizer("Ava has 3 pens.")["input_ids"]])
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()(ids).logits, model(ids).logits)
    assert loaded.generation_config.pad_token_id == tiny_tokenizer.pad_token_id


# ---------------------------------------------------------------------------
# check_same_vocabulary


def test_same_vocabulary_passes(tiny_tokenizer, tiny_corpus, tmp_path):
    from distill.models.tokenizer import build_tokenizer

    assert check_same_vocabulary(tiny_tokenizer, tiny_tokenizer) is None
    # teacher and student presets each build "their" tokenizer from the same texts: that must pass
    rebuilt = build_tokenizer(tiny_corpus, 400, tmp_path)  # 400 = conftest.TOKENIZER_VOCAB; another cache dir
    assert rebuilt is not tiny_tokenizer
    assert check_same_vocabulary(tiny_tokenizer, rebuilt) is None


def test_different_vocabularies_raise(tiny_tokenizer, gpt2_tokenizer_dir):
    from transformers import PreTrainedTokenizerFast

    gpt2 = PreTrainedTokenizerFast.from_pretrained(str(gpt2_tokenizer_dir))
    assert len(gpt2.get_vocab()) == 50257
    with pytest.raises(ModelError) as info:
        check_same_vocabulary(gpt2, tiny_tokenizer)
    message = str(info.value)
    assert "vocabularies differ" in message
    assert "50257" in message and str(len(tiny_tokenizer.get_vocab())) in message
    assert "\n" not in message
    with pytest.raises(ModelError):
        check_same_vocabulary(tiny_tokenizer, gpt2)


def test_vocabularies_differing_in_one_id_raise(tiny_tokenizer):
    class Fake:
        def __init__(self, vocab):
            self._vocab = vocab

        def get_vocab(self):
            return dict(self._vocab)

    vocab = tiny_tokenizer.get_vocab()
    swapped = dict(vocab)
    a, b = "0", "1"
    swapped[a], swapped[b] = vocab[b], vocab[a]  # same tokens, two ids swapped
    with pytest.raises(ModelError, match="vocabularies differ"):
        check_same_vocabulary(Fake(vocab), Fake(swapped))


# ---------------------------------------------------------------------------
# load_model errors


@pytest.fixture
def offline(monkeypatch):
    # Import first, then flip the flags the libraries read at import time; all restored afterwards.
    import huggingface_hub.constants
    import transformers  # noqa: F401

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    if "datasets.config" in sys.modules:
        monkeypatch.setattr(sys.modules["datasets.config"], "HF_HUB_OFFLINE", True, raising=False)


def test_load_model_offline_hub_name_fails_in_one_line(offline):
    name = "nonexistent-org/no-such-model-for-distill-tests"
    with pytest.raises(ModelError) as info:
        load_model(name)
    message = str(info.value)
    assert name in message
    assert "pretrained" in message and "tiny" in message  # says what to set instead
    assert "\n" not in message


def test_load_model_existing_dir_without_config(offline, tmp_path):
    directory = tmp_path / "not-a-model"
    directory.mkdir()
    (directory / "readme.txt").write_text("hello")
    with pytest.raises(ModelError) as info:
        load_model(str(directory))
    message = str(info.value)
    assert str(directory) in message and "config.json" in message
    assert "\n" not in message


# ---------------------------------------------------------------------------
# fit_lengths


def fake_model(**config):
    from types import SimpleNamespace

    return SimpleNamespace(config=SimpleNamespace(**config))


def test_fit_lengths_leaves_encoder_decoders_alone():
    from distill.models.load import fit_lengths

    assert fit_lengths(fake_model(is_encoder_decoder=True, n_positions=16), 1024, 64) == (1024, 64)


@pytest.mark.parametrize("attr", ["n_positions", "max_position_embeddings"])
def test_fit_lengths_shrinks_the_prompt_to_the_window(attr):
    from distill.models.load import fit_lengths

    model = fake_model(is_encoder_decoder=False, **{attr: 256})
    assert fit_lengths(model, 128, 96) == (128, 96)  # 224 <= 256 fits as is
    assert fit_lengths(model, 200, 96) == (256 - 96, 96)
    with pytest.raises(ModelError, match="max_target_length"):
        fit_lengths(model, 10, 256)


def test_fit_lengths_without_a_known_window():
    from distill.models.load import fit_lengths

    assert fit_lengths(fake_model(is_encoder_decoder=False), 5000, 500) == (5000, 500)
