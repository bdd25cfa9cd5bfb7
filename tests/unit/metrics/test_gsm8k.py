"""GSM8K answer extraction, numeric comparison and accuracy."""

from __future__ import annotations

import pytest

from distill.metrics import accuracy, extract_answer, is_correct


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("She pays 9 * 2 = $18.\n#### 18", "18"),
        ("#### 1,234", "1234"),
        ("#### -5", "-5"),
        ("#### 3.50", "3.5"),
        ("#### $18", "18"),
        ("#### 1,000,000", "1000000"),
        ("#### 18.00", "18"),
        ("#### 0", "0"),
        ("#### -0.0", "0"),
        ("#### 1200", "1200"),  # normalising must not produce "1.2E+3"
        # strict: the number after the LAST ####, not the last number overall
        ("#### 7\nmore text #### 12 apples, 3 pears", "12"),
        ("#### the answer is 42", "42"),
    ],
)
def test_extract_strict(text, expected):
    assert extract_answer(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("First 3 apples, then 5 more, so 8 in total.", "8"),  # trailing period
        ("The answer is 18.", "18"),
        ("It costs $1,234.50 overall", "1234.5"),
        ("The temperature fell to -5 degrees", "-5"),
        ("It costs -$5", "-5"),
        ("Pages 3-5", "5"),  # a range, not a negative number
        ("She had 5 - 3", "3"),  # a subtraction, not a negative number
        ("Values 1,8", "8"),  # a comma that is not a thousands separator
        ("Half is 0.5", "0.5"),
        ("9 earlier, then #### none given", "9"),
        ("####", None),
        ("no number here", None),
        ("", None),
    ],
)
def test_extract_fallback(text, expected):
    assert extract_answer(text) == expected


def test_numeric_equality():
    assert is_correct("The answer is 18.0", "#### 18")
    assert is_correct("#### 18.00", "#### 18")
    assert is_correct("so $1,234 total", "#### 1234")
    assert is_correct("#### 1234", "#### 1,234")
    assert not is_correct("#### 18.5", "#### 18")
    assert not is_correct("#### -18", "#### 18")
    assert not is_correct("I don't know", "#### 18")


def test_is_correct_rejects_reference_without_number():
    with pytest.raises(ValueError, match="no numeric answer"):
        is_correct("#### 1", "no answer")


def test_accuracy():
    preds = ["#### 18", "The answer is 3.", "#### 4", "nothing"]
    refs = ["Work...\n#### 18", "#### 3", "#### 5", "#### 1"]
    assert accuracy(preds, refs) == pytest.approx(50.0)
    with pytest.raises(ValueError, match="2 predictions but 1 references"):
        accuracy(["1", "2"], ["1"])
    with pytest.raises(ValueError, match="at least one"):
        accuracy([], [])


def test_extract_real_gsm8k_answers(gsm8k_rows):
    # Every real reference's answer after #### is an integer (maybe with commas).
    for row in gsm8k_rows:
        tail = row["answer"].rsplit("####", 1)[1].strip()
        assert extract_answer(row["answer"]) == str(int(tail.replace(",", "")))
    refs = [row["answer"] for row in gsm8k_rows]
    assert accuracy(refs, refs) == 100.0
    # Shift answers by one example: almost all become wrong.
    assert accuracy(refs[1:], refs[:-1]) < 10.0
