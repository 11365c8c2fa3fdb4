"""``visalign eval``: evaluate systems on benchmarks and write records, summaries and an HTML report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def eval_command(
    config: Annotated[Path, typer.Option("--config", help="Evaluation config (YAML): systems and benchmarks.")],
    out: Annotated[Path, typer.Option("--out", help="Run directory; re-running with the same config resumes.")],
) -> None:
    """Evaluate one or more systems on one or more benchmarks; print the report's path."""
    from visalign.config import load_config
    from visalign.evaluation.config import EvalConfig
    from visalign.evaluation.runner import run_eval

    job = load_config(config, EvalConfig)
    report = run_eval(job, out, config_dir=config.resolve().parent, strict=True)
    typer.echo(f"report: {report}")


def register(app: typer.Typer) -> None:
    """Add ``eval`` to the top-level app."""
    app.command("eval")(eval_command)
