"""Judging a JSONL file of responses: one output line per input line, errors included, nothing lost."""

from __future__ import annotations

import json
import os
import re
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, TextIO

from visalign.errors import VisalignError
from visalign.evaluation.judges.verdict import RefusalJudge
from visalign.temp_files import RENAME_BEFORE_CLOSE, owned_temp_file, sweep_stale_temp_files


def _judge_line(judge: RefusalJudge, number: int, line: str) -> dict:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        return {"line": number, "error": f"not valid JSON ({exc.msg} at column {exc.colno})"}
    if not isinstance(record, dict):
        return {"line": number, "error": "not a JSON object"}
    missing = [key for key in ("id", "response") if key not in record]
    if missing or not isinstance(record.get("response"), str):
        reason = f"missing {', '.join(missing)}" if missing else "'response' is not a string"
        return {"line": number, "id": record.get("id"), "error": reason}
    verdict = judge.judge(record["response"], str(record.get("prompt") or ""))
    return {"id": record["id"], "label": verdict.label, "raw": verdict.raw, "judge": verdict.judge}


def _rename_into_place(handle: TextIO, temporary: Path, target: Path) -> None:
    """Rename the written ``temporary`` over ``target``, before its close where locks exist.

    Its lock is then held until the name is gone; on Windows (which refuses to rename an open file) it is closed first.
    """
    handle.flush()
    if not RENAME_BEFORE_CLOSE:
        handle.close()
    os.replace(temporary, target)


def judge_refusal_file(input_path: str | Path, judge: RefusalJudge, out: str | Path | None = None) -> Counter:
    """Label each line of ``input_path`` (``id, prompt, response``) and write one JSON line per input line.

    A malformed line becomes ``{"line": N, "error": ...}`` and the run continues, so the good lines are judged;
    the caller decides what the ``error`` count means (``visalign judge refusal`` exits 2 when it is not zero).

    Args:
        input_path: JSONL file of responses.
        judge: the refusal judge to apply.
        out: the output JSONL file; standard output when None.

    Returns:
        Counts of ``refusal``, ``compliance``, ``unknown`` and ``error`` lines.

    The file is read a line at a time, so its size does not matter (a pipe works too). ``out`` is written under a
    temporary name and renamed into place at the end, so it may name the input file itself (judged in place); the
    temporary file a killed run left is deleted by the next run that writes ``out`` (see
    :func:`~visalign.temp_files.sweep_stale_temp_files`).

    Raises:
        VisalignError: the input file is missing or unreadable, or a line of it is not UTF-8 text (the message
            names the line; the lines before it have been judged and written).
    """
    source = Path(input_path)
    try:  # opened before the output: a missing or unreadable input leaves the output untouched
        raw = source.open("rb")
    except FileNotFoundError:
        raise VisalignError(f"{source}: input file not found") from None
    except OSError as exc:
        raise VisalignError(f"{source}: cannot read it as UTF-8 text ({exc})") from None
    counts: Counter = Counter({"refusal": 0, "compliance": 0, "unknown": 0, "error": 0})
    with raw:
        if not out:
            _judge_lines(source, raw, judge, sys.stdout, counts)
            return counts
        target = Path(out)
        sweep_stale_temp_files(target.parent, re.escape(target.name))
        # a name of its own beside ``out``: opening ``out`` itself would empty the input when they are one file
        descriptor, name = owned_temp_file(target)
        try:
            # renamed before the close: the writer's lock on the temporary file is held until its name is gone, so
            # no sweep (another pid namespace's included) takes it for a killed run's
            with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
                try:
                    _judge_lines(source, raw, judge, handle, counts)
                except VisalignError:  # a line that is not UTF-8: the lines before it are kept, as documented
                    _rename_into_place(handle, name, target)
                    raise
                _rename_into_place(handle, name, target)
        finally:
            name.unlink(missing_ok=True)
    return counts


def _judge_lines(source: Path, raw: BinaryIO, judge: RefusalJudge, handle: TextIO, counts: Counter) -> None:
    """Judge each non-blank line of ``raw`` and write its result to ``handle``, counting the labels."""
    for number, line in _lines(source, raw):
        if not line.strip():
            continue
        result = _judge_line(judge, number, line)
        counts["error" if "error" in result else result["label"]] += 1
        handle.write(json.dumps(result, ensure_ascii=False) + "\n")


def _lines(source: Path, raw: BinaryIO) -> Iterator[tuple[int, str]]:
    """Yield ``(number, text)`` for each line of the open file ``raw``, read one at a time (constant memory).

    Lines end at LF, CRLF or CR, as text mode reads them, and never at U+2028 and the like (which JSON strings
    may hold raw), so the numbers are the ones an editor shows. A pipe is read as well as a file.

    Raises:
        VisalignError: the file cannot be read, or a line is not UTF-8 (the message names it, and the lines
            before it have been yielded).
    """
    number = 0
    while True:
        try:
            line = raw.readline()
        except OSError as exc:  # a directory, a device error
            raise VisalignError(f"{source}: cannot read it as UTF-8 text ({exc})") from None
        if not line:
            return
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise VisalignError(
                f"{source}: cannot read it as UTF-8 text (line {number + 1}: {exc.reason} at byte {exc.start} "
                "of the line); save it as UTF-8"
            ) from None
        # no UTF-8 sequence holds the byte of a CR or an LF, so the bytes split into lines as the text would
        for piece in text.removesuffix("\n").removesuffix("\r").split("\r"):
            number += 1
            yield number, piece
