"""Grades an open answer against the benchmark's reference answer (MM-Vet), giving 0.0-1.0 credit.

The prompt is ours (``prompts/answer_grader_v1.txt``); it follows MM-Vet's scoring idea: a text-only judge compares
the answer with the reference, reads ``<AND>``/``<OR>`` in the reference, and gives credit in steps of 0.1. The
judgement's ``score`` is the credit, and the summary counts it as the sample's capability accuracy, so MM-Vet's
capability figure is the mean credit (MM-Vet's total score divided by 100).
"""

from __future__ import annotations

import re

from visalign.evaluation.llm_judges.base import LLMJudge, fill, load_prompt_text
from visalign.evaluation.llm_judges.judgement import Judgement

PROMPT_FILE = "answer_grader_v1.txt"
# a plain number: not glued to a word, a sign, a decimal mark or a fraction bar before it, nor to a decimal mark,
# a letter (exponent "1e-1", "v2"), a fraction bar, "%" or ":" (a label, "Step 1:") after it
_NUMBER = re.compile(r"(?<![\w./+\-\u2212])(\d+(?:\.\d+)?)(?![.,]?\d|[A-Za-z_/%:])")
# list numbering at the start of a line ("1. Credit: 0.3", "2) ..."): an item number, not a credit
_LIST_MARKER = re.compile(r"[.)][ \t]+\S")
# a restated scale, "0-1", "0.0 - 1.0", "0–1" (en dash), "0 to 1", "between 0 and 1": neither end is a credit
_RANGE = re.compile(
    r"(?<![\d.])\d+(?:\.\d+)?(?:\s*[-\u2010-\u2015\u2212]\s*|\s+to\s+)\d+(?:\.\d+)?(?![.,]?\d)"
    r"|\bbetween\s+\d+(?:\.\d+)?\s+and\s+\d+(?:\.\d+)?(?![.,]?\d)",
    re.IGNORECASE,
)


def _is_list_marker(raw: str, match: re.Match[str]) -> bool:
    """Whether ``match`` is an item number: only blanks before it on its line, ``.`` or ``)`` and a space after."""
    line_start = raw.rfind("\n", 0, match.start()) + 1
    return not raw[line_start:match.start()].strip() and _LIST_MARKER.match(raw, match.end()) is not None


def parse_credit(raw: str) -> float | None:
    """Return the first plain number in ``raw`` when it lies in 0-1 (``0.7``, ``1``, ``Credit: 0.3``), else None.

    A first number outside 0-1 (``7``) counts as unparseable, never clamped or rescaled. Numbers that are not a
    credit are passed over: fractions (``7/10``), decimal commas (``0,7``), signed numbers (``-0.5``), exponent
    forms (``1e-1``), percentages (``70%``), labels (``Step 1:``), both ends of a range (a restated scale,
    ``Credit (0.0-1.0): 0.9``, ``0 to 1``, ``0–1``, ``between 0 and 1``) and list numbering at a line's start
    (``1. ``) when another number follows it. An output with no number left (``Credit (0.0-1.0):``, cut short by
    the token cap) gives None.
    """
    ranges = [match.span() for match in _RANGE.finditer(raw)]
    matches = [m for m in _NUMBER.finditer(raw) if not any(start <= m.start() < end for start, end in ranges)]
    # an item number is passed over only when a number follows it ("1. Credit: 0.3"); alone it is the credit
    # ("1. The answer matches the reference.")
    plain = [m for m in matches if not _is_list_marker(raw, m)] or matches
    if not plain:
        return None
    value = float(plain[0].group(1))
    return value if 0.0 <= value <= 1.0 else None


class AnswerGrader(LLMJudge):
    """Credit 0.0-1.0 for an open answer against the reference; labels ``graded`` or ``unknown``.

    Only samples with a reference answer and no choices (MM-Vet) are sent to it; the runner skips the rest.

    Args:
        client: the chat client of the grading model (MM-Vet used GPT-4).
        max_tokens: cap on the grader's output tokens.
    """

    name = "mm-vet"
    version = "v1"
    max_tokens = 8
    needs_reference = True

    def prompt(self, sample_prompt: str, response: str, category: str | None, reference: str | None = None) -> str:
        """Fill the grading prompt with the question, the reference answer and the model's answer."""
        return fill(load_prompt_text(PROMPT_FILE), question=sample_prompt, reference=reference or "",
                    response=response)

    def parse(self, raw: str) -> Judgement:
        """The credit as ``score``; ``unknown`` when the output holds no number in 0-1 first."""
        credit = parse_credit(raw)
        if credit is None:
            return self.unknown(raw)
        return Judgement(judge=self.id, label="graded", score=credit, raw=raw)
