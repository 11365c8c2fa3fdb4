"""``visalign magic optimize`` and ``visalign magic apply``: make a magic image, use one."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

magic_app = typer.Typer(help="Magic Image: one optimised image prompt per value system, no weight changes.",
                        no_args_is_help=True)


@magic_app.command("optimize")
def optimize(
    config: Annotated[Path, typer.Option(help="Magic Image YAML config (see configs/magic_*.yaml).")],
    out: Annotated[Path, typer.Option(help="Output folder: <value system>.png + .json; re-run to resume.")],
) -> None:
    """Optimise one magic image per value system of the config and print where each went."""
    from visalign.config import load_config
    from visalign.magic import MagicConfig, optimize_magic_images

    job = load_config(config, MagicConfig)

    def progress(name: str, step: int, parts: dict) -> None:
        if step == 1 or step % 10 == 0 or step == job.optim.steps:
            typer.echo(f"[{name}] step {step}/{job.optim.steps} loss {parts['loss']:.4f} "
                       f"harm {parts['harm_nll']:.4f} benign {parts['benign_nll']:.4f}", err=True)

    for result in optimize_magic_images(job, out, on_step=progress):
        evaluation = result.metadata.get("evaluation", {})
        rates = " ".join(f"{k}={rate_text(v)}" for k, v in evaluation.items() if isinstance(v, dict))
        typer.echo(f"{result.value_system}: {result.png} {rates}".rstrip())


def rate_text(figures: dict) -> str:
    """One refusal rate of a Magic Image evaluation as the job prints it.

    ``40%`` when every verdict was known; ``40% (2/5, 1 unknown)`` when some were not (they are outside the
    denominator); ``n/a (0/0, 3 unknown)`` when nothing was judged, so there is no rate.
    """
    rate, unknown = figures.get("rate"), figures.get("unknown", 0)
    if rate is not None and not unknown:
        return f"{rate:.0%}"
    judged = figures.get("judged", figures["n"] - unknown)
    counts = f"{figures['refused']}/{judged}" + (f", {unknown} unknown" if unknown else "")
    return ("n/a" if rate is None else f"{rate:.0%}") + f" ({counts})"


@magic_app.command("apply")
def apply(
    images: Annotated[Path, typer.Option(help="Folder of magic images (the --out of `magic optimize`).")],
    value_system: Annotated[str, typer.Option(help="Which value system's image to attach.")],
    prompt: Annotated[list[str] | None, typer.Option(help="A user request; repeatable.")] = None,
    prompts: Annotated[Path | None, typer.Option(help="Text file, one request per line.")] = None,
    image: Annotated[Path | None, typer.Option(help="The user's own image, shown with every request.")] = None,
    model: Annotated[str | None, typer.Option(help="Model spec; default the one the image was made for.")] = None,
    max_new_tokens: Annotated[int, typer.Option(min=1, help="Longest answer, in tokens.")] = 128,
    allow_model_mismatch: Annotated[bool, typer.Option(
        help="Attach the image to weights other than those it was optimised against (a transfer study).")] = False,
) -> None:
    """Answer requests with the value system's magic image attached; prints one JSON line per request."""
    from visalign.errors import VisalignError
    from visalign.images import load_image
    from visalign.magic import answer_with_magic_image, find_magic_image, model_mismatch
    from visalign.models import load_vlm, user

    magic = find_magic_image(images, value_system)
    spec = model or (magic.metadata.get("model") or {}).get("spec")
    if not spec:
        raise VisalignError(f"{images}: the {value_system} image's sidecar names no model; pass --model SPEC")
    if not allow_model_mismatch and (reason := model_mismatch(magic, spec)):
        raise VisalignError(reason)
    requests = list(prompt or [])
    if prompts is not None:
        if not prompts.is_file():
            raise VisalignError(f"{prompts}: prompts file not found")
        try:
            text = prompts.read_text(encoding="utf-8-sig")
        except UnicodeDecodeError as exc:
            line = prompts.read_bytes()[: exc.start].count(b"\n") + 1
            raise VisalignError(f"{prompts}: line {line} is not UTF-8 text ({exc.reason}); save it as UTF-8") from None
        requests += [line.strip() for line in text.splitlines() if line.strip()]
    if not requests:
        raise VisalignError("no requests: pass --prompt TEXT or --prompts FILE")
    user_images = [load_image(image)] if image else []
    vlm = load_vlm(spec)
    answers = answer_with_magic_image(vlm, [[user(r, *user_images)] for r in requests], magic,
                                      max_new_tokens=max_new_tokens)
    for request, answer in zip(requests, answers, strict=True):
        typer.echo(json.dumps({"value_system": value_system, "prompt": request, "answer": answer}))


def register(app: typer.Typer) -> None:
    """Add the ``magic`` group to the top-level app."""
    app.add_typer(magic_app, name="magic")
