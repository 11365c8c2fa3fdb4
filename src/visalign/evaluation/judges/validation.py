"""Independent validation sets for the refusal judges: published human labels, fetched, never tuned on.

PyRIT (Microsoft, MIT licence) ships the human-labelled responses it scores its own refusal scorer against inside
its PyPI wheel (``pyrit/datasets/scorer_evals/refusal_scorer/``). We download that wheel with pip, read the CSVs
from it without installing it, and convert them to the labelled-response JSONL that
:func:`~visalign.evaluation.judges.agreement.evaluate_refusal_judges` reads. ``human_score`` 1 means the response
is a refusal of the objective (PyRIT counts an off-topic answer as a refusal too), 0 that it is not.
"""

from __future__ import annotations

import csv
import io
import json
import tempfile
import zipfile
from pathlib import Path

from visalign.downloads import pip_download_wheel
from visalign.errors import VisalignError
from visalign.paths import visalign_home
from visalign.runs import atomic_write_text

PYRIT_REQUIREMENT = "pyrit==1.1.0"
PYRIT_MEMBERS = (
    "pyrit/datasets/scorer_evals/refusal_scorer/refusal.csv",
    "pyrit/datasets/scorer_evals/refusal_scorer/refusal_extra.csv",
)
_LABELS = {"1": "refusal", "0": "compliance"}
#: Version of the CSV-to-JSONL conversion, part of the cached file's name: bump it whenever the conversion changes
#: so that a file converted by older code is never reused (version 1 dropped "#" lines inside quoted responses).
CONVERSION_VERSION = 2


def pyrit_rows_from_csv(text: str, source: str) -> list[dict]:
    """Labelled-response rows from one PyRIT scorer-eval CSV (``#`` comment lines allowed before the header).

    Only the comment lines before the header are skipped: after it a line starting with ``#`` can be part of a
    quoted multi-line response (a markdown heading), so it is kept.

    Raises:
        VisalignError: a column is missing or a ``human_score`` is not 0 or 1; the message names the row.
    """
    lines = io.StringIO(text).readlines()
    header = next((index for index, line in enumerate(lines) if not line.startswith("#")), len(lines))
    body = "".join(lines[header:])
    reader = csv.DictReader(io.StringIO(body))
    missing = {"objective", "assistant_response", "human_score"} - set(reader.fieldnames or [])
    if missing:
        raise VisalignError(f"{source}: missing column(s) {', '.join(sorted(missing))}")
    rows = []
    for number, row in enumerate(reader, start=1):
        label = _LABELS.get((row["human_score"] or "").strip())
        if label is None:
            raise VisalignError(f"{source} row {number}: human_score {row['human_score']!r} is not 0 or 1")
        rows.append({"id": f"{Path(source).stem}:{number}", "prompt": row["objective"],
                     "response": row["assistant_response"], "label": label, "kind": Path(source).stem,
                     "split": "validation"})
    return rows


def pyrit_rows_from_wheel(wheel: Path) -> list[dict]:
    """All labelled rows of :data:`PYRIT_MEMBERS` read from a PyRIT wheel file."""
    try:
        with zipfile.ZipFile(wheel) as archive:
            return [row for member in PYRIT_MEMBERS
                    for row in pyrit_rows_from_csv(archive.read(member).decode("utf-8"), member)]
    except (zipfile.BadZipFile, KeyError) as exc:
        raise VisalignError(f"{wheel}: not a PyRIT wheel with its refusal scorer set ({exc})") from None


def pyrit_refusal_set_path() -> Path:
    """Where :func:`fetch_pyrit_refusal_set` caches the converted set (named by PyRIT release and conversion)."""
    name = f"{PYRIT_REQUIREMENT.replace('==', '-')}-refusal-v{CONVERSION_VERSION}.jsonl"
    return visalign_home() / "validation" / name


def fetch_pyrit_refusal_set() -> Path:
    """Download PyRIT's wheel (cached) and return the path of its refusal set as labelled-response JSONL."""
    target = pyrit_refusal_set_path()
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
        rows = pyrit_rows_from_wheel(pip_download_wheel(PYRIT_REQUIREMENT, Path(scratch)))
    atomic_write_text(target, "".join(json.dumps(row) + "\n" for row in rows))
    return target
