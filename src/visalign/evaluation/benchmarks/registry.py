"""A small registry of benchmark loaders: ``load_benchmark(name, source, **options)``."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from visalign.errors import VisalignError
from visalign.evaluation.benchmarks.sample import LoadResult

Loader = Callable[..., LoadResult]


@dataclass(frozen=True)
class BenchmarkInfo:
    """A registered loader and the one-line description shown to users."""

    name: str
    loader: Loader
    description: str


_REGISTRY: dict[str, BenchmarkInfo] = {}


def register_benchmark(name: str, description: str) -> Callable[[Loader], Loader]:
    """Register a loader under ``name`` (decorator). The loader takes ``(source, **options)``.

    Args:
        name: the registry name, also the prefix of every sample id the loader makes.
        description: one line: what the benchmark is and what ``source`` should point at.
    """

    def decorate(loader: Loader) -> Loader:
        if name in _REGISTRY:
            raise ValueError(f"benchmark {name!r} is registered twice")
        _REGISTRY[name] = BenchmarkInfo(name, loader, description)
        return loader

    return decorate


def benchmark_names() -> list[str]:
    """Return the names of all registered benchmarks, sorted."""
    return sorted(_REGISTRY)


def benchmark_info(name: str) -> BenchmarkInfo:
    """Return the registration of ``name``.

    Raises:
        VisalignError: no benchmark has that name; the message lists the known ones.
    """
    try:
        return _REGISTRY[name]
    except KeyError:
        raise VisalignError(
            f"unknown benchmark {name!r}; known benchmarks: {', '.join(benchmark_names())}"
        ) from None


#: Loader options that select a benchmark's text form: an attack must draw the request, not the set's own image
#: prompt (FigStep's image mode asks "The image shows a list numbered 1, 2, and 3..." for every row).
_TEXT_FORMS = {"mode": "text", "variant": "text"}


def text_form_options(name: str, options: dict[str, Any]) -> dict[str, Any]:
    """Return ``options`` with the loader's text form selected, for a typographic attack to draw the requests.

    Raises:
        VisalignError: the options ask for an image form explicitly (the attack would draw its fixed prompt).
    """
    parameters = inspect.signature(benchmark_info(name).loader).parameters
    chosen = dict(options)
    for option, text in _TEXT_FORMS.items():
        if option not in parameters:
            continue
        if chosen.setdefault(option, text) != text:
            raise VisalignError(
                f"benchmark {name!r}: a typographic attack draws each request, so it needs {option}: {text}, "
                f"not {chosen[option]!r} (that form is already an image prompt)"
            )
    return chosen


def load_benchmark(
    name: str,
    source: str | Path,
    *,
    attack: str | None = None,
    attack_dir: str | Path | None = None,
    **options: Any,
) -> LoadResult:
    """Load a benchmark from a local path (or a Hugging Face dataset id where the loader supports one).

    Args:
        name: a registered benchmark name (see :func:`benchmark_names`).
        source: the official file or folder, or a dataset id.
        attack: ``"figstep"`` or ``"typo"`` turns every text sample into a typographic attack
            (see :func:`visalign.evaluation.attacks.typographic_attack`); None keeps the samples as loaded.
        attack_dir: where typographic attack images are written (required with ``attack``).
        **options: loader-specific options (``split``, ``subset``, ``variant``, ...), see each loader.

    Returns:
        The samples and one :class:`RowError` per row that could not be used.

    Raises:
        VisalignError: unknown benchmark or option, or a wholly unreadable source.
    """
    info = benchmark_info(name)
    if attack is not None:
        options = text_form_options(name, options)
    try:
        result = info.loader(source, **options)
    except TypeError as exc:
        if "unexpected keyword argument" in str(exc):
            raise VisalignError(
                f"benchmark {name!r}: {exc}; see the loader's docstring for its options"
            ) from None
        raise
    if attack is None:
        return result
    if attack_dir is None:
        raise VisalignError(f"benchmark {name!r}: attack={attack!r} needs attack_dir for the rendered images")
    # Attacks build on samples, so they import this package; importing them here keeps that direction.
    from visalign.evaluation.attacks.typographic import typographic_attack

    attacked = typographic_attack(result.samples, attack_dir, style=attack)
    return LoadResult(attacked.samples, result.errors + attacked.errors)
