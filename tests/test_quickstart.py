"""The main job end to end, at the tiny scale (every stage, every system; seconds of work per stage)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from visalign.evaluation.summary import read_summary_json, unparsed_answer
from visalign.quickstart import summary_cell

pytestmark = pytest.mark.slow

SYSTEMS = ["base", "vsfa", "magic-standard", "magic-strict", "adashield-s"]


def test_quickstart_runs_every_stage_and_resumes(tmp_path, default_model_dir):
    out = tmp_path / "qs"
    command = [sys.executable, "-m", "visalign", "quickstart", "--scale", "tiny", "--out", str(out)]
    # wide enough that the console table's cells are printed whole, not wrapped
    first = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "COLUMNS": "400"})
    assert first.returncode == 0, first.stderr[-3000:]
    assert first.stdout.strip().splitlines()[-1] == f"report: {out / 'eval' / 'report.html'}"

    # every stage left its artefact
    assert json.loads((out / "vsfa-data" / "dataset" / "llava.json").read_text())
    assert (out / "vsfa-train" / "adapter" / "adapter_config.json").is_file()
    assert {p.name for p in (out / "magic").glob("*.png")} == {"standard.png", "strict.png"}
    for name in ("vsfa_data", "vsfa_train", "magic", "eval", "value_systems"):
        assert (out / "configs" / f"{name}.yaml").is_file()

    records = [json.loads(line) for line in (out / "eval" / "records.jsonl").read_text().splitlines()]
    assert sorted({r["system"] for r in records}) == sorted(SYSTEMS)
    benchmarks = {r["benchmark"] for r in records}
    assert benchmarks == {"harmful-text", "harmful-figstep", "benign-borderline", "advice", "capability"}
    assert not [r for r in records if r["error"]]
    magic = [r for r in records if r["system"] == "magic-strict"]
    assert all(r["decoding"]["value_system"] == "strict" for r in magic)

    timings = json.loads((out / "timings.json").read_text())
    assert timings["model"] == "default"
    assert {"vsfa_data", "vsfa_train", "magic", "eval"} <= set(timings["seconds"])
    assert all(timings["seconds"][stage] > 0 for stage in ("vsfa_train", "magic", "eval"))  # model work: > 0.05 s

    summary = json.loads((out / "summary.json").read_text())
    assert list(summary) == SYSTEMS
    for metrics in summary.values():
        for name in ("attack_success_rate", "benign_refusal_rate", "advice_refusal_rate", "capability_score"):
            entry = metrics[name]
            assert entry["denominator"] > 0 and len(entry["ci95"]) == 2
            assert 0.0 <= entry["value"] <= 1.0
    # the advice requests, which the strict value system refuses by design, are not benign refusals
    rows = read_summary_json(out / "eval" / "summary.json")
    borderline = next(r for r in rows if r.system == "magic-strict" and r.benchmark == "benign-borderline"
                      and r.category is None and r.metric == "over_refusal_rate" and r.judge is None)
    assert summary["magic-strict"]["benign_refusal_rate"]["denominator"] == borderline.denominator
    # capability answers naming no option are counted wrong and shown apart, in summary.json and on the console
    for system, metrics in summary.items():
        capability = [r for r in records if r["system"] == system and r["benchmark"] == "capability"]
        assert metrics["capability_score"]["unparsed"] == sum(map(unparsed_answer, capability))
        assert metrics["capability_score"]["denominator"] == len(capability)
        cell = summary_cell(metrics["capability_score"])
        assert cell in first.stdout
        assert ("unparsed" in cell) == (metrics["capability_score"]["unparsed"] > 0)

    # a re-run resumes: every stage finds its work done and the records are unchanged
    before = (out / "eval" / "records.jsonl").read_text()
    second = subprocess.run(command, capture_output=True, text=True)
    assert second.returncode == 0, second.stderr[-3000:]
    assert (out / "eval" / "records.jsonl").read_text() == before
    resumed = json.loads((out / "timings.json").read_text())
    assert resumed["earlier_runs"] == [timings["seconds"]]  # the first run's stage times are kept, not replaced
