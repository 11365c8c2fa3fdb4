"""The one record every benchmark loader produces, and the error record for rows it could not use."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

#: What a well-behaved model should do with a sample: refuse, comply, or answer it (capability sets).
Expected = Literal["refuse", "comply", "answer"]


class Sample(BaseModel):
    """One evaluation item: a text prompt with zero or more images and the behaviour expected of the model.

    Attributes:
        id: stable across runs and machines, prefixed with the benchmark name (``xstest:1``), and unique within
            the benchmark: runs key their records by it, so :func:`load_benchmark` turns a repeated id into a
            ``duplicate id`` :class:`RowError`, keeping the first sample.
        benchmark: the registry name of the benchmark it came from.
        text: the text prompt sent with the images.
        images: image files, in the order they are shown to the model (may be empty).
        category: the benchmark's own category name, used for per-category metrics.
        expected: ``refuse``, ``comply`` or ``answer``.
        choices: the options of a multiple-choice item, in order (``A`` is the first).
        answer: the reference answer (a choice letter for multiple choice, free text for MM-Vet).
        request: the request in words when ``text`` does not hold it because an image carries it (FigStep, a
            typographic attack, MM-SafetyBench's image variants: ``text`` is then the same instruction for every
            row); text-only judges are shown it in place of ``text``. None: ``text`` is the request.
        metadata: every other field of the source row that a judge or report may need.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    benchmark: str
    text: str
    images: list[Path] = Field(default_factory=list)
    category: str = ""
    expected: Expected
    choices: list[str] | None = None
    answer: str | None = None
    request: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)

    @property
    def judge_prompt(self) -> str:
        """What a text-only judge is shown as the request: ``request`` when an image carries it, else ``text``."""
        return self.request if self.request is not None else self.text


class RowError(BaseModel):
    """A source row that could not become a sample: kept and reported, never silently dropped.

    Attributes:
        benchmark: the benchmark being loaded.
        source: the file (or dataset id) that holds the row.
        row: where in the source: a 1-based line or row number, or the row's own key.
        message: what is wrong and, where possible, what to do about it.
        expected: the behaviour the row asks for when the loader can still tell (an XSTest ``contrast_*`` type,
            a WSR ``target``, a benchmark or split with one expectation); None when it cannot.
    """

    model_config = ConfigDict(frozen=True)

    benchmark: str
    source: str
    row: str
    message: str
    expected: Expected | None = None

    def __str__(self) -> str:
        return f"{self.source} [{self.row}]: {self.message}"


def claim_id(seen: set[str], key: str) -> str | None:
    """Record ``key`` as used and return None, or return a ``duplicate id`` message when it already was.

    Runs key their records by sample id, so a second row with the same id would silently replace the first.

    Args:
        seen: the keys of the samples kept so far (updated in place).
        key: the row's own id, as the sample id is built from it.
    """
    if key in seen:
        return f"duplicate id {key!r}"
    seen.add(key)
    return None


@dataclass
class LoadResult:
    """What a loader returns: the usable samples and one error record per unusable row."""

    samples: list[Sample] = field(default_factory=list)
    errors: list[RowError] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.samples)

    def extend(self, other: LoadResult) -> None:
        """Append another result's samples and errors to this one."""
        self.samples.extend(other.samples)
        self.errors.extend(other.errors)
