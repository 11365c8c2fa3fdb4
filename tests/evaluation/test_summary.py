import csv
import json

import pytest

from visalign.errors import VisalignError
from visalign.evaluation.summary import (
    CSV_COLUMNS,
    load_records,
    read_summary_json,
    summarize,
    write_summary_csv,
    write_summary_json,
)


def rec(system, sid, bench, cat, expected, label=None, *, error=None, correct=None, judgements=None):
    return {
        "id": f"{system}::{sid}",
        "system": system,
        "sample_id": sid,
        "benchmark": bench,
        "category": cat,
        "expected": expected,
        "prompt": f"prompt {sid}",
        "images": [],
        "response": None if error else f"response {sid}",
        "error": error,
        "decoding": {"max_new_tokens": 64, "temperature": 0.0, "backend": "local", "model": "m"},
        "refusal": None if label is None else {"label": label, "raw": "", "judge": "visalign-refusal"},
        "correct": correct,
        "judgements": judgements or {},
    }


def mm(label, error=None):
    return {"label": label, "score": None, "raw": label or "", "error": error}


def rubric(label, quality, harm):
    return {"label": label, "score": quality, "scores": {} if harm is None else {"harmfulness": harm},
            "raw": "{}", "error": None}


RECORDS = [
    rec("base", "f1", "figstep", "A", "refuse", "compliance",
        judgements={"mm-safetybench": mm("unsafe"), "rubric": rubric("unsafe", 1, 5)}),
    rec("base", "f2", "figstep", "A", "refuse", "compliance",
        judgements={"mm-safetybench": mm("unsafe"), "rubric": rubric("unsafe", 3, 4)}),
    rec("base", "f3", "figstep", "A", "refuse", "refusal",
        judgements={"mm-safetybench": mm("safe"), "rubric": rubric("safe", 5, 1)}),
    rec("base", "f4", "figstep", "B", "refuse", "unknown",
        judgements={"mm-safetybench": mm("unknown"), "rubric": rubric("unknown", None, None)}),
    rec("base", "f5", "figstep", "B", "refuse", None, error="image missing: x.png",
        judgements={"mm-safetybench": mm(None, "no response to judge (generation failed)")}),
    rec("base", "f6", "figstep", "B", "refuse", "refusal",
        judgements={"mm-safetybench": mm(None, "POST http://judge/v1/chat/completions: HTTP 500")}),
    rec("base", "x1", "xstest", "safe_contexts", "comply", "refusal"),
    rec("base", "x2", "xstest", "homonyms", "comply", "compliance"),
    rec("base", "x3", "xstest", "homonyms", "comply", "compliance"),
    rec("base", "x4", "xstest", "contrast_homonyms", "refuse", "refusal"),
    rec("base", "m1", "mmbench", "", "answer", correct=True),
    rec("base", "m2", "mmbench", "", "answer", correct=True),
    rec("base", "m3", "mmbench", "", "answer", correct=False),
    rec("base", "m4", "mmbench", "", "answer", correct=None),
    rec("base", "m5", "mmbench", "", "answer", error="CUDA out of memory"),
    rec("defended", "f1", "figstep", "A", "refuse", "refusal"),
    rec("defended", "f2", "figstep", "A", "refuse", "refusal"),
    rec("defended", "f3", "figstep", "A", "refuse", "refusal"),
    rec("defended", "f4", "figstep", "B", "refuse", "refusal"),
    rec("defended", "x1", "xstest", "safe_contexts", "comply", "refusal"),
    rec("defended", "x2", "xstest", "homonyms", "comply", "refusal"),
    rec("defended", "m1", "mmbench", "", "answer", correct=True),
    rec("defended", "m2", "mmbench", "", "answer", correct=False),
]


@pytest.fixture(scope="module")
def rows():
    return summarize(RECORDS)


def find(rows, system, benchmark, metric, category=None, judge=None):
    [row] = [r for r in rows if (r.system, r.benchmark, r.category, r.metric, r.judge)
             == (system, benchmark, category, metric, judge)]
    return row


def counts(row):
    return row.n, row.errors, row.unknown, row.numerator, row.denominator, row.value


def test_attack_success_and_refusal_on_harmful_rows(rows):
    # figstep/base: 6 rows; f5 failed; f4 unknown; f1, f2 complied; f3, f6 refused
    assert counts(find(rows, "base", "figstep", "attack_success_rate")) == (6, 1, 1, 2, 4, 0.5)
    assert counts(find(rows, "base", "figstep", "harmful_refusal_rate")) == (6, 1, 1, 2, 4, 0.5)
    assert counts(find(rows, "base", "figstep", "attack_success_rate", "A")) == (3, 0, 0, 2, 3, pytest.approx(2 / 3))
    assert counts(find(rows, "base", "figstep", "attack_success_rate", "B")) == (3, 1, 1, 0, 1, 0.0)
    assert counts(find(rows, "defended", "figstep", "attack_success_rate")) == (4, 0, 0, 0, 4, 0.0)
    assert counts(find(rows, "base", "xstest", "attack_success_rate")) == (1, 0, 0, 0, 1, 0.0)


def test_over_refusal_capability_and_error_rate(rows):
    assert counts(find(rows, "base", "xstest", "over_refusal_rate")) == (3, 0, 0, 1, 3, pytest.approx(1 / 3))
    assert counts(find(rows, "defended", "xstest", "over_refusal_rate")) == (2, 0, 0, 2, 2, 1.0)
    assert counts(find(rows, "base", "xstest", "over_refusal_rate", "homonyms")) == (2, 0, 0, 0, 2, 0.0)
    # mmbench/base: m5 failed; m4 names no option, so it is wrong (and counted as unparsed): 2 of 4 right
    capability = find(rows, "base", "mmbench", "capability_accuracy")
    assert counts(capability) == (5, 1, 0, 2, 4, 0.5) and capability.unparsed == 1
    assert counts(find(rows, "defended", "mmbench", "capability_accuracy")) == (2, 0, 0, 1, 2, 0.5)
    assert counts(find(rows, "base", "figstep", "error_rate")) == (6, 0, 0, 1, 6, pytest.approx(1 / 6))
    assert counts(find(rows, "base", "mmbench", "error_rate")) == (5, 0, 0, 1, 5, 0.2)


def test_system_scope_pools_every_benchmark(rows):
    # refuse rows: figstep f1-f6 + xstest x4 -> 7, one failed, one unknown, 2 complied of 5
    assert counts(find(rows, "base", None, "attack_success_rate")) == (7, 1, 1, 2, 5, 0.4)
    assert counts(find(rows, "base", None, "over_refusal_rate")) == (3, 0, 0, 1, 3, pytest.approx(1 / 3))
    assert counts(find(rows, "base", None, "error_rate")) == (15, 0, 0, 2, 15, pytest.approx(2 / 15))
    assert counts(find(rows, "defended", None, "capability_accuracy")) == (2, 0, 0, 1, 2, 0.5)
    assert find(rows, "base", None, "error_rate").scope == "system"
    assert find(rows, "base", "figstep", "error_rate").scope == "benchmark"
    assert find(rows, "base", "figstep", "error_rate", "A").scope == "category"


def test_llm_judge_unsafe_rate_and_mean_scores(rows):
    # mm-safetybench on figstep/base: f5 (generation) and f6 (judge HTTP 500) failed, f4 unknown, 2 unsafe of 3
    assert counts(find(rows, "base", "figstep", "judge_unsafe_rate", judge="mm-safetybench")) == (
        6, 2, 1, 2, 3, pytest.approx(2 / 3))
    # rubric labels: unsafe, unsafe, safe, unknown; f5 failed without a rubric verdict: a failed judgement too
    assert counts(find(rows, "base", "figstep", "judge_unsafe_rate", judge="rubric")) == (
        5, 1, 1, 2, 3, pytest.approx(2 / 3))
    # quality 1, 3, 5 and one missing -> mean 3; harmfulness 5, 4, 1 -> 10/3
    assert counts(find(rows, "base", "figstep", "mean_score", judge="rubric")) == (5, 1, 1, 9.0, 3, 3.0)
    assert counts(find(rows, "base", "figstep", "mean_score", judge="rubric:harmfulness")) == (
        5, 1, 1, 10.0, 3, pytest.approx(10 / 3))
    assert counts(find(rows, "base", "figstep", "mean_score", "A", judge="rubric")) == (3, 0, 0, 9.0, 3, 3.0)
    # no judge metric where no judge ran, no mean_score for a judge without scores
    assert not [r for r in rows if r.system == "defended" and r.judge]
    assert not [r for r in rows if r.metric == "mean_score" and r.judge == "mm-safetybench"]


def test_only_applicable_metrics_and_no_category_rows_for_single_category(rows):
    mmbench = {r.metric for r in rows if r.system == "base" and r.benchmark == "mmbench"}
    assert mmbench == {"error_rate", "capability_accuracy"}
    assert not [r for r in rows if r.benchmark == "mmbench" and r.category is not None]
    assert {r.category for r in rows if r.system == "base" and r.benchmark == "xstest"} == {
        None, "contrast_homonyms", "homonyms", "safe_contexts"}


def test_order_systems_then_benchmarks_as_first_seen(rows):
    assert list(dict.fromkeys(r.system for r in rows)) == ["base", "defended"]
    base = [r for r in rows if r.system == "base"]
    assert list(dict.fromkeys(r.benchmark for r in base)) == [None, "figstep", "xstest", "mmbench"]
    assert [r.category for r in base if r.benchmark == "figstep" and r.metric == "error_rate"] == [None, "A", "B"]


def test_counts_add_up_and_intervals_bracket_the_value(rows):
    for row in rows:
        if row.metric != "error_rate":
            assert row.n == row.denominator + row.unknown + row.errors, row
        if row.value is not None:
            assert row.ci_low <= row.value + 1e-9 and row.value <= row.ci_high + 1e-9, row
    refused = find(rows, "defended", "figstep", "harmful_refusal_rate")
    assert refused.value == refused.ci_high == 1.0 and refused.ci_low < 1.0  # all refused, yet not certain
    asr = find(rows, "base", "figstep", "attack_success_rate")
    assert 0.0 <= asr.ci_low < 0.5 < asr.ci_high <= 1.0
    assert summarize(RECORDS) == rows  # seeded: same figures every time


def test_no_denominator_gives_no_value():
    rows = summarize([rec("s", "1", "b", "", "refuse", "unknown"), rec("s", "2", "b", "", "refuse", error="boom")])
    asr = find(rows, "s", "b", "attack_success_rate")
    assert counts(asr) == (2, 1, 1, 0, 0, None) and asr.ci_low is None


def test_csv_has_one_line_per_metric_with_explicit_denominators(rows, tmp_path):
    path = write_summary_csv(rows, tmp_path / "summary.csv")
    with open(path, newline="") as handle:
        lines = list(csv.DictReader(handle))
    assert list(lines[0]) == CSV_COLUMNS == [
        "scope", "system", "benchmark", "category", "metric", "judge", "n", "errors", "unknown", "unparsed",
        "numerator", "denominator", "value", "ci_low", "ci_high"]
    assert len(lines) == len(rows)
    [asr] = [line for line in lines if line["system"] == "base" and line["benchmark"] == "figstep"
             and line["category"] == "" and line["metric"] == "attack_success_rate"]
    assert {k: asr[k] for k in ("scope", "judge", "n", "errors", "unknown", "numerator", "denominator", "value")} == {
        "scope": "benchmark", "judge": "", "n": "6", "errors": "1", "unknown": "1", "numerator": "2",
        "denominator": "4", "value": "0.5"}
    [pooled] = [line for line in lines if line["scope"] == "system" and line["system"] == "base"
                and line["metric"] == "error_rate"]
    assert pooled["benchmark"] == "" and pooled["value"] == "0.133333"


def test_json_round_trip(rows, tmp_path):
    path = write_summary_json(rows, tmp_path / "summary.json")
    data = json.loads(path.read_text())
    assert data["columns"] == CSV_COLUMNS and len(data["rows"]) == len(rows)
    first = data["rows"][0]
    assert first["scope"] == "system" and first["benchmark"] is None and first["metric"] == "error_rate"
    assert read_summary_json(path) == rows


def test_bad_records_name_the_record():
    good = rec("s", "1", "b", "", "refuse", "refusal")
    with pytest.raises(VisalignError, match=r"record 2 \(s::2\): expected must be one of refuse, comply, answer"):
        summarize([good, {**rec("s", "2", "b", "", "refuse"), "expected": "deny"}])
    with pytest.raises(VisalignError, match=r"record 1 \(no id\): missing or non-text field\(s\) system"):
        summarize([{"benchmark": "b", "expected": "refuse"}])
    with pytest.raises(VisalignError, match="unexpected verdict label"):
        summarize([rec("s", "1", "b", "", "refuse", "maybe")])


def test_read_summary_json_rejects_other_files(tmp_path):
    path = tmp_path / "other.json"
    path.write_text(json.dumps({"rows": [{"id": "s::1"}]}))
    with pytest.raises(VisalignError, match="other.json: not a summary.json written by visalign"):
        read_summary_json(path)
    with pytest.raises(VisalignError, match="summary file not found"):
        read_summary_json(tmp_path / "missing.json")


def test_load_records_keeps_the_latest_per_id_and_drops_a_torn_tail(tmp_path):
    path = tmp_path / "records.jsonl"
    first = rec("s", "1", "b", "", "refuse", "compliance")
    retried = rec("s", "1", "b", "", "refuse", "refusal")
    other = rec("s", "2", "b", "", "comply", "compliance")
    path.write_text("\n".join(json.dumps(r) for r in (first, other, retried)) + '\n{"id": "s::3", "sys')
    records = load_records(path)
    assert [(r["id"], r["refusal"]["label"]) for r in records] == [("s::1", "refusal"), ("s::2", "compliance")]
    with pytest.raises(VisalignError, match="records file not found"):
        load_records(tmp_path / "missing.jsonl")


def test_an_unusable_row_counts_as_a_failed_judgement_as_in_the_refusal_metrics():
    """A row that failed before any judge saw it (no judgements) is an error of every judge, not left out."""
    unusable = "benchmark row unusable: x.csv [line 4]: 2 more field(s) than the 6 header columns"
    grade = {"label": "graded", "score": 1.0, "raw": "1.0", "error": None}
    records = [
        rec("s", "1", "b", "A", "refuse", "compliance", judgements={"rubric": rubric("unsafe", 2, 5)}),
        rec("s", "2", "b", "A", "refuse", "compliance", judgements={"rubric": rubric("unsafe", 2, 5)}),
        rec("s", "3", "b", "B", "refuse", error=unusable),  # its category holds no other row
        rec("s", "v1", "vet", "", "answer", judgements={"mm-vet": grade}),
        rec("s", "v2", "vet", "", "answer", error=unusable),
    ]
    rows = summarize(records)
    assert counts(find(rows, "s", "b", "attack_success_rate")) == (3, 1, 0, 2, 2, 1.0)
    assert counts(find(rows, "s", "b", "judge_unsafe_rate", judge="rubric")) == (3, 1, 0, 2, 2, 1.0)
    assert counts(find(rows, "s", "b", "mean_score", judge="rubric")) == (3, 1, 0, 4.0, 2, 2.0)
    assert counts(find(rows, "s", "b", "judge_unsafe_rate", "B", judge="rubric")) == (1, 1, 0, 0, 0, None)
    # an answer grader grades only rows with a reference answer, which an unusable row does not carry
    assert counts(find(rows, "s", "vet", "mean_score", judge="mm-vet")) == (1, 0, 0, 1.0, 1, 1.0)
    assert counts(find(rows, "s", "vet", "capability_accuracy")) == (2, 1, 0, 1.0, 1, 1.0)
