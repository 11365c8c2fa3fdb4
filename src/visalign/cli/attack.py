"""``visalign attack ...``: render typographic attack images (FigStep, any text benchmark)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from visalign.errors import VisalignError

attack_app = typer.Typer(
    name="attack",
    help="Render image-borne attacks: FigStep images from a SafeBench CSV, or any text benchmark as images.",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    """Add the ``attack`` sub-app to the top-level CLI."""
    app.add_typer(attack_app, name="attack")


@attack_app.command("figstep")
def figstep(
    csv: Annotated[Path, typer.Option("--csv", help="SafeBench CSV (dataset,category_id,task_id,...,instruction)")],
    out: Annotated[Path, typer.Option("--out", "-o", help="folder for query_ForbidQI_{cat}_{task}_6.png files")],
) -> None:
    """Render one FigStep image per SafeBench row, named as the official files.

    Every good row is drawn first; malformed rows are listed on stderr, then the command exits 2 with their count.
    """
    from visalign.evaluation.attacks import render_figstep_csv

    report = render_figstep_csv(csv, out)
    for error in report.errors:
        typer.echo(f"skipped {error}", err=True)
    font = f"{report.font}" + ("" if report.faithful_font else " (FALLBACK: images will differ from the official)")
    typer.echo(f"wrote {len(report.written)} images to {out}; {len(report.errors)} rows skipped; font {font}")
    if report.errors:
        raise VisalignError(_skipped_rows_message(csv, len(report.errors), len(report.written), "skipped above"))


@attack_app.command("typographic")
def typographic(
    benchmark: Annotated[str, typer.Option("--benchmark", "-b", help="registered benchmark name, e.g. advbench")],
    source: Annotated[str, typer.Option("--source", "-s", help="the benchmark's file, folder or dataset id")],
    out: Annotated[Path, typer.Option("--out", "-o", help="output folder (images/, samples.jsonl, errors.jsonl)")],
    style: Annotated[str, typer.Option("--style", help="figstep or typo")] = "figstep",
) -> None:
    """Turn a benchmark's text prompts into typographic attack images with the paired text prompt."""
    from visalign.evaluation.attacks import write_typographic_set

    result = write_typographic_set(benchmark, source, out, style=style)  # type: ignore[arg-type]
    typer.echo(f"wrote {len(result.samples)} samples to {out / 'samples.jsonl'}; {len(result.errors)} errors "
               f"in {out / 'errors.jsonl'}")
    if result.errors:
        where = f"their records are in {out / 'errors.jsonl'}"
        raise VisalignError(_skipped_rows_message(source, len(result.errors), len(result.samples), where))


def _skipped_rows_message(source: Path | str, skipped: int, written: int, where: str) -> str:
    """The one-line error for rows that could not be drawn: how many, where they are listed, what to do.

    A script that runs an attack command must be able to tell a partial set from a whole one; the good rows are
    written before this is raised, so nothing finished is lost and a re-run after the fix redraws them unchanged.
    """
    return (f"{source}: {skipped} of {skipped + written} rows could not be drawn ({where}; the other {written} "
            "were written); fix those rows and re-run")
