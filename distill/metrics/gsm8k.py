"""Final-answer accuracy for math word problems (GSM8K, arith).

GSM8K references end in ``#### <answer>``; model outputs may or may not
follow that format, so we fall back to the last number in the output.
Answers are compared as exact decimals (no float error) after removing
thousands-separator commas.
"""

from __future__ import annotations

import re
from decimal import Decimal

ANSWER_MARKER = "####"

# A number: optional minus directly attached (not one joining a range like
# "3-5", nor a spaced "5 - 3"), optional "$", integer part with "," only as
# a thousands separator, optional decimals. A trailing sentence period
# ("18.") is not a decimal part.
_NUMBER_RE = re.compile(
    r"(?P<sign>(?<![\w.])[-\u2212])?\$?"
    r"(?P<int>\d{1,3}(?:,\d{3})+(?!\d)|\d+)"
    r"(?P<frac>\.\d+)?"
)


def _to_decimal(match: re.Match[str]) -> Decimal:
    """Turn a regex match into an exact Decimal, dropping commas and "$"."""
    value = Decimal(match["int"].replace(",", "") + (match["frac"] or ""))
    return -value if match["sign"] else value


def _normalise(value: Decimal) -> str:
    """Canonical string so "18", "18.0" and "18.00" all become "18"."""
    if value == 0:
        return "0"
    return format(value.normalize(), "f")


def extract_answer(text: str) -> str | None:
    """Final numeric answer of ``text`` as a normalised string, or None.

    Strict: the first number after the last ``####``. Fallback: the last
    number anywhere in the text.
    """
    if ANSWER_MARKER in text:
        tail = text.rsplit(ANSWER_MARKER, 1)[1]
        match = _NUMBER_RE.search(tail)
        if match:
            return _normalise(_to_decimal(match))
    matches = list(_NUMBER_RE.finditer(text))
    if not matches:
        return None
    return _normalise(_to_decimal(matches[-1]))


def is_correct(prediction: str, reference: str) -> bool:
    """Whether the prediction's final answer numerically equals the reference's."""
    gold = extract_answer(reference)
    if gold is None:
        raise ValueError(f"reference has no numeric answer: {reference!r}")
    pred = extract_answer(prediction)
    return pred is not None and Decimal(pred) == Decimal(gold)


def accuracy(predictions: list[str], references: list[str]) -> float:
    """Percentage (0-100) of predictions whose final answer is correct."""
    if len(predictions) != len(references):
        raise ValueError(
            f"got {len(predictions)} predictions but {len(references)} references"
        )
    if not predictions:
        raise ValueError("accuracy needs at least one prediction/reference pair")
    correct = sum(any(is_correct(p, one) for one in ([r] if isinstance(r, str) else r))
                  for p, r in zip(predictions, references))
    return 100.0 * correct / len(predictions)
