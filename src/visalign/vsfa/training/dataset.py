"""Reading visual QA training sets: LLaVA, ShareGPT (messages) and VLGuard records, with line-accurate errors.

A file is a JSON list (``llava.json``, ``sharegpt.json`` from ``visalign vsfa data``) or JSON lines. Image paths
are relative to ``image_root`` (default: the file's folder) and may not climb out of it with ``..``; absolute paths
are taken as they are (users point at their own images). ``<image>`` in a turn marks where its images go; a
record with images and no marker shows them before the first user message. Every image is decoded once while
reading (a truncated file is a bad record then, not an error at step N) and only its size is kept; the pixels are
loaded again when a batch is built, so a large set costs no memory up front.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any

from PIL import Image

from visalign.errors import VisalignError
from visalign.images import MAX_IMAGE_PIXELS, decode_image, load_image, map_images
from visalign.llava_format import IMAGE_MARKER
from visalign.models import Conversation, Turn

IMAGE_TOKEN = IMAGE_MARKER
_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}
_VLGUARD_INSTRUCTIONS = ("instruction", "safe_instruction", "unsafe_instruction")
_SPACE = re.compile(r"[ \t\n\r]*")  # JSON's whitespace, as the json module defines it
_ORIENTATION = 0x0112  # the EXIF tag; values 5-8 turn the image a quarter, swapping width and height
_QUARTER_TURNS = (5, 6, 7, 8)


@dataclass(frozen=True)
class ExampleTurn:
    """One message of a training example: role, text (image markers removed) and the image files it shows."""

    role: str
    text: str
    images: tuple[Path, ...] = ()


@dataclass(frozen=True)
class Example:
    """One training conversation, with where it came from (``file:line``) for error messages."""

    id: str
    turns: tuple[ExampleTurn, ...]
    source: str
    #: (width, height) of each of :attr:`image_paths`, upright, as the processor will see them
    image_sizes: tuple[tuple[int, int], ...] = ()

    @property
    def image_paths(self) -> list[Path]:
        """Every image file of the example, in order."""
        return [image for turn in self.turns for image in turn.images]

    def conversation(self) -> Conversation:
        """Load the images and return the example as model-layer turns."""
        return [Turn(t.role, t.text, [load_image(p) for p in t.images]) for t in self.turns]


@dataclass
class TrainingSet:
    """The examples read from a file, the records that were skipped, and a hash of the data and its images."""

    path: Path
    examples: list[Example]
    bad_records: list[dict[str, Any]] = field(default_factory=list)
    data_hash: str = ""


class _BadRecord(ValueError):
    pass


def _records(path: Path, text: str) -> Iterator[tuple[int, Any]]:
    """Yield (line number, decoded record) from a JSON list or a JSON-lines file."""
    stripped = text.lstrip()
    if not stripped.startswith("["):
        for number, line in enumerate(text.split("\n"), start=1):
            if not line.strip():
                continue
            try:
                yield number, json.loads(line)
            except json.JSONDecodeError as exc:
                raise VisalignError(f"{path}:{number}: not valid JSON ({exc.msg}); fix or remove the line") from None
        return
    yield from _json_list(path, text, len(text) - len(stripped) + 1)


def _json_list(path: Path, text: str, position: int) -> Iterator[tuple[int, Any]]:
    """Yield (line number, record) from a JSON list, one record at a time but as strictly as ``json.load``.

    ``position`` is just after the opening ``[``. Records need commas between them, and after the closing ``]``
    only whitespace may follow: a second list (``cat a.json b.json``) must not be dropped silently.
    """
    decoder = json.JSONDecoder()
    position = _SPACE.match(text, position).end()
    closed = text.startswith("]", position)  # an empty list
    line, counted = 1, 0  # a running newline count: recounting from the file's start per record is quadratic
    while not closed:
        line += text.count("\n", counted, position)
        counted = position
        try:
            record, position = decoder.raw_decode(text, position)
        except json.JSONDecodeError as exc:
            raise VisalignError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg}); fix the record") from None
        yield line, record
        position = _SPACE.match(text, position).end()
        if text.startswith(",", position):
            position = _SPACE.match(text, position + 1).end()
        elif text.startswith("]", position):
            closed = True
        else:
            found = repr(text[position]) if position < len(text) else "the end of the file"
            raise VisalignError(
                f"{path}:{_line_at(text, position)}: expected ',' or the list's closing ']' after a record, found "
                f"{found}; add the missing comma or ']' (or convert the file to JSON lines)"
            )
    end = _SPACE.match(text, position + 1).end()
    if end < len(text):
        raise VisalignError(
            f"{path}:{_line_at(text, end)}: data after the JSON list's closing ']' (two files concatenated?); "
            "merge them into one list or convert them to JSON lines"
        )


def _line_at(text: str, position: int) -> int:
    """1-based line of ``position``; O(file), so only for error messages."""
    return text.count("\n", 0, position) + 1


def _image_list(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [_within_root(value)]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return [_within_root(v) for v in value]
    raise _BadRecord("images must be a path or a list of paths")


def _within_root(image: str) -> str:
    """``image``, unless it is a relative path that climbs out of the image root with ``..`` (a bad record).

    Training sets are often third-party (LLaVA, ShareGPT, VLGuard records): one whose paths climb out would train a
    shareable adapter on whatever pictures lie there. The project's exporters write ``images/<sha256>.png``. An
    absolute path stays allowed: it is how users point at their own images, and a climbing path is never needed
    (``data.image_root`` moves the root instead).
    """
    if PurePath(image).is_absolute():
        return image
    parts = PurePath(os.path.normpath(image)).parts if image else ()
    if parts[:1] == ("..",):
        raise _BadRecord(
            f"image path {image!r} climbs out of the image root with '..'; give a path under data.image_root (default: "
            "the data file's folder) or an absolute one"
        )
    return image


def _turns_from(messages: Any, role_key: str, text_key: str) -> list[tuple[str, str]]:
    if not isinstance(messages, list) or not messages:
        raise _BadRecord("needs a non-empty list of messages")
    turns = []
    for message in messages:
        if not isinstance(message, dict) or not isinstance(message.get(text_key), str):
            raise _BadRecord(f"every message needs '{role_key}' and a text '{text_key}'")
        role = _ROLES.get(str(message.get(role_key)).lower())
        if role is None:
            raise _BadRecord(f"unknown role {message.get(role_key)!r} (expected user/human, assistant/gpt, system)")
        turns.append((role, message[text_key]))
    return turns


def _place_images(turns: list[tuple[str, str]], images: list[Path]) -> tuple[ExampleTurn, ...]:
    """Attach images to the turns that carry ``<image>`` markers (or to the first user turn) and drop the markers."""
    markers = sum(text.count(IMAGE_TOKEN) for _, text in turns)
    if markers and markers != len(images):
        raise _BadRecord(f"{markers} '{IMAGE_TOKEN}' marker(s) but {len(images)} image(s)")
    queue = list(images)
    placed = []
    first_user = next((i for i, (role, _) in enumerate(turns) if role == "user"), None)
    for index, (role, text) in enumerate(turns):
        count = text.count(IMAGE_TOKEN) if markers else (len(images) if index == first_user else 0)
        mine, queue = tuple(queue[:count]), queue[count:]
        placed.append(ExampleTurn(role, text.replace(IMAGE_TOKEN, "").strip(), mine))
    if queue:
        raise _BadRecord("images given but no user turn to show them in")
    return tuple(placed)


def _parse(record: Any, fmt: str, root: Path) -> list[tuple[str, list[tuple[str, str]], list[str]]]:
    """Return (id suffix, turns, image paths) for each conversation in a record (VLGuard records hold several)."""
    if not isinstance(record, dict):
        raise _BadRecord("a record must be a JSON object")
    if fmt == "auto":
        fmt = next((f for f, key in (("sharegpt", "messages"), ("llava", "conversations"),
                                      ("vlguard", "instr-resp")) if key in record), "")  # fmt: skip
        if not fmt:
            raise _BadRecord("no 'conversations' (LLaVA), 'messages' (ShareGPT) or 'instr-resp' (VLGuard) key")
    if fmt == "llava":
        return [("", _turns_from(record.get("conversations"), "from", "value"), _image_list(record.get("image")))]
    if fmt == "sharegpt":
        return [("", _turns_from(record.get("messages"), "role", "content"), _image_list(record.get("images")))]
    pairs = record.get("instr-resp")
    if not isinstance(pairs, list) or not pairs:
        raise _BadRecord("VLGuard record needs a non-empty 'instr-resp' list")
    conversations = []
    for number, pair in enumerate(pairs):
        key = next((k for k in _VLGUARD_INSTRUCTIONS if isinstance(pair, dict) and k in pair), None)
        if key is None or not isinstance(pair.get("response"), str):
            raise _BadRecord(f"instr-resp[{number}] needs an instruction and a 'response'")
        turns = [("user", str(pair[key])), ("assistant", pair["response"])]
        conversations.append((f"#{number}", turns, _image_list(record.get("image"))))
    return conversations


def _decode(image: Path) -> tuple[int, int] | _BadRecord:
    """Decode every pixel of ``image`` and return its upright size (as training loads it), or why it cannot.

    The header alone passes a truncated file, which would then stop the run at the step that first loads it. The
    checks are :func:`visalign.images.decode_image`'s, which :func:`visalign.images.load_image` also uses; that
    function is not called here because it swaps the process-wide warning filters, which threads must not do.
    """
    if not image.is_file():
        return _BadRecord(f"image file not found: {image}")
    try:
        opened = decode_image(image, name=image, max_pixels=MAX_IMAGE_PIXELS, limit_advice="resize it")
    except VisalignError as exc:
        return _BadRecord(str(exc))
    with opened:
        width, height = opened.size
        return (height, width) if _exif_orientation(opened) in _QUARTER_TURNS else (width, height)


def _exif_orientation(image: Image.Image) -> int:
    """The EXIF orientation tag (1: upright); a malformed EXIF block counts as upright, as ``load_image`` has it."""
    try:
        return int(image.getexif().get(_ORIENTATION, 1))
    except Exception:  # noqa: BLE001 - the pixels decoded fine; only the tag is unreadable
        return 1


def _decode_all(images: Iterable[Path]) -> dict[Path, tuple[int, int] | _BadRecord]:
    """:func:`_decode` each file once, in threads (:func:`visalign.images.map_images`).

    Decoding costs about ten times hashing (30 ms against 3 ms for a 1024 x 1024 PNG): a large set is read in
    parallel, not one image after another.
    """
    return map_images(_decode, images)


def _image_size(image: Path, sizes: dict[Path, tuple[int, int] | _BadRecord]) -> tuple[int, int]:
    """The upright size of ``image`` (decoded now unless it already was); raise the bad record it makes."""
    if image not in sizes:
        sizes[image] = _decode(image)
    known = sizes[image]
    if isinstance(known, _BadRecord):
        raise _BadRecord(str(known))
    return known


def _read_records(path: Path, text: str) -> list[tuple[int, Any] | VisalignError]:
    """Every (line, record) of the file, in order; invalid JSON ends the list as its error, raised where met."""
    records: list[tuple[int, Any] | VisalignError] = []
    try:
        records.extend(_records(path, text))
    except VisalignError as exc:
        records.append(exc)
    return records


def _image_files(records: list, fmt: str, root: Path) -> Iterator[Path]:
    """The image files that well-formed ``records`` name (a malformed one is reported by the reading pass)."""
    for entry in records:
        if isinstance(entry, VisalignError):
            return
        try:
            conversations = _parse(entry[1], fmt, root)
        except _BadRecord:
            continue
        yield from (root / image for _, _, images in conversations for image in images)


def _example(
    record: dict, suffix: str, turns, images: list[str], root: Path, where: str, index: int,
    sizes: dict[Path, tuple[int, int] | _BadRecord],
) -> Example:  # fmt: skip
    paths = [root / image for image in images]
    image_sizes = tuple(_image_size(image, sizes) for image in paths)
    placed = _place_images(turns, paths)
    if not any(t.role == "assistant" and t.text for t in placed):
        raise _BadRecord("no assistant answer to train on")
    # Training labels each assistant turn after the prompt before it; an opening assistant turn has no prompt.
    if next(t.role for t in placed if t.role != "system") == "assistant":
        raise _BadRecord("the first message (after any system prompt) is the assistant's; start with a user message")
    return Example(id=f"{record.get('id', index)}{suffix}", turns=placed, source=where, image_sizes=image_sizes)


def _checked(examples: list[Example], check: Callable[[Example], str | None] | None) -> list[Example]:
    """``examples`` when ``check`` finds no problem in any of them; else the first problem, as a bad record."""
    if check is not None:
        for example in examples:
            if problem := check(example):
                raise _BadRecord(problem)
    return examples


def _hash_data(path: Path, examples: list[Example]) -> str:
    """sha256 of the data file and of every image it uses (so a redrawn image changes the hash)."""
    digest = hashlib.sha256(path.read_bytes())
    for image in sorted({str(p) for e in examples for p in e.image_paths}):
        digest.update(hashlib.sha256(Path(image).read_bytes()).digest())
    return digest.hexdigest()


def load_training_set(
    path: str | Path,
    *,
    fmt: str = "auto",
    image_root: str | Path | None = None,
    limit: int | None = None,
    on_bad_record: str = "error",
    check: Callable[[Example], str | None] | None = None,
) -> TrainingSet:
    """Read a LLaVA / ShareGPT / VLGuard file into examples.

    Args:
        path: the JSON list or JSON-lines file.
        fmt: ``auto`` (per record, from its keys), ``llava``, ``sharegpt`` or ``vlguard``.
        image_root: folder that relative image paths start from; default: the file's folder. A relative path
            that climbs out of it with ``..`` makes a bad record; an absolute path is used as it is.
        limit: keep only the first ``limit`` examples.
        on_bad_record: ``error`` raises at the first bad record; ``skip`` leaves it out and reports it in
            ``TrainingSet.bad_records`` (line, id, error).
        check: returns why the model cannot take an example (None: it can); a problem makes the record bad,
            like a malformed one (the trainer passes the model's :class:`visalign.models.adapter.InputRules`).

    Raises:
        VisalignError: the file is missing, is not JSON, has no usable example, or (``on_bad_record=error``) a
            record is malformed, names a missing or unreadable image (or a relative one outside ``image_root``), or
            fails ``check``; the message names the file and line.
    """
    path = Path(path)
    if not path.is_file():
        raise VisalignError(f"{path}: training data file not found; check data.path in the config")
    root = Path(image_root) if image_root is not None else path.parent
    text = path.read_text(encoding="utf-8")
    examples: list[Example] = []
    bad: list[dict[str, Any]] = []
    records = _read_records(path, text)
    # every image decoded up front, in parallel, once (several records may share one); with a limit, those of
    # as many records as examples wanted (the rest, if reached, one by one)
    sizes = _decode_all(_image_files(records[:limit] if limit is not None else records, fmt, root))
    for index, entry in enumerate(records):
        if limit is not None and len(examples) >= limit:
            break
        if isinstance(entry, VisalignError):
            raise entry
        line, record = entry
        where = f"{path}:{line}"
        try:  # all of a record's conversations or none: a skipped VLGuard record must leave no pair behind
            parsed = [_example(record, *conversation, root, where, index, sizes)
                      for conversation in _parse(record, fmt, root)]  # fmt: skip
            examples.extend(_checked(parsed, check))
        except _BadRecord as exc:
            ident = record.get("id") if isinstance(record, dict) else None
            if on_bad_record == "error":
                label = f" (id {ident})" if ident is not None else ""
                raise VisalignError(
                    f"{where}: bad record{label}: {exc}; fix it or set data.on_bad_record: skip"
                ) from None
            bad.append({"line": line, "id": ident, "error": str(exc)})
    examples = examples[:limit] if limit is not None else examples
    if not examples:
        raise VisalignError(f"{path}: no usable training examples ({len(bad)} bad record(s))")
    return TrainingSet(path=path, examples=examples, bad_records=bad, data_hash=_hash_data(path, examples))
