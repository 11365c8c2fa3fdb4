"""Measuring a refusal judge against labelled responses: accuracy, precision, recall, Cohen's kappa, unknown rate."""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from visalign.errors import VisalignError
from visalign.evaluation.judges.verdict import RefusalJudge

#: The project's hand-written development set (see docs/JUDGES.md); versioned, never tuned on after v1 froze.
DEV_SET = "refusal_dev_v1.jsonl"
HUMAN_LABELS = ("refusal", "compliance")


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

    The fields are the full confusion table, human label (refusal, compliance) by judge label (refusal, compliance,
    unknown); every figure derives from it. ``unknown`` verdicts count as wrong in ``accuracy`` and in ``kappa``,
    as not-refusal in ``recall``, and are excluded from ``precision``'s denominator (only predicted refusals count
    there). A figure whose denominator is empty is ``nan``.
    """

    judge: str
    refusals_judged_refusal: int
    refusals_judged_compliance: int
    refusals_judged_unknown: int
    compliances_judged_refusal: int
    compliances_judged_compliance: int
    compliances_judged_unknown: int

    @property
    def n(self) -> int:
        """Labelled responses judged."""
        return self.gold_refusals + self.gold_compliances

    @property
    def correct(self) -> int:
        """Responses where the judge's label is the human label."""
        return self.refusals_judged_refusal + self.compliances_judged_compliance

    @property
    def true_refusals(self) -> int:
        """Human-labelled refusals the judge calls refusals."""
        return self.refusals_judged_refusal

    @property
    def predicted_refusals(self) -> int:
        """Responses the judge calls refusals."""
        return self.refusals_judged_refusal + self.compliances_judged_refusal

    @property
    def predicted_compliances(self) -> int:
        """Responses the judge calls compliances."""
        return self.refusals_judged_compliance + self.compliances_judged_compliance

    @property
    def gold_refusals(self) -> int:
        """Responses the humans labelled refusals."""
        return self.refusals_judged_refusal + self.refusals_judged_compliance + self.refusals_judged_unknown

    @property
    def gold_compliances(self) -> int:
        """Responses the humans labelled compliances."""
        return (self.compliances_judged_refusal + self.compliances_judged_compliance
                + self.compliances_judged_unknown)  # fmt: skip

    @property
    def unknown(self) -> int:
        """Responses the judge labels ``unknown``."""
        return self.refusals_judged_unknown + self.compliances_judged_unknown

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

    @property
    def kappa(self) -> float:
        """Cohen's kappa between the human and the judge's labels, with ``unknown`` a label of its own.

        Kappa is taken over the three labels refusal / compliance / unknown (the humans never use ``unknown``), so
        the observed agreement ``p_o`` is exactly ``accuracy`` (an ``unknown`` disagrees with every human label)
        and the chance agreement is ``p_e = (gold_refusals * predicted_refusals + gold_compliances *
        predicted_compliances) / n**2`` (an ``unknown`` adds nothing to it). ``kappa = (p_o - p_e) / (1 - p_e)``:
        1 is perfect agreement, 0 is what a judge that ignores the response gets (a constant answer scores exactly
        0), below 0 is worse than chance. This is ``sklearn.metrics.cohen_kappa_score`` over the three labels.

        ``nan`` when undefined: an empty set, or ``p_e == 1`` (humans and judge gave every response one and the same
        label). A set whose human labels are all one class gives 0 for any other judge (``p_o == p_e`` there), so
        kappa says nothing on such a set.
        """
        chance = self.gold_refusals * self.predicted_refusals + self.gold_compliances * self.predicted_compliances
        # (n * correct - chance) / (n**2 - chance) is (p_o - p_e) / (1 - p_e) with both scaled by n**2, in integers
        denominator = self.n * self.n - chance
        return (self.n * self.correct - chance) / denominator if denominator else float("nan")

    def as_dict(self) -> dict[str, str | int | float | None]:
        """The confusion table, the counts and the figures, for JSON; a ``nan`` figure is None."""
        counts = {
            name: getattr(self, name)
            for name in (
                "n",
                "correct",
                "true_refusals",
                "predicted_refusals",
                "gold_refusals",
                "unknown",
                "refusals_judged_refusal",
                "refusals_judged_compliance",
                "refusals_judged_unknown",
                "compliances_judged_refusal",
                "compliances_judged_compliance",
                "compliances_judged_unknown",
            )
        }
        figures = {name: getattr(self, name) for name in ("accuracy", "precision", "recall", "kappa")}
        return {
            "judge": self.judge,
            **counts,
            **{name: None if math.isnan(value) else value for name, value in figures.items()},
        }


def _labelled_row(record: object, seen: dict[str, int], number: int) -> LabelledResponse:
    """Check one parsed line of a labelled file and return it; a ValueError names what is wrong."""
    if not isinstance(record, dict):
        raise ValueError(f"is not a JSON object but {type(record).__name__}")
    missing = [key for key in ("id", "response", "label") if key not in record]
    if missing:
        raise ValueError(f"lacks {', '.join(missing)}")
    identifier = record["id"]
    if isinstance(identifier, bool) or not isinstance(identifier, (str, int)) or identifier == "":
        raise ValueError(f"has id {json.dumps(identifier)}; use a non-empty string or an integer")
    identifier = str(identifier)
    if identifier in seen:
        raise ValueError(f"repeats id {identifier!r} of line {seen[identifier]}")
    for key in ("prompt", "response", "kind", "split"):
        if key in record and not isinstance(record[key], str):
            raise ValueError(f"has {key} {json.dumps(record[key])[:40]}; it must be a string")
    if record["label"] not in HUMAN_LABELS:
        raise ValueError(f"has label {record['label']!r}; use 'refusal' or 'compliance'")
    seen[identifier] = number
    return LabelledResponse(
        id=identifier, prompt=record.get("prompt", ""), response=record["response"], label=record["label"],
        kind=record.get("kind", ""), split=record.get("split", ""),
    )  # fmt: skip


def load_labelled_responses(path: str | Path | None = None, split: str | None = None) -> list[LabelledResponse]:
    """Read labelled responses (JSONL: ``id, prompt, response, label`` and optional ``kind, split``).

    Args:
        path: the file; the packaged development set when None.
        split: keep only rows of this split (``dev`` or ``test`` in the packaged set); all when None.

    Raises:
        VisalignError: the file is unreadable, or a line is not a JSON object, lacks ``id``, ``response`` or
            ``label``, has a ``response`` (or ``prompt``, ``kind``, ``split``) that is not a string, an ``id``
            that is not a non-empty string or an integer, an ``id`` an earlier line has, or a label other than
            ``refusal`` / ``compliance``; the one-line message names the file and the line.
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
    seen: dict[str, int] = {}  # id -> the line that has it
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            row = _labelled_row(json.loads(line), seen, number)
        except json.JSONDecodeError as exc:
            raise VisalignError(f"{where}: line {number} is not valid JSON ({exc})") from None
        except ValueError as exc:
            raise VisalignError(f"{where}: line {number} {exc}") from None
        if split is None or row.split == split:
            rows.append(row)
    return rows


def measure_agreement(judge: RefusalJudge, rows: list[LabelledResponse]) -> JudgeAgreement:
    """Judge every response and count agreement with the human labels.

    Raises:
        VisalignError: ``rows`` is empty (no figure is defined on an empty set).
    """
    if not rows:
        raise VisalignError(f"{judge.name}: no labelled responses to measure agreement on")
    table = Counter((row.label, judge.judge(row.response, row.prompt).label) for row in rows)
    return JudgeAgreement(
        judge.name,
        refusals_judged_refusal=table["refusal", "refusal"],
        refusals_judged_compliance=table["refusal", "compliance"],
        refusals_judged_unknown=table["refusal", "unknown"],
        compliances_judged_refusal=table["compliance", "refusal"],
        compliances_judged_compliance=table["compliance", "compliance"],
        compliances_judged_unknown=table["compliance", "unknown"],
    )


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
