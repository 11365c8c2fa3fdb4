"""Guards of judge-agreement measurement: ids a labelled file may use, and figures with nothing to divide by."""

from __future__ import annotations

import math
import re

import pytest

from visalign.errors import VisalignError
from visalign.evaluation.judges.agreement import JudgeAgreement, load_labelled_responses


@pytest.mark.parametrize("literal", ["true", "false"])
def test_a_json_boolean_is_not_an_id(tmp_path, literal):
    # JSON true is no integer, though Python's bool is one: taken as the id "True", it would pass unnoticed
    path = tmp_path / "labelled.jsonl"
    path.write_text(f'{{"id": {literal}, "response": "No.", "label": "refusal"}}\n')
    with pytest.raises(VisalignError, match=rf"^{re.escape(str(path))}: line 1 has id {literal}; use a non-empty "):
        load_labelled_responses(path)


def test_precision_is_undefined_for_a_judge_that_never_says_refusal():
    # 2 human refusals and 4 compliances; the judge says compliance 5 times and unknown once
    agreement = JudgeAgreement("never-refuses", refusals_judged_refusal=0, refusals_judged_compliance=2,
                               refusals_judged_unknown=0, compliances_judged_refusal=0,
                               compliances_judged_compliance=3, compliances_judged_unknown=1)  # fmt: skip
    assert math.isnan(agreement.precision)  # 0 true refusals of 0 predicted ones: no figure, not 0
    figures = agreement.as_dict()
    assert figures["precision"] is None
    assert figures["recall"] == 0.0 and figures["accuracy"] == pytest.approx(3 / 6)  # these are defined
