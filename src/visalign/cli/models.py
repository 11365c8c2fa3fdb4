"""``visalign models ...`` and ``visalign chat``: list families, build the default model, ask a model a question."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

models_app = typer.Typer(help="Supported model families, the embedded default model, random test checkpoints.",
                         no_args_is_help=True)


@models_app.command("list")
def list_models() -> None:
    """List the supported model families and the embedded default model."""
    from visalign.models import FAMILIES, default_model_path
    from visalign.models.default_model import verify_default_model

    table = Table("family", "model_type", "example checkpoint", "images per conversation")
    for family in FAMILIES.values():
        table.add_row(family.name, family.model_type, family.example, "several" if family.multi_image else "one")
    console = Console()
    console.print(table)
    path = default_model_path()
    state = "built" if verify_default_model(path) else "not built (run `visalign models build-default`)"
    console.print(f"default: smollm2-vlm (LLaVA architecture, SmolLM2-135M-Instruct) at {path}: {state}")


@models_app.command("build-default")
def build_default(
    force: Annotated[bool, typer.Option(help="Rebuild even if a verified copy exists.")] = False,
) -> None:
    """Build the embedded default model (SmolLM2-135M-Instruct + SigLIP-style tower) and print its folder."""
    from visalign.models.default_model import build_default_model

    typer.echo(build_default_model(force=force))


@models_app.command("write-random")
def write_random(
    family: Annotated[str, typer.Option(help="qwen2_5_vl, qwen3_vl, llava or llava_next.")],
    out: Annotated[Path, typer.Option(help="Output folder.")],
    shape: Annotated[str, typer.Option(help="tiny (CPU tests) or 7b (published 7B/8B shapes).")] = "tiny",
    bf16: Annotated[bool, typer.Option(help="Store weights in bfloat16.")] = False,
) -> None:
    """Write a random-weight checkpoint of a family (for tests and GPU benchmarks) and print its folder."""
    import torch

    from visalign.models.random_checkpoints import write_random_checkpoint

    dtype = torch.bfloat16 if bf16 else torch.float32
    typer.echo(write_random_checkpoint(family, out, shape=shape, dtype=dtype))


def chat(
    question: Annotated[str, typer.Argument(help="The question to ask.")],
    model: Annotated[str, typer.Option(help="Model spec: default, a checkpoint folder or a hub id.")] = "default",
    image: Annotated[list[Path] | None, typer.Option(help="Image file shown before the question; repeatable.")] = None,
    max_new_tokens: Annotated[int, typer.Option(min=1, help="Longest answer, in tokens.")] = 128,
) -> None:
    """Ask a model one question, optionally about images, and print its greedy answer."""
    from visalign.images import load_image
    from visalign.models import load_vlm, user

    images = [load_image(path) for path in image or []]  # validate files before the slow model load
    vlm = load_vlm(model)
    typer.echo(vlm.generate([[user(question, *images)]], max_new_tokens=max_new_tokens)[0])


def register(app: typer.Typer) -> None:
    """Add ``models`` and ``chat`` to the top-level app."""
    app.add_typer(models_app, name="models")
    app.command("chat")(chat)
