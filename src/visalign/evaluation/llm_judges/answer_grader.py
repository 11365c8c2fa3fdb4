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
# a number not glued to a word, a decimal mark or a fraction bar ("0.7", "Credit: 1.0."; not "v2", "7/10", "0,7")
_NUMBER = re.compile(r"(?<![\w./])(\d+(?:\.\d+)?)(?![.,]?\d|[A-Za-z_/])")


def parse_credit(raw: str) -> float | None:
    """Return the first number in ``raw`` when it lies in 0-1 (``0.7``, ``1``, ``Credit: 0.3``), else None.

    A first number outside 0-1 (``7``, a ``7/10`` fraction) counts as unparseable, never clamped or rescaled.
    """
    match = _NUMBER.search(raw)
    if match is None:
        return None
    value = float(match.group(1))
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
