"""``judge_refusal_file`` reads its input a line at a time, numbering lines as the whole-file read did."""

from __future__ import annotations

import json
import os
import threading

import pytest

from visalign.errors import VisalignError
from visalign.evaluation.judges import get_refusal_judge, judge_refusal_file

REFUSAL = {"id": "r", "prompt": "p", "response": "I'm sorry, but I can't help with that."}
COMPLIANCE = {"id": "c", "prompt": "p", "response": "The capital of France is Paris."}


def _line(record: dict) -> bytes:
    return json.dumps(record, ensure_ascii=False).encode()


def test_lines_are_split_and_numbered_as_the_whole_file_read_did(tmp_path):
    separator = {"id": "s", "prompt": "p", "response": "Sure.\u2028Here it is:\u2029 step one\x85 step two."}
    source = tmp_path / "in.jsonl"
    source.write_bytes(
        _line(REFUSAL) + b"\r\n"  # 1: CRLF
        + b"   \n"  # 2: blank
        + b"{broken\r"  # 3: a lone CR ends a line too
        + _line(separator) + b"\n"  # 4: raw U+2028/U+2029/U+0085 inside a string do not end the line
        + b"\r\n"  # 5: blank
        + _line(COMPLIANCE) + b"\r\r\n"  # 6, then 7 (blank)
        + b'{"id": "t", "response": '  # 8: cut short, and no line end at the end of the file
    )  # fmt: skip
    out = tmp_path / "out.jsonl"
    counts = judge_refusal_file(source, get_refusal_judge(), out)
    assert dict(counts) == {"refusal": 1, "compliance": 2, "unknown": 0, "error": 2}
    records = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [(r.get("line"), r.get("id"), r.get("label")) for r in records] == [
        (None, "r", "refusal"), (3, None, None), (None, "s", "compliance"), (None, "c", "compliance"), (8, None, None)
    ]  # fmt: skip
    assert records[1]["error"] == "not valid JSON (Expecting property name enclosed in double quotes at column 2)"
    assert records[4]["error"] == "not valid JSON (Expecting value at column 25)"

    # The whole-file read this replaces (universal newlines, then a split at "\n" alone) gives the same records.
    judge = get_refusal_judge()
    from visalign.evaluation.judges.run import _judge_line

    whole = source.read_text(encoding="utf-8").split("\n")
    assert records == [_judge_line(judge, n, line) for n, line in enumerate(whole, start=1) if line.strip()]


class _Signalling:
    """The real judge, which also tells the test each time it has judged a line."""

    def __init__(self) -> None:
        self.inner = get_refusal_judge()
        self.judged = threading.Event()

    def judge(self, response: str, prompt: str = ""):
        verdict = self.inner.judge(response, prompt)
        self.judged.set()
        return verdict


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_a_pipe_is_judged_line_by_line_before_it_ends(tmp_path):
    # A line is judged as soon as it is read, before the rest of the input exists: the input is never held whole
    # (a whole-file read waits for the writer to close, then holds every line at once).
    pipe = tmp_path / "responses.pipe"
    os.mkfifo(pipe)
    judge = _Signalling()
    judged_before_the_end: list[bool] = []

    def write() -> None:
        with open(pipe, "wb") as writer:
            writer.write(_line(REFUSAL) + b"\n")
            writer.flush()
            judged_before_the_end.append(judge.judged.wait(timeout=5))
            writer.write(_line(COMPLIANCE) + b"\n")

    writer = threading.Thread(target=write)
    writer.start()
    try:
        counts = judge_refusal_file(pipe, judge, tmp_path / "out.jsonl")
    finally:
        writer.join()
    assert judged_before_the_end == [True]
    assert (counts["refusal"], counts["compliance"], counts["error"]) == (1, 1, 0)


def test_a_line_that_is_not_utf8_is_named_and_the_lines_before_it_are_kept(tmp_path):
    source = tmp_path / "in.jsonl"
    source.write_bytes(_line(REFUSAL) + b"\n\n" + b'{"id": "x", "response": "caf\xe9"}\n' + _line(COMPLIANCE) + b"\n")
    out = tmp_path / "out.jsonl"
    with pytest.raises(VisalignError) as raised:
        judge_refusal_file(source, get_refusal_judge(), out)
    assert str(raised.value) == (
        f"{source}: cannot read it as UTF-8 text (line 3: invalid continuation byte at byte 28 of the line); "
        "save it as UTF-8"
    )
    assert [json.loads(line)["id"] for line in out.read_text().splitlines()] == ["r"]


def test_a_missing_input_leaves_the_output_untouched(tmp_path):
    out = tmp_path / "out.jsonl"
    out.write_text("earlier results\n")
    with pytest.raises(VisalignError, match="absent.jsonl: input file not found"):
        judge_refusal_file(tmp_path / "absent.jsonl", get_refusal_judge(), out)
    with pytest.raises(VisalignError, match="cannot read it as UTF-8 text"):
        judge_refusal_file(tmp_path, get_refusal_judge(), out)  # a folder
    assert out.read_text() == "earlier results\n"


def test_an_output_that_names_the_input_judges_it_in_place(tmp_path):
    # Streaming opened the output before reading a line: naming one file for both emptied it and judged nothing.
    path = tmp_path / "answers.jsonl"
    path.write_bytes(_line(REFUSAL) + b"\n" + _line(COMPLIANCE) + b"\n")
    counts = judge_refusal_file(path, get_refusal_judge(), path)
    assert dict(counts) == {"refusal": 1, "compliance": 1, "unknown": 0, "error": 0}
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert [(r["id"], r["label"]) for r in records] == [("r", "refusal"), ("c", "compliance")]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["answers.jsonl"]  # no temporary file left
