"""A small registry of benchmark loaders: ``load_benchmark(name, source, **options)``."""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import TypeAdapter, ValidationError

from visalign.errors import VisalignError
from visalign.evaluation.benchmarks.sample import LoadResult, RowError, Sample, claim_id

Loader = Callable[..., LoadResult]


@dataclass(frozen=True)
class BenchmarkInfo:
    """A registered loader and the one-line description shown to users."""

    name: str
    loader: Loader
    description: str


_REGISTRY: dict[str, BenchmarkInfo] = {}


def register_benchmark(name: str, description: str, *, replace: bool = False) -> Callable[[Loader], Loader]:
    """Register a loader under ``name`` (decorator). The loader takes ``(source, **options)``.

    The loader's named parameters after ``source`` are the benchmark's options: a config's ``options`` are
    checked against them by name and by type annotation (:func:`check_options`). An option is a *path option*,
    whose relative value in a config file is resolved as ``source`` is (from the config file's folder when it
    exists there), exactly when its annotation includes :class:`pathlib.Path` (``image_dir: str | Path``); one
    annotated ``str`` alone is passed as written and read from the working directory (:func:`path_options`).

    Sample ids must be unique within the benchmark: :func:`load_benchmark` keeps the first sample of a repeated id
    and turns each later one into a ``duplicate id`` :class:`RowError` (see :func:`claim_id`).

    Args:
        name: the registry name, also the prefix of every sample id the loader makes.
        description: one line: what the benchmark is and what ``source`` should point at.
        replace: replace an existing registration of ``name`` (re-running a notebook cell that defines the
            loader); otherwise registering a name twice is refused. Records name the benchmark, so replacing a
            built-in one makes its name mean your loader's rows in every run made after.

    Raises:
        VisalignError: ``name`` is already registered and ``replace`` is False.
    """

    def decorate(loader: Loader) -> Loader:
        if name in _REGISTRY and not replace:
            raise VisalignError(
                f"benchmark {name!r} is already registered; pass replace=True to register_benchmark to replace it"
            )
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

    An option is one exactly when its loader's annotation includes :class:`pathlib.Path` (``str | Path``), whatever
    its name. A config's relative value for one of them is resolved as its ``source`` is (see
    :mod:`visalign.evaluation.runner`).
    """
    return [key for key, p in _options(name).items() if Path in _alternatives(p.annotation)]


def _value_types(annotation: Any) -> Any:
    """``annotation`` with each Literal replaced by the types of its values: a wrong value is the loader's to name."""
    alternatives = _alternatives(annotation)
    if len(alternatives) > 1:
        return typing.Union[tuple(_value_types(member) for member in alternatives)]  # noqa: UP007 - built at run time
    if typing.get_origin(annotation) is Literal:
        return typing.Union[tuple({type(choice) for choice in typing.get_args(annotation)})]  # noqa: UP007
    return annotation


def _accepts(annotation: Any, value: Any) -> bool:
    """Whether ``value`` has a type ``annotation`` allows, in pydantic's strict mode (no ``2024`` for a ``str``)."""
    if annotation is inspect.Parameter.empty or isinstance(annotation, str):  # unresolved: left unchecked
        return True
    try:
        TypeAdapter(_value_types(annotation)).validate_python(value, strict=True)
    except ValidationError:
        return False
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


def _unique_ids(name: str, source: str | Path, result: LoadResult) -> LoadResult:
    """``result`` with each sample whose id repeats an earlier one's turned into a ``duplicate id`` error.

    Runs key their records by sample id, so a repeated id would silently replace the first row's record. Built-in
    loaders already claim ids row by row (:func:`claim_id`); this holds every loader, a user's included, to it.
    """
    seen: set[str] = set()
    kept: list[Sample] = []
    errors = list(result.errors)
    repeats: dict[str, int] = {}
    for sample in result.samples:
        duplicate = claim_id(seen, sample.id)
        if duplicate is None:
            kept.append(sample)
            continue
        # the row names the repeat (``x:1#2``): an error record is keyed by it, so each repeat keeps its own
        repeats[sample.id] = repeats.get(sample.id, 1) + 1
        errors.append(RowError(
            benchmark=name, source=str(source), row=f"{sample.id}#{repeats[sample.id]}", expected=sample.expected,
            message=f"benchmark {name!r}: {duplicate}: sample ids must be unique within the benchmark; the "
                    "first sample with it is kept (build the id from the row's own key)",
        ))
    if len(kept) == len(result.samples):
        return result
    return LoadResult(kept, errors)


def load_benchmark(
    name: str,
    source: str | Path,
    *,
    attack: str | None = None,
    attack_dir: str | Path | None = None,
    draw_attack: bool = True,
    fit_attack: bool = True,
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
        fit_attack: with ``draw_attack=False``, False also leaves each FigStep font size unfitted (None), only
            checking that the text fits: an evaluation fits the rows its ``limit`` keeps
            (:func:`visalign.evaluation.attacks.typographic.fit_attack`).
        **options: loader-specific options (``split``, ``subset``, ``variant``, ...), see each loader.

    Returns:
        The samples and one :class:`RowError` per row that could not be used; a sample whose id repeats an
        earlier one's is such a row (``duplicate id``), whatever loader made it.

    Raises:
        VisalignError: unknown benchmark or option, an option of the wrong type, or a wholly unreadable source.
    """
    info = benchmark_info(name)
    if attack is not None:
        options = text_form_options(name, options)
    check_options(name, options)
    result = _unique_ids(name, source, info.loader(source, **options))
    if attack is None:
        return result
    if attack_dir is None:
        raise VisalignError(f"benchmark {name!r}: attack={attack!r} needs attack_dir for the rendered images")
    # Attacks build on samples, so they import this package; importing them here keeps that direction.
    from visalign.evaluation.attacks.typographic import typographic_attack

    attacked = typographic_attack(result.samples, attack_dir, style=attack, draw=draw_attack, fit=fit_attack)
    return LoadResult(attacked.samples, result.errors + attacked.errors)
