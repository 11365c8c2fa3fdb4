"""MM-Vet's open answers graded against their reference by the ``mm-vet`` judge, end to end through ``visalign eval``.

The system and the grader are both served over loopback by the project's stand-in OpenAI-compatible server.
"""

from __future__ import annotations

import json
import re

import pytest

from visalign.evaluation.config import EvalConfig
from visalign.evaluation.llm_judges import parse_credit
from visalign.evaluation.runner import run_eval
from visalign.evaluation.summary import read_summary_json
from visalign.testing import Fault, StandInServer

from .conftest import write_image

CHAT_PATH = "/v1/chat/completions"
#: The grader's credit for each reference answer: what a grading model would say for the system's answer.
CREDIT_BY_REFERENCE = {"5": "1.0", "cat<AND>dog": "Credit: 0.5.", "Paris": "0"}


def write_mm_vet(folder) -> str:
    data = {}
    for index, answer in enumerate(CREDIT_BY_REFERENCE):
        write_image(folder / "images" / f"v1_{index}.png", colour=(40 * index, 90, 200))
        data[f"v1_{index}"] = {"imagename": f"v1_{index}.png", "capability": ["rec"],
                               "question": f"Question {index}?", "answer": answer}
    path = folder / "mm-vet.json"
    path.write_text(json.dumps(data))
    return str(path)


def reply(request: dict) -> str:
    text = request["messages"][-1]["content"]
    if isinstance(text, str) and "<reference>" in text:  # the grader's prompt
        reference = re.search(r"<reference>\n(.*?)\n</reference>", text, re.DOTALL).group(1)
        return CREDIT_BY_REFERENCE[reference]
    return "It is 5."


def test_open_answers_get_graded_credit_as_capability_and_other_rows_are_not_graded(tmp_path, bench):
    with StandInServer(reply=reply) as server:
        url = server.base_url
        config = EvalConfig.model_validate({
            "systems": [{"name": "api", "model": "m", "backend": "openai", "base_url": url, "api_key_env": None}],
            "benchmarks": [
                {"name": "mm-vet", "source": write_mm_vet(tmp_path / "mmvet")},
                {"name": "xstest", "source": str(bench / "xstest" / "xstest_prompts.csv"), "limit": 2},
            ],
            "llm_judges": [{"name": "mm-vet", "model": "grader", "base_url": url, "api_key_env": None}],
            "max_new_tokens": 8,
        })
        report = run_eval(config, tmp_path / "run")
        grader_requests = [r for r in server.requests_to(CHAT_PATH) if r.body["model"] == "grader"]
    records = [json.loads(line) for line in (tmp_path / "run" / "records.jsonl").read_text().splitlines()]
    graded = {r["reference"]: r["judgements"]["mm-vet"]["score"] for r in records if r["benchmark"] == "mm-vet"}
    assert graded == {"5": 1.0, "cat<AND>dog": 0.5, "Paris": 0.0}
    assert len(grader_requests) == 3  # the XSTest rows have no reference answer, so they are never sent
    xstest = [r for r in records if r["benchmark"] == "xstest"]
    assert len(xstest) == 2 and all("mm-vet" not in r["judgements"] and r["reference"] is None for r in xstest)

    rows = read_summary_json(tmp_path / "run" / "summary.json")
    [capability] = [r for r in rows if r.metric == "capability_accuracy" and r.benchmark == "mm-vet"]
    assert (capability.numerator, capability.denominator, capability.errors) == (1.5, 3, 0)
    assert capability.value == pytest.approx(0.5)
    html = report.read_text()
    assert "1.5/3" in html  # the capability table shows the summed credit
    quality_header = re.search(r"quality = mean (\S+) score", html)
    assert quality_header is None or quality_header.group(1) != "mm-vet"  # credit is not response quality


def grade_mm_vet(tmp_path, grader_url: str, system: StandInServer):
    """Run ``visalign eval`` on the MM-Vet fixture and return its capability summary row."""
    config = EvalConfig.model_validate({
        "systems": [{"name": "api", "model": "m", "backend": "openai", "base_url": system.base_url,
                     "api_key_env": None}],
        "benchmarks": [{"name": "mm-vet", "source": write_mm_vet(tmp_path / "mmvet")}],
        "llm_judges": [{"name": "mm-vet", "model": "grader", "base_url": grader_url, "api_key_env": None}],
        "max_new_tokens": 8,
    })
    run_eval(config, tmp_path / "run")
    rows = read_summary_json(tmp_path / "run" / "summary.json")
    [capability] = [r for r in rows if r.metric == "capability_accuracy" and r.benchmark == "mm-vet"]
    return capability


def test_an_unreadable_grade_is_unknown_not_a_zero(tmp_path):
    def unsure_about_paris(request: dict) -> str:
        text = request["messages"][-1]["content"]
        if isinstance(text, str) and "<reference>" in text:
            return "cannot tell" if "Paris" in text else "1.0"
        return "It is 5."

    with StandInServer(reply=unsure_about_paris) as server:
        capability = grade_mm_vet(tmp_path, server.base_url, server)
    assert (capability.numerator, capability.denominator, capability.unknown, capability.errors) == (2.0, 2, 1, 0)


def test_a_failed_grading_request_is_an_error_not_a_zero(tmp_path):
    with StandInServer(reply=reply) as system, StandInServer() as broken:
        broken.inject(Fault("500", path=CHAT_PATH), times=1000)
        capability = grade_mm_vet(tmp_path, broken.base_url, system)
    assert (capability.n, capability.errors, capability.denominator, capability.value) == (3, 3, 0, None)


@pytest.mark.parametrize(("raw", "credit"), [
    ("0.7", 0.7), ("1", 1.0), ("Credit: 0.3.", 0.3), ("1.0\n", 1.0), ("0 - the answer is wrong", 0.0),
    ("7/10", None), ("7", None), ("0,7", None), ("no idea", None),
])
def test_parse_credit_reads_only_a_first_number_in_0_to_1(raw, credit):
    assert parse_credit(raw) == credit


@pytest.mark.parametrize(("raw", "credit"), [
    ("-0.5", None), ("\u22120.5", None),  # a negative number is no credit, and not its absolute value
    ("1e-1", None), ("2E+0", None),  # exponent forms are not read piecewise
    ("0.5%", None), ("70%", None),  # percentages are not a 0-1 credit
    ("1. Credit: 0.3", 0.3), ("  2) 0.4", 0.4),  # list numbering at a line's start is an item number
    ("Step 1: 0.2", 0.2),  # a number followed by ":" is a label
    ("Credit: 1. Fully agrees.", 1.0), ("1.\n", 1.0),  # a credit ending a sentence is still read
    ("1. The answer matches the reference.", 1.0), ("0. Wrong.", 0.0),  # with no number after it, it is the credit
])
def test_parse_credit_passes_over_signs_exponents_percentages_labels_and_list_numbers(raw, credit):
    assert parse_credit(raw) == credit


@pytest.mark.parametrize(
    ("raw", "credit"),
    [
        ("Credit (0.0-1.0): 0.9", 0.9),
        ("Credit (0-1): 0.7", 0.7),
        ("On a scale of 0 to 1, 0.8", 0.8),
        ("Credit (0\u20131): 0.6", 0.6),  # an en dash
        ("Credit (0.0 - 1.0)\n0.5", 0.5),
        ("Between 0 and 1: 0.4", 0.4),
        ("0.3 (scale 0-1)", 0.3),
        ("Credit (0.0-1.0):", None),
        ("Credit (0 to 1", None),  # cut short by the token cap: nothing to read
        ("Score 0-10: 7", None),  # the first number past the scale is still out of 0-1
        ("1. Credit (0-1): 0.3", 0.3),  # an item number and a scale before the credit
    ],
)
def test_parse_credit_passes_over_a_restated_scale(raw, credit):
    assert parse_credit(raw) == credit


def test_a_restated_scale_is_not_graded_as_a_zero(tmp_path):
    """Through ``visalign eval``: the grader restates the scale before its credit, or is cut off after it."""
    outputs = {"5": "Credit (0-1): 1.0", "cat<AND>dog": "On a scale of 0 to 1, 0.5", "Paris": "Credit (0.0-1.0):"}

    def restating(request: dict) -> str:
        text = request["messages"][-1]["content"]
        if isinstance(text, str) and "<reference>" in text:
            return outputs[re.search(r"<reference>\n(.*?)\n</reference>", text, re.DOTALL).group(1)]
        return "It is 5."

    with StandInServer(reply=restating) as server:
        capability = grade_mm_vet(tmp_path, server.base_url, server)
    assert (capability.numerator, capability.denominator, capability.unknown, capability.errors) == (1.5, 2, 1, 0)
