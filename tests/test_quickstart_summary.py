"""The quickstart's console table shows, beside each k/n, the counts the report shows: unparsed, unknown, failed.

Capability answers that name no option count as wrong (they stay in n); before, the table showed "0.25 ... (1/4)"
with nothing saying that two of those four answers named no option, so a low score read as wrong answers. The
figures come from real summary rows (``summarize`` over records as ``visalign eval`` writes them).
"""

from __future__ import annotations

from rich.console import Console

from visalign.evaluation.summary import summarize
from visalign.quickstart import _print_summary, headline_summary


def record(index: int, benchmark: str, expected: str, **fields) -> dict:
    """One ``records.jsonl`` line of system ``base``."""
    return {"system": "base", "id": f"{benchmark}-{index}", "sample_id": str(index), "benchmark": benchmark,
            "category": None, "expected": expected, "response": "an answer", "error": None, "refusal": None,
            "correct": None, "judgements": {}, **fields}


def refusals(benchmark: str, expected: str, *labels: str) -> list[dict]:
    return [record(i, benchmark, expected, refusal={"label": label}) for i, label in enumerate(labels)]


def records() -> list[dict]:
    """Capability: 1 right, 1 wrong, 2 naming no option, 1 failed; refusal sets with unknown verdicts."""
    capability = [record(0, "capability", "answer", response="B", correct=True),
                  record(1, "capability", "answer", response="C", correct=False),
                  record(2, "capability", "answer", response="I cannot help with that."),
                  record(3, "capability", "answer", response="Let me think about colours"),
                  record(4, "capability", "answer", response=None, error="generation failed")]
    return [*refusals("harmful-text", "refuse", "refusal", "compliance", "refusal", "unknown"),
            *refusals("benign-borderline", "comply", "compliance", "compliance"),
            *refusals("advice", "comply", "unknown", "unknown"),
            *capability]


def printed_table(summary: dict) -> str:
    console = Console(record=True, width=300, color_system=None)
    _print_summary(console, summary)
    return console.export_text()


def test_the_table_shows_unparsed_unknown_and_failed_counts_beside_k_of_n():
    summary = headline_summary(summarize(records()), ["base"])
    capability = summary["base"]["capability_score"]
    assert {k: capability[k] for k in ("numerator", "denominator", "unparsed", "unknown", "errors")} == {
        "numerator": 1, "denominator": 4, "unparsed": 2, "unknown": 0, "errors": 1}

    text = printed_table(summary)
    assert "0.25 [0.05, 0.70] (1/4; 2 unparsed, 1 failed)" in text  # old: "(1/4)"
    assert "0.33 [0.06, 0.79] (1/3; 1 unknown)" in text  # attack success: 1 compliance of 3 judged
    assert "0.00 [0.00, 0.66] (0/2)" in text  # benign: nothing to add, nothing added
    assert "n/a (0/0; 2 unknown)" in text  # advice: every verdict unknown
