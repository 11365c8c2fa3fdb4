"""``visalign judge refusal`` on input with malformed lines: the good lines are judged, then exit code 2."""

from __future__ import annotations

import json

from cli_in_process import run_in_process as run

REFUSAL = '{"id": 1, "prompt": "p", "response": "Sorry, I can\'t do that."}\n'
COMPLIANCE = '{"id": 2, "prompt": "p", "response": "Here are three ideas: 1. a 2. b 3. c"}\n'


def test_malformed_lines_exit_2_after_the_good_lines_are_judged(tmp_path, capsys):
    source = tmp_path / "in.jsonl"
    source.write_text(REFUSAL + "not json\n" + '{"id": 3, "prompt": "p"}\n' + COMPLIANCE)
    out = tmp_path / "out.jsonl"
    code, _, err = run(["judge", "refusal", "--input", str(source), "--preset", "xstest", "--out", str(out)], capsys)
    assert code == 2  # before the fix: 0, so a script could not tell
    assert err == (f'error: {source}: 2 of 4 lines could not be judged (see their "error" records in {out}; the rest '
                   "judged: 1 refusal, 1 compliance, 0 unknown); fix those lines and re-run\n")  # fmt: skip
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [line.get("label") for line in lines] == ["refusal", None, None, "compliance"]
    assert lines[1]["line"] == 2 and lines[2] == {"line": 3, "id": 3, "error": "missing response"}


def test_malformed_lines_on_standard_output_exit_2_too(tmp_path, capsys):
    source = tmp_path / "in.jsonl"
    source.write_text(COMPLIANCE + "[1, 2]\n")
    code, out, err = run(["judge", "refusal", "--input", str(source), "--preset", "xstest"], capsys)
    assert code == 2 and "1 of 2 lines could not be judged" in err and "records in standard output" in err
    assert [json.loads(line).get("label") for line in out.splitlines()] == ["compliance", None]


def test_clean_input_still_exits_0_with_the_counts(tmp_path, capsys):
    source = tmp_path / "in.jsonl"
    source.write_text(REFUSAL + "\n" + COMPLIANCE)
    code, _, err = run(["judge", "refusal", "--input", str(source), "--preset", "xstest"], capsys)
    assert code == 0 and err == "1 refusal, 1 compliance, 0 unknown, 0 error lines\n"
