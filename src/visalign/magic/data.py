"""Training requests for a magic image: harmful ones (refusal targets) and benign ones (helpful targets).

Requests come from benchmark loaders or a JSONL file, optionally redrawn as FigStep-style typographic images;
a value system can decide per category which side a request falls on. Benign targets are the data's answers or the
model's own answers without the image, generated once and cached in the work folder.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from PIL import Image

from visalign.errors import VisalignError
from visalign.evaluation.attacks.typographic import typographic_attack
from visalign.evaluation.benchmarks import RowError, Sample, load_benchmark
from visalign.evaluation.benchmarks.registry import text_form_options
from visalign.images import load_image
from visalign.magic.config import MagicConfig, SourceConfig, TargetConfig
from visalign.magic.value_systems import ValueSystem, slug
from visalign.models import VLM, user, weights_fingerprint
from visalign.models.identity import template_identity

Kind = Literal["harmful", "benign"]

logger = logging.getLogger(__name__)


@dataclass
class Example:
    """One training request and what the model should answer to it (with the magic image attached).

    Attributes:
        id: stable id (the sample id, plus ``+figstep`` for a typographic form).
        kind: ``harmful`` or ``benign``.
        prompt: the user's text.
        images: the user's own images (a typographic rendering, a MOSSBench photo), before the magic image is added.
        category: the request's category (as the source names it).
        target: the answer to train towards: a refusal template, or a benign answer.
        complete: False when a self-generated benign answer was cut at its token budget (it did not end by itself).
    """

    id: str
    kind: Kind
    prompt: str
    images: list[Image.Image] = field(default_factory=list)
    category: str = ""
    target: str = ""
    complete: bool = True


@dataclass
class TrainingSet:
    """The assembled requests for one value system, and the records that could not be used."""

    harmful: list[Example]
    benign: list[Example]
    errors: list[RowError] = field(default_factory=list)

    def summary(self) -> dict:
        """Counts by kind and category (written to the sidecar)."""
        return {
            "harmful": len(self.harmful),
            "benign": len(self.benign),
            "harmful_with_image": sum(bool(e.images) for e in self.harmful),
            "benign_with_image": sum(bool(e.images) for e in self.benign),
            "categories": dict(Counter(f"{e.kind}:{slug(e.category) or 'none'}" for e in self.harmful + self.benign)),
            "errors": len(self.errors),
        }


#: The fields of a request-file record; each is a string when present (``prompt`` must be).
_FILE_FIELDS = ("prompt", "answer", "category", "image")


def _file_lines(path: Path) -> list[str]:
    """The lines of a UTF-8 request file (a byte order mark is dropped); a line that is not UTF-8 is named."""
    if not path.is_file():
        raise VisalignError(f"{path}: request file not found")
    lines = path.read_bytes().removeprefix(b"\xef\xbb\xbf").split(b"\n")
    for number, raw in enumerate(lines, start=1):
        try:
            lines[number - 1] = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise VisalignError(
                f"{path}: line {number} is not UTF-8 text ({exc.reason} at byte {exc.start}); save the file as UTF-8"
            ) from None
    return lines


def _record_problem(record: object) -> str | None:
    """Why a parsed request-file record cannot become a sample (a field of the wrong type, no prompt), or None."""
    if not isinstance(record, dict):
        return "no prompt"
    for name in _FILE_FIELDS:
        if record.get(name) is not None and not isinstance(record[name], str):
            return f"'{name}' must be a string, got {type(record[name]).__name__}"
    return None if str(record.get("prompt") or "").strip() else "no prompt"


def _file_samples(path: Path) -> tuple[list[Sample], list[RowError]]:
    """Read a JSONL file of ``{"prompt", "answer"?, "category"?, "image"?}`` as samples, one error per bad line."""
    samples, errors = [], []
    for number, line in enumerate(_file_lines(path), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            errors.append(RowError(benchmark="file", source=str(path), row=f"line {number}", message=str(exc)))
            continue
        if problem := _record_problem(record):
            errors.append(RowError(benchmark="file", source=str(path), row=f"line {number}", message=problem))
            continue
        images = [path.parent / record["image"]] if record.get("image") else []
        samples.append(
            Sample(id=f"{path.stem}:{number}", benchmark="file", text=record["prompt"].strip(), images=images,
                   category=record.get("category") or "", expected="comply", answer=record.get("answer"))
        )
    return samples, errors


def _categories(samples: list[Sample]) -> dict[str, str]:
    """The categories of ``samples``, by slug, each as its first row spells it (rows with none left out)."""
    named: dict[str, str] = {}
    for sample in samples:
        if slug(sample.category):
            named.setdefault(slug(sample.category), sample.category)
    return named


def _select(samples: list[Sample], source: SourceConfig, label: str) -> list[Sample]:
    """Apply ``source``'s filters to its loaded ``samples``; ``label`` names the source in errors.

    Raises:
        VisalignError: a name in ``categories`` matches no row (a misspelling would otherwise drop that category's
            requests from training without a word).
    """
    if source.expected is not None:
        samples = [s for s in samples if s.expected == source.expected]
    if source.categories is not None:
        present = _categories(samples)
        unmatched = [c for c in source.categories if slug(c) not in present]
        if unmatched:
            rows = f"row with expected: {source.expected}" if source.expected is not None else "row"
            raise VisalignError(
                f"{label}: categories filter names {', '.join(map(repr, unmatched))}, which no {rows} has; "
                f"categories there: {', '.join(sorted(present.values())) or '(none)'}; fix the spelling or drop it"
            )
        wanted = {slug(c) for c in source.categories}
        samples = [s for s in samples if slug(s.category) in wanted]
    if source.per_category is not None:
        seen: Counter[str] = Counter()
        kept = []
        for sample in samples:
            seen[sample.category] += 1
            if seen[sample.category] <= source.per_category:
                kept.append(sample)
        samples = kept
    return samples[: source.limit] if source.limit else samples


def _source_samples(source: SourceConfig, root: Path, options: dict, errors: list[RowError], label: str,
                    categories: dict[str, str]) -> list[Sample]:  # fmt: skip
    """Load one source with loader ``options`` and filter it; its row errors join ``errors`` once each.

    ``categories`` gains the categories of every loaded row, before the filters (by slug, as first spelt).
    """
    if source.file is not None:
        samples, found = _file_samples(source.file)
    else:
        loaded = load_benchmark(source.benchmark, _benchmark_path(source, root), **options)
        samples, found = loaded.samples, loaded.errors
    errors.extend(error for error in found if error not in errors)
    for key, name in _categories(samples).items():
        categories.setdefault(key, name)
    return _select(samples, source, label)


def _warn_unmatched(value_system: ValueSystem, file: Path, categories: dict[str, str]) -> None:
    """Warn, in one line, of the categories ``value_system`` names that no row of its sources has.

    A misspelt category decides nothing: its requests stop at a filter or as undecided, or the category is simply
    absent; the warning names the spellings that exist. ``categories`` are those of the ``by_value_system`` sources.
    """
    unmatched = [c for c in [*value_system.refuse, *value_system.allow] if slug(c) not in categories]
    if unmatched:
        logger.warning("value system %r (%s) names %s, which no row of its by_value_system sources has; categories "
                       "there: %s; check the spelling", value_system.name, file, ", ".join(map(repr, unmatched)),
                       ", ".join(sorted(categories.values())) or "(none)")


def _benchmark_path(source: SourceConfig, root: Path) -> Path:
    """The file or folder a benchmark source reads, under the benchmarks folder ``root``.

    Raises:
        VisalignError: it is missing; the message names the settings that choose the folder (the loader's own
            message would send the user to the source's path, when the folder is usually what is wrong).
    """
    path = root / str(source.path)
    if path.exists():
        return path
    if not root.is_dir():
        raise VisalignError(
            f"benchmarks folder {root} not found (source {source.benchmark} reads {source.path} from it); set "
            "data.benchmarks_dir in the config, or $VISALIGN_BENCHMARKS, to the folder holding the published "
            "benchmark files"
        )
    raise VisalignError(
        f"{path}: not found (source {source.benchmark}: path {source.path} in the benchmarks folder {root}); fix the "
        "path, or set data.benchmarks_dir or $VISALIGN_BENCHMARKS to the folder that holds it"
    )


def _kind(sample: Sample, source: SourceConfig, value_system: ValueSystem) -> Kind:
    if source.role != "by_value_system":
        return source.role
    decided = value_system.decides(sample.category)
    if decided is None:
        named = {slug(c): c for c in [*value_system.refuse, *value_system.allow]}
        close = difflib.get_close_matches(slug(sample.category), named, n=1, cutoff=0.8)
        hint = f" (it names {named[close[0]]!r}: a misspelling?)" if close else ""
        raise VisalignError(
            f"value system {value_system.name!r} neither refuses nor allows category {sample.category!r} "
            f"({sample.id}){hint}; add it to the value system or filter the source's categories"
        )
    return decided  # type: ignore[return-value]


def load_training_set(config: MagicConfig, value_system: ValueSystem, work_dir: Path,
                      decoded: dict[str, Image.Image] | None = None) -> TrainingSet:  # fmt: skip
    """Assemble harmful and benign requests for ``value_system`` (targets of benign requests still empty).

    Args:
        config: the job config (``data`` section).
        value_system: decides the side of ``by_value_system`` sources.
        work_dir: typographic renderings are written under ``work_dir/typographic``.
        decoded: decoded images by the sha256 of their file, shared by the value systems of one job: each value
            system reads the same sources (and draws the same typographic renderings into its own folder), and
            a decoded image takes about 40 times its PNG's memory, so one copy is kept per distinct file.

    Raises:
        VisalignError: a source is unreadable, or the harmful or benign set is empty.
    """
    root = config.data.resolved_benchmarks_dir()
    result = TrainingSet([], [])
    refusals = config.targets.refusal_templates
    decided: dict[str, str] = {}  # the categories a value system decides: those of the by_value_system sources
    for index, source in enumerate(config.data.sources):
        forms: list[Sample] = []
        label = f"data.sources[{index}] ({source.benchmark or source.file})"
        categories = decided if source.role == "by_value_system" else {}
        text_options = dict(source.options)
        text_samples = (_source_samples(source, root, text_options, result.errors, label, categories)
                        if "text" in source.forms else [])
        forms.extend(text_samples)
        if "figstep" in source.forms:
            # The drawing must show each request: a benchmark's own image form would draw its fixed image prompt.
            drawn_options = (text_options if source.file is not None
                             else text_form_options(source.benchmark, text_options))
            # one read when both forms take the same loader options (every shipped config)
            samples = (text_samples if "text" in source.forms and drawn_options == text_options
                       else _source_samples(source, root, drawn_options, result.errors, label, categories))
            attacked = typographic_attack(samples, work_dir / "typographic" / f"source{index}", style="figstep")
            forms.extend(attacked.samples)
            result.errors.extend(attacked.errors)
        for sample in forms:
            kind = _kind(sample, source, value_system)
            images = [_decoded_image(Path(p), decoded) for p in sample.images]
            example = Example(id=sample.id, kind=kind, prompt=sample.text, images=images, category=sample.category,
                              target=(sample.answer or "") if kind == "benign" else "")
            (result.harmful if kind == "harmful" else result.benign).append(example)
    if any(source.role == "by_value_system" for source in config.data.sources):
        _warn_unmatched(value_system, config.value_systems_file, decided)
    for number, example in enumerate(result.harmful):
        example.target = refusals[number % len(refusals)]
    sources = ", ".join(s.benchmark or str(s.file) for s in config.data.sources)
    for kind, examples in (("harmful", result.harmful), ("benign", result.benign)):
        if not examples:
            raise VisalignError(
                f"no {kind} requests for value system {value_system.name!r} after filtering data.sources "
                f"({sources}); add a {kind} source or widen its filters"
            )
    return result


def _decoded_image(path: Path, decoded: dict[str, Image.Image] | None) -> Image.Image:
    """:func:`load_image` of ``path``, or the image already decoded from a file with the same bytes."""
    if decoded is None:
        return load_image(path)
    try:
        key = hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:  # missing or unreadable: load_image says so in its own words
        return load_image(path)
    if key not in decoded:
        decoded[key] = load_image(path)
    return decoded[key]


def _image_digest(images: list[Image.Image]) -> str:
    digest = hashlib.sha256()
    for image in images:
        digest.update(f"{image.size}".encode())
        digest.update(image.tobytes())
    return digest.hexdigest()


def benign_target_key(model: str, example: Example, max_new_tokens: int, weights: str = "") -> str:
    """Cache key of one request's self-generated answer on its own: model, prompt, images and length.

    ``weights`` is the loaded model's :func:`model_identity`; :func:`fill_benign_targets` adds the batch the answer
    is generated in.
    """
    payload = json.dumps([model, example.prompt, _image_digest(example.images), max_new_tokens, weights])
    return hashlib.sha256(payload.encode()).hexdigest()[:24]


def model_identity(vlm: VLM) -> str:
    """What a generated answer depends on in the loaded model: weights, template, dtype and device type.

    A checkpoint rebuilt at the same path, an edited chat template, bfloat16 against float32 and CUDA against CPU
    kernels each give other answers.
    """
    return f"{weights_fingerprint(vlm.spec)}:{template_identity(vlm)}:{vlm.model.dtype}:{vlm.device.type}"


def _batched_keys(own: list[str], batch_size: int) -> list[tuple[range, list[str]]]:
    """The generation chunks of a request list, each with the cache keys of its answers.

    Answers are generated a chunk (4 batches) at a time, the chunk sorted by length and cut into batches, and in
    bfloat16 an answer depends on the padded batch it shares (:meth:`VLM.generate`). So an answer's key names the
    batch size and every member of its chunk: a cache is reused only where a fresh run would form the same
    batches, and a chunk is always generated whole, as a fresh run generates it.
    """
    size = max(1, batch_size) * 4
    chunks = []
    for start in range(0, len(own), size):
        members = own[start : start + size]
        together = hashlib.sha256(f"{batch_size}:{','.join(members)}".encode()).hexdigest()
        keys = [hashlib.sha256(f"{key}:{together}".encode()).hexdigest()[:24] for key in members]
        chunks.append((range(start, start + len(members)), keys))
    return chunks


def fill_benign_targets(vlm: VLM, examples: list[Example], targets: TargetConfig, cache: Path,
                        *, batch_size: int = 16) -> int:
    """Give every benign example its target; returns how many answers were generated (not read from cache).

    ``targets.benign == "data"`` requires each example to carry its answer. ``"self"`` uses the model's own greedy
    answer to the request without the magic image, generated once in batches of ``batch_size`` and appended to the
    JSONL ``cache`` a few batches at a time (a killed run keeps the answers it finished). The cache key covers the
    model (:func:`model_identity`) and the batch each answer was generated in, so the targets are the same
    whether or not a cache from another batch size or request list lies in the work folder.
    """
    if targets.benign == "data":
        missing = [e.id for e in examples if not e.target]
        if missing:
            raise VisalignError(
                f"targets.benign is 'data' but {len(missing)} benign request(s) have no answer (first: {missing[0]}); "
                "use targets.benign: self or give answers"
            )
        return 0
    known: dict[str, tuple[str, bool]] = {}
    if cache.is_file():
        for line in cache.read_text(encoding="utf-8").split("\n"):
            try:
                record = json.loads(line)
                known[record["key"]] = (record["answer"], record.get("finished", True))
            except (json.JSONDecodeError, KeyError, TypeError):
                continue  # a torn last line from a killed run: that answer is generated again
    identity = model_identity(vlm)
    own = [benign_target_key(vlm.spec, e, targets.benign_max_new_tokens, identity) for e in examples]
    # Keys gained the template, device and batch on 2026-11-24: a cache written before is not read but generated
    # again, with the same answers a fresh run of the same config gives (the old keys only saved time).
    chunks = _batched_keys(own, batch_size)
    cache.parent.mkdir(parents=True, exist_ok=True)
    generated = 0
    for part, keys in chunks:
        if all(key in known for key in keys):
            continue
        answers = vlm.generate_detailed([[user(examples[i].prompt, *examples[i].images)] for i in part],
                                        max_new_tokens=targets.benign_max_new_tokens, batch_size=batch_size)
        lines = []
        for i, key, answer in zip(part, keys, answers, strict=True):
            known[key] = (answer.text, answer.finished)
            lines.append(json.dumps({"key": key, "id": examples[i].id, "answer": answer.text,
                                     "finished": answer.finished}) + "\n")
        with cache.open("a", encoding="utf-8") as handle:  # one write per chunk, appended as it finishes
            handle.write("".join(lines))
        generated += len(part)
    for example, key in zip(examples, [key for _, keys in chunks for key in keys], strict=True):
        answer, example.complete = known[key]
        example.target = answer or "."
    return generated


def image_count_problem(data: TrainingSet, prepend: bool) -> str | None:
    """Why a request cannot take the magic image on a single-image model (more than one user image), or None.

    With ``prepend`` (multi-image models) every request can. Otherwise the magic image shares a canvas with the
    user's one image, so a request with two (a file record's own image drawn again in the ``figstep`` form) is
    named here, before the model loads.
    """
    if prepend:
        return None
    for example in [*data.harmful, *data.benign]:
        if len(example.images) > 1:
            return (f"request {example.id} has {len(example.images)} user images, and a single-image model takes "
                    "one beside the magic image (a request's own image plus its 'figstep' drawing makes two): drop "
                    "'figstep' from that source's forms, or use a multi-image model")
    return None
