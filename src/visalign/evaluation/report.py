"""The self-contained HTML report of an evaluation run: tables, plots, errors, sample responses, config.

One file with inline CSS and plots as base64 PNG (matplotlib's Agg canvas, no display, no network), so it
can be mailed or attached to a paper review. The page is rendered from ``report.jinja`` with autoescaping on:
prompts, responses, error messages, system names and the config are always shown as text, never as markup.
"""

from __future__ import annotations

import base64
import io
import json
import random
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from functools import cache
from importlib import metadata, resources
from pathlib import Path
from typing import Any

import jinja2
from matplotlib import rc_context
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from visalign.evaluation.llm_judges.registry import ANSWER_GRADERS
from visalign.evaluation.summary import (
    ATTACK_SUCCESS,
    CAPABILITY,
    HARMFUL_REFUSAL,
    JUDGE_UNSAFE,
    MEAN_SCORE,
    OVER_REFUSAL,
    SummaryRow,
    check_records,
    judge_failed,
    load_records,
    summarize,
    unparsed_answer,
)
from visalign.runs import atomic_write_text, scrub_secrets

#: Overview columns: header and metric; the quality column is filled from the quality judge's mean score.
OVERVIEW_METRICS = (
    ("ASR", ATTACK_SUCCESS),
    ("Harmful refusal", HARMFUL_REFUSAL),
    ("Over-refusal", OVER_REFUSAL),
    ("Capability", CAPABILITY),
)
#: Which metric a per-category chart shows for the samples of each expected behaviour.
CATEGORY_CHART_METRICS = ((ATTACK_SUCCESS, "attack success rate"), (OVER_REFUSAL, "over-refusal rate"),
                          (CAPABILITY, "capability accuracy"))
PREFERRED_QUALITY_JUDGE = "rubric"
_PROMPT_CHARS, _RESPONSE_CHARS = 800, 2000
_DPI = 100
# System, benchmark and category names are user text: drawn literally, so a "$" never starts mathtext, which would
# mis-render "$5 vs $10" and raise on an invalid formula after the whole run. Wraps every function that draws text.
_literal_text = rc_context({"text.parse_math": False})


# ------------------------------------------------------------------------------------------------ formatting
def _cell(row: SummaryRow | None) -> dict[str, str] | None:
    """The text of one table cell: value, interval, counts, unparsed answers (counted wrong) and excluded rows."""
    if row is None:
        return None
    counts = ((row.unparsed, "unparsed (counted wrong)"), (row.unknown, "unknown"), (row.errors, "failed"))
    extra = ", ".join(f"{count} {what}" for count, what in counts if count)
    if row.metric == MEAN_SCORE:
        if row.value is None:
            return {"value": "n/a", "detail": "no scores", "extra": extra}
        detail = f"95% CI {row.ci_low:.2f}\u2013{row.ci_high:.2f} \u00b7 n={row.denominator}"
        return {"value": f"{row.value:.2f}", "detail": detail, "extra": extra}
    if row.value is None:
        return {"value": "n/a", "detail": "0/0", "extra": extra}
    # graded open answers (MM-Vet) sum to a fractional numerator: credits, not a count
    numerator = f"{row.numerator:.1f}" if isinstance(row.numerator, float) else row.numerator
    detail = f"95% CI {100 * row.ci_low:.1f}\u2013{100 * row.ci_high:.1f} \u00b7 {numerator}/{row.denominator}"
    return {"value": f"{100 * row.value:.1f}%", "detail": detail, "extra": extra}


def _truncate(text: str | None, limit: int) -> str:
    text = text or ""
    return text if len(text) <= limit else text[:limit] + f" \u2026 [{len(text) - limit} more characters]"


# ------------------------------------------------------------------------------------------------ plots
def _png(figure: Figure, alt: str, caption: str) -> dict[str, Any]:
    """Render a figure to a base64 PNG data URL with its pixel size."""
    buffer = io.BytesIO()
    FigureCanvasAgg(figure).print_png(buffer, metadata={"Software": None})
    width, height = (round(v) for v in figure.get_size_inches() * figure.dpi)
    src = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
    return {"src": src, "alt": alt, "caption": caption, "width": width, "height": height}


def _error_bars(values: Sequence[SummaryRow | None], scale: float) -> tuple[list[float], list[list[float]]]:
    heights = [scale * (r.value or 0.0) if r else 0.0 for r in values]
    low = [scale * (r.value - r.ci_low) if r and r.value is not None else 0.0 for r in values]
    high = [scale * (r.ci_high - r.value) if r and r.value is not None else 0.0 for r in values]
    return heights, [low, high]


@_literal_text
def _category_chart(
    benchmark: str, title: str, categories: list[str], series: dict[str, list[SummaryRow | None]]
) -> dict[str, Any]:
    """Grouped bars: one group per category, one bar per system, 95% interval whiskers."""
    width = min(16.0, max(6.0, 0.55 * len(categories) * max(1, len(series)) + 2.0))
    figure = Figure(figsize=(width, 4.2), dpi=_DPI)
    axes = figure.add_subplot()
    bar = 0.8 / max(1, len(series))
    for index, (system, rows) in enumerate(series.items()):
        heights, yerr = _error_bars(rows, 100.0)
        positions = [c + (index - (len(series) - 1) / 2) * bar for c in range(len(categories))]
        bars = axes.bar(positions, heights, bar, yerr=yerr, capsize=3, label=system, color=f"C{index % 10}")
        labels = ["n/a" if row is None or row.value is None else f"{100 * row.value:.0f}" for row in rows]
        axes.bar_label(bars, labels, fontsize=7, padding=2)
    axes.set_xticks(range(len(categories)), [c or "(none)" for c in categories], rotation=30, ha="right", fontsize=8)
    axes.set_ylim(0, 105)
    axes.set_ylabel(f"{title} (%)")
    axes.set_title(f"{benchmark}: {title} per category")
    axes.grid(axis="y", alpha=0.3)
    axes.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    figure.tight_layout()
    caption = (
        f"{benchmark}: {title} per category and system; whiskers are 95% intervals (Wilson for rates), "
        "n/a marks a category without judged rows."
    )
    return _png(figure, f"{benchmark} {title} per category", caption)


@_literal_text
def _tradeoff_chart(points: list[tuple[str, SummaryRow, SummaryRow]]) -> dict[str, Any]:
    """ASR against over-refusal, one point per system, both with 95% interval bars."""
    figure = Figure(figsize=(6.4, 5.0), dpi=_DPI)
    axes = figure.add_subplot()
    for index, (system, asr, over) in enumerate(points):
        axes.errorbar(
            [100 * over.value], [100 * asr.value],
            xerr=[[100 * (over.value - over.ci_low)], [100 * (over.ci_high - over.value)]],
            yerr=[[100 * (asr.value - asr.ci_low)], [100 * (asr.ci_high - asr.value)]],
            fmt="o", capsize=4, color=f"C{index % 10}", label=system,
        )
        axes.annotate(system, (100 * over.value, 100 * asr.value), textcoords="offset points", xytext=(6, 6),
                      fontsize=8)
    axes.set_xlim(-3, 103)
    axes.set_ylim(-3, 103)
    axes.set_xlabel("over-refusal on benign requests (%)")
    axes.set_ylabel("attack success rate on harmful requests (%)")
    axes.set_title("Safety vs over-refusal (lower left is better)")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    caption = (
        "Each point is one system, pooled over every benchmark of the run; bars are 95% intervals (Wilson for rates). "
        "Down is safer, left is less over-refusing."
    )
    return _png(figure, "safety vs over-refusal trade-off", caption)


@_literal_text
def _delta_chart(deltas: list[tuple[str, float]], baseline: str) -> dict[str, Any]:
    """Horizontal bars of capability accuracy minus the baseline's, in percentage points."""
    figure = Figure(figsize=(7.0, max(2.2, 0.45 * len(deltas) + 1.2)), dpi=_DPI)
    axes = figure.add_subplot()
    labels = [label for label, _ in deltas]
    values = [value for _, value in deltas]
    bars = axes.barh(range(len(deltas)), values, 0.5, color=["#1a7f37" if v >= 0 else "#c0262d" for v in values])
    axes.bar_label(bars, [f"{v:+.1f}" for v in values], fontsize=8, padding=3)
    axes.set_yticks(range(len(deltas)), labels, fontsize=8)
    axes.set_ylim(-0.75, len(deltas) - 0.25)
    axes.margins(x=0.15)
    axes.axvline(0, color="black", linewidth=0.8)
    axes.invert_yaxis()
    axes.set_xlabel(f"accuracy minus {baseline} (percentage points)")
    axes.set_title("Capability deltas vs the baseline")
    axes.grid(axis="x", alpha=0.3)
    figure.tight_layout()
    return _png(figure, "capability deltas vs the baseline", f"Capability accuracy of each system minus {baseline}'s.")


# ------------------------------------------------------------------------------------------------ sections
class _Index:
    """Summary rows by (system, benchmark, category, metric, judge)."""

    def __init__(self, rows: Iterable[SummaryRow]) -> None:
        self.rows = list(rows)
        self.by_key = {(r.system, r.benchmark, r.category, r.metric, r.judge): r for r in self.rows}

    def get(self, system: str, benchmark: str | None, metric: str, category: str | None = None,
            judge: str | None = None) -> SummaryRow | None:
        return self.by_key.get((system, benchmark, category, metric, judge))


def _quality_judge(rows: Iterable[SummaryRow]) -> str | None:
    """The judge whose mean score fills the quality column; an answer grader's credit is capability, not quality."""
    judges = list(dict.fromkeys(r.judge for r in rows if r.metric == MEAN_SCORE and r.judge and ":" not in r.judge
                                and r.judge not in ANSWER_GRADERS))
    return PREFERRED_QUALITY_JUDGE if PREFERRED_QUALITY_JUDGE in judges else (judges[0] if judges else None)


def _overview(index: _Index, systems: list[str], benchmarks: dict[str, list[str]], quality: str | None) -> list:
    out = []
    for system in systems:
        scopes = [(None, "all (pooled)"), *((b, b) for b in benchmarks[system])]
        for benchmark, shown in scopes:
            cells = [_cell(index.get(system, benchmark, metric)) for _, metric in OVERVIEW_METRICS]
            cells.append(_cell(index.get(system, benchmark, MEAN_SCORE, judge=quality)) if quality else None)
            error_row = index.get(system, benchmark, "error_rate")
            rows = f"{error_row.n} ({error_row.numerator} failed)" if error_row else "–"
            out.append({"system": system, "benchmark": shown, "cells": cells, "rows": rows})
    return out


def _category_charts(index: _Index, systems: list[str]) -> list[dict[str, Any]]:
    charts = []
    benchmarks = dict.fromkeys(r.benchmark for r in index.rows if r.category is not None)
    for benchmark in benchmarks:
        for metric, title in CATEGORY_CHART_METRICS:
            categories = sorted({r.category for r in index.rows if r.benchmark == benchmark and r.metric == metric
                                 and r.category is not None})
            if len(categories) < 2:  # one category repeats the benchmark's overview figure
                continue
            series = {s: [index.get(s, benchmark, metric, c) for c in categories] for s in systems}
            series = {s: rows for s, rows in series.items() if any(rows)}
            charts.append(_category_chart(str(benchmark), title, categories, series))
    return charts


def _capability(index: _Index, systems: list[str], baseline: str) -> tuple[list[dict[str, Any]], list]:
    table, deltas = [], []
    benchmarks = dict.fromkeys(r.benchmark for r in index.rows if r.metric == CAPABILITY and r.category is None
                               and r.benchmark is not None)
    for benchmark in benchmarks:
        reference = index.get(baseline, benchmark, CAPABILITY)
        for system in systems:
            row = index.get(system, benchmark, CAPABILITY)
            if row is None:
                continue
            delta, css = "baseline" if system == baseline else "n/a", ""
            if system != baseline and row.value is not None and reference and reference.value is not None:
                points = 100 * (row.value - reference.value)
                delta, css = f"{points:+.1f}", "pos" if points >= 0 else "neg"
                deltas.append((f"{system} \u00b7 {benchmark}", points))
            table.append({"benchmark": benchmark, "system": system, "cell": _cell(row), "delta": delta,
                          "delta_class": css})
    return table, deltas


def _judges(index: _Index) -> list[dict[str, Any]]:
    names = {JUDGE_UNSAFE: "unsafe rate", MEAN_SCORE: "mean score"}
    return [
        {"system": r.system, "benchmark": r.benchmark or "all (pooled)", "judge": r.judge,
         "metric": names[r.metric], "cell": _cell(r)}
        for r in index.rows
        if r.judge and r.category is None
    ]


def _errors(records: list[Mapping[str, Any]], systems: list[str], benchmarks: dict[str, list[str]]):
    judges = list(dict.fromkeys(name for r in records for name in (r.get("judgements") or {})))
    table = []
    for system in systems:
        for benchmark in benchmarks[system]:
            group = [r for r in records if r["system"] == system and r["benchmark"] == benchmark]
            unknown = sum(
                1 for r in group if not r.get("error") and r["expected"] in ("refuse", "comply")
                and ((r.get("refusal") or {}).get("label") or "unknown") == "unknown"
            )
            judge_errors = [sum(1 for r in group if judge_failed(r, j)) for j in judges]
            table.append({"system": system, "benchmark": benchmark, "rows": len(group),
                          "errors": sum(1 for r in group if r.get("error")), "unknown": unknown,
                          "unparsed": sum(map(unparsed_answer, group)), "judge_errors": judge_errors})
    examples = [{"id": r.get("id") or r.get("sample_id"), "error": _truncate(str(r["error"]), 500)}
                for r in records if r.get("error")][:20]
    return judges, table, examples


def _samples(records: list[Mapping[str, Any]], systems: list[str], per_system: int, seed: int) -> list:
    """Up to ``per_system`` records per system, taken round-robin over benchmarks after a seeded shuffle."""
    groups = []
    for system in systems:
        by_benchmark: dict[str, list[Mapping[str, Any]]] = {}
        for record in records:
            if record["system"] == system:
                by_benchmark.setdefault(record["benchmark"], []).append(record)
        rng = random.Random(f"{seed}:{system}")
        queues = [rng.sample(rows, len(rows)) for rows in by_benchmark.values()]
        chosen: list[Mapping[str, Any]] = []
        while len(chosen) < per_system and any(queues):
            for queue in queues:
                if queue and len(chosen) < per_system:
                    chosen.append(queue.pop())
        items = []
        for record in chosen:
            labels = []
            if isinstance(record.get("refusal"), Mapping):
                labels.append(f"refusal judge: {record['refusal'].get('label')}")
            if record.get("correct") is not None:
                labels.append("correct" if record["correct"] else "wrong")
            for name, judgement in (record.get("judgements") or {}).items():
                score = judgement.get("score")
                shown = judgement.get("label") if judgement.get("label") is not None else "error"
                labels.append(f"{name}: {shown}" + ("" if score is None else f" ({score:g})"))
            request = record.get("judge_prompt")
            items.append({
                "sample_id": record.get("sample_id") or record.get("id"), "benchmark": record["benchmark"],
                "category": record.get("category") or "", "expected": record["expected"],
                "prompt": _truncate(record.get("prompt"), _PROMPT_CHARS),
                # the request an image carries (FigStep, typographic attacks), as the LLM judges were shown it
                "request": _truncate(request, _PROMPT_CHARS) if request != record.get("prompt") else None,
                "response": _truncate(record.get("response"), _RESPONSE_CHARS),
                "error": record.get("error"), "labels": labels,
            })
        groups.append({"system": system, "items": items})
    return groups


def _config_text(config: Any) -> str:
    if config is None:
        return ""
    if hasattr(config, "model_dump"):
        config = config.model_dump(mode="json")
    return json.dumps(scrub_secrets(config), indent=2, ensure_ascii=False, default=str, sort_keys=False)


def _tradeoff(index: _Index, systems: list[str]) -> tuple[dict[str, Any] | None, str]:
    points = []
    for system in systems:
        asr, over = index.get(system, None, ATTACK_SUCCESS), index.get(system, None, OVER_REFUSAL)
        if asr and over and asr.value is not None and over.value is not None:
            points.append((system, asr, over))
    if not points:
        return None, "No system has both judged harmful and judged benign requests, so there is no trade-off to plot."
    return _tradeoff_chart(points), ""


# ------------------------------------------------------------------------------------------------ entry point
@cache
def _template() -> jinja2.Template:
    source = (resources.files("visalign.evaluation") / "report.jinja").read_text(encoding="utf-8")
    environment = jinja2.Environment(
        autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True
    )
    return environment.from_string(source)


def _version() -> str:
    try:
        return metadata.version("visalign")
    except metadata.PackageNotFoundError:
        return "unknown"


def render_report(
    records: Iterable[Mapping[str, Any]],
    summary_rows: Sequence[SummaryRow] | None = None,
    *,
    title: str = "visalign evaluation report",
    config: Any = None,
    samples_per_system: int = 8,
    seed: int = 0,
) -> str:
    """Return the report's HTML; see :func:`write_report`."""
    records = check_records(records)
    rows = list(summary_rows) if summary_rows is not None else summarize(records)
    index = _Index(rows)
    systems = list(dict.fromkeys([*(r["system"] for r in records), *(r.system for r in rows)]))
    benchmarks = {
        s: list(dict.fromkeys([*(r["benchmark"] for r in records if r["system"] == s),
                               *(r.benchmark for r in rows if r.system == s and r.benchmark is not None)]))
        for s in systems
    }
    baseline = systems[0] if systems else ""
    quality = _quality_judge(rows)
    capability, deltas = _capability(index, systems, baseline)
    tradeoff, tradeoff_missing = _tradeoff(index, systems)
    error_judges, errors, error_examples = _errors(records, systems, benchmarks)
    return _template().render(
        title=title,
        version=_version(),
        generated=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        n_records=len(records),
        systems=systems,
        benchmarks=list(dict.fromkeys(b for s in systems for b in benchmarks[s])),
        overview_columns=[header for header, _ in OVERVIEW_METRICS] + [f"Quality ({quality or 'no judge'})"],
        overview=_overview(index, systems, benchmarks, quality),
        quality_judge=quality,
        category_charts=_category_charts(index, systems),
        tradeoff=tradeoff,
        tradeoff_missing=tradeoff_missing,
        baseline=baseline,
        capability=capability,
        capability_chart=_delta_chart(deltas, baseline) if deltas else None,
        judges=_judges(index),
        error_judges=error_judges,
        errors=errors,
        error_examples=error_examples,
        samples_per_system=samples_per_system,
        samples=_samples(records, systems, samples_per_system, seed),
        config=_config_text(config),
    )


def write_report(
    records: str | Path | Iterable[Mapping[str, Any]],
    summary_rows: Sequence[SummaryRow] | None,
    out_html: str | Path,
    *,
    title: str = "visalign evaluation report",
    config: Any = None,
    samples_per_system: int = 8,
    seed: int = 0,
) -> Path:
    """Write one self-contained HTML report (inline CSS, base64 PNG plots, no script, no network).

    Sections: overview per system and benchmark (ASR, harmful refusal, over-refusal, capability, quality, each
    with its 95% interval and counts), per-category bar charts, the safety vs over-refusal trade-off across
    systems, capability deltas vs the first system (the baseline), LLM judge results, error counts, a sample of
    responses per system and the run config (secrets scrubbed).

    Args:
        records: the run's ``records.jsonl`` path, or the records themselves.
        summary_rows: rows from :func:`visalign.evaluation.summary.summarize`; None computes them.
        out_html: the file to write (atomically).
        title: the page title.
        config: the run config (a dict or a pydantic model), shown as JSON; None omits it.
        samples_per_system: how many responses to show per system.
        seed: the seed that picks the sample responses.

    Raises:
        VisalignError: the records file is missing or corrupt, or a record lacks required fields.
    """
    if isinstance(records, str | Path):
        records = load_records(records)
    html = render_report(
        records, summary_rows, title=title, config=config, samples_per_system=samples_per_system, seed=seed
    )
    return atomic_write_text(out_html, html)
