"""``visalign attack`` on input with bad rows: every good row is drawn, then exit code 2 with the count."""

from __future__ import annotations

import json

from cli_in_process import run_in_process as run


def test_figstep_with_malformed_rows_draws_the_rest_and_exits_2(bench, tmp_path, capsys):
    lines = (bench / "figstep/SafeBench-Tiny.csv").read_text(encoding="utf-8").splitlines()
    lines[2] = lines[2].replace(",1,2,", ",1,x,")  # task_id not an integer
    lines[5] = lines[5].replace("Illegal Activity", "Not A Category")
    csv = tmp_path / "tiny-broken.csv"
    csv.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "images"
    code, stdout, err = run(["attack", "figstep", "--csv", str(csv), "--out", str(out)], capsys)
    assert code == 2  # before: 0, so a script could not tell a partial set from a whole one
    assert stdout.startswith("wrote 48 images to ") and len(list(out.glob("*.png"))) == 48
    skipped = [line for line in err.splitlines() if line.startswith("skipped ")]
    assert len(skipped) == 2 and "[line 3]" in skipped[0] and "[line 6]" in skipped[1]
    assert err.splitlines()[-1] == (f"error: {csv}: 2 of 50 rows could not be drawn (skipped above; the other 48 were "
                                    "written); fix those rows and re-run")  # fmt: skip


def test_typographic_with_an_empty_prompt_writes_the_rest_and_exits_2(bench, tmp_path, capsys):
    lines = (bench / "strongreject/strongreject_small_dataset.csv").read_text(encoding="utf-8").splitlines()
    category, source_name, _ = lines[4].split(",", 2)
    lines[4] = f'{category},{source_name},"   "'  # a row whose prompt is blank: nothing to draw
    source = tmp_path / "small-broken.csv"
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "set"
    argv = ["attack", "typographic", "-b", "strongreject-small", "--source", str(source), "--out", str(out)]
    code, stdout, err = run(argv, capsys)
    assert code == 2
    assert "wrote 59 samples" in stdout
    assert len((out / "samples.jsonl").read_text().splitlines()) == 59
    errors = [json.loads(line) for line in (out / "errors.jsonl").read_text().splitlines()]
    assert len(errors) == 1
    assert err.strip() == (f"error: {source}: 1 of 60 rows could not be drawn (their records are in "
                           f"{out / 'errors.jsonl'}; the other 59 were written); fix those rows and re-run")
