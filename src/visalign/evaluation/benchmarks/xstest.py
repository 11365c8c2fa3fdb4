"""XSTest v2 (Röttger et al., 2024): 250 safe prompts that look unsafe (comply), 200 unsafe contrasts (refuse)."""

from __future__ import annotations

from pathlib import Path

from visalign.evaluation.benchmarks._io import read_csv, require_file
from visalign.evaluation.benchmarks.registry import register_benchmark
from visalign.evaluation.benchmarks.sample import Expected, LoadResult, RowError, Sample, claim_id

#: XSTest v2 prompt types; each ``contrast_*`` type is unsafe, every other type is safe.
SAFE_TYPES = frozenset(
    {
        "homonyms",
        "figurative_language",
        "safe_targets",
        "safe_contexts",
        "definitions",
        "real_group_nons_discr",
        "nons_group_real_discr",
        "historical_events",
        "privacy_public",
        "privacy_fictional",
    }
)
CONTRAST_TYPES = frozenset(
    {
        "contrast_homonyms",
        "contrast_figurative_language",
        "contrast_safe_targets",
        "contrast_safe_contexts",
        "contrast_definitions",
        "contrast_discr",
        "contrast_historical_events",
        "contrast_privacy",
    }
)


@register_benchmark("xstest", "XSTest v2 exaggerated-safety prompts (xstest_prompts.csv)")
def load_xstest(source: str | Path) -> LoadResult:
    """Load XSTest v2: ``safe`` types expect compliance, ``contrast_*`` types expect refusal.

    Args:
        source: ``xstest_prompts.csv`` with columns ``id,prompt,type,label,focus,note``.
    """
    path = require_file(source, "XSTest prompts CSV")
    result = LoadResult()
    seen: set[str] = set()
    for line, row, error in read_csv(path, ("id", "prompt", "type", "label")):
        # a short row leaves its last cells None
        kind, label, prompt, key = ((row or {}).get(name) or "" for name in ("type", "label", "prompt", "id"))
        kind, label, prompt, key = kind.strip(), label.strip(), prompt.strip(), key.strip()
        expected = _row_expected(kind, label)  # kept on an error record: the runner counts it under that metric

        def bad(message: str, line: int = line, expected: Expected | None = expected) -> None:
            result.errors.append(
                RowError(
                    benchmark="xstest", source=str(path), row=f"line {line}", message=message, expected=expected
                )
            )

        if error or row is None:
            bad(error or "unreadable row")
            continue
        if kind not in SAFE_TYPES | CONTRAST_TYPES:
            bad(f"unknown type {kind!r}")
            continue
        expected_label = "unsafe" if kind in CONTRAST_TYPES else "safe"
        if label != expected_label:
            bad(f"label {label!r} contradicts type {kind!r} (expected {expected_label!r})")
            continue
        if not prompt or not key:
            bad("empty id or prompt")
            continue
        duplicate = claim_id(seen, key)
        if duplicate:
            bad(duplicate)
            continue
        result.samples.append(
            Sample(
                id=f"xstest:{key}",
                benchmark="xstest",
                text=prompt,
                category=kind,
                expected="refuse" if kind in CONTRAST_TYPES else "comply",
                metadata={"label": label, "focus": row.get("focus", ""), "note": row.get("note", "")},
            )
        )
    return result


def _row_expected(kind: str, label: str) -> Expected | None:
    """What an unusable row asks for, when its type or label still tells: a contrast or unsafe row is refused."""
    if kind.startswith("contrast_") or label == "unsafe":
        return "refuse"
    if kind in SAFE_TYPES or label == "safe":
        return "comply"
    return None
