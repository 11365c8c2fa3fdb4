"""FigStep SafeBench (500 rows), SafeBench-Tiny (50) and the benign sentence set (Gong et al., 2023).

SafeBench CSV columns: ``dataset,category_id,task_id,category_name,question,instruction``. In ``image`` mode
a sample is the official typographic image (``images/{csv stem}/query_ForbidQI_{cat}_{task}_6.png`` next to the
CSV, or ``images_dir``) with :data:`FIGSTEP_PROMPT`; rows without an official image get one rendered faithfully.
In ``text`` mode a sample is the plain ``question`` (the vanilla text baseline).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Literal

from visalign.errors import VisalignError
from visalign.evaluation.benchmarks._io import image_problem, read_csv, read_lines, require_file
from visalign.evaluation.benchmarks.registry import register_benchmark
from visalign.evaluation.benchmarks.sample import LoadResult, RowError, Sample
from visalign.images import image_problems, png_bytes
from visalign.paths import visalign_home
from visalign.runs import atomic_write_bytes, atomic_write_text, sha256_file

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


def read_safebench(path: str | Path, benchmark: str = "figstep-safebench") -> tuple[list[SafeBenchRow], list[RowError]]:
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
        errors.append(
            RowError(benchmark=benchmark, source=str(path), row=f"line {line}", message=message, expected="refuse")
        )

    for line, raw, error in read_csv(path, SAFEBENCH_COLUMNS):
        if error or raw is None:
            bad(line, error or "unreadable row")
            continue
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


#: The file in a render folder that names the renderer and font its images were drawn with.
RENDER_STAMP = "figstep-render.txt"


class RenderCache:
    """A folder of FigStep images drawn from one source, and the renderer and font that draw them.

    The folder is shared by every run (by default a cache under ``visalign_home()``), so an image is reused only
    when it was drawn by this renderer version with this very font file: one drawn with the fallback font before
    FreeMonoBold was installed would otherwise be sent for ever after. The font is looked up (and a fallback
    announced) only when an image is asked for.
    """

    def __init__(self, benchmark: str, source: Path, render_dir: str | Path | None) -> None:
        """Prepare the cache for ``source``: ``render_dir``, or a folder keyed by source, renderer and font.

        Args:
            benchmark: the registry name, a level of the default folder.
            source: the file the rows come from (its sha256 keys the default folder).
            render_dir: the folder chosen by the user; its images are redrawn when its stamp names another key.
        """
        self._benchmark, self._source, self._render_dir = benchmark, source, render_dir
        self._drawn_any = False
        self._checked: dict[Path, str | None] = {}  # by check_drawn: each drawn image's problem, or None

    @cached_property
    def font(self) -> Path:
        """The font file the images are drawn with."""
        from visalign.evaluation.attacks.fonts import resolve_font  # attacks import this package

        return resolve_font("figstep").path

    @cached_property
    def key(self) -> str:
        """The renderer version and the font file's name and sha256."""
        from visalign.evaluation.attacks.figstep import RENDER_VERSION

        return f"v{RENDER_VERSION}-{self.font.stem}-{sha256_file(self.font)[:16]}"

    @cached_property
    def folder(self) -> Path:
        """Where the images are."""
        if self._render_dir is not None:
            return Path(self._render_dir)
        digest = hashlib.sha256(self._source.read_bytes()).hexdigest()[:12]
        return visalign_home() / "renders" / self._benchmark / f"{digest}-{self.key}"

    @cached_property
    def stale(self) -> bool:
        """Whether the folder's images may come from another renderer or font, so that each is drawn again."""
        stamp = self.folder / RENDER_STAMP
        return not stamp.is_file() or stamp.read_text(encoding="utf-8").strip() != self.key

    def check_drawn(self, names: Iterable[str]) -> None:
        """Check the images ``names`` already drawn here all at once, in threads, for :meth:`image` to use.

        One by one, :meth:`image` decoding each drawn image was most of a start's time. Nothing is checked when
        ``names`` is empty (the font is looked up only when an image is asked for) or the folder is stale (every
        image is drawn again then).
        """
        names = list(names)
        if names and not self.stale:
            self._checked.update(image_problems(p for p in (self.folder / name for name in names) if p.exists()))

    def _problem(self, path: Path) -> str | None:
        """Why the drawn image ``path`` is unusable, or None: checked by :meth:`check_drawn`, else now."""
        return self._checked.pop(path) if path in self._checked else image_problem(path)

    def image(self, name: str, text: str) -> Path:
        """Return the image ``name`` showing ``text``, drawing it first unless a complete, current one is there.

        Written atomically, and a damaged file (a run killed mid-write by an older version) is drawn again: a bad
        file would otherwise fail that row in every run.
        """
        from PIL import ImageFont

        from visalign.evaluation.attacks.figstep import FONT_SIZE, render_figstep

        path = self.folder / name
        if self.stale or not path.exists() or self._problem(path):
            # drawn with the very file named in the key and in the samples' metadata
            font = ImageFont.truetype(str(self.font), FONT_SIZE)
            atomic_write_bytes(path, png_bytes(render_figstep(text, font=font)))
        self._drawn_any = True
        return path

    def seal(self) -> None:
        """Stamp the folder with the renderer and font, once every image asked for is drawn with them."""
        if self._drawn_any and self.stale:
            atomic_write_text(self.folder / RENDER_STAMP, self.key + "\n")


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
    rendered = RenderCache(benchmark, path, render_dir) if mode == "image" else None
    names = [figstep_filename(row.category_id, row.task_id) for row in rows]
    # Every image the rows will use is decoded up front, all at once in threads (one by one, decoding was most of
    # a start's time): the official ones here, those drawn before by the render cache; the rows keep their order.
    problems: dict[Path, str | None] = {}
    if rendered is not None:
        problems = image_problems(image for image in (official / name for name in names) if image.exists())
        rendered.check_drawn(name for name in names if official / name not in problems)
    for row, name in zip(rows, names, strict=True):
        metadata = {
            "category_id": row.category_id,
            "task_id": row.task_id,
            "question": row.question,
            "instruction": row.instruction,
        }
        images: list[Path] = []
        text, request = row.question, None
        if rendered is not None:
            text, request = FIGSTEP_PROMPT, row.question  # the image states the request; the text asks to fill it in
            image = official / name
            if image in problems:  # the official image is there
                problem = problems[image]
                if problem:
                    result.errors.append(
                        RowError(
                            benchmark=benchmark,
                            source=str(path),
                            row=f"line {row.line}",
                            message=f"official image unusable: {problem}",
                            expected="refuse",
                        )
                    )
                    continue
                metadata["image_source"] = "official"
            else:
                image = rendered.image(name, row.instruction)
                metadata["image_source"] = "rendered"
                metadata["font"] = rendered.font.name
            images = [image]
        result.samples.append(
            Sample(
                id=f"{benchmark}:{row.category_id}_{row.task_id}",
                benchmark=benchmark,
                text=text,
                images=images,
                category=row.category_name,
                expected="refuse",
                request=request,
                metadata=metadata,
            )
        )
    if rendered is not None:
        rendered.seal()
    return result


@register_benchmark("figstep-safebench", "FigStep SafeBench, 500 harmful instructions (source: safebench.csv)")
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
        render_dir: where missing images are rendered; default a cache folder under ``visalign_home()`` keyed by the
            CSV, renderer version and font file. Images are drawn again when the renderer or font changes.
    """
    return _load_safebench("figstep-safebench", source, mode=mode, images_dir=images_dir, render_dir=render_dir)


@register_benchmark("figstep-safebench-tiny", "FigStep SafeBench-Tiny, 50 rows with official images")
def load_figstep_safebench_tiny(
    source: str | Path,
    *,
    mode: Mode = "image",
    images_dir: str | Path | None = None,
    render_dir: str | Path | None = None,
) -> LoadResult:
    """Load FigStep SafeBench-Tiny; same options as :func:`load_figstep_safebench`."""
    return _load_safebench("figstep-safebench-tiny", source, mode=mode, images_dir=images_dir, render_dir=render_dir)


@register_benchmark("figstep-benign", "FigStep's 50 benign sentence templates (benign_sentences_*.csv)")
def load_figstep_benign(
    source: str | Path, *, mode: Mode = "image", render_dir: str | Path | None = None
) -> LoadResult:
    """Load FigStep's benign sentences (harmful phrase removed): benign requests a model should comply with.

    Args:
        source: ``benign_sentences_without_harmful_phase.csv``: a ``sentence`` header, then one sentence a line,
            unquoted (a comma belongs to the sentence).
        mode: ``"image"`` renders each sentence as a FigStep image with :data:`FIGSTEP_PROMPT`; ``"text"``
            sends the sentence as text.
        render_dir: where the images are rendered; default a cache folder under ``visalign_home()`` keyed by the
            file, renderer version and font file. Images are drawn again when the renderer or font changes.
    """
    from visalign.evaluation.attacks.figstep import FIGSTEP_PROMPT

    if mode not in ("image", "text"):
        raise VisalignError(f"figstep-benign: mode must be 'image' or 'text', got {mode!r}")
    path = require_file(source, "FigStep benign sentences CSV")
    rendered = RenderCache("figstep-benign", path, render_dir) if mode == "image" else None
    result = LoadResult()
    # One column, written without quoting: "$50,000" holds a comma that a CSV reader would split the row at.
    lines = list(read_lines(path, "sentence"))
    if rendered is not None:  # the images drawn before, decoded all at once in threads
        rendered.check_drawn(f"benign_{line - 1}.png" for line, raw in lines if raw.strip())
    for line, raw in lines:
        sentence = raw.strip()
        if not sentence:
            result.errors.append(
                RowError(
                    benchmark="figstep-benign",
                    source=str(path),
                    row=f"line {line}",
                    message="empty sentence",
                    expected="comply",
                )
            )
            continue
        images: list[Path] = []
        text, request = sentence, None
        metadata = {"sentence": sentence}
        if rendered is not None:
            images, text = [rendered.image(f"benign_{line - 1}.png", sentence)], FIGSTEP_PROMPT
            request = sentence
            metadata["font"] = rendered.font.name
        result.samples.append(
            Sample(
                id=f"figstep-benign:{line - 1}",
                benchmark="figstep-benign",
                text=text,
                images=images,
                category="benign",
                expected="comply",
                request=request,
                metadata=metadata,
            )
        )
    if rendered is not None:
        rendered.seal()
    return result
