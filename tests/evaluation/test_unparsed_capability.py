"""A multiple-choice answer that names no option is a wrong answer, and is counted apart as ``unparsed``.

Before, such answers left the denominator, so a system that refused 12 of 16 questions and got 2 right scored
2/4 = 0.50, above one that answered all 16 and got 6 right (0.375). The run below is that case, end to end through
``visalign eval`` with both systems served over loopback by the project's stand-in server.
"""

from __future__ import annotations

import csv
import json
import re
from html.parser import HTMLParser

import pytest

from visalign.errors import VisalignError
from visalign.evaluation.config import EvalConfig
from visalign.evaluation.metrics import wilson_interval
from visalign.evaluation.runner import run_eval
from visalign.evaluation.summary import read_summary_json, summarize, write_summary_json
from visalign.testing import StandInServer

from .conftest import write_image

QUESTIONS = 16
REFUSAL = "I'm sorry, but as a chatbot I cannot help with that."


def write_scienceqa(folder) -> str:
    """16 four-option questions, the answer always B; one image each."""
    problems = {}
    for index in range(QUESTIONS):
        write_image(folder / "images" / "test" / str(index) / "image.png", colour=(10 * index, 90, 200))
        problems[str(index)] = {"question": f"Question {index}: which colour?", "answer": 1, "hint": "",
                                "choices": ["red", "green", "blue", "yellow"], "image": "image.png",
                                "split": "test", "subject": "colours"}
    path = folder / "problems.json"
    path.write_text(json.dumps(problems))
    return str(path)


def reply(request: dict) -> str:
    """``answerer`` gets questions 0-5 right and answers A to the rest; ``refuser`` gets 0-1 right, answers A to 2-3
    and refuses 4-15."""
    content = request["messages"][-1]["content"]
    text = content if isinstance(content, str) else " ".join(p.get("text", "") for p in content)
    index = int(re.search(r"Question (\d+)", text).group(1))
    if request["model"] == "refuser":
        return "B" if index < 2 else ("A" if index < 4 else REFUSAL)
    return "B" if index < 6 else "A"


class Tables(HTMLParser):
    """The text of every cell of every table with an id."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self._table: str | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self._table = dict(attrs).get("id")
            self.tables[self._table] = []
        elif tag == "tr" and self._table:
            self.tables[self._table].append([])
        elif tag in ("td", "th") and self._table:
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.tables[self._table][-1].append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("unparsed")
    with StandInServer(reply=reply) as server:
        url = server.base_url
        systems = [{"name": name, "model": name, "backend": "openai", "base_url": url, "api_key_env": None}
                   for name in ("answerer", "refuser")]
        config = EvalConfig.model_validate({
            "systems": systems,
            "benchmarks": [{"name": "scienceqa-img", "source": write_scienceqa(tmp_path / "sqa"), "label": "cap"}],
            "max_new_tokens": 16,
        })
        report = run_eval(config, tmp_path / "run")
    return tmp_path / "run", report


def capability(rows, system):
    [row] = [r for r in rows if (r.system, r.benchmark, r.category, r.metric) == (system, "cap", None,
                                                                                      "capability_accuracy")]
    return row


def test_a_refused_choice_question_is_a_wrong_answer_and_counted_as_unparsed(run):
    out, _ = run
    records = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    assert sum(r["response"] == REFUSAL and r["correct"] is None for r in records) == 12  # what the runner stores
    rows = read_summary_json(out / "summary.json")
    answerer, refuser = capability(rows, "answerer"), capability(rows, "refuser")
    assert (refuser.numerator, refuser.denominator, refuser.value) == (2, 16, 0.125)  # old: 2/4 = 0.50
    fields = ("n", "errors", "unknown", "unparsed", "numerator", "denominator", "value")
    assert tuple(getattr(answerer, f) for f in fields) == (16, 0, 0, 0, 6, 16, 0.375)
    assert tuple(getattr(refuser, f) for f in fields) == (16, 0, 0, 12, 2, 16, 0.125)
    assert refuser.value < answerer.value  # refusing no longer raises the score
    assert (refuser.ci_low, refuser.ci_high) == pytest.approx(wilson_interval(2, 16))
    assert (round(refuser.ci_low, 2), round(refuser.ci_high, 2)) == (0.03, 0.36)
    with open(out / "summary.csv", newline="") as handle:
        [line] = [r for r in csv.DictReader(handle) if r["system"] == "refuser" and r["scope"] == "benchmark"
                  and r["metric"] == "capability_accuracy"]
    assert (line["unparsed"], line["numerator"], line["denominator"]) == ("12", "2", "16")


def test_the_report_shows_the_unparsed_count_beside_the_score_and_in_the_errors_table(run):
    _, report = run
    page = Tables()
    page.feed(report.read_text())
    [cell] = [row[2] for row in page.tables["capability-table"][1:] if row[1] == "refuser"]
    assert cell.startswith("12.5% 95% CI 3.5–36.0 · 2/16") and cell.endswith("12 unparsed (counted wrong)")
    header, *rows = page.tables["errors-table"]
    column = header.index("Unparsed choice answers (counted wrong)")
    assert {row[0]: row[column] for row in rows} == {"answerer": "0", "refuser": "12"}


def rec(sid, *, correct=None, error=None, reference=None, judgements=None, response="an answer"):
    return {"id": sid, "system": "s", "sample_id": sid, "benchmark": sid[0], "category": "", "expected": "answer",
            "response": None if error else response, "error": error, "reference": reference, "refusal": None,
            "correct": correct, "judgements": judgements or {}}


def test_failed_rows_and_ungraded_open_answers_stay_out_and_pooled_credit_counts_unparsed_as_zero():
    grade = {"label": "graded", "score": 0.5, "raw": "0.5", "error": None}
    records = [
        rec("c1", correct=True), rec("c2"), rec("c3", error="HTTP 500 from the endpoint"),
        rec("c4", response=""),  # an empty answer names no option either
        rec("v1", reference="cat", judgements={"mm-vet": grade}),
        rec("v2", reference="dog", judgements={"mm-vet": {"label": "unknown", "score": None, "raw": "?",
                                                          "error": None}}),
        rec("v3", reference="Paris"),  # no grader in the run: no verdict, not an unparsed choice
    ]
    rows = summarize(records)

    def find(benchmark):
        [row] = [r for r in rows if r.benchmark == benchmark and r.metric == "capability_accuracy"]
        return row.n, row.errors, row.unknown, row.unparsed, row.numerator, row.denominator, row.value

    assert find("c") == (4, 1, 0, 2, 1, 3, pytest.approx(1 / 3))  # c3 failed: out of the denominator
    assert find("v") == (3, 0, 2, 0, 0.5, 1, 0.5)
    # pooled: credits 1, 0 (c2), 0 (c4), 0.5; the two open answers without a grade are unknown
    assert find(None) == (7, 1, 2, 2, 1.5, 4, pytest.approx(1.5 / 4))


def test_a_summary_written_before_unparsed_answers_counted_is_refused_in_one_line(tmp_path):
    path = write_summary_json(summarize([rec("c1", correct=True), rec("c2")]), tmp_path / "summary.json")
    data = json.loads(path.read_text())
    data["columns"].remove("unparsed")
    for row in data["rows"]:
        del row["unparsed"]
    path.write_text(json.dumps(data))
    with pytest.raises(VisalignError) as refused:
        read_summary_json(path)
    message = str(refused.value)
    assert message.startswith(f"{path}: written before unparsed") and "re-run the same `visalign eval`" in message
    assert "\n" not in message


def _capability_row(records: list[dict]):
    return next(r for r in summarize(records) if r.metric == "capability_accuracy" and r.benchmark is None)


def test_an_answer_no_one_can_score_stays_unknown_and_only_a_choice_answer_counts_wrong():
    base = {"system": "s", "benchmark": "open", "category": "", "expected": "answer", "prompt": "Describe it.",
            "response": "A red bicycle leaning on a wall.", "error": None, "reference": None, "refusal": None,
            "correct": None, "judgements": {}}
    # an open question with no answer grader (a plugin's), or a choice item without an answer key: the runner marks
    # it as not scored by letter, so its answer is unknown, outside the denominator, as before unparsed counting
    unscorable = {**base, "id": "s::open::1", "sample_id": "1", "multiple_choice": False}
    # a choice question answered without an option: wrong, and counted as unparsed
    unparsed = {**base, "id": "s::open::2", "sample_id": "2", "multiple_choice": True}
    right = {**base, "id": "s::open::3", "sample_id": "3", "multiple_choice": True, "correct": True}
    row = _capability_row([unscorable, unparsed, right])
    assert (row.numerator, row.denominator, row.unknown, row.unparsed) == (1, 2, 1, 1)
    # a record written before the runner marked choice questions: no reference and no grader reads as a choice
    legacy = {k: v for k, v in unparsed.items() if k != "multiple_choice"}
    assert (_capability_row([legacy, right]).denominator, _capability_row([legacy, right]).unparsed) == (2, 1)
