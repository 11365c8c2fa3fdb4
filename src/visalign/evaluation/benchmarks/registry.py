"""A small registry of benchmark loaders: ``load_benchmark(name, source, **options)``."""

from __future__ import annotations

import inspect
import os
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

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


_NAMED = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)


def _parameters(name: str) -> list[inspect.Parameter]:
    """The parameters of ``name``'s loader after its source, annotations resolved where they can be."""
    loader = benchmark_info(name).loader
    try:
        parameters = inspect.signature(loader, eval_str=True).parameters
    except (NameError, TypeError, SyntaxError):  # an annotation that cannot be resolved is left unchecked
        parameters = inspect.signature(loader).parameters
    return list(parameters.values())[1:]


def _options(name: str) -> dict[str, inspect.Parameter]:
    """The named options of ``name``'s loader (its source left out)."""
    return {p.name: p for p in _parameters(name) if p.kind in _NAMED}


def _alternatives(annotation: Any) -> tuple[Any, ...]:
    """The members of a union annotation (``str | Path | None``), or the annotation alone."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return typing.get_args(annotation)
    return (annotation,)


def path_options(name: str) -> list[str]:
    """The options of benchmark ``name`` that take a file or folder (``image_root``, ``images_dir``, ``render_dir``).

    A config's relative value for one of them is resolved as its ``source`` is (see :mod:`visalign.evaluation.runner`).
    """
    return [key for key, p in _options(name).items() if Path in _alternatives(p.annotation)]


def _accepts(annotation: Any, value: Any) -> bool:
    """Whether ``value`` has a type ``annotation`` allows; a Literal's *value* is left to the loader's own check."""
    if annotation is inspect.Parameter.empty or annotation is Any or isinstance(annotation, str):
        return True
    alternatives = _alternatives(annotation)
    if len(alternatives) > 1:
        return any(_accepts(member, value) for member in alternatives)
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return isinstance(value, tuple({type(choice) for choice in typing.get_args(annotation)}))
    if origin in (list, tuple, set, frozenset):
        member = (typing.get_args(annotation) or (Any,))[0]
        return isinstance(value, list | tuple) and all(_accepts(member, item) for item in value)
    if annotation is type(None):
        return value is None
    if annotation is Path:
        return isinstance(value, str | os.PathLike)
    if annotation is bool:
        return isinstance(value, bool)
    if annotation in (int, float):
        return isinstance(value, int | float if annotation is float else int) and not isinstance(value, bool)
    if isinstance(annotation, type):
        return isinstance(value, annotation)
    return True


def check_options(name: str, options: dict[str, Any]) -> None:
    """Refuse an option ``name``'s loader does not take, or one of the wrong type (YAML reads ``2024`` as a number).

    Raises:
        VisalignError: one line naming the benchmark and the option.
    """
    known = _options(name)
    open_ended = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in _parameters(name))
    written = inspect.signature(benchmark_info(name).loader).parameters  # annotations as the loader spells them
    for option, value in options.items():
        if option not in known and open_ended:
            continue
        if option not in known:
            choices = ", ".join(known) or "none"
            raise VisalignError(
                f"benchmark {name!r}: unexpected keyword argument {option!r} (its options: {choices}); see the "
                "loader's docstring for its options"
            )
        if _accepts(known[option].annotation, value):
            continue
        hint = ""
        if isinstance(value, int | float | bool) and _accepts(known[option].annotation, str(value)):
            hint = f"; quote it in the YAML file ({option}: '{value}') to pass it as text"
        raise VisalignError(
            f"benchmark {name!r}: option {option!r} takes {written[option].annotation}, not the "
            f"{type(value).__name__} {value!r}{hint}"
        )


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
    draw_attack: bool = True,
    **options: Any,
) -> LoadResult:
    """Load a benchmark from a local path (or a Hugging Face dataset id where the loader supports one).

    Args:
        name: a registered benchmark name (see :func:`benchmark_names`).
        source: the official file or folder, or a dataset id.
        attack: ``"figstep"`` or ``"typo"`` turns every text sample into a typographic attack
            (see :func:`visalign.evaluation.attacks.typographic_attack`); None keeps the samples as loaded.
        attack_dir: where typographic attack images are written (required with ``attack``).
        draw_attack: False names the attack images in ``attack_dir`` without drawing them (see
            :func:`visalign.evaluation.attacks.typographic_attack`).
        **options: loader-specific options (``split``, ``subset``, ``variant``, ...), see each loader.

    Returns:
        The samples and one :class:`RowError` per row that could not be used.

    Raises:
        VisalignError: unknown benchmark or option, an option of the wrong type, or a wholly unreadable source.
    """
    info = benchmark_info(name)
    if attack is not None:
        options = text_form_options(name, options)
    check_options(name, options)
    result = info.loader(source, **options)
    if attack is None:
        return result
    if attack_dir is None:
        raise VisalignError(f"benchmark {name!r}: attack={attack!r} needs attack_dir for the rendered images")
    # Attacks build on samples, so they import this package; importing them here keeps that direction.
    from visalign.evaluation.attacks.typographic import typographic_attack

    attacked = typographic_attack(result.samples, attack_dir, style=attack, draw=draw_attack)
    return LoadResult(attacked.samples, result.errors + attacked.errors)
