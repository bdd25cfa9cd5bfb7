"""distill.data.tasks: TaskSpec, split loading (generated, local JSONL, hub), prompt formatting."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from distill.data.tasks import format_examples, load_split, tokenizer_corpus
from distill.errors import ConfigError, DataError


def raw_jsonl(path: Path) -> list[dict]:
    """Independent reader (not distill.io) for expectations."""
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def write_jsonl(path: Path, lines: list[str]) -> None:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def qa(i: int) -> str:
    return json.dumps({"question": f"What is {i} + 1?", "answer": f"{i} + 1 = {i + 1}\n#### {i + 1}"})


# ---------------------------------------------------------------------------
# TaskSpec built from the repo's own YAML files


@pytest.mark.parametrize("name", ["arith", "gsm8k", "xsum", "wmt14_en_de"])
def test_every_task_yaml_builds_a_taskspec(make_task_spec, name):
    spec = make_task_spec(name)
    assert spec.name == name
    assert set(spec.splits) == {"train", "validation", "test"}
    assert {"encoder_decoder", "decoder"} <= set(spec.prompt)
    for template in (spec.prompt["encoder_decoder"], spec.prompt["decoder"]):
        assert "{" + spec.source_field + "}" in template


@pytest.mark.parametrize(
    "override, fragment",
    [({"train_fraction": 0.0}, "train_fraction"), ({"train_fraction": 1.5}, "train_fraction"),
     ({"max_train_examples": 0}, "max_train_examples"), ({"max_eval_examples": -1}, "max_eval_examples")],
)
def test_bad_subset_knobs_raise_config_error(make_task_spec, override, fragment):
    with pytest.raises(ConfigError, match=fragment):
        make_task_spec("gsm8k", **override)


# ---------------------------------------------------------------------------
# real local data under ../shared/data


@pytest.fixture(scope="module")
def gsm8k_raw(shared_data):
    directory = shared_data("gsm8k")
    return directory, raw_jsonl(directory / "train.jsonl"), raw_jsonl(directory / "test.jsonl")


def test_gsm8k_local_splits(make_task_spec, gsm8k_raw):
    directory, train_raw, test_raw = gsm8k_raw
    spec = make_task_spec("gsm8k", data_dir=str(directory))
    assert spec.validation_from_train == 500
    test = load_split(spec, "test")
    validation = load_split(spec, "validation")
    train = load_split(spec, "train")
    assert len(test_raw) == 1319 and len(train_raw) == 7473  # as PROVENANCE.md documents
    assert len(test) == 1319
    assert len(validation) == 500
    assert len(train) == 7473 - 500
    # validation is the *last* 500 train records, and train drops them
    assert train == train_raw[:-500]
    assert validation == train_raw[-500:]
    assert test == test_raw
    assert not {r["question"] for r in train} & {r["question"] for r in validation}
    for record in train[:50] + validation[:50] + test[:50]:
        assert isinstance(record["question"], str) and record["question"].strip()
        assert "####" in record["answer"]


def test_gsm8k_train_fraction_is_a_prefix(make_task_spec, gsm8k_raw):
    directory = str(gsm8k_raw[0])
    n_train = 7473 - 500
    small = load_split(make_task_spec("gsm8k", data_dir=directory, train_fraction=0.1), "train")
    large = load_split(make_task_spec("gsm8k", data_dir=directory, train_fraction=0.5), "train")
    full = load_split(make_task_spec("gsm8k", data_dir=directory), "train")
    assert len(small) == math.floor(n_train * 0.1)
    assert len(large) == math.floor(n_train * 0.5)
    assert large[: len(small)] == small
    assert full[: len(large)] == large
    # train_fraction never touches the evaluation splits
    assert len(load_split(make_task_spec("gsm8k", data_dir=directory, train_fraction=0.1), "test")) == 1319


def test_gsm8k_max_examples(make_task_spec, gsm8k_raw):
    directory, train_raw, test_raw = gsm8k_raw
    spec = make_task_spec("gsm8k", data_dir=str(directory), max_train_examples=100, max_eval_examples=30)
    assert load_split(spec, "train") == train_raw[:100]
    assert load_split(spec, "validation") == train_raw[-500:][:30]  # carved first, then capped
    assert load_split(spec, "test") == test_raw[:30]
    # the cap applies after train_fraction
    both = make_task_spec("gsm8k", data_dir=str(directory), train_fraction=0.01, max_train_examples=1000)
    assert len(load_split(both, "train")) == math.floor((7473 - 500) * 0.01)
    # and a tiny fraction still keeps at least one example
    tiny = make_task_spec("gsm8k", data_dir=str(directory), train_fraction=1e-9)
    assert len(load_split(tiny, "train")) == 1


def test_xsum_local_splits_filter_empty_documents(make_task_spec, shared_data):
    directory = shared_data("xsum")
    spec = make_task_spec("xsum", data_dir=str(directory))
    for split in ("validation", "test"):
        raw = raw_jsonl(directory / f"{split}.jsonl")
        kept = [r for r in raw if r["document"].strip()]
        records = load_split(spec, split)
        assert records == kept
        assert all(set(r) >= {"document", "summary"} for r in records)
    raw_validation = raw_jsonl(directory / "validation.jsonl")
    assert len(raw_validation) == 1000
    assert sum(not r["document"].strip() for r in raw_validation) == 1  # PROVENANCE.md: line 220, id 32556640
    assert len(load_split(spec, "validation")) == 999
    assert "32556640" not in {r["id"] for r in load_split(spec, "validation")}
    assert len(load_split(spec, "test")) == 1000


def test_xsum_has_no_local_train_split(make_task_spec, shared_data, caplog):
    """Issue 14.8: the error names the key to set; training on validation keeps a disjoint validation slice."""
    directory = shared_data("xsum")
    spec = make_task_spec("xsum", data_dir=str(directory))
    with pytest.raises(DataError, match=r"train\.jsonl.*task\.splits\.train=validation"):
        load_split(spec, "train")
    retargeted = make_task_spec("xsum", data_dir=str(directory), splits={"train": "validation", "validation": "validation", "test": "test"})
    with caplog.at_level("WARNING"):
        train, validation = load_split(retargeted, "train"), load_split(retargeted, "validation")
    assert len(train) + len(validation) == 999 and len(validation) in (99, 100)  # a tenth of the file, empty ones dropped
    assert not {r["id"] for r in train} & {r["id"] for r in validation}  # validation never scores training documents
    assert any("serve as validation only" in r.getMessage() for r in caplog.records)


def test_wmt14_local_splits(make_task_spec, shared_data):
    directory = shared_data("wmt14_en_de")
    spec = make_task_spec("wmt14_en_de", data_dir=str(directory), max_eval_examples=None)
    expected = {"train": 10000, "validation": 3000, "test": 3003}
    for split, count in expected.items():
        records = load_split(spec, split)
        assert len(records) == count
        assert records == raw_jsonl(directory / f"{split}.jsonl")
        assert all(isinstance(r["en"], str) and isinstance(r["de"], str) for r in records[:100])


# ---------------------------------------------------------------------------
# the generated arith task through load_split


def test_arith_task_is_generated_and_disjoint(make_task_spec, load_task_config):
    generator = dict(load_task_config("arith")["generator"], sizes={"train": 200, "validation": 20, "test": 50})
    spec = make_task_spec("arith", generator=generator)
    splits = {s: load_split(spec, s) for s in ("train", "validation", "test")}
    assert {s: len(r) for s, r in splits.items()} == {"train": 200, "validation": 20, "test": 50}
    questions = [r["question"] for records in splits.values() for r in records]
    assert len(set(questions)) == len(questions)
    # a second, equal spec gives the same data; subsetting applies to generated data too
    again = make_task_spec("arith", generator=generator, max_train_examples=30)
    assert load_split(again, "train") == splits["train"][:30]


def test_arith_with_data_dir_reads_files_instead(make_task_spec, tmp_path):
    for split in ("train", "validation", "test"):
        write_jsonl(tmp_path / f"{split}.jsonl", [qa(i) for i in range(5)])
    spec = make_task_spec("arith", data_dir=str(tmp_path))
    assert load_split(spec, "test") == [json.loads(qa(i)) for i in range(5)]


def test_unknown_split_raises_config_error(make_task_spec):
    spec = make_task_spec("arith", generator=dict(make_task_spec("arith").generator, sizes={"train": 5, "test": 5}))
    with pytest.raises(ConfigError, match="dev"):
        load_split(spec, "dev")


# ---------------------------------------------------------------------------
# bad local data: one clear DataError naming what to fix (docs/design.md, Errors)


def test_malformed_jsonl_names_file_and_line(make_task_spec, tmp_path):
    write_jsonl(tmp_path / "test.jsonl", [qa(1), qa(2), '{"question": "broken", "answer": ', qa(4)])
    spec = make_task_spec("gsm8k", data_dir=str(tmp_path))
    with pytest.raises(DataError) as info:
        load_split(spec, "test")
    message = str(info.value)
    assert str(tmp_path / "test.jsonl") in message
    assert ":3:" in message
    assert "\n" not in message


def test_missing_field_is_named(make_task_spec, tmp_path):
    write_jsonl(tmp_path / "test.jsonl", [qa(1), json.dumps({"question": "no answer here"})])
    spec = make_task_spec("gsm8k", data_dir=str(tmp_path))
    with pytest.raises(DataError, match="answer") as info:
        load_split(spec, "test")
    assert ":2:" in str(info.value)


def test_missing_split_file(make_task_spec, tmp_path):
    write_jsonl(tmp_path / "train.jsonl", [qa(i) for i in range(3)])
    spec = make_task_spec("gsm8k", data_dir=str(tmp_path))
    with pytest.raises(DataError, match=r"test\.jsonl"):
        load_split(spec, "test")


def test_data_dir_that_is_not_a_directory(make_task_spec, tmp_path):
    spec = make_task_spec("gsm8k", data_dir=str(tmp_path / "nope"))
    with pytest.raises(DataError, match="data_dir"):
        load_split(spec, "test")


@pytest.mark.parametrize(
    "lines",
    [[], ["", "  "], [json.dumps({"question": "  ", "answer": "#### 1"})]],
    ids=["empty-file", "blank-lines", "only-empty-sources"],
)
def test_empty_split_raises(make_task_spec, tmp_path, lines):
    write_jsonl(tmp_path / "test.jsonl", lines)
    spec = make_task_spec("gsm8k", data_dir=str(tmp_path))
    with pytest.raises(DataError, match="empty"):
        load_split(spec, "test")


def test_validation_from_train_that_leaves_no_train(make_task_spec, tmp_path):
    write_jsonl(tmp_path / "train.jsonl", [qa(i) for i in range(10)])
    spec = make_task_spec("gsm8k", data_dir=str(tmp_path), validation_from_train=10)
    with pytest.raises(ConfigError, match="validation_from_train"):
        load_split(spec, "train")
    ok = make_task_spec("gsm8k", data_dir=str(tmp_path), validation_from_train=3)
    assert [r["question"] for r in load_split(ok, "validation")] == [f"What is {i} + 1?" for i in (7, 8, 9)]
    assert len(load_split(ok, "train")) == 7


def test_hub_offline_says_to_set_data_dir(make_task_spec, monkeypatch):
    # Import first, then switch offline through the libraries' own flags (they read the
    # environment at import time); monkeypatch restores everything after the test.
    datasets = pytest.importorskip("datasets")
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True, raising=False)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True, raising=False)
    spec = make_task_spec("gsm8k", data_dir=None)
    with pytest.raises(DataError) as info:
        load_split(spec, "test")
    message = str(info.value)
    assert "task.data_dir" in message
    assert "openai/gsm8k" in message
    assert "\n" not in message


def test_hub_records_missing_the_source_field_raise_data_error(make_task_spec, monkeypatch):
    import distill.data.tasks as tasks

    monkeypatch.setattr(tasks, "_hub", lambda spec, split_name: [{"text": "x", "label": "y"}])
    spec = make_task_spec("gsm8k", data_dir=None)
    with pytest.raises(DataError, match="question"):
        load_split(spec, "test")


def test_hub_records_missing_the_target_field_raise_data_error(make_task_spec, monkeypatch):
    import distill.data.tasks as tasks

    monkeypatch.setattr(tasks, "_hub", lambda spec, split_name: [{"question": "x", "label": "y"}])
    spec = make_task_spec("gsm8k", data_dir=None)
    with pytest.raises(DataError, match="answer"):
        load_split(spec, "test")


def test_neither_data_dir_nor_hub(make_task_spec):
    spec = make_task_spec("gsm8k", data_dir=None, hub=None)
    with pytest.raises(ConfigError, match="data_dir"):
        load_split(spec, "test")


# ---------------------------------------------------------------------------
# prompt formatting per architecture


@pytest.mark.parametrize(
    "task, record, t5_source, decoder_source, target",
    [
        ("gsm8k", {"question": "What is 2 + 2?", "answer": "2 + 2 = 4\n#### 4\n"},
         "Q: What is 2 + 2? A:", "Question: What is 2 + 2?\nAnswer:", "2 + 2 = 4\n#### 4"),
        ("arith", {"question": "Ava has 3 pens.", "answer": "#### 3"},
         "question: Ava has 3 pens.", "Question: Ava has 3 pens.\nAnswer:", "#### 3"),
        ("xsum", {"document": "Rain fell.\nIt was wet.", "summary": "  It rained. ", "id": "1"},
         "summarize: Rain fell.\nIt was wet.", "Document: Rain fell.\nIt was wet.\nSummary:", "It rained."),
        ("wmt14_en_de", {"en": "Good morning.", "de": "Guten Morgen."},
         "translate English to German: Good morning.", "English: Good morning.\nGerman:", "Guten Morgen."),
    ],
)
def test_format_examples_per_architecture(make_task_spec, task, record, t5_source, decoder_source, target):
    spec = make_task_spec(task)
    [t5] = format_examples(spec, [record], encoder_decoder=True)
    [dec] = format_examples(spec, [record], encoder_decoder=False)
    assert t5.source == t5_source
    assert t5.target == target  # no prefix for encoder-decoder targets
    assert dec.source == decoder_source
    assert dec.target == " " + target  # decoder_target_prefix joins answer to prompt
    assert t5.record is record and dec.record is record


def test_format_examples_without_target_prefix(make_task_spec):
    spec = make_task_spec("gsm8k", prompt={"encoder_decoder": "{question}", "decoder": "{question} =>"})
    [ex] = format_examples(spec, [{"question": "q", "answer": "a"}], encoder_decoder=False)
    assert (ex.source, ex.target) == ("q =>", "a")


def test_format_examples_unknown_template_field(make_task_spec):
    spec = make_task_spec("gsm8k", prompt={"encoder_decoder": "{problem}", "decoder": "{problem}"})
    with pytest.raises(ConfigError, match="problem"):
        format_examples(spec, [{"question": "q", "answer": "a"}], encoder_decoder=True)


def test_tokenizer_corpus_has_fields_and_template_words(make_task_spec):
    spec = make_task_spec("gsm8k")
    records = [{"question": "Q1?", "answer": "A1"}, {"question": "Q2?", "answer": "A2"}]
    texts = tokenizer_corpus(spec, records)
    assert {"Q1?", "A1", "Q2?", "A2"} <= set(texts)
    # templates appear with their fields blanked out
    assert "Question: \nAnswer:" in texts
    assert "Q:  A:" in texts
    assert not any("{" in t for t in texts)
