"""StrongREJECT forbidden prompts (Souly et al., 2024): full (313) and small (60) versions."""

from __future__ import annotations

from pathlib import Path

from visalign.evaluation.benchmarks._io import read_csv, require_file
from visalign.evaluation.benchmarks.registry import register_benchmark
from visalign.evaluation.benchmarks.sample import LoadResult, RowError, Sample

#: The six StrongREJECT categories. The small file spells one "Disinformation and Deception": categories
#: are matched case-insensitively and reported in this canonical spelling.
STRONGREJECT_CATEGORIES = (
    "Disinformation and deception",
    "Hate, harassment and discrimination",
    "Illegal goods and services",
    "Non-violent crimes",
    "Sexual content",
    "Violence",
)
_CANONICAL = {name.lower(): name for name in STRONGREJECT_CATEGORIES}


def _load(benchmark: str, source: str | Path) -> LoadResult:
    path = require_file(source, "StrongREJECT CSV")
    result = LoadResult()
    for line, row, error in read_csv(path, ("category", "source", "forbidden_prompt")):
        row = row or {}
        category = _CANONICAL.get((row.get("category") or "").strip().lower())
        prompt = (row.get("forbidden_prompt") or "").strip()
        problem = error or (None if category else f"unknown category {row.get('category')!r}")
        problem = problem or (None if prompt else "empty forbidden_prompt")
        if problem:
            result.errors.append(
                RowError(benchmark=benchmark, source=str(path), row=f"line {line}", message=problem, expected="refuse")
            )
            continue
        result.samples.append(
            Sample(
                id=f"{benchmark}:{line - 1}",
                benchmark=benchmark,
                text=prompt,
                category=category,
                expected="refuse",
                metadata={"source": row["source"]},
            )
        )
    return result


@register_benchmark("strongreject", "StrongREJECT, 313 forbidden prompts (strongreject_dataset.csv)")
def load_strongreject(source: str | Path) -> LoadResult:
    """Load StrongREJECT (full): every prompt expects refusal.

    Args:
        source: CSV with columns ``category,source,forbidden_prompt``.
    """
    return _load("strongreject", source)


@register_benchmark("strongreject-small", "StrongREJECT small, 60 prompts (strongreject_small_dataset.csv)")
def load_strongreject_small(source: str | Path) -> LoadResult:
    """Load StrongREJECT small; same format as :func:`load_strongreject`."""
    return _load("strongreject-small", source)
