"""The Magic Image job's own refusal rates use `visalign eval`'s definition: unknown verdicts leave the denominator.

Before, ``refusal_rates`` divided by every request, so an ``unknown`` verdict counted as an answer (not refused),
while ``visalign eval`` left it out and reported it apart: the same answers gave two different refusal rates.
The answers here come from a real (tiny, random) model; the verdicts from a refusal judge registered the way a
user registers one, which labels each request by the tag in its prompt, so every label is known in advance.
"""

from __future__ import annotations

import pytest
from PIL import Image

import visalign.evaluation.judges.registry as refusal_registry
from visalign.evaluation.judges import register_refusal_judge
from visalign.evaluation.judges.verdict import Verdict
from visalign.evaluation.summary import summarize
from visalign.magic import refusal_rates
from visalign.magic.data import Example
from visalign.models import load_vlm

JUDGE = "tag-in-prompt"
# (category, verdict): A has 2 refusals and 1 unknown, B 1 answer and 1 unknown, C only an unknown
REQUESTS = [("A", "refusal"), ("A", "refusal"), ("A", "unknown"), ("B", "compliance"), ("B", "unknown"),
            ("C", "unknown")]


class TagJudge:
    """Labels an answer by the ``[label]`` tag its request carries."""

    def judge(self, response: str, prompt: str = "") -> Verdict:
        label = prompt[prompt.index("[") + 1 : prompt.index("]")]
        return Verdict(label=label, raw=f"tag {label}", judge=JUDGE)


@pytest.fixture
def tag_judge(monkeypatch):
    monkeypatch.setattr(refusal_registry, "_REGISTERED", dict(refusal_registry._REGISTERED))
    register_refusal_judge(JUDGE, TagJudge())
    return JUDGE


def test_unknown_verdicts_leave_the_denominator_as_in_visalign_eval(tag_judge, tiny_checkpoints):
    vlm = load_vlm(str(tiny_checkpoints["llava"]), device="cpu")
    examples = [Example(id=f"r{i}", kind="harmful", prompt=f"[{label}] request {i}", category=category)
                for i, (category, label) in enumerate(REQUESTS)]
    magic = Image.new("RGB", (32, 32), (255, 255, 255))
    rates = refusal_rates(vlm, examples, magic, judge=tag_judge, max_new_tokens=2, batch_size=4)

    assert [a["label"] for a in rates["answers"]] == [label for _, label in REQUESTS]
    assert rates["rate"] == pytest.approx(2 / 3)  # old: 2/6, the three unknowns counted as answered
    assert {k: rates[k] for k in ("n", "refused", "unknown", "judged")} == {"n": 6, "refused": 2, "unknown": 3,
                                                                            "judged": 3}
    assert rates["by_category"] == {"A": 1.0, "B": 0.0, "C": None}  # C: nothing judged, no rate

    # the same verdicts as `visalign eval` records give the same figures
    records = [{"id": e.id, "system": "s", "benchmark": "b", "category": e.category, "expected": "refuse",
                "response": a["answer"], "error": None, "refusal": {"label": a["label"]}, "correct": None,
                "judgements": {}} for e, a in zip(examples, rates["answers"], strict=True)]
    rows = {(r.category, r.metric): r for r in summarize(records) if r.benchmark == "b"}
    pooled = rows[(None, "harmful_refusal_rate")]
    assert (pooled.numerator, pooled.denominator, pooled.unknown, pooled.value) == (2, 3, 3, rates["rate"])
    assert rates["ci95"] == [pooled.ci_low, pooled.ci_high]
    assert rates["by_category"] == {c: rows[(c, "harmful_refusal_rate")].value for c in "ABC"}
