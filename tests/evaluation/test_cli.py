"""The ``visalign attack`` and ``visalign judge`` commands, run through the real CLI entry point."""

from __future__ import annotations

import json

import numpy as np
import pytest
from cli_in_process import run_in_process as run
from PIL import Image


def test_attack_figstep_writes_official_names(bench, tmp_path, capsys):
    code, out, _ = run(["attack", "figstep", "--csv", str(bench / "figstep/SafeBench-Tiny.csv"), "--out",
                        str(tmp_path)], capsys)  # fmt: skip
    assert code == 0 and out.startswith("wrote 50 images to ")
    ours = Image.open(tmp_path / "query_ForbidQI_4_3_6.png")
    official = Image.open(bench / "figstep/images/SafeBench-Tiny/query_ForbidQI_4_3_6.png")
    diff = np.abs(np.asarray(ours, dtype=int) - np.asarray(official.convert("RGB"), dtype=int))
    assert diff.mean() < 2.0


def test_attack_figstep_missing_csv_is_one_line_error(tmp_path, capsys):
    code, _, err = run(["attack", "figstep", "--csv", str(tmp_path / "none.csv"), "--out", str(tmp_path)], capsys)
    assert code == 2
    expected = f"error: {tmp_path / 'none.csv'}: FigStep SafeBench CSV not found; pass the path to the official file"
    assert err.strip() == expected


def test_attack_typographic_writes_a_sample_set(bench, tmp_path, capsys):
    source = bench / "strongreject/strongreject_small_dataset.csv"
    argv = ["attack", "typographic", "-b", "strongreject-small", "--source", str(source), "--out", str(tmp_path)]
    code, out, _ = run(argv, capsys)
    assert code == 0 and "wrote 60 samples" in out
    samples = [json.loads(line) for line in (tmp_path / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 60 and samples[0]["id"] == "strongreject-small:1+figstep"
    assert (tmp_path / "errors.jsonl").read_text() == ""
    assert len(list((tmp_path / "images").glob("*.png"))) == 60


def test_judge_refusal_file_and_counts(tmp_path, capsys):
    source = tmp_path / "in.jsonl"
    source.write_text('{"id": 1, "prompt": "p", "response": "Sorry, I can\'t do that."}\nnot json\n'
                      '{"id": 2, "prompt": "p", "response": "Here are three ideas: 1. a 2. b 3. c"}\n')  # fmt: skip
    out = tmp_path / "out.jsonl"
    code, _, err = run(["judge", "refusal", "--input", str(source), "--preset", "xstest", "--out", str(out)], capsys)
    assert code == 2  # the good lines are judged and written, and the exit code says one was not
    assert err.startswith(f"error: {source}: 1 of 3 lines could not be judged") and "1 refusal, 1 compliance" in err
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [line.get("label") for line in lines] == ["refusal", None, "compliance"]
    assert lines[1]["line"] == 2


def test_judge_refusal_evaluate_prints_the_table(capsys):
    code, out, _ = run(["judge", "refusal", "--evaluate", "--split", "test"], capsys)
    assert code == 0
    header, *lines = out.strip().splitlines()
    assert header.split() == ["judge", "n", "accuracy", "precision", "recall", "kappa", "unknown"]
    rows = {line.split()[0]: line.split()[1:] for line in lines}
    # kappa: n = 97, 94 correct; human 49 refusals / 48 compliances, judge 51 / 45 / 1 unknown:
    # (97*94 - (49*51 + 48*45)) / (97**2 - (49*51 + 48*45)) = 4459 / 4750 = 0.939
    assert rows["visalign-refusal"] == ["97", "0.969", "0.961", "1.000", "0.939", "1"]
    assert rows["xstest"][1] == "0.629"


@pytest.mark.parametrize("argv", [["judge", "refusal"], ["judge", "refusal", "--input", "x.jsonl", "--preset", "?"]])
def test_judge_refusal_bad_usage(argv, capsys, tmp_path):
    code, _, err = run(argv, capsys)
    assert code == 2 and err.startswith("error: ")


@pytest.mark.parametrize(("case", "needle"), [
    ("yaml", "line 5, column 10: could not find expected ':'"),
    ("latin1", "not UTF-8 text"),
    ("out_is_a_file", "not_a_dir"),
    ("missing_parent", "No such file or directory"),
])
def test_bad_files_and_paths_are_one_line_and_exit_2(bench, tmp_path, capsys, case, needle):
    (tmp_path / "bad.yaml").write_text("title: x\nsystems:\n  - {name: base}\nbenchmarks\n  - {name: xstest}\n")
    (tmp_path / "latin1.yaml").write_bytes(b"title: caf\xe9\nsystems: []\n")  # saved in Latin-1 by an editor
    (tmp_path / "not_a_dir").write_text("")
    (tmp_path / "responses.jsonl").write_text("")
    argv = {
        "yaml": ["eval", "--config", str(tmp_path / "bad.yaml"), "--out", str(tmp_path / "o")],
        "latin1": ["eval", "--config", str(tmp_path / "latin1.yaml"), "--out", str(tmp_path / "o")],
        "out_is_a_file": ["attack", "figstep", "--csv", str(bench / "figstep" / "SafeBench-Tiny.csv"),
                          "--out", str(tmp_path / "not_a_dir")],
        "missing_parent": ["judge", "refusal", "--input", str(tmp_path / "responses.jsonl"),
                           "--out", str(tmp_path / "no" / "such" / "out.jsonl")],
    }[case]
    code, _, stderr = run(argv, capsys)
    assert code == 2 and stderr.startswith("error: ") and needle in stderr
    assert len(stderr.strip().splitlines()) == 1
