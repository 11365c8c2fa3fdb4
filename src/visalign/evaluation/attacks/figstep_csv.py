"""Rendering a whole SafeBench CSV into FigStep images named as the official files."""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

from visalign.evaluation.attacks.figstep import figstep_filename, render_figstep
from visalign.evaluation.attacks.fonts import load_font, resolve_font
from visalign.evaluation.benchmarks.figstep import read_safebench
from visalign.evaluation.benchmarks.sample import RowError
from visalign.runs import atomic_write_bytes
from visalign.temp_files import sweep_stale_temp_files

FONT_SIZE = 80
#: The names :func:`figstep_filename` gives, as a pattern: the files whose killed writes a new render clears.
FIGSTEP_NAMES = r"query_ForbidQI_.+_.+_6\.png"


@dataclass
class FigStepRenderReport:
    """What :func:`render_figstep_csv` did: files written, rows refused, and the font used."""

    written: list[Path] = field(default_factory=list)
    errors: list[RowError] = field(default_factory=list)
    font: Path | None = None
    faithful_font: bool = True


def render_figstep_csv(csv_path: str | Path, out_dir: str | Path) -> FigStepRenderReport:
    """Render one FigStep image per SafeBench row, named as the official ``query_ForbidQI_{cat}_{task}_6.png``.

    Args:
        csv_path: a SafeBench CSV (``dataset,category_id,task_id,category_name,question,instruction``).
        out_dir: the output folder (created if missing; existing files of the same name are overwritten, and the
            temporary files of images whose render was killed are deleted first).

    Returns:
        The files written, one error per malformed row, and the font used (with whether it is FreeMonoBold).

    Raises:
        VisalignError: the CSV is missing, unreadable or not in SafeBench's format.
    """
    rows, errors = read_safebench(csv_path)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sweep_stale_temp_files(out, FIGSTEP_NAMES)
    choice = resolve_font("figstep")
    font = load_font("figstep", FONT_SIZE)
    report = FigStepRenderReport(errors=errors, font=choice.path, faithful_font=choice.faithful)
    for row in rows:
        target = out / figstep_filename(row.category_id, row.task_id)
        # to bytes, then atomically to the name: a killed or concurrent render never leaves a cut-short PNG under
        # the official name, where a benchmark loader would read it as the attack image
        buffer = io.BytesIO()
        render_figstep(row.instruction, font=font).save(buffer, format="PNG")
        atomic_write_bytes(target, buffer.getvalue())
        report.written.append(target)
    return report
