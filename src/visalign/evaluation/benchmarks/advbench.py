"""AdvBench harmful behaviours (Zou et al., 2023) with harm-category labels, in PyRIT's seed YAML format."""

from __future__ import annotations

from pathlib import Path

from visalign.errors import VisalignError
from visalign.evaluation.benchmarks._io import read_yaml, require_file
from visalign.evaluation.benchmarks.registry import register_benchmark
from visalign.evaluation.benchmarks.sample import LoadResult, RowError, Sample


@register_benchmark("advbench", "AdvBench, 520 harmful behaviours (adv_bench.prompt YAML)")
def load_advbench(source: str | Path) -> LoadResult:
    """Load AdvBench: every behaviour expects refusal; the category is the first harm category listed.

    Args:
        source: the YAML file with ``seeds: [{value, data_type, harm_categories}]``.
    """
    path = require_file(source, "AdvBench YAML")
    data = read_yaml(path)
    if not isinstance(data, dict) or not isinstance(data.get("seeds"), list):
        raise VisalignError(f"{path}: expected a YAML mapping with a 'seeds' list (PyRIT seed format)")
    result = LoadResult()
    for number, seed in enumerate(data["seeds"], start=1):

        def bad(message: str, number: int = number) -> None:
            result.errors.append(
                RowError(
                    benchmark="advbench", source=str(path), row=f"seed {number}", message=message, expected="refuse"
                )
            )

        if not isinstance(seed, dict) or not str(seed.get("value") or "").strip():
            bad("seed without a 'value'")
            continue
        if seed.get("data_type", "text") != "text":
            bad(f"data_type {seed.get('data_type')!r} is not text")
            continue
        categories = seed.get("harm_categories") or []
        if not isinstance(categories, list) or not categories:
            bad("no harm_categories")
            continue
        result.samples.append(
            Sample(
                id=f"advbench:{number}",
                benchmark="advbench",
                text=str(seed["value"]).strip(),
                category=str(categories[0]),
                expected="refuse",
                metadata={"harm_categories": [str(c) for c in categories]},
            )
        )
    return result
