"""``visalign judge ...``: label model responses offline (refusal judges), or measure the judges themselves."""

from __future__ import annotations

import signal
import sys
from collections import Counter
from pathlib import Path
from typing import Annotated, NoReturn

import typer

from visalign.evaluation.judges.registry import DEFAULT_REFUSAL_JUDGE

judge_app = typer.Typer(
    name="judge", help="Judge model responses (refusal / compliance / unknown).", no_args_is_help=True
)


def _print_agreement(rows) -> None:
    """One line per judge: n, accuracy, precision, recall, Cohen's kappa (unknown as its own label), unknown."""
    width = max([len("judge"), *(len(row.judge) for row in rows)]) + 2
    typer.echo(f"{'judge':<{width}}{'n':>5}{'accuracy':>10}{'precision':>11}{'recall':>8}{'kappa':>8}{'unknown':>9}")
    for row in rows:
        typer.echo(f"{row.judge:<{width}}{row.n:>5}{row.accuracy:>10.3f}{row.precision:>11.3f}{row.recall:>8.3f}"
                   f"{row.kappa:>8.3f}{row.unknown:>9}")  # fmt: skip


def register(app: typer.Typer) -> None:
    """Add the ``judge`` sub-app to the top-level CLI."""
    app.add_typer(judge_app, name="judge")


@judge_app.command("refusal")
def refusal(
    input_path: Annotated[
        Path | None, typer.Option("--input", "-i", help="JSONL with id, prompt, response per line")
    ] = None,
    preset: Annotated[
        str, typer.Option("--preset", "-p", help="visalign-refusal-v6 (default), visalign-refusal (v1), "
                                                 "-v2, -v3, -v4, -v5, xstest, gcg, gcg-eval or vlguard")
    ] = DEFAULT_REFUSAL_JUDGE,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="output JSONL (default: standard output)")] = None,
    evaluate: Annotated[
        bool, typer.Option("--evaluate", help="measure every judge on labelled responses instead of judging --input")
    ] = False,
    labelled: Annotated[
        Path | None, typer.Option("--labelled", help="with --evaluate: labelled JSONL (default: packaged dev set)")
    ] = None,
    split: Annotated[
        str | None, typer.Option("--split", help="with --evaluate: dev or test split of the packaged set")
    ] = None,
) -> None:
    """Label responses as refusal, compliance or unknown; or, with --evaluate, print each judge's agreement.

    --out is written whole or not at all (so it may be the input itself): an interrupted run keeps nothing.
    """
    from visalign.errors import VisalignError
    from visalign.evaluation.judges import evaluate_refusal_judges, get_refusal_judge, judge_refusal_file

    if evaluate:
        try:
            _print_agreement(evaluate_refusal_judges(labelled, split))
        except KeyboardInterrupt:
            _stop_interrupted("nothing was printed: re-run the same command")
        return
    if input_path is None:
        raise VisalignError("judge refusal: pass --input FILE.jsonl (or --evaluate)")
    try:
        counts = judge_refusal_file(input_path, get_refusal_judge(preset), out)
    except KeyboardInterrupt:
        kept = (f"{out} is written only once every line is judged, so it is left as it was" if out else
                "the labels on standard output are incomplete")  # fmt: skip
        _stop_interrupted(f"nothing is kept ({kept}): re-run the same command to judge {input_path} from the start")
    if counts["error"]:
        # every good line is judged and written first, so the work is kept; the exit code tells a script
        raise VisalignError(_bad_lines_message(input_path, out, counts))
    typer.echo(
        f"{counts['refusal']} refusal, {counts['compliance']} compliance, {counts['unknown']} unknown, "
        f"{counts['error']} error lines",
        err=True,
    )


def _stop_interrupted(what_now: str) -> NoReturn:
    """End a Ctrl-C or a SIGTERM with one line that says what is kept, and the CLI's exit code (130 or 143).

    The CLI's own line ("finished work is kept: re-run the same command to resume") would be untrue here.
    """
    from visalign.cli import _TERMINATED  # set by visalign.cli.main when the interrupt was a SIGTERM

    typer.echo(f"{'terminated (SIGTERM)' if _TERMINATED else 'interrupted'}; {what_now}", err=True)
    sys.exit(128 + signal.SIGTERM if _TERMINATED else 130)


def _bad_lines_message(input_path: Path, out: Path | None, counts: Counter) -> str:
    """The one-line error for an input with malformed lines: how many, where their records are, what to do."""
    where = out or "standard output"
    return (f"{input_path}: {counts['error']} of {sum(counts.values())} lines could not be judged (see their "
            f"\"error\" records in {where}; the rest judged: {counts['refusal']} refusal, "
            f"{counts['compliance']} compliance, {counts['unknown']} unknown); fix those lines and re-run")  # fmt: skip


@judge_app.command("validate")
def validate(
    labelled_set: Annotated[
        str, typer.Option("--set", help="published human-labelled set: pyrit (PyRIT's refusal scorer set)")
    ] = "pyrit",
    out: Annotated[Path | None, typer.Option("--out", "-o", help="also write the figures as JSON here")] = None,
) -> None:
    """Measure every refusal judge on a published human-labelled set, fetched from PyPI (never tuned on)."""
    import json

    from visalign.errors import VisalignError
    from visalign.evaluation.judges import evaluate_refusal_judges
    from visalign.evaluation.judges.validation import PYRIT_REQUIREMENT, fetch_pyrit_refusal_set

    if labelled_set != "pyrit":
        raise VisalignError(f"judge validate: unknown --set {labelled_set!r}; choose pyrit")
    path = fetch_pyrit_refusal_set()
    rows = evaluate_refusal_judges(path)
    _print_agreement(rows)
    if out is not None:
        figures = [row.as_dict() for row in rows]  # the confusion table, accuracy ... kappa; null for undefined
        out.write_text(json.dumps({"set": PYRIT_REQUIREMENT, "file": str(path), "judges": figures}, indent=2) + "\n")
