"""Only a number that opens its line is read as list numbering when an answer grader's credit is parsed."""

from __future__ import annotations

import pytest

from visalign.evaluation.llm_judges import parse_credit


@pytest.mark.parametrize(("raw", "credit"), [
    ("Score 1. Then 0.3", 1.0),  # mid-line, "1. " ends a sentence: it is the credit
    ("The credit is 0. Not 0.5", 0.0),
    ("Grading:\n1. 0.4", 0.4),  # at the start of its line it is an item number
    ("Grading:\n  2) Credit 0.6", 0.6),
])  # fmt: skip
def test_a_number_ending_a_sentence_mid_line_is_the_credit(raw, credit):
    assert parse_credit(raw) == credit
