"""Lingua: an offline translation task whose sentences have several correct renderings.

English-like sources from a small grammar ("the small dog sees three red birds
near the old river") are translated into a made-up language whose lexicon is a
pure function of the knobs. Some nouns and verbs have two synonymous forms, and
a place phrase may open or close the sentence, so one source has up to
2^k · 2 correct targets. Each record keeps one of them, drawn per record, as
its training ``target`` and lists every one under ``references``: the teacher
learns a distribution with several modes, BLEU counts any correct rendering
(multi-reference), and samples can differ while all being right, which is
what a performance–diversity trade-off needs (arith has one answer each).

Target order: NOUN ADJ* VERB NUM NOUN-en ADJ-en* (with the place phrase
PREP PLACE ADJ first or last); a plural noun and its adjectives take "-en"
after a number above one. ``extra_words`` adds made-up English words, so the
lexicon can outgrow what a small student memorises in a short run.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass

from distill.data.arith import (
    SPLIT_OFFSETS,  # one seed offset per split, shared by the generators
)
from distill.errors import ConfigError
from distill.fields import check_count, check_field_types, check_keys, check_range

ENGLISH = {
    "nouns": ("dog", "cat", "bird", "horse", "fox", "child", "farmer", "teacher", "sailor", "baker", "wolf",
              "goat", "king", "queen", "robot", "pilot", "doctor", "singer", "mouse", "lion"),
    "verbs": ("sees", "likes", "follows", "helps", "finds", "calls", "paints", "feeds", "watches", "meets"),
    "adjectives": ("small", "big", "red", "old", "young", "quiet", "happy", "grey", "brave", "clever"),
    "places": ("river", "forest", "market", "bridge", "tower", "garden", "harbour", "village"),
    "prepositions": ("near", "behind", "in"),
}
NUMBERS = ("one", "two", "three", "four", "five")
SYLLABLES = ("ka", "lo", "mi", "ru", "te", "vo", "za", "ne", "si", "po", "da", "fu", "gi", "be", "xo", "ya")


@dataclass(frozen=True)
class LinguaSpec:
    """Knobs of the generator; documented in conf/task/lingua.yaml."""

    seed: int
    max_adjectives: int
    synonym_rate: float
    place_rate: float
    extra_words: int  # made-up English nouns on top of the 20 real ones (and a third as many verbs, adjectives)

    def validate(self) -> None:
        section = "task.generator"
        check_field_types(self, section)
        check_count(section, "max_adjectives", self.max_adjectives, low=0)
        check_range(section, "synonym_rate", self.synonym_rate, 0.0, 1.0)
        check_range(section, "place_rate", self.place_rate, 0.0, 1.0)
        check_count(section, "extra_words", self.extra_words, low=0)
        if self.max_adjectives > 2:
            raise ConfigError(f"task.generator.max_adjectives must be at most 2, got {self.max_adjectives}")


def lingua_spec(values: dict, splits: dict) -> tuple[LinguaSpec, dict[str, int]]:
    """(knobs, split sizes) from ``task.generator`` (``kind: lingua``); every key and value checked."""
    knobs = {k: v for k, v in values.items() if k not in ("kind", "sizes")}
    check_keys(values, (*LinguaSpec.__dataclass_fields__, "kind", "sizes"), "task.generator",
               required=(*LinguaSpec.__dataclass_fields__, "sizes"))
    spec = LinguaSpec(**knobs)
    spec.validate()
    if spec.extra_words > 600:
        raise ConfigError(f"task.generator.extra_words must be at most 600, got {spec.extra_words}")
    check_keys(values["sizes"], tuple(splits), "task.generator.sizes")
    for split, size in values["sizes"].items():
        check_count("task.generator.sizes", split, size)
    return spec, values["sizes"]


ONSETS = ("b", "bl", "br", "d", "dr", "f", "fl", "g", "gr", "k", "l", "m", "n", "p", "pl", "r", "s", "sk", "st",
          "t", "tr", "v", "w")
CODAS = ("ck", "mp", "nd", "nt", "rt", "sh", "st", "p", "t", "m", "n", "g")


def english(spec: LinguaSpec) -> dict[str, tuple[str, ...]]:
    """The source vocabulary: the real words, plus ``extra_words`` made-up nouns (CVC, like "blint") and a third as
    many verbs (with "s") and adjectives (with "y"), none equal to a real word or to each other."""
    rng = random.Random(f"lingua-english:{spec.seed}")
    taken = {w for words in ENGLISH.values() for w in words} | set(NUMBERS) | {"the"}

    def made_up(suffix: str) -> str:
        while True:
            word = rng.choice(ONSETS) + rng.choice("aeiou") + rng.choice(CODAS) + suffix
            if word not in taken and word.rstrip("s") not in taken:
                taken.add(word)
                return word

    extra = {"nouns": [made_up("") for _ in range(spec.extra_words)],
             "verbs": [made_up("s") for _ in range(spec.extra_words // 3)],
             "adjectives": [made_up("y") for _ in range(spec.extra_words // 3)]}
    return {kind: words + tuple(extra.get(kind, ())) for kind, words in ENGLISH.items()}


def lexicon(spec: LinguaSpec) -> dict[str, tuple[str, ...]]:
    """English word -> its Lingua forms (two for a synonymous noun or verb), distinct across the lexicon."""
    rng = random.Random(f"lingua-lexicon:{spec.seed}")
    taken: set[str] = set()

    def word(syllables: int) -> str:
        while True:
            form = "".join(rng.choice(SYLLABLES) for _ in range(syllables))
            if form not in taken:
                taken.add(form)
                return form

    out: dict[str, tuple[str, ...]] = {}
    for kind, words in english(spec).items():
        for index, source in enumerate(words):
            forms = 2 if kind in ("nouns", "verbs") and rng.random() < spec.synonym_rate else 1
            # 16 syllables make 256 two-syllable forms: made-up words take three (4 096), real ones keep two
            syllables = 1 if kind == "prepositions" else 2 if index < len(ENGLISH[kind]) else 3
            out[source] = tuple(word(syllables) for _ in range(forms))
    for number in NUMBERS:
        out[number] = (word(1),)
    return out


def _noun_phrase(rng: random.Random, spec: LinguaSpec, vocabulary: dict, count: str | None):
    """(English words, the parts of the Lingua phrase: the noun's English lemma, then its adjectives; after a
    plural noun they agree with it: "+pl", rendered with "-en" like the noun)."""
    noun = rng.choice(vocabulary["nouns"])
    plural = count is not None and count != "one"
    adjectives = rng.sample(vocabulary["adjectives"], rng.randint(0, spec.max_adjectives))
    source = ([count] if count else ["the"]) + adjectives + [noun + ("s" if plural else "")]
    mark = "+pl" if plural else ""
    return source, [noun + mark, *(a + mark for a in adjectives)]


def make_sentence(rng: random.Random, spec: LinguaSpec, words: dict, vocabulary: dict) -> dict:
    """One record: source, one drawn target and every correct rendering (sorted)."""
    subject_en, subject = _noun_phrase(rng, spec, vocabulary, None)
    count = rng.choice(NUMBERS)
    object_en, obj = _noun_phrase(rng, spec, vocabulary, count)
    verb = rng.choice(vocabulary["verbs"])
    source = subject_en + [verb] + object_en
    place = None
    if rng.random() < spec.place_rate:
        preposition, where, adjective = (rng.choice(vocabulary["prepositions"]), rng.choice(vocabulary["places"]),
                                         rng.choice(vocabulary["adjectives"]))
        source += [preposition, "the", adjective, where]
        place = [preposition, where, adjective]
    renderings = sorted(set(_renderings(subject, verb, count, obj, place, words)))
    return {"source": " ".join(source), "target": rng.choice(renderings), "references": renderings}


def _forms(lemma: str, words: dict) -> list[str]:
    plural = lemma.endswith("+pl")
    return [form + ("en" if plural else "") for form in words[lemma.removesuffix("+pl")]]


def _renderings(subject, verb, count, obj, place, words):
    slots = [_forms(subject[0], words), *[_forms(a, words) for a in subject[1:]], list(words[verb]),
             list(words[count]), _forms(obj[0], words), *[_forms(a, words) for a in obj[1:]]]
    place_forms = [list(words[w]) for w in place] if place else []
    for core in itertools.product(*slots):
        for tail in itertools.product(*place_forms) if place else [()]:
            if not tail:
                yield " ".join(core)
                continue
            yield " ".join(core + tail)  # the place phrase last ...
            yield " ".join(tail + core)  # ... or first


def generate_lingua(spec: LinguaSpec, sizes: dict[str, int]) -> dict[str, list[dict]]:
    """All requested splits, disjoint in their sources (test first, so held-out sentences are reserved)."""
    spec.validate()
    words, vocabulary = lexicon(spec), english(spec)
    seen: set[str] = set()
    splits: dict[str, list[dict]] = {}
    for split in sorted(sizes, key=lambda s: -SPLIT_OFFSETS.get(s, 3)):
        rng = random.Random(f"lingua:{spec.seed}:{split}")
        records: list[dict] = []
        attempts = 0
        while len(records) < sizes[split]:
            attempts += 1
            if attempts > 50 * sizes[split] + 1000:
                raise ConfigError(f"task lingua: cannot make {sizes[split]} distinct {split} sentences; raise "
                                  "task.generator.max_adjectives or place_rate")
            record = make_sentence(rng, spec, words, vocabulary)
            if record["source"] not in seen:
                seen.add(record["source"])
                records.append(record)
        splits[split] = records
    return splits
