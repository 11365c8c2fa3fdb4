"""``visalign baseline refusal-data``: training data for the explicit refusal fine-tuning baseline."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

baseline_app = typer.Typer(help="Baselines next to VSFA and Magic Image (explicit refusal fine-tuning data).",
                           no_args_is_help=True)


@baseline_app.command("refusal-data")
def refusal_data(
    config: Annotated[Path, typer.Option(help="A Magic Image YAML config: its data and targets sections are used.")],
    out: Annotated[Path, typer.Option(help="Output folder: llava.json, images/, stats.json; re-run to resume.")],
    value_system: Annotated[str, typer.Option(help="Value system that decides which requests are harmful.")] = (
        "standard"),
    batch_size: Annotated[int, typer.Option(min=1, help="Generation batch for the benign answers.")] = 16,
    max_answer_tokens: Annotated[int, typer.Option(
        min=1, help="Token budget of a benign answer; an answer cut at it is left out (and counted).")] = 256,
) -> None:
    """Write VLGuard-style refusal fine-tuning data (LLaVA JSON) for `visalign vsfa train`; print its counts."""
    from visalign.baselines import build_refusal_dataset
    from visalign.config import load_config
    from visalign.magic import MagicConfig

    stats = build_refusal_dataset(load_config(config, MagicConfig), value_system, out, batch_size=batch_size,
                                  max_answer_tokens=max_answer_tokens)
    typer.echo(json.dumps(stats["by_kind"]), err=True)
    typer.echo(str(out / "llava.json"))


def register(app: typer.Typer) -> None:
    """Add the ``baseline`` group to the top-level app."""
    app.add_typer(baseline_app, name="baseline")
