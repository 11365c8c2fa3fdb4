"""``visalign vsfa ...``: the VSFA commands (``data``, ``merge-shards``, ``train``, ``merge``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

vsfa_app = typer.Typer(
    name="vsfa",
    help="Visual Self-Fulfilling Alignment: build neutral VQA data around threat-related images, then train.",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    """Add the ``vsfa`` sub-app to the top-level CLI."""
    app.add_typer(vsfa_app, name="vsfa")


def _print_plan(plan: dict, corpus: dict) -> None:
    console = Console()
    console.print(
        f"corpus: {corpus['read']} read, {corpus['selected']} selected, {corpus['in_shard']} in shard "
        f"{corpus['shard']}; {plan['scenes']} scenes planned"
    )
    table = Table("stage", "backend", "calls", "done", "remaining", "est. tokens", "est. cost (USD)")
    for name in ("scenes", "images", "vqa"):
        stage = plan["stages"][name]
        tokens = stage.get("est_prompt_tokens", 0) + stage.get("est_completion_tokens", 0)
        table.add_row(name, stage["backend"], str(stage["calls"]), str(stage["done"]), str(stage["remaining"]),
                      f"{tokens:,}" if tokens else "-", f"{stage['est_cost_usd']:.4f}")  # fmt: skip
    console.print(table)
    console.print(f"estimated cost: ${plan['est_cost_usd']:.4f} ({plan['note']})")


@vsfa_app.command("data")
def data(
    config: Annotated[Path, typer.Option("--config", "-c", help="YAML job config (configs/vsfa_data_*.yaml)")],
    out: Annotated[Path, typer.Option("--out", "-o", help="run directory; re-run with the same config to resume")],
    shard: Annotated[str, typer.Option("--shard", help="process shard i of n (0-based), e.g. 2/8")] = "0/1",
    dry_run: Annotated[bool, typer.Option("--dry-run", help="print the plan and estimated cost; call nothing")] = False,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="progress bars on stderr")] = True,
) -> None:
    """Build the VSFA training data: abstracts -> scenes -> images -> neutral VQA -> dataset/."""
    from visalign.config import load_config
    from visalign.vsfa import Shard, VsfaDataConfig, build_dataset

    job = load_config(config, VsfaDataConfig)
    result = build_dataset(job, out, shard=Shard.parse(shard), dry_run=dry_run, show_progress=progress)
    if dry_run:
        _print_plan(result["plan"], result["corpus"])
        return
    export, vqa = result["export"], result["vqa"]
    errors = {name: result[name]["service_errors"] for name in ("scenes", "images", "vqa")}
    # a request the service failed is not final: say so, or a dataset short of it would look complete
    retried = ", ".join(f"{name} {count}" for name, count in errors.items())
    typer.echo(
        f"{out / 'dataset'}: {export['examples']} examples, {export['pairs']} pairs "
        f"({vqa['pairs_rejected_by_neutrality']} rejected by the neutrality filter); "
        f"failed: scenes {result['scenes']['failed']}, images {result['images']['failed']}, vqa {vqa['failed']}"
        + (f"; service errors, tried again by a re-run: {retried}" if any(errors.values()) else "")
    )


@vsfa_app.command("merge-shards")
def merge_shards_command(
    shards: Annotated[list[Path], typer.Argument(help="the --out directories of the shard runs")],
    out: Annotated[Path, typer.Option("--out", "-o", help="the merged run directory")],
) -> None:
    """Merge the run directories of a sharded ``vsfa data`` job and export one dataset."""
    from visalign.vsfa import merge_shards

    export = merge_shards(shards, out)["export"]
    typer.echo(f"{out / 'dataset'}: {export['examples']} examples, {export['pairs']} pairs from {len(shards)} shards")


@vsfa_app.command("train")
def train_command(
    config: Annotated[Path, typer.Option("--config", "-c", help="YAML job config (configs/vsfa_train_*.yaml)")],
    out: Annotated[Path, typer.Option("--out", "-o", help="run directory; re-run with the same config to resume")],
) -> None:
    """LoRA-train a VLM's language model on a VSFA (or any LLaVA/ShareGPT) dataset; multi-GPU via accelerate."""
    from accelerate import PartialState

    from visalign.config import load_config
    from visalign.vsfa.training import VsfaTrainConfig, train

    result = train(load_config(config, VsfaTrainConfig), out)
    if not PartialState().is_main_process:  # under accelerate launch / torchrun: one summary, not one per GPU
        return
    resumed = f" (resumed at step {result.resumed_from})" if result.resumed_from else ""
    loss = "n/a" if result.final_loss is None else f"{result.final_loss:.4f}"
    typer.echo(f"{result.adapter}: {result.steps} steps{resumed}, final loss {loss}, "
               f"{result.examples} examples, {result.bad_records} bad records skipped")  # fmt: skip


@vsfa_app.command("merge")
def merge_command(
    adapter: Annotated[Path, typer.Argument(help="the adapter folder (<train out>/adapter)")],
    out: Annotated[Path, typer.Option("--out", "-o", help="folder for the merged checkpoint")],
    base: Annotated[str | None, typer.Option("--base", help="base model spec; default: the adapter's")] = None,
    dtype: Annotated[str | None, typer.Option("--dtype", help="bfloat16 or float32; default: float32")] = None,
    allow_base_mismatch: Annotated[bool, typer.Option(
        "--allow-base-mismatch", help="merge into base weights other than those the adapter was trained on",
    )] = False,
) -> None:
    """Fold a trained adapter into its base model; the result loads like any checkpoint (`--model DIR`)."""
    from visalign.vsfa.training import merge_adapter

    merged = merge_adapter(adapter, out, base=base, dtype=dtype, allow_base_mismatch=allow_base_mismatch)
    typer.echo(f"{merged}: merged checkpoint")
