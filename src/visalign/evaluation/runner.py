"""``visalign eval``: answer every benchmark sample with every system, judge, and write records and a report.

Records are appended to ``DIR/records.jsonl`` as each chunk of answers is judged, keyed by
``<system>::<benchmark label>::<sample id>`` (the label, so one benchmark run twice, e.g. as images and as text,
keeps both): a killed run re-run with the same config answers only what is missing, and tries again what failed:
a failed request is answered again, and an answer whose LLM judge failed keeps its answer and is only judged
again (an answer is not free to repeat). A local model's prompts are batched in chunks fixed over each benchmark
arm's samples, and a chunk with a missing answer is generated whole again, so a resumed run answers as a fresh
one would (in bfloat16 a greedy answer depends on the prompts batched with it; see :func:`_local_chunks`). Rows
that cannot be evaluated (a missing or corrupt image, a malformed benchmark row, a failed request) become records
with an ``error`` and are counted in the summary, never dropped. A judge that failed leaves one warning line at the
end, and so does a system whose requests failed; a system whose endpoint is down stops sending (see
:class:`AnswerBreaker`).
A stored verdict is also judged again when it came from another version of its judge (``rubric/v1`` after an
upgrade to ``rubric/v2``) or judged another request than the judge is shown now.

Nothing is written into the run folder before its manifest accepts the run (a resume refused for a changed config
or input leaves the finished run as it was): attack images are drawn in memory, only for the rows drawn, and
written once it is accepted. Their FigStep font sizes, too, are fitted for the rows drawn only, and an image a
previous start drew and wrote is not drawn again (see :func:`_draw_attacks`), so a resume pays for neither.
Systems that share a local model are evaluated one after another, and each model is released once its last system
is done, so one model is in memory at a time.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.progress import Progress

from visalign.errors import VisalignError
from visalign.evaluation.benchmarks import (
    RowError,
    Sample,
    load_benchmark,
    path_options,
    score_multiple_choice,
)
from visalign.evaluation.config import BenchmarkConfig, EvalConfig, SystemConfig
from visalign.evaluation.judges import get_refusal_judge
from visalign.evaluation.llm_judges.base import FATAL_STATUSES, MAX_FAILURES_IN_A_ROW
from visalign.evaluation.pinned_inputs import pinned_inputs, precision_change
from visalign.evaluation.systems import ApiSystem, LocalSystem, Prompt, System, SystemFactory
from visalign.images import load_image
from visalign.runs import JsonlStore, RunDir, releases_run_locks, sha256_file

logger = logging.getLogger(__name__)


@dataclass
class BenchmarkRows:
    """A benchmark's usable samples and the error records of rows that could not be loaded.

    Attributes:
        label: the arm's name in records.
        samples: the rows asked (after the attack and ``limit``).
        errors: the error records of the unusable rows kept.
        drawn: the samples' attack images, drawn but not written yet (see :func:`write_attack_images`), by path.
        index: where the attack images' index goes and what it says (see :func:`_draw_attacks`), written with them.
    """

    label: str
    samples: list[Sample]
    errors: list[dict]
    drawn: dict[Path, bytes] = field(default_factory=dict)
    index: tuple[Path, dict] | None = None


#: The file beside an arm's attack images that says what each was drawn from (see :func:`_draw_attacks`).
ATTACK_INDEX = "index.json"


def config_path(value: Any, base_dir: Path) -> Any:
    """Resolve a path written in an eval config, as its benchmark sources always were.

    A relative path is read from the config's folder (``base_dir``) when it exists there, else as written (from
    the working directory); anything that is not a path is returned as it is.
    """
    if isinstance(value, str | os.PathLike) and not Path(value).is_absolute() and (base_dir / value).exists():
        return base_dir / value
    return value


def load_rows(config: BenchmarkConfig, *, base_dir: Path, attack_dir: Path, seed: int) -> BenchmarkRows:
    """Load one configured benchmark, apply its attack and deterministic sub-sampling.

    The source and the loader's path options (``image_root``, ``images_dir``, ``render_dir``...) are read from
    ``base_dir`` (the config's folder) when they exist there (:func:`config_path`). Attack images are fitted and
    drawn in memory for the rows drawn only (:func:`_draw_attacks`); nothing is written.

    Raises:
        VisalignError: the benchmark cannot be loaded, or none of its rows is usable (a wrong path or option, most
            likely: a run of error records alone would measure nothing).
    """
    source = Path(config_path(config.source, base_dir))
    paths = set(path_options(config.name))
    options = {key: config_path(value, base_dir) if key in paths else value for key, value in config.options.items()}
    # FigStep font sizes are left unfitted: which rows fit is checked for every row, as the draw and the unusable
    # rows depend on it, but the size is fitted for the rows drawn only (see _draw_attacks)
    result = load_benchmark(config.name, source, attack=config.attack, draw_attack=False, fit_attack=False,
                            attack_dir=attack_dir / config.display_name if config.attack else None, **options)
    if not result.samples:
        first = " ".join(str(result.errors[0]).split()) if result.errors else ""
        found = f"none of its {len(result.errors)} rows is usable (first: {first})" if first else "it has no rows"
        named = repr(config.display_name) if config.display_name == config.name else (
            f"{config.display_name!r} ({config.name})")
        raise VisalignError(f"benchmark {named}: {found}; check its source and options")
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
    if not config.attack:
        return BenchmarkRows(config.display_name, samples, errors)
    samples, drawn, index = _draw_attacks(samples, attack_dir / config.display_name, config.attack)
    return BenchmarkRows(config.display_name, samples, errors, drawn, index)


def _draw_attacks(samples: list[Sample], folder: Path, style: str
                  ) -> tuple[list[Sample], dict[Path, bytes], tuple[Path, dict] | None]:  # fmt: skip
    """Fit and draw the attack images of the rows drawn, except those a previous start drew and wrote in ``folder``.

    ``folder/index.json`` records, for each image written there, the digest of the text it carries, its FigStep
    font size and the digest of its PNG, under a key of everything else the image depends on (the drawing code,
    font and Pillow build: :func:`~visalign.evaluation.attacks.typographic.render_key`). An image whose entry
    matches the key and its text, and whose file still holds that PNG, is the image drawing it would give: it
    is neither fitted nor drawn, and the run's pin digests the file. Any other is drawn.

    Returns:
        The samples with their font sizes, the images drawn now (to write once the run is accepted) by path,
        and the index to write beside them (None when the drawing code's source cannot be read).
    """
    from visalign.evaluation.attacks.typographic import attack_image_png, fit_attack, render_key

    key = render_key(style)  # per start: a font named by an environment variable may change between starts
    known = _read_attack_index(folder / ATTACK_INDEX, key)
    fitted, drawn, entries = [], {}, {}
    for sample in samples:
        path = Path(sample.images[0])
        text = hashlib.sha256(str(sample.metadata["original_text"]).encode()).hexdigest()
        entry = known.get(path.name)
        if entry is not None and entry.get("text") == text and path.is_file() and sha256_file(path) == entry["png"]:
            sample = fit_attack(sample, entry.get("font_size"))
        else:
            sample = fit_attack(sample)
            drawn[path] = attack_image_png(sample)
            entry = {"text": text, "font_size": sample.metadata.get("font_size"),
                     "png": hashlib.sha256(drawn[path]).hexdigest()}  # fmt: skip
        fitted.append(sample)
        entries[path.name] = entry
    index = (folder / ATTACK_INDEX, {"render": key, "images": entries}) if key is not None else None
    return fitted, drawn, index


def _read_attack_index(path: Path, key: str | None) -> dict[str, dict]:
    """The entries of an attack index drawn under ``key``, by file name.

    Empty when it is missing, unreadable or of another key: then every image is drawn again, as a first start draws it.
    """
    try:
        index = json.loads(path.read_text())
        entries = index["images"] if key is not None and index["render"] == key else {}
        return {name: entry for name, entry in entries.items()
                if isinstance(entry, dict) and isinstance(entry.get("png"), str)
                and isinstance(entry.get("font_size"), int | None)}  # fmt: skip
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}


def write_attack_images(rows: list[BenchmarkRows]) -> None:
    """Write the attack images :func:`load_rows` drew, and their index (atomically; a file that holds them is kept)."""
    from visalign.runs import atomic_write_bytes, atomic_write_text

    for benchmark in rows:
        for path, data in benchmark.drawn.items():
            if not (path.is_file() and path.read_bytes() == data):
                atomic_write_bytes(path, data)
        benchmark.drawn = {}
        if benchmark.index is not None:
            # after the images: an entry names a file that holds its PNG (and a reader checks that it still does)
            path, index = benchmark.index
            text = json.dumps(index, indent=1, sort_keys=True) + "\n"
            if not (path.is_file() and path.read_text() == text):
                atomic_write_text(path, text)


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
        record["refusal"] = refusal_judge.judge(response, sample.judge_prompt).model_dump()
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
    """Whether ``record`` lacks a good verdict of ``judge``.

    None stored, one with an error, or one of another version of the judge (``rubric/v1`` when the judge is now
    ``rubric/v2``: one run's verdicts must not mix two prompts).
    """
    judgement = (record.get("judgements") or {}).get(judge.name)
    return judgement is None or bool(judgement.get("error")) or judgement.get("judge") != judge.id


def _judge_prompt(record: dict) -> str:
    """What the LLM judges were shown as the request of ``record`` (records before 2026-11-24 kept only ``prompt``)."""
    shown = record.get("judge_prompt")
    return record["prompt"] if shown is None else shown


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
        items = [JudgeItem(_judge_prompt(r), r["response"], r["category"], r.get("reference")) for r in applies]
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
        # what text-only judges are shown: the request itself where an image carries it (FigStep, typographic)
        "judge_prompt": sample.judge_prompt,
        "images": [str(p) for p in sample.images], "response": None, "error": None,
        # an open question's reference answer, for an answer grader (a choice letter is scored without one)
        "reference": sample.answer if sample.answer and not sample.choices else None,
        # scored by its option letter: an answer naming none is a wrong answer, not an unknown (see summary)
        "multiple_choice": bool(sample.choices and sample.answer),
        "decoding": system.decoding, "refusal": None, "correct": None, "judgements": {},
    }


@dataclass
class AnswerBreaker:
    """Counts one system's failed requests, and stops sending them once its endpoint is taken to be down.

    The LLM judges' rule (:mod:`visalign.evaluation.llm_judges.base`), so a dead system costs a few requests'
    retries instead of every sample's: it stops at once on a status no later request gets past
    (``FATAL_STATUSES``: a wrong key, no access, a wrong URL or model name), and after ``MAX_FAILURES_IN_A_ROW``
    failures of the endpoint in a row (no answer, a timeout, a 5xx or 429 past the client's retries; an answer
    resets the count), whether it answered before or not: a server that went down mid-run, or is still down on a
    resume, is as dead as one that never answered. A request rejected on its own (another 4xx) fails alone and
    does not break the row, and so does a timeout once the system has answered (slow on long answers, not down).
    Until the system answers, and again after an endpoint failure, prompts go a few at a time (see
    :func:`_chunks`), so a dead endpoint is asked little.

    Attributes:
        system: the system's name.
        answered: whether the system has answered once (in this run, or in a record stored before).
        endpoint_failures: endpoint failures since its last answer.
        failed: this run's answers lost to the endpoint, those not asked after the stop included.
        last_error: the last failed request's message.
        stopped: why no more requests are sent (also each unasked record's error), once it stops.
    """

    system: str
    answered: bool = False
    failed: int = 0
    last_error: str | None = None
    stopped: str | None = None
    endpoint_failures: int = 0

    def respond(self, system: System, prompts: list[Prompt]) -> list[str | BaseException]:
        """``system.respond(prompts)``, counted; once stopped, an error per prompt and no request."""
        if self.stopped is not None:
            self.failed += len(prompts)
            return [_Unasked(self.stopped)] * len(prompts)
        answers = system.respond(prompts)
        for answer in answers:  # in prompt order: "in a row" is the order they were asked in
            self._count(answer)
        return answers

    def _count(self, answer: str | BaseException) -> None:
        from visalign.clients import ClientError

        if not isinstance(answer, BaseException):
            self.answered, self.endpoint_failures = True, 0
            return
        if not isinstance(answer, ClientError):  # a prompt a local model cannot take
            return
        self.failed += 1
        self.last_error = " ".join(str(answer).split())  # the client's message: URL and key already hidden
        status = answer.status
        if status in FATAL_STATUSES:
            why = f"an HTTP {status} answer"
        elif status is not None and 400 <= status < 500 and status not in (408, 429):
            return  # this request alone was rejected
        elif answer.timed_out and self.answered:
            # a system that answers, and then runs out of time on some prompts (long answers from a slow server),
            # is alive; its timeout is not a setting a system config has, so stopping it would stop every re-run
            return
        else:
            self.endpoint_failures += 1
            if self.endpoint_failures < MAX_FAILURES_IN_A_ROW:
                return
            why = f"{self.endpoint_failures} failed requests in a row"
        if self.stopped is None:
            self.stopped = (f"system {self.system!r} stopped sending requests after {why} (last: {self.last_error}); "
                            "once that is fixed, re-run the same command: answered records are kept and the failed "
                            "ones are asked again")  # fmt: skip
            logger.warning("%s", self.stopped)

    def warning(self) -> str | None:
        """The end-of-run line for a system whose answers failed (None when none did)."""
        if not self.failed:
            return None
        stopped = ", then it stopped sending requests" if self.stopped else ""
        return (f"system {self.system}: {self.failed} answer(s) failed{stopped}; last error: {self.last_error}; "
                "re-run the same command to answer those records again")  # fmt: skip


class _Unasked(VisalignError):
    """The answer of a prompt not sent because its system stopped (its record's error is the stop message)."""


def _error_text(answer: BaseException) -> str:
    return str(answer) if isinstance(answer, _Unasked) else f"{type(answer).__name__}: {answer}"


def _answered_before(system: System, rows: list[BenchmarkRows], store: JsonlStore) -> bool:
    """Whether ``store`` holds an answer of ``system`` to a sample of this run's selection."""
    return any(not _needs_answer(store.get(record_id(system.name, b.label, s.id))) for b in rows for s in b.samples)


def _chunks(todo: list[Sample], chunk_size: int, breaker: AnswerBreaker, *, probe: bool) -> Iterator[list[Sample]]:
    """``todo`` in chunks; with ``probe``, small ones until the system answers and after an endpoint failure.

    So a dead endpoint, or one that died mid-run, is asked a few prompts (each retried by the client) before the
    breaker stops it, not a whole chunk.

    Read lazily: each chunk's size is decided after the previous one was answered and counted.
    """
    start = 0
    while start < len(todo):
        cautious = probe and (not breaker.answered or breaker.endpoint_failures > 0)
        size = min(chunk_size, MAX_FAILURES_IN_A_ROW) if cautious else chunk_size
        yield todo[start : start + size]
        start += size


def _local_chunks(
    samples: list[Sample], todo: list[Sample], chunk_size: int
) -> Iterator[tuple[list[Sample], list[Sample]]]:
    """A local system's chunks of one benchmark arm, each with its members that lack an answer (``todo``).

    The chunks are fixed over the arm's samples, not cut from the missing ones: in bfloat16 (and float16) a greedy
    answer depends on the prompts padded into its batch (:meth:`visalign.models.VLM.generate`), so a chunk is
    always generated whole, as a fresh run generates it, and a resumed run gives the answers a fresh one gives.
    Chunks with nothing missing are skipped.
    """
    missing = {sample.id for sample in todo}
    for start in range(0, len(samples), chunk_size):
        chunk = samples[start : start + chunk_size]
        wanted = [sample for sample in chunk if sample.id in missing]
        if wanted:
            yield chunk, wanted


def _refused(system: System, prompt: Prompt) -> VisalignError | None:
    """Why a local model cannot take ``prompt`` (two images for a one-image family...), or None (an API system's)."""
    if not isinstance(system, LocalSystem):
        return None
    try:
        system.conversation(prompt)
    except VisalignError as exc:
        return exc
    return None


def _answer_chunk(system: System, breaker: AnswerBreaker, chunk: list[Sample], wanted: list[Sample], label: str,
                  store: JsonlStore, *, refusal_judge, llm_judges: list) -> None:
    """Answer ``chunk``; judge and store the records of its ``wanted`` samples (the others are stored already).

    Nothing is generated when every wanted sample fails before generation (an unreadable image, a conversation
    the model cannot take): each fails the same way it would in the chunk, and the chunk's other answers are
    stored already, so a resume does not generate such a chunk again for nothing.
    """
    wanted_ids = {sample.id for sample in wanted}
    records, prompts, waiting = [], [], []
    for sample in chunk:
        record = _base_record(system, sample, label)
        if sample.id in wanted_ids:
            records.append(record)
        try:
            prompts.append(_load_prompt(sample))
            waiting.append((record, sample))
        except VisalignError as exc:
            record["error"] = str(exc)
    asked = [(record, prompt) for (record, sample), prompt in zip(waiting, prompts, strict=True)
             if sample.id in wanted_ids]  # fmt: skip
    if any(_refused(system, prompt) is None for _, prompt in asked):  # stops at the first one the model takes
        for (record, sample), answer in zip(waiting, breaker.respond(system, prompts), strict=True):
            if sample.id not in wanted_ids:
                continue  # generated for its batch's sake only: its stored record stays
            if isinstance(answer, BaseException):
                record["error"] = _error_text(answer)
            else:
                record["response"] = answer
                _judge(record, sample, refusal_judge)
    else:
        for record, prompt in asked:
            record["error"] = _error_text(_refused(system, prompt))  # as respond() would have returned it
    _llm_judge(records, llm_judges)
    for record in records:
        previous = store.get(record["id"])
        if record["error"] and previous is not None and previous.get("error") == record["error"]:
            continue  # failed again the same way (an unreadable image, say): the stored record says so
        store.append(record)


def evaluate_system(system: System, rows: list[BenchmarkRows], store: JsonlStore, *, refusal_judge,
                    llm_judges: list, chunk_size: int, progress: Progress) -> AnswerBreaker:
    """Answer and judge every sample not yet in ``store``, appending records chunk by chunk.

    A local model's chunks are fixed over each benchmark arm's samples (:func:`_local_chunks`); an API system's
    answers do not depend on the batching, and only its missing samples are sent.

    Returns:
        The system's :class:`AnswerBreaker`: how many of its answers failed in this run, and whether it stopped.
    """
    breaker = AnswerBreaker(system.name, answered=_answered_before(system, rows, store))
    # an API system's first requests go a few at a time: its answers do not depend on the batching, a local one's do
    probe = isinstance(system, ApiSystem)
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
            elif llm_judges and _judge_prompt(record) != sample.judge_prompt:
                # judged on another request (the attack's instruction, before the request itself was shown)
                rejudge.append({**record, "judge_prompt": sample.judge_prompt, "judgements": {}})
            elif any(_applies(judge, record) and _judgement_failed(record, judge) for judge in llm_judges):
                rejudge.append(record)  # an answer whose judge failed is judged again, not answered again
        task = progress.add_task(f"{system.name} / {benchmark.label}", total=len(benchmark.samples),
                                 completed=len(benchmark.samples) - len(todo) - len(rejudge))
        for start in range(0, len(rejudge), chunk_size):
            _rejudge(rejudge[start : start + chunk_size], store, llm_judges)
            progress.advance(task, len(rejudge[start : start + chunk_size]))
        if isinstance(system, LocalSystem):
            chunks = _local_chunks(benchmark.samples, todo, chunk_size)
        else:  # lazily: each chunk's size is decided after the previous one was answered
            chunks = ((chunk, chunk) for chunk in _chunks(todo, chunk_size, breaker, probe=probe))
        for chunk, wanted in chunks:
            _answer_chunk(system, breaker, chunk, wanted, benchmark.label, store, refusal_judge=refusal_judge,
                          llm_judges=llm_judges)
            progress.advance(task, len(wanted))
    return breaker


def _resolve_paths(system: SystemConfig, base_dir: Path) -> SystemConfig:
    """Resolve a system's relative adapter / magic image paths against the config file's folder."""
    updates = {}
    for name in ("adapter", "magic_image"):
        value = getattr(system, name)
        if value is not None and not value.is_absolute():
            updates[name] = base_dir / value
    return system.model_copy(update=updates)


@releases_run_locks
def run_eval(config: EvalConfig, out: Path, *, config_dir: Path | None = None, strict: bool = False) -> Path:
    """Run an evaluation job into ``out`` and return the path of its HTML report.

    A system whose requests failed, or an LLM judge, leaves one warning line at the end (the records count
    those answers as errors, and a re-run asks them again).

    Args:
        config: the validated job config.
        out: run directory; re-running with the same config resumes. Another config is refused, and so is a
            changed model, chat template, adapter, magic image, benchmark file (its usable or unusable rows) or LLM
            judge prompt, and a local model that would run in another dtype or on another kind of device (see
            :mod:`.pinned_inputs`).
        config_dir: the config file's folder: relative adapter and magic-image paths resolve against it, and
            benchmark sources and path options are read from it when they exist there (see :func:`config_path`).
        strict: raise once everything is written when a system stopped sending requests (its endpoint is down
            or refuses the key: see :class:`AnswerBreaker`); the CLI's exit status.

    Raises:
        VisalignError: with ``strict``, a system stopped (after writing records, summary and report).
    """
    out = Path(out)
    base_dir = config_dir or Path.cwd()
    # Load every benchmark and build the judges before writing anything, so a config error (a bad path, a judge
    # name, a missing API key variable) leaves no run directory behind to refuse the corrected config, and a
    # refused resume leaves the finished run's files (its attack images too) as they were.
    rows = [load_rows(b, base_dir=base_dir, attack_dir=out / "attacks", seed=config.seed) for b in config.benchmarks]
    refusal_judge = get_refusal_judge(config.refusal_judge)
    llm_judges = build_llm_judges(config, out / "cache")
    systems = [_resolve_paths(s, base_dir) for s in config.systems]
    factory = SystemFactory(max_new_tokens=config.max_new_tokens, batch_size=config.batch_size,
                            cache_dir=out / "cache")
    for system in systems:  # a missing key variable or adapter, or weights that do not match, fail here too
        factory.check(system)
    pinned = pinned_inputs(systems, {r.label: r.samples for r in rows}, unusable={r.label: r.errors for r in rows},
                           drawn={path: data for r in rows for path, data in r.drawn.items()}, llm_judges=llm_judges,
                           refusal_judge=(config.refusal_judge, refusal_judge))
    run = RunDir(out)
    # before the manifest is read for the precision check: no other job may write it between check and write
    run.lock()
    settings = config.hashed_settings()  # a system's dtype is pinned as it resolves here, not hashed as spelt
    existing = run.read_manifest()
    # before write_manifest, which would refuse it naming the pins only; another config is refused as such there
    if (existing is not None and run.config_refusal(settings) is None
            and (reason := precision_change(systems, existing.get("pinned") or {}, pinned))):  # fmt: skip
        raise VisalignError(f"{out}: {reason}")
    run.write_manifest(settings, seeds={"sampling": config.seed}, pinned=pinned)
    store = run.store("records.jsonl")
    _refuse_legacy_ids(store)
    write_attack_images(rows)
    order = _run_order(systems, factory)
    breakers = []
    with store, Progress() as progress:
        for index, system_config in enumerate(order):
            system = factory.build(system_config)
            breaker = evaluate_system(system, rows, store, refusal_judge=refusal_judge, llm_judges=llm_judges,
                                      chunk_size=max(config.batch_size * 4, 16), progress=progress)  # fmt: skip
            breakers.append(breaker)
            del system  # its model too, unless a later system shares it
            factory.release(keep=order[index + 1 :])
        records = _selected(store, systems, rows)
    report = write_outputs(records, out, config)
    failed = [b for b in breakers if b.failed]
    for breaker in failed:
        logger.warning("%s", breaker.warning())
    _warn_failed_judges(llm_judges)
    # Only a stopped system fails the run: requests rejected one by one (a provider's content filter answers
    # harmful prompts with a 400) would fail every re-run the same way, and the report counts them as errors.
    if strict and (stopped := [b for b in failed if b.stopped]):
        counts = ", ".join(f"{b.system} {b.failed}" for b in stopped)
        raise VisalignError(
            f"{report}: written, but answers failed ({counts}; the system stopped sending requests, see the warnings "
            "above), and the report counts them as errors; once that is fixed, re-run the same command to answer "
            "them again"
        )
    return report


def _run_order(systems: list[SystemConfig], factory: SystemFactory) -> list[SystemConfig]:
    """The systems in config order, except that those sharing a local model run one after another.

    Each model is then released after its last system (:meth:`SystemFactory.release`): one in memory at a time.
    """
    groups = [("local", key) if (key := factory.model_key(s)) else ("api", s.name) for s in systems]
    first = {key: groups.index(key) for key in groups}
    return [system for _, system in sorted(zip(groups, systems, strict=True), key=lambda pair: first[pair[0]])]


def _selected(store: JsonlStore, systems: list[SystemConfig], rows: list[BenchmarkRows]) -> list[dict]:
    """The stored records of this run's selection, systems in config order.

    A store may hold records of rows no longer drawn (an unusable row removed from the source, or another draw of
    them): a fresh run would not have them, so neither does the summary.
    """
    order = {system.name: index for index, system in enumerate(systems)}
    keys = {
        record_id(system.name, benchmark.label, sample_id)
        for system in systems
        for benchmark in rows
        for sample_id in [*(s.id for s in benchmark.samples), *(e["sample_id"] for e in benchmark.errors)]
    }
    return sorted((r for r in store.records() if r["id"] in keys), key=lambda r: order[r["system"]])


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
