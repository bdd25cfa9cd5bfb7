"""The Lingua task generator: several correct renderings per source, all listed, one trained on."""

from __future__ import annotations

import math

import pytest

from distill.data.lingua import ENGLISH, NUMBERS, LinguaSpec, english, generate_lingua, lexicon
from distill.errors import ConfigError

SPEC = LinguaSpec(seed=7, max_adjectives=1, synonym_rate=0.5, place_rate=0.5, extra_words=0)
SIZES = {"train": 400, "validation": 50, "test": 60}


def test_the_data_set_is_a_pure_function_of_the_knobs_and_splits_are_disjoint():
    first, second = generate_lingua(SPEC, SIZES), generate_lingua(SPEC, SIZES)
    assert first == second
    sources = {split: {r["source"] for r in records} for split, records in first.items()}
    assert {len(r) for r in first.values()} == {400, 50, 60}
    assert not (sources["train"] & sources["test"]) and not (sources["validation"] & sources["test"])
    assert generate_lingua(LinguaSpec(8, 1, 0.5, 0.5, 0), SIZES) != first


def test_every_record_trains_on_one_of_its_listed_renderings_and_lists_them_all():
    words = lexicon(SPEC)
    for record in generate_lingua(SPEC, SIZES)["test"]:
        references = record["references"]
        assert record["target"] in references and references == sorted(set(references))
        lemmas = [w if w in words else w[:-1] for w in record["source"].split() if w != "the"]  # plural "s" off
        synonymous = sum(len(words[w]) == 2 for w in lemmas)
        place = any(p in record["source"].split() for p in ENGLISH["prepositions"])
        assert len(references) == 2 ** synonymous * (2 if place else 1), record
        lengths = {len(r.split()) for r in references}
        assert len(lengths) == 1  # synonyms and the place phrase's position never add or drop a word


def test_the_targets_of_one_source_are_drawn_so_the_teacher_sees_several_modes():
    records = generate_lingua(SPEC, {"train": 2000})["train"]
    many = [r for r in records if len(r["references"]) >= 4]
    share = sum(r["target"] != r["references"][0] for r in many) / len(many)
    assert 0.5 < share < 0.9  # a uniform draw among >= 4 renderings differs from the first about 3/4 of the time


def test_the_lexicon_gives_synonyms_at_the_set_rate_and_distinct_forms():
    words = lexicon(LinguaSpec(3, 1, 1.0, 0.5, 0))
    assert all(len(words[w]) == 2 for w in ENGLISH["nouns"] + ENGLISH["verbs"])
    forms = [f for fs in words.values() for f in fs]
    assert len(forms) == len(set(forms))
    assert all(len(words[w]) == 1 for w in ENGLISH["nouns"] for words in [lexicon(LinguaSpec(3, 1, 0.0, 0.5, 0))])


@pytest.mark.parametrize("knobs, named", [(dict(max_adjectives=3), "max_adjectives"),
                                          (dict(synonym_rate=math.nan), "synonym_rate"),
                                          (dict(place_rate=1.5), "place_rate"),
                                          (dict(extra_words=-1), "extra_words")])
def test_bad_knobs_are_named(knobs, named):
    with pytest.raises(ConfigError, match=f"task.generator.{named}"):
        generate_lingua(LinguaSpec(**{**SPEC.__dict__, **knobs}), SIZES)


def test_extra_words_are_new_distinct_and_used():
    spec = LinguaSpec(**{**SPEC.__dict__, "extra_words": 90})
    vocabulary = english(spec)
    added = {kind: vocabulary[kind][len(ENGLISH[kind]):] for kind in ENGLISH}
    assert [len(added[k]) for k in ("nouns", "verbs", "adjectives", "places")] == [90, 30, 30, 0]
    every = [w for words in vocabulary.values() for w in words]
    assert len(every) == len(set(every)) and not set(every) & {"the", *NUMBERS}
    assert all(w.endswith("s") for w in added["verbs"]) and all(w.endswith("y") for w in added["adjectives"])
    sources = " ".join(r["source"] for r in generate_lingua(spec, {"train": 400})["train"]).split()
    assert len(set(added["nouns"]) & set(sources)) > 40  # the made-up nouns appear in the data
    assert english(spec) == vocabulary and english(SPEC) == {k: tuple(v) for k, v in ENGLISH.items()}


def test_the_largest_lexicon_has_distinct_forms_and_the_real_words_keep_theirs_without_extra_words():
    words = lexicon(LinguaSpec(**{**SPEC.__dict__, "extra_words": 600, "synonym_rate": 1.0}))  # 2 000 forms
    forms = [f for fs in words.values() for f in fs]
    assert len(forms) == len(set(forms)) and len(words) == 600 + 200 + 200 + sum(map(len, ENGLISH.values())) + len(NUMBERS)
    assert lexicon(SPEC)["river"] == ("vopo",)  # real words keep the forms they had before extra_words


def test_adjectives_of_a_plural_noun_agree_with_it():
    spec = LinguaSpec(**{**SPEC.__dict__, "max_adjectives": 2, "synonym_rate": 0.0, "place_rate": 0.0})
    words, checked = lexicon(spec), 0
    for record in generate_lingua(spec, {"test": 60})["test"]:
        source = record["source"].split()
        verb_at = next(i for i, w in enumerate(source) if w in ENGLISH["verbs"])
        count, *adjectives, _noun = source[verb_at + 1:]
        ending = "en" if count != "one" else ""
        target = record["references"][0].split()
        checked += bool(adjectives and ending)
        if adjectives:  # the object phrase ends the target: NOUN(-en) ADJ(-en)*
            assert target[-len(adjectives):] == [words[a][0] + ending for a in adjectives], record
    assert checked > 10
