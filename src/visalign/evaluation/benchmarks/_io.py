"""Reading benchmark source files: an unreadable file is a VisalignError naming it; rows are left to loaders."""

from __future__ import annotations

import csv
import json
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path, PurePath
from typing import Any, TypeVar

import yaml

from visalign.errors import VisalignError
from visalign.evaluation.benchmarks.sample import RowError
from visalign.images import image_problems, load_image
from visalign.runs import atomic_write_bytes

#: A loader's candidate row: a tuple whose last element is its image path, or None for a row without an image.
Row = TypeVar("Row", bound=tuple[Any, ...])


def require_file(path: str | Path, what: str) -> Path:
    """Return ``path`` as a Path, or raise a VisalignError when it is not an existing file.

    Args:
        path: the file to check.
        what: a few words naming the expected file (``"XSTest prompts CSV"``), used in the message.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise VisalignError(f"{path}: {what} not found; pass the path to the official file")
    return path


def read_csv(
    path: Path, required: tuple[str, ...], *, delimiter: str = ","
) -> Iterator[tuple[int, dict[str, str] | None, str | None]]:
    """Yield ``(row_number, row, error)`` per data row; row numbers count the header as row 1.

    Exactly one of ``row`` and ``error`` is set: a row with more fields than the header (an unquoted delimiter in
    a cell, as in ``$50,000``) is an error, never a row cut at that delimiter.

    Raises:
        VisalignError: the file cannot be decoded or lacks one of the ``required`` columns.
    """
    # MMBench TSVs carry base64 images in one field, far over csv's default 128 KiB field limit.
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle, delimiter=delimiter)
            missing = [name for name in required if name not in (reader.fieldnames or [])]
            if missing:
                raise VisalignError(
                    f"{path}: missing column(s) {', '.join(missing)}; expected {', '.join(required)} "
                    "(is this the official file?)"
                )
            for number, row in enumerate(reader, start=2):
                # DictReader files the cells past the header under the key None; empty ones lose nothing
                extra = [cell for cell in row.pop(None, None) or () if cell.strip()]
                if extra:
                    yield number, None, (
                        f"{len(extra)} more field(s) than the {len(reader.fieldnames or [])} header columns "
                        f"(an unquoted {delimiter!r} inside a cell?); quote that cell"
                    )
                else:
                    yield number, row, None
    except UnicodeDecodeError as exc:
        raise VisalignError(f"{path}: not UTF-8 text ({exc.reason}); pass the official CSV") from None
    except csv.Error as exc:
        raise VisalignError(f"{path}: malformed CSV ({exc})") from None


def read_lines(path: Path, header: str) -> Iterator[tuple[int, str]]:
    """Yield ``(line_number, text)`` for each non-empty line of a one-column file whose first line is ``header``.

    For one-column files written without quoting (FigStep's benign sentences): a comma is part of the text.
    A line wrapped in double quotes is unquoted as CSV would. Line numbers count the header as line 1.

    Raises:
        VisalignError: the file is not UTF-8 text or its first line is not ``header``.
    """
    try:
        # split on "\n" only, as in read_jsonl: str.splitlines() also breaks at U+2028/U+2029/U+0085
        lines = path.read_text(encoding="utf-8-sig").split("\n")
    except UnicodeDecodeError as exc:
        raise VisalignError(f"{path}: not UTF-8 text ({exc.reason}); pass the official file") from None
    if lines[0].strip().strip('"') != header:
        raise VisalignError(f"{path}: first line must be the column name {header!r} (is this the official file?)")
    for number, line in enumerate(lines[1:], start=2):
        if not line:
            continue
        if len(line) >= 2 and line.startswith('"') and line.endswith('"'):
            line = line[1:-1].replace('""', '"')
        yield number, line


def read_json(path: Path) -> Any:
    """Parse a whole JSON file.

    Raises:
        VisalignError: the file is not valid UTF-8 JSON; the message names the file and position.
    """
    try:
        return json.loads(path.read_text(encoding="utf-8-sig"))
    except UnicodeDecodeError as exc:
        raise VisalignError(f"{path}: not UTF-8 text ({exc.reason})") from None
    except json.JSONDecodeError as exc:
        raise VisalignError(
            f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})"
        ) from None


def read_jsonl(path: Path) -> Iterator[tuple[int, Any | None, str | None]]:
    """Yield ``(line_number, record, error)`` for each non-blank line; exactly one of record and error is set.

    Raises:
        VisalignError: the file is not UTF-8 text.
    """
    try:
        # split on "\n" only: str.splitlines() also breaks at U+2028/U+2029/U+0085, which JSON text may hold raw
        lines = path.read_text(encoding="utf-8-sig").split("\n")
    except UnicodeDecodeError as exc:
        raise VisalignError(f"{path}: not UTF-8 text ({exc.reason})") from None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            yield number, json.loads(line), None
        except json.JSONDecodeError as exc:
            yield number, None, f"not valid JSON ({exc.msg} at column {exc.colno})"


def read_yaml(path: Path) -> Any:
    """Parse a whole YAML file.

    Raises:
        VisalignError: the file is not valid YAML.
    """
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8-sig"))
    except (UnicodeDecodeError, yaml.YAMLError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise VisalignError(f"{path}: not valid YAML ({first})") from None


def image_problem(path: Path) -> str | None:
    """Return why ``path`` is not a usable image (missing, corrupt, too large), or None if it opens fully."""
    try:
        load_image(path)
    except VisalignError as exc:
        return str(exc)
    return None


def rows_with_images(
    rows: Sequence[RowError | Row], errors: list[RowError], bad: Callable[[Row, str], RowError]
) -> Iterator[Row]:
    """Yield each candidate row of ``rows`` whose image loads, in order, filing the others in ``errors``.

    The second pass of a loader that first checks all of a row but its image: every candidate's image is decoded
    at once, in threads (:func:`visalign.images.image_problems`; one by one, decoding was most of a start's time),
    when the first row is asked for. Then, walking ``rows`` in order, a RowError is appended to ``errors`` as it
    stands, a row whose image fails gets ``bad(row, problem)`` appended, and any other row is yielded. Consumed
    row by row, the loader's own errors and samples for the yielded rows interleave with these in file order.

    Args:
        rows: RowErrors and candidate rows (tuples whose last element is the image path, or None when the row
            has no image to check), in file order; read twice, so a sequence rather than an iterator.
        errors: where the errors go (the loader's ``result.errors``).
        bad: the RowError for a candidate row and the one-line reason its image is unusable.
    """
    problems = image_problems(row[-1] for row in rows if not isinstance(row, RowError) and row[-1] is not None)
    for row in rows:
        if isinstance(row, RowError):
            errors.append(row)
            continue
        image = row[-1]
        problem = problems[image] if image is not None else None
        if problem:
            errors.append(bad(row, problem))
            continue
        yield row


def image_under(root: Path, reference: str) -> Path:
    """Return ``root / reference``, or raise when the row's ``reference`` would lead out of ``root``.

    A benchmark file names its images relative to an image folder; one whose path is absolute or climbs out with
    ``..`` would have the loader read (and send to the system under test) any picture on the machine. Official files
    never do this. The check is on the text alone: symbolic links inside ``root`` are the folder owner's choice (a
    Hugging Face snapshot is all links into its blob store) and stay allowed.

    Args:
        root: the folder the benchmark's image paths are relative to.
        reference: the row's image path (or the path parts built from the row, joined by ``/``).

    Raises:
        VisalignError: the path is absolute, climbs out of ``root``, or holds a NUL character (one line, for the
            loader's row error).
    """
    if "\0" in reference:
        raise VisalignError(f"image path {reference!r} holds a NUL character; fix or remove the row")
    relative = PurePath(os.path.normpath(reference)) if reference else PurePath()
    if relative.anchor or (relative.parts and relative.parts[0] == ".."):
        raise VisalignError(
            f"image path {reference!r} leads out of the image folder {root}; official files never do this: "
            "fix or remove the row"
        )
    return root / reference  # as the row spells it: sample paths (kept in run records) stay what they were


def save_image_bytes(data: bytes, folder: Path, name: str) -> Path:
    """Write encoded image bytes as ``folder/name`` plus the extension of their format, and return the path.

    Args:
        data: the encoded image.
        folder: the cache folder (created if missing).
        name: a plain file name without extension, made by the loader (never a row's text as it stands).

    Raises:
        VisalignError: the bytes are not an image Pillow can read, or ``name`` is not a plain file name or the
            file it names lies outside ``folder`` (a link planted there): nothing is written then.
    """
    import io

    from PIL import Image

    from visalign.images import DECODE_ERRORS

    # Defence in depth: the loaders make ``name`` themselves, but a name that is not one plain component would
    # write wherever it points (``../..``, an absolute path), creating folders on the way.
    if not name or name != PurePath(name).name or name.startswith(".") or "\\" in name or "\0" in name:
        raise VisalignError(f"image cache name {name!r} is not a plain file name; nothing written")
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.verify()
            suffix = "." + (image.format or "png").lower().replace("jpeg", "jpg")
    except DECODE_ERRORS as exc:  # UnidentifiedImageError is an OSError; Pillow also raises ValueError and others
        raise VisalignError(f"embedded image is not readable ({exc})") from None
    target = folder / (name + suffix)
    folder.mkdir(parents=True, exist_ok=True)
    # a link at the target (planted by whoever else writes to the cache) would have write_bytes follow it
    if not target.resolve().is_relative_to(folder.resolve()):
        raise VisalignError(f"{target}: leads out of the image cache {folder} (a link?); remove it and load again")
    if not target.exists() or target.read_bytes() != data:
        # whole or not at all: jobs started together on a cold cache (an array of evals) read what others write
        atomic_write_bytes(target, data)
    return target
