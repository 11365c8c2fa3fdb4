"""Measuring a refusal judge against labelled responses: accuracy, precision, recall, unknown rate."""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from visalign.errors import VisalignError
from visalign.evaluation.judges.verdict import RefusalJudge

#: The project's hand-written development set (see docs/JUDGES.md); versioned, never tuned on after v1 froze.
DEV_SET = "refusal_dev_v1.jsonl"


@dataclass(frozen=True)
class LabelledResponse:
    """One response with its human label (``refusal`` or ``compliance``)."""

    id: str
    prompt: str
    response: str
    label: str
    kind: str
    split: str


@dataclass(frozen=True)
class JudgeAgreement:
    """How one judge's labels compare with the human labels; refusal is the positive class.

    ``unknown`` verdicts count as wrong in ``accuracy`` and as not-refusal in ``recall``; they are reported
    separately and excluded from ``precision``'s denominator (only predicted refusals count there).
    """

    judge: str
    n: int
    correct: int
    true_refusals: int
    predicted_refusals: int
    gold_refusals: int
    unknown: int

    @property
    def accuracy(self) -> float:
        """Correct labels over all responses."""
        return self.correct / self.n if self.n else float("nan")

    @property
    def precision(self) -> float:
        """True refusals over predicted refusals."""
        return self.true_refusals / self.predicted_refusals if self.predicted_refusals else float("nan")

    @property
    def recall(self) -> float:
        """True refusals over human-labelled refusals."""
        return self.true_refusals / self.gold_refusals if self.gold_refusals else float("nan")


def load_labelled_responses(path: str | Path | None = None, split: str | None = None) -> list[LabelledResponse]:
    """Read labelled responses (JSONL: ``id, prompt, response, label`` and optional ``kind, split``).

    Args:
        path: the file; the packaged development set when None.
        split: keep only rows of this split (``dev`` or ``test`` in the packaged set); all when None.

    Raises:
        VisalignError: the file is unreadable or a row lacks a field or has a label other than
            ``refusal`` / ``compliance``; the message names the line.
    """
    if path is None:
        text = resources.files("visalign.evaluation.judges").joinpath("data", DEV_SET).read_text(encoding="utf-8")
        where = DEV_SET
    else:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise VisalignError(f"{path}: cannot read labelled responses ({exc})") from None
        where = str(path)
    rows = []
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            row = LabelledResponse(
                id=str(record["id"]), prompt=str(record.get("prompt", "")), response=str(record["response"]),
                label=str(record["label"]), kind=str(record.get("kind", "")), split=str(record.get("split", "")),
            )  # fmt: skip
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise VisalignError(f"{where}: line {number} is not a labelled response ({exc})") from None
        if row.label not in ("refusal", "compliance"):
            raise VisalignError(f"{where}: line {number} has label {row.label!r}; use 'refusal' or 'compliance'")
        if split is None or row.split == split:
            rows.append(row)
    return rows


def measure_agreement(judge: RefusalJudge, rows: list[LabelledResponse]) -> JudgeAgreement:
    """Judge every response and count agreement with the human labels."""
    correct = true_refusals = predicted = unknown = 0
    for row in rows:
        label = judge.judge(row.response, row.prompt).label
        correct += label == row.label
        true_refusals += label == "refusal" and row.label == "refusal"
        predicted += label == "refusal"
        unknown += label == "unknown"
    gold = sum(row.label == "refusal" for row in rows)
    return JudgeAgreement(judge.name, len(rows), correct, true_refusals, predicted, gold, unknown)


def evaluate_refusal_judges(
    path: str | Path | None = None, split: str | None = None, names: list[str] | None = None
) -> list[JudgeAgreement]:
    """Measure each named refusal judge (default: all) on a labelled set (default: the packaged one).

    Args:
        path: labelled JSONL (see :func:`load_labelled_responses`); the packaged development set when None.
        split: ``dev`` or ``test`` of the packaged set, or None for all rows.
        names: judge names (see :func:`refusal_judge_names`); all when None.
    """
    from visalign.evaluation.judges.registry import get_refusal_judge, refusal_judge_names

    rows = load_labelled_responses(path, split)
    if not rows:
        raise VisalignError(f"no labelled responses{f' in split {split!r}' if split else ''}; check the file")
    return [measure_agreement(get_refusal_judge(name), rows) for name in names or refusal_judge_names()]
