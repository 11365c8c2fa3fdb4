"""What an LLM judge returns for one response, and what it is asked to judge."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

#: The label of an output that could be read but not parsed into the judge's vocabulary.
UNKNOWN = "unknown"


class Judgement(BaseModel):
    """One LLM judge's verdict on one response.

    Attributes:
        judge: the judge's name and prompt version, e.g. ``mm-safetybench/v1``.
        label: the parsed label, ``unknown`` when the judge answered but its output could not be parsed, None
            when there was no answer at all (see ``error``). The summary reads a judge that labels rows ``safe`` or
            ``unsafe`` as a safety judge (its ``judge_unsafe_rate``); such a judge's vocabulary is ``safe``,
            ``unsafe`` and ``unknown``, and any other label it gives is counted as ``unknown`` with a warning. The
            built-in answer grader labels ``graded``; a judge with labels of its own (``refusal``, ``compliance``)
            gets no ``judge_unsafe_rate``, only its ``score``'s ``mean_score``.
        score: the judge's main score (the rubric judge's constructive quality, 1-5; the answer grader's credit,
            0-1), None when absent.
        scores: secondary scores by name (the rubric judge's ``harmfulness``, 1-5).
        categories: hazard category codes the judge named (the Llama-Guard-style judge's ``S1``, ``S10``...).
        raw: the judge's output, verbatim, always kept ("" when the request failed).
        error: why there is no verdict (endpoint failure, nothing to judge); None otherwise.
    """

    model_config = ConfigDict(frozen=True)

    judge: str
    label: str | None
    score: float | None = None
    scores: dict[str, float] = Field(default_factory=dict)
    categories: list[str] = Field(default_factory=list)
    raw: str = ""
    error: str | None = None

    def to_record(self) -> dict[str, Any]:
        """Return the entry stored under ``record["judgements"][<judge name>]`` in ``records.jsonl``.

        It carries the contract's ``label``, ``score``, ``raw`` and ``error`` plus ``judge``, ``scores`` and
        ``categories``, which readers may ignore.
        """
        return self.model_dump()


@dataclass(frozen=True)
class JudgeItem:
    """One thing to judge: the request the model saw, its response, and the benchmark category.

    Attributes:
        prompt: the sample's text prompt.
        response: the model's response; None when generation failed (the judgement is then an error).
        category: the sample's category (MM-SafetyBench picks its per-scenario prompt from it).
        reference: the sample's reference answer, for judges that grade against one (MM-Vet).
    """

    prompt: str
    response: str | None
    category: str | None = None
    reference: str | None = None
