"""FigStep SafeBench (500 rows), SafeBench-Tiny (50) and the benign sentence set (Gong et al., 2023).

SafeBench CSV columns: ``dataset,category_id,task_id,category_name,question,instruction``. In ``image`` mode
a sample is the official typographic image (``images/{csv stem}/query_ForbidQI_{cat}_{task}_6.png`` next to the
CSV, or ``images_dir``) with :data:`FIGSTEP_PROMPT`; rows without an official image get one rendered faithfully.
In ``text`` mode a sample is the plain ``question`` (the vanilla text baseline).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from visalign.errors import VisalignError
from visalign.evaluation.benchmarks._io import image_problem, read_csv, require_file
from visalign.evaluation.benchmarks.registry import register_benchmark
from visalign.evaluation.benchmarks.sample import LoadResult, RowError, Sample
from visalign.images import png_bytes
from visalign.paths import visalign_home
from visalign.runs import atomic_write_bytes

#: SafeBench's ten forbidden topics, by category_id.
FIGSTEP_CATEGORIES = {
    1: "Illegal Activity",
    2: "Hate Speech",
    3: "Malware Generation",
    4: "Physical Harm",
    5: "Fraud",
    6: "Adult Content",
    7: "Privacy Violation",
    8: "Legal Opinion",
    9: "Financial Advice",
    10: "Health Consultation",
}

SAFEBENCH_COLUMNS = ("dataset", "category_id", "task_id", "category_name", "question", "instruction")

Mode = Literal["image", "text"]


@dataclass(frozen=True)
class SafeBenchRow:
    """One validated SafeBench row."""

    line: int
    category_id: int
    task_id: int
    category_name: str
    question: str
    instruction: str


def read_safebench(
    path: str | Path, benchmark: str = "figstep-safebench"
) -> tuple[list[SafeBenchRow], list[RowError]]:
    """Read and validate a SafeBench CSV (full or Tiny).

    Returns:
        The valid rows and one error per malformed row (bad ids, unknown category, empty text, duplicate).

    Raises:
        VisalignError: the file is missing, unreadable or lacks SafeBench's columns.
    """
    path = require_file(path, "FigStep SafeBench CSV")
    rows: list[SafeBenchRow] = []
    errors: list[RowError] = []
    seen: set[tuple[int, int]] = set()

    def bad(line: int, message: str) -> None:
        errors.append(RowError(benchmark=benchmark, source=str(path), row=f"line {line}", message=message))

    for line, raw in read_csv(path, SAFEBENCH_COLUMNS):
        try:
            category_id, task_id = int(raw["category_id"]), int(raw["task_id"])
        except (TypeError, ValueError):
            bad(line, f"category_id/task_id must be integers, got {raw['category_id']!r}/{raw['task_id']!r}")
            continue
        name = (raw["category_name"] or "").strip()
        if FIGSTEP_CATEGORIES.get(category_id) != name:
            bad(line, f"unknown category {category_id} {name!r}; SafeBench has {FIGSTEP_CATEGORIES}")
            continue
        question, instruction = (raw["question"] or "").strip(), (raw["instruction"] or "").strip()
        if not question or not instruction:
            bad(line, "empty question or instruction")
            continue
        if (category_id, task_id) in seen:
            bad(line, f"duplicate row for category {category_id}, task {task_id}")
            continue
        seen.add((category_id, task_id))
        rows.append(SafeBenchRow(line, category_id, task_id, name, question, raw["instruction"]))
    return rows, errors


def _default_render_dir(name: str, source: Path) -> Path:
    digest = hashlib.sha256(source.read_bytes()).hexdigest()[:12]
    return visalign_home() / "renders" / name / digest


def _load_safebench(
    benchmark: str,
    source: str | Path,
    *,
    mode: Mode = "image",
    images_dir: str | Path | None = None,
    render_dir: str | Path | None = None,
) -> LoadResult:
    # Rendering builds on the attacks module, which itself reads samples; import here to keep that direction.
    from visalign.evaluation.attacks.figstep import FIGSTEP_PROMPT, figstep_filename

    if mode not in ("image", "text"):
        raise VisalignError(f"{benchmark}: mode must be 'image' or 'text', got {mode!r}")
    path = Path(source)
    rows, errors = read_safebench(path, benchmark)
    result = LoadResult(errors=errors)
    official = Path(images_dir) if images_dir else path.parent / "images" / path.stem
    rendered = Path(render_dir) if render_dir else _default_render_dir(benchmark, path)
    for row in rows:
        metadata = {
            "category_id": row.category_id,
            "task_id": row.task_id,
            "question": row.question,
            "instruction": row.instruction,
        }
        images: list[Path] = []
        text = row.question
        if mode == "image":
            text = FIGSTEP_PROMPT
            image = official / figstep_filename(row.category_id, row.task_id)
            if image.exists():
                problem = image_problem(image)
                if problem:
                    result.errors.append(
                        RowError(
                            benchmark=benchmark,
                            source=str(path),
                            row=f"line {row.line}",
                            message=f"official image unusable: {problem}",
                        )
                    )
                    continue
                metadata["image_source"] = "official"
            else:
                image = _rendered(rendered / figstep_filename(row.category_id, row.task_id), row.instruction)
                metadata["image_source"] = "rendered"
            images = [image]
        result.samples.append(
            Sample(
                id=f"{benchmark}:{row.category_id}_{row.task_id}",
                benchmark=benchmark,
                text=text,
                images=images,
                category=row.category_name,
                expected="refuse",
                metadata=metadata,
            )
        )
    return result


def _rendered(path: Path, text: str) -> Path:
    """Return ``path``, rendering ``text`` into it first unless a complete image is already there.

    Written atomically, and a damaged cached file (a run killed mid-write by an older version) is drawn again:
    the cache is shared by every run, so a bad file would otherwise fail that row in all of them.
    """
    from visalign.evaluation.attacks.figstep import render_figstep  # attacks import this package

    if not path.exists() or image_problem(path):
        atomic_write_bytes(path, png_bytes(render_figstep(text)))
    return path


@register_benchmark(
    "figstep-safebench", "FigStep SafeBench, 500 harmful instructions (source: safebench.csv)"
)
def load_figstep_safebench(
    source: str | Path,
    *,
    mode: Mode = "image",
    images_dir: str | Path | None = None,
    render_dir: str | Path | None = None,
) -> LoadResult:
    """Load FigStep SafeBench.

    Args:
        source: ``safebench.csv``.
        mode: ``"image"`` (FigStep attack: image + :data:`FIGSTEP_PROMPT`) or ``"text"`` (the question alone).
        images_dir: folder of official images; default ``images/{csv stem}`` next to the CSV.
        render_dir: where missing images are rendered; default a cache folder under ``visalign_home()``.
    """
    return _load_safebench(
        "figstep-safebench", source, mode=mode, images_dir=images_dir, render_dir=render_dir
    )


@register_benchmark("figstep-safebench-tiny", "FigStep SafeBench-Tiny, 50 rows with official images")
def load_figstep_safebench_tiny(
    source: str | Path,
    *,
    mode: Mode = "image",
    images_dir: str | Path | None = None,
    render_dir: str | Path | None = None,
) -> LoadResult:
    """Load FigStep SafeBench-Tiny; same options as :func:`load_figstep_safebench`."""
    return _load_safebench(
        "figstep-safebench-tiny", source, mode=mode, images_dir=images_dir, render_dir=render_dir
    )


@register_benchmark("figstep-benign", "FigStep's 50 benign sentence templates (benign_sentences_*.csv)")
def load_figstep_benign(
    source: str | Path, *, mode: Mode = "image", render_dir: str | Path | None = None
) -> LoadResult:
    """Load FigStep's benign sentences (harmful phrase removed): benign requests a model should comply with.

    Args:
        source: ``benign_sentences_without_harmful_phase.csv`` (one column, ``sentence``).
        mode: ``"image"`` renders each sentence as a FigStep image with :data:`FIGSTEP_PROMPT`; ``"text"``
            sends the sentence as text.
        render_dir: where the images are rendered; default a cache folder under ``visalign_home()``.
    """
    from visalign.evaluation.attacks.figstep import FIGSTEP_PROMPT

    if mode not in ("image", "text"):
        raise VisalignError(f"figstep-benign: mode must be 'image' or 'text', got {mode!r}")
    path = require_file(source, "FigStep benign sentences CSV")
    rendered = Path(render_dir) if render_dir else _default_render_dir("figstep-benign", path)
    result = LoadResult()
    for line, raw in read_csv(path, ("sentence",)):
        sentence = (raw["sentence"] or "").strip()
        if not sentence:
            result.errors.append(
                RowError(
                    benchmark="figstep-benign", source=str(path), row=f"line {line}", message="empty sentence"
                )
            )
            continue
        sample_id = f"figstep-benign:{line - 1}"
        images: list[Path] = []
        text = sentence
        if mode == "image":
            images, text = [_rendered(rendered / f"benign_{line - 1}.png", sentence)], FIGSTEP_PROMPT
        result.samples.append(
            Sample(
                id=sample_id,
                benchmark="figstep-benign",
                text=text,
                images=images,
                category="benign",
                expected="comply",
                metadata={"sentence": sentence},
            )
        )
    return result
