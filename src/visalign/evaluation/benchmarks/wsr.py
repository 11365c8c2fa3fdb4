"""The weighted-safety-refusal set: 60 harmful and 60 matched benign prompts with the expected behaviour."""

from __future__ import annotations

from pathlib import Path

from visalign.evaluation.benchmarks._io import read_jsonl, require_file
from visalign.evaluation.benchmarks.registry import register_benchmark
from visalign.evaluation.benchmarks.sample import Expected, LoadResult, RowError, Sample, claim_id

_EXPECTED: dict[str, Expected] = {"refusal": "refuse", "comply": "comply"}


@register_benchmark("weighted-safety-refusal", "120 harmful/benign prompts with targets (dataset.jsonl)")
def load_weighted_safety_refusal(source: str | Path) -> LoadResult:
    """Load weighted-safety-refusal: ``target`` ``refusal`` -> refuse, ``comply`` -> comply.

    Args:
        source: JSONL with ``id, input, target, metadata{category, type}`` per line.
    """
    path = require_file(source, "weighted-safety-refusal JSONL")
    result = LoadResult()
    seen: set[str] = set()
    for line, record, error in read_jsonl(path):
        target = record.get("target") if isinstance(record, dict) else None
        expected = _EXPECTED.get(target) if isinstance(target, str) else None

        def bad(message: str, line: int = line, expected: Expected | None = expected) -> None:
            result.errors.append(
                RowError(
                    benchmark="weighted-safety-refusal",
                    source=str(path),
                    row=f"line {line}",
                    message=message,
                    expected=expected,
                )
            )

        if error:
            bad(error)
            continue
        if not isinstance(record, dict):
            bad("not a JSON object")
            continue
        metadata = record.get("metadata") if isinstance(record.get("metadata"), dict) else {}
        text, key, category = (
            str(record.get("input") or "").strip(),
            str(record.get("id") or ""),
            metadata.get("category"),
        )
        if expected is None:
            bad(f"unknown target {target!r}; expected 'refusal' or 'comply'")
        elif not text or not key:
            bad("missing id or input")
        elif not category:
            bad("missing metadata.category")
        elif duplicate := claim_id(seen, key):
            bad(duplicate)
        else:
            result.samples.append(
                Sample(
                    id=f"weighted-safety-refusal:{key}",
                    benchmark="weighted-safety-refusal",
                    text=text,
                    category=str(category),
                    expected=expected,
                    metadata=dict(metadata),
                )
            )
    return result
