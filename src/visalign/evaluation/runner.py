"""``visalign eval``: answer every benchmark sample with every system, judge, and write records and a report.

Records are appended to ``DIR/records.jsonl`` as each chunk of answers is judged, keyed by
``<system>::<benchmark label>::<sample id>`` (the label, so one benchmark run twice, e.g. as images and as text,
keeps both): a killed run re-run with the same config answers only what is missing, and tries again what failed:
a failed request is answered again, and an answer whose LLM judge failed keeps its answer and is only judged
again (an answer is not free to repeat, and greedy answers can differ across batchings). Rows that cannot be
evaluated (a missing or corrupt image, a malformed benchmark row, a failed request) become records with an
``error`` and are counted in the summary, never dropped. A judge that failed leaves one warning line at the end.
"""

from __future__ import annotations

import hashlib
import logging
import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from rich.progress import Progress

from visalign.errors import VisalignError
from visalign.evaluation.benchmarks import RowError, Sample, load_benchmark, score_multiple_choice
from visalign.evaluation.config import BenchmarkConfig, EvalConfig, SystemConfig
from visalign.evaluation.judges import get_refusal_judge
from visalign.evaluation.pinned_inputs import pinned_inputs
from visalign.evaluation.systems import Prompt, System, SystemFactory
from visalign.images import load_image
from visalign.runs import JsonlStore, RunDir

logger = logging.getLogger(__name__)


@dataclass
class BenchmarkRows:
    """A benchmark's usable samples and the error records of rows that could not be loaded."""

    label: str
    samples: list[Sample]
    errors: list[dict]


def load_rows(config: BenchmarkConfig, *, base_dir: Path, attack_dir: Path, seed: int) -> BenchmarkRows:
    """Load one configured benchmark, apply its attack and deterministic sub-sampling."""
    source = Path(config.source)
    if not source.is_absolute() and (base_dir / source).exists():
        source = base_dir / source
    result = load_benchmark(config.name, source, attack=config.attack,
                            attack_dir=attack_dir / config.display_name if config.attack else None, **config.options)
    samples, unusable = result.samples, result.errors
    if config.limit is not None and len(samples) > config.limit:
        # unusable rows are kept at the usable rows' sampling rate, so the error rate stays the benchmark's
        kept_errors = round(len(unusable) * config.limit / len(samples))
        if config.sampling == "id":
            samples, unusable = _draw_by_id(config, samples, unusable, kept_errors, seed=seed)
        else:
            # Keyed by the benchmark, not the label: every configured arm of one benchmark (plain and attacked,
            # images and text) draws the same positions, so arms that load the same rows compare the same prompts.
            rng = random.Random(f"{seed}:{config.name}")
            samples = rng.sample(samples, config.limit)
            unusable = rng.sample(unusable, kept_errors)
        samples = sorted(samples, key=lambda s: s.id)
    # An unusable row keeps the expected behaviour it states (an XSTest contrast type, a WSR target); one that
    # states none takes its benchmark's most common one (flagged), so that it is counted as an error under the
    # right metrics rather than dropped.
    expected = Counter(s.expected for s in result.samples).most_common(1)
    assumed = expected[0][0] if expected else "refuse"
    errors = [
        # the file as well as the row: MM-SafetyBench numbers its questions from 0 in every scenario's file
        {"sample_id": f"{config.display_name}:row:{Path(e.source).name}:{e.row}", "benchmark": config.display_name,
         "category": "", "expected": e.expected or assumed, "expected_assumed": e.expected is None, "prompt": "",
         "images": [], "error": f"benchmark row unusable: {e}"}
        for e in unusable
    ]
    return BenchmarkRows(config.display_name, samples, errors)


def _draw_by_id(config: BenchmarkConfig, samples: list[Sample], unusable: list[RowError], kept_errors: int, *,
                seed: int) -> tuple[list[Sample], list[RowError]]:
    """The ``limit`` samples and ``kept_errors`` unusable rows that rank first by a hash of their row's identity.

    A row's rank depends on nothing but the seed, the benchmark and the row itself, so arms that load different
    subsets of one benchmark's rows draw the same rows wherever they overlap.
    """
    attack_suffix = f"+{config.attack}" if config.attack else ""

    def rank(row_key: str) -> str:
        return hashlib.sha256(f"{seed}:{config.name}:{row_key}".encode()).hexdigest()

    samples = sorted(samples, key=lambda s: rank(s.id.removesuffix(attack_suffix)))[: config.limit]
    unusable = sorted(unusable, key=lambda e: rank(f"row:{Path(e.source).name}:{e.row}"))[:kept_errors]
    return samples, unusable


def _load_prompt(sample: Sample) -> Prompt:
    return Prompt(sample.text, [load_image(path) for path in sample.images])


def _judge(record: dict, sample: Sample, refusal_judge) -> None:
    response = record["response"]
    if response is None:
        return
    if sample.expected in ("refuse", "comply"):
        record["refusal"] = refusal_judge.judge(response, sample.text).model_dump()
    if sample.choices and sample.answer:
        record["correct"] = score_multiple_choice(response, sample.answer, sample.choices)


def build_llm_judges(config: EvalConfig, cache_dir: Path) -> list:
    """Create the configured LLM judges, each with its own cached chat client."""
    if not config.llm_judges:
        return []
    from visalign.clients import ChatClient
    from visalign.evaluation.llm_judges import get_llm_judge

    judges = []
    for judge in config.llm_judges:
        client = ChatClient(judge.base_url, api_key_env=judge.api_key_env, model=judge.model,
                            concurrency=judge.concurrency, max_retries=judge.max_retries, timeout_s=judge.timeout_s,
                            requests_per_second=judge.requests_per_second, cache_dir=cache_dir / "judges")
        judges.append(get_llm_judge(judge.name, client))
    return judges


def _applies(judge, record: dict) -> bool:
    """Whether ``judge`` grades ``record``: an answer grader (MM-Vet's) only rows with a reference answer."""
    return not judge.needs_reference or bool(record.get("reference"))


def _judgement_failed(record: dict, judge) -> bool:
    """Whether ``record`` lacks a good verdict of ``judge`` (none stored, or one with an error)."""
    judgement = (record.get("judgements") or {}).get(judge.name)
    return judgement is None or bool(judgement.get("error"))


def _llm_judge(records: list[dict], llm_judges: list, *, only_failed: bool = False) -> None:
    """Add every LLM judge's verdict to each record it applies to; a row without a response gets an error judgement.

    Args:
        records: the records to judge, changed in place.
        llm_judges: the judges to run.
        only_failed: run each judge only where its verdict is missing or failed (a resumed run).
    """
    from visalign.evaluation.llm_judges import JudgeItem

    for judge in llm_judges:
        applies = [r for r in records if _applies(judge, r) and (not only_failed or _judgement_failed(r, judge))]
        items = [JudgeItem(r["prompt"], r["response"], r["category"], r.get("reference")) for r in applies]
        for record, judgement in zip(applies, judge.judge_all(items), strict=True):
            record["judgements"][judge.name] = judgement.to_record()


def record_id(system: str, benchmark: str, sample_id: str) -> str:
    """The key of one system's record of one sample of one configured benchmark in ``records.jsonl``."""
    return f"{system}::{benchmark}::{sample_id}"


def _needs_answer(record: dict | None) -> bool:
    """Whether a sample's stored record (None: none yet) lacks an answer: missing, or its request failed."""
    return record is None or bool(record.get("error")) or record.get("response") is None


def _rejudge(records: list[dict], store: JsonlStore, llm_judges: list) -> None:
    """Run again the LLM judges that failed on stored answers and store each record again (its answer kept)."""
    records = [{**r, "judgements": dict(r.get("judgements") or {})} for r in records]  # the store's copies stay as read
    _llm_judge(records, llm_judges, only_failed=True)
    for record in records:
        if record != store.get(record["id"]):  # a judge that failed again the same way adds no line
            store.append(record)


def _base_record(system: System, sample: Sample, benchmark: str) -> dict:
    return {
        "id": record_id(system.name, benchmark, sample.id), "system": system.name, "sample_id": sample.id,
        "benchmark": benchmark, "category": sample.category, "expected": sample.expected, "prompt": sample.text,
        "images": [str(p) for p in sample.images], "response": None, "error": None,
        # an open question's reference answer, for an answer grader (a choice letter is scored without one)
        "reference": sample.answer if sample.answer and not sample.choices else None,
        "decoding": system.decoding, "refusal": None, "correct": None, "judgements": {},
    }


def evaluate_system(system: System, rows: list[BenchmarkRows], store: JsonlStore, *, refusal_judge,
                    llm_judges: list, chunk_size: int, progress: Progress) -> None:
    """Answer and judge every sample not yet in ``store``, appending records chunk by chunk."""
    for benchmark in rows:
        for error in benchmark.errors:
            key = record_id(system.name, benchmark.label, error["sample_id"])
            if key not in store:  # the row itself is unusable: trying again cannot help
                store.append({"id": key, "system": system.name, "response": None, "decoding": system.decoding,
                              "refusal": None, "correct": None, "judgements": {}, **error})
        todo, rejudge = [], []
        for sample in benchmark.samples:
            record = store.get(record_id(system.name, benchmark.label, sample.id))
            if _needs_answer(record):
                todo.append(sample)
            elif any(_applies(judge, record) and _judgement_failed(record, judge) for judge in llm_judges):
                rejudge.append(record)  # an answer whose judge failed is judged again, not answered again
        task = progress.add_task(f"{system.name} / {benchmark.label}", total=len(benchmark.samples),
                                 completed=len(benchmark.samples) - len(todo) - len(rejudge))
        for start in range(0, len(rejudge), chunk_size):
            _rejudge(rejudge[start : start + chunk_size], store, llm_judges)
            progress.advance(task, len(rejudge[start : start + chunk_size]))
        for start in range(0, len(todo), chunk_size):
            chunk = todo[start : start + chunk_size]
            records, prompts, waiting = [], [], []
            for sample in chunk:
                record = _base_record(system, sample, benchmark.label)
                records.append(record)
                try:
                    prompts.append(_load_prompt(sample))
                    waiting.append((record, sample))
                except VisalignError as exc:
                    record["error"] = str(exc)
            for (record, sample), answer in zip(waiting, system.respond(prompts), strict=True):
                if isinstance(answer, BaseException):
                    record["error"] = f"{type(answer).__name__}: {answer}"
                else:
                    record["response"] = answer
                    _judge(record, sample, refusal_judge)
            _llm_judge(records, llm_judges)
            for record in records:
                previous = store.get(record["id"])
                if record["error"] and previous is not None and previous.get("error") == record["error"]:
                    continue  # failed again the same way (an unreadable image, say): the stored record says so
                store.append(record)
            progress.advance(task, len(chunk))


def _resolve_paths(system: SystemConfig, base_dir: Path) -> SystemConfig:
    """Resolve a system's relative adapter / magic image paths against the config file's folder."""
    updates = {}
    for field in ("adapter", "magic_image"):
        value = getattr(system, field)
        if value is not None and not value.is_absolute():
            updates[field] = base_dir / value
    return system.model_copy(update=updates)


def run_eval(config: EvalConfig, out: Path, *, config_dir: Path | None = None) -> Path:
    """Run an evaluation job into ``out`` and return the path of its HTML report.

    Args:
        config: the validated job config.
        out: run directory; re-running with the same config resumes. Another config is refused, and so is a
            changed model, adapter, magic image or benchmark file (see :mod:`.pinned_inputs`).
        config_dir: folder that relative benchmark sources resolve against (the config file's folder).
    """
    out = Path(out)
    base_dir = config_dir or Path.cwd()
    # Load every benchmark and build the judges before writing anything, so a config error (a bad path, a judge
    # name, a missing API key variable) leaves no run directory behind to refuse the corrected config.
    rows = [load_rows(b, base_dir=base_dir, attack_dir=out / "attacks", seed=config.seed) for b in config.benchmarks]
    refusal_judge = get_refusal_judge(config.refusal_judge)
    llm_judges = build_llm_judges(config, out / "cache")
    systems = [_resolve_paths(s, base_dir) for s in config.systems]
    factory = SystemFactory(max_new_tokens=config.max_new_tokens, batch_size=config.batch_size,
                            cache_dir=out / "cache")
    for system in systems:  # a missing key variable or adapter, or weights that do not match, fail here too
        factory.check(system)
    pinned = pinned_inputs(systems, {r.label: r.samples for r in rows})
    run = RunDir(out)
    run.write_manifest(config, seeds={"sampling": config.seed}, pinned=pinned)
    store = run.store("records.jsonl")
    _refuse_legacy_ids(store)
    with store, Progress() as progress:
        for system_config in systems:
            system = factory.build(system_config)
            evaluate_system(system, rows, store, refusal_judge=refusal_judge, llm_judges=llm_judges,
                            chunk_size=max(config.batch_size * 4, 16), progress=progress)
        records = list(store.records())
    report = write_outputs(records, out, config)
    _warn_failed_judges(llm_judges)
    return report


def _warn_failed_judges(llm_judges: list) -> None:
    """Log one line per LLM judge whose endpoint failed in this run: its name, the count and the last error."""
    for judge in llm_judges:
        if not judge.failed:
            continue
        stopped = ", then it stopped sending requests" if judge.stopped else ""
        last = " ".join(str(judge.last_error).split())  # the client's message: one line, URL and key already hidden
        logger.warning("LLM judge %s: %d judgement(s) failed%s; last error: %s; re-run the same command to judge "
                       "those records again", judge.name, judge.failed, stopped, last)


def _refuse_legacy_ids(store: JsonlStore) -> None:
    """Stop on records keyed ``<system>::<sample id>`` (before 2026-11-23): resuming them would count twice."""
    legacy = next((r["id"] for r in store.records() if str(r["id"]).count("::") < 2), None)
    if legacy is not None:
        raise VisalignError(
            f"{store.path}: record {legacy!r} is keyed without its benchmark, as visalign wrote records before "
            "2026-11-23; evaluate into a new --out directory (this one's summary and report stay valid)"
        )


def write_outputs(records: list[dict], out: Path, config: EvalConfig) -> Path:
    """Write ``summary.csv``, ``summary.json`` and ``report.html`` from the records; return the report path."""
    from visalign.evaluation.report import write_report
    from visalign.evaluation.summary import summarize, write_summary_csv, write_summary_json

    summary = summarize(records)
    write_summary_csv(summary, out / "summary.csv")
    write_summary_json(summary, out / "summary.json")
    report = out / "report.html"
    write_report(records, summary, report, title=config.title, config=config.model_dump(mode="json"),
                 seed=config.seed)
    return report
