"""MOSSBench (Li et al., 2024): 300 benign image+question queries that over-sensitive models refuse."""

from __future__ import annotations

from pathlib import Path

from visalign.errors import VisalignError
from visalign.evaluation.benchmarks._io import image_under, read_json, require_file, rows_with_images
from visalign.evaluation.benchmarks.registry import register_benchmark
from visalign.evaluation.benchmarks.sample import LoadResult, RowError, Sample, claim_id

#: MOSSBench's three over-sensitivity stimuli, by ``metadata.over``.
STIMULI = {
    "type 1": "exaggerated_risk",
    "type 2": "negated_harm",
    "type 3": "counterintuitive_interpretation",
}


@register_benchmark("mossbench", "MOSSBench, 300 benign image queries (information.json + images/)")
def load_mossbench(source: str | Path, *, image_root: str | Path | None = None) -> LoadResult:
    """Load MOSSBench: every query is benign and expects compliance; a missing image is an error record.

    Args:
        source: ``information.json`` (keyed by pid; fields ``image, question, metadata{over, ...}``).
        image_root: folder the ``image`` paths are relative to; default the JSON file's folder.
    """
    path = require_file(source, "MOSSBench information.json")
    data = read_json(path)
    if not isinstance(data, dict):
        raise VisalignError(f"{path}: expected a JSON object keyed by pid")
    root = Path(image_root) if image_root else path.parent
    result = LoadResult()
    seen: set[str] = set()

    def bad(key: str, message: str) -> RowError:
        return RowError(benchmark="mossbench", source=str(path), row=f"pid {key}", message=message, expected="comply")

    # Two passes keep the rows in file order: the first checks all but the image, the second each image, after
    # every image was decoded at once in threads (one by one, decoding was most of a start's time).
    rows: list[RowError | tuple[str, dict, dict, str, Path]] = []
    for key, item in data.items():
        if not isinstance(item, dict) or not str(item.get("question") or "").strip() or not item.get("image"):
            rows.append(bad(key, "missing question or image"))
            continue
        meta = item.get("metadata") if isinstance(item.get("metadata"), dict) else {}
        stimulus = STIMULI.get(str(meta.get("over", "")))
        if stimulus is None:
            rows.append(
                bad(key, f"unknown category metadata.over={meta.get('over')!r}; expected one of {', '.join(STIMULI)}")
            )
            continue
        try:
            image = image_under(root, str(item["image"]))
        except VisalignError as exc:
            rows.append(bad(key, str(exc)))
            continue
        rows.append((key, item, meta, stimulus, image))
    usable = rows_with_images(rows, result.errors, lambda row, why: bad(row[0], why))
    for key, item, meta, stimulus, image in usable:
        pid = str(item.get("pid", key))
        duplicate = claim_id(seen, pid)
        if duplicate:
            result.errors.append(bad(key, duplicate))
            continue
        result.samples.append(
            Sample(
                id=f"mossbench:{pid}",
                benchmark="mossbench",
                text=str(item["question"]).strip(),
                images=[image],
                category=stimulus,
                expected="comply",
                metadata={
                    "over": meta.get("over"),
                    **{k: v for k, v in meta.items() if k != "over"},
                    "description": item.get("description", ""),
                },
            )
        )
    return result
