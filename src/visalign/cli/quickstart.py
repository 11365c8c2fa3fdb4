"""``visalign quickstart``: the main job end to end on the embedded default model."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def quickstart(
    out: Annotated[Path, typer.Option("--out", help="Run directory; a re-run resumes finished stages.")] = Path(
        "runs/quickstart"
    ),
    scale: Annotated[str, typer.Option(help="small (the quickstart) or tiny (seconds per stage; plumbing only).")] = (
        "small"
    ),
    model: Annotated[str, typer.Option(help="Model spec for every stage: default (the embedded model), a "
                                            "checkpoint folder or a hub id.")] = "default",
) -> None:
    """Build the default model, VSFA data and adapter, two magic images, evaluate them all and write a report."""
    from visalign.errors import VisalignError
    from visalign.quickstart import SCALES, run_quickstart

    if scale not in SCALES:
        raise VisalignError(f"unknown --scale {scale!r}; choose one of {', '.join(SCALES)}")
    report = run_quickstart(out, scale=SCALES[scale], model=model)
    typer.echo(f"report: {report}")


def register(app: typer.Typer) -> None:
    """Add ``quickstart`` to the top-level app."""
    app.command("quickstart")(quickstart)
