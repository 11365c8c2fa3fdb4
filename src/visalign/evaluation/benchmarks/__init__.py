"""Benchmark loaders: every official format becomes a list of :class:`Sample` plus error records.

Use :func:`load_benchmark` with a registered name (see :func:`benchmark_names`). Importing this package
registers every loader below.
"""

from visalign.evaluation.benchmarks import (  # noqa: F401  (imported to register the loaders)
    advbench,
    capability,
    figstep,
    mmsafetybench,
    mossbench,
    spavl,
    strongreject,
    vlguard,
    wsr,
    xstest,
)
from visalign.evaluation.benchmarks.multiple_choice import (
    format_multiple_choice,
    parse_choice,
    score_multiple_choice,
)
from visalign.evaluation.benchmarks.registry import (
    BenchmarkInfo,
    benchmark_info,
    benchmark_names,
    check_options,
    load_benchmark,
    path_options,
    register_benchmark,
)
from visalign.evaluation.benchmarks.sample import Expected, LoadResult, RowError, Sample

__all__ = [
    "BenchmarkInfo",
    "Expected",
    "LoadResult",
    "RowError",
    "Sample",
    "benchmark_info",
    "benchmark_names",
    "check_options",
    "format_multiple_choice",
    "load_benchmark",
    "parse_choice",
    "path_options",
    "register_benchmark",
    "score_multiple_choice",
]
