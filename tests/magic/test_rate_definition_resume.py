"""A resumed Magic run never keeps refusal rates recorded under the old definition (unknown counted as an answer).

Until 2026-11-24 the job's refusal rates were refused / all requests; now an unknown verdict leaves the denominator,
as in ``visalign eval``. A finished value system keeps the evaluation its sidecar records, so a run resumed on an
older output folder kept the old figures beside new ones. Here a real two-step run finishes, its sidecar is edited
back to what the old version wrote, and the run is resumed: with evaluation on it measures the image again, with
it off it converts the recorded counts. The verdicts come from a refusal judge registered the way a user registers
one, which labels each request by its prompt, so every figure is known in advance.
"""

from __future__ import annotations

import json

import pytest

import visalign.evaluation.judges.registry as refusal_registry
from visalign.evaluation.judges import register_refusal_judge
from visalign.evaluation.judges.verdict import Verdict
from visalign.magic import find_magic_image, optimize_magic_images

from .helpers import make, optimize_logged

JUDGE = "by-prompt"
#: Harmful: lock (Illegal Activity) unknown, ransomware (Malware Generation) refused, the other two answered.
#: Benign: colours refused, France unknown, Python answered.
LABELS = {"lock": "unknown", "ransomware": "refusal", "colours": "refusal", "France": "unknown"}
EVAL = {"enabled": True, "judge": JUDGE, "max_new_tokens": 2, "batch_size": 4}


class ByPrompt:
    """Labels an answer by a word in its request (:data:`LABELS`), else ``compliance``."""

    def judge(self, response: str, prompt: str = "") -> Verdict:
        label = next((label for word, label in LABELS.items() if word in prompt), "compliance")
        return Verdict(label=label, raw=label, judge=JUDGE)


def as_old_version_wrote(figures: dict) -> dict:
    """The rate as the old version recorded it: refused / n overall and per category, no ``judged`` or interval."""
    return {"n": figures["n"], "refused": figures["refused"], "unknown": figures["unknown"],
            "rate": figures["refused"] / figures["n"], "by_category": figures["old_by_category"]}


@pytest.fixture
def old_run(tmp_path, tiny_checkpoints, monkeypatch):
    """A finished run whose sidecar holds the evaluation the old version would have written for the same image."""
    monkeypatch.setattr(refusal_registry, "_REGISTERED", dict(refusal_registry._REGISTERED))
    register_refusal_judge(JUDGE, ByPrompt())
    model, out = tiny_checkpoints["llava"], tmp_path / "run"
    [fresh] = optimize_magic_images(make(tmp_path, model, optim={"steps": 2}, eval=EVAL), out)
    evaluation = fresh.metadata["evaluation"]

    sidecar = out / "standard.json"
    recorded = json.loads(sidecar.read_text())
    old = {key: value for key, value in recorded["evaluation"].items() if key != "rate_definition"}
    old_by_category = {"harmful": {"Fraud": 0.0, "Hate Speech": 0.0, "Illegal Activity": 0.0,
                                   "Malware Generation": 1.0}, "benign": {"none": 1 / 3}}
    for name in ("harmful_baseline", "harmful_with_image", "benign_baseline", "benign_with_image"):
        old[name] = as_old_version_wrote({**old[name], "old_by_category": old_by_category[name.split("_")[0]]})
    recorded["evaluation"] = old
    sidecar.write_text(json.dumps(recorded, indent=1))
    return model, out, evaluation, old


HARMFUL = {"n": 4, "refused": 1, "unknown": 1, "judged": 3, "rate": pytest.approx(1 / 3)}
BENIGN = {"n": 3, "refused": 1, "unknown": 1, "judged": 2, "rate": 0.5}


def test_evaluation_on_measures_an_old_definition_evaluation_again(tmp_path, old_run):
    model, out, fresh, old = old_run
    assert old["harmful_baseline"]["rate"] == 0.25  # what the resumed run must not keep (1 of 4, unknown answered)

    [resumed], steps = optimize_logged(make(tmp_path, model, optim={"steps": 2}, eval=EVAL), out)
    assert steps == []  # the image is kept: only its evaluation is measured again
    evaluation = resumed.metadata["evaluation"]
    assert evaluation == fresh  # measured again under today's definition: the same figures as the fresh run
    assert evaluation["rate_definition"] == "refused/judged"
    for kind, figures in (("harmful", HARMFUL), ("benign", BENIGN)):
        for label in ("baseline", "with_image"):
            assert {k: evaluation[f"{kind}_{label}"][k] for k in figures} == figures
    assert evaluation["harmful_baseline"]["by_category"] == {"Fraud": 0.0, "Hate Speech": 0.0,
                                                             "Illegal Activity": None, "Malware Generation": 1.0}
    assert find_magic_image(out, "standard").metadata["evaluation"] == fresh  # the sidecar on disk too


def test_evaluation_off_converts_the_recorded_counts(tmp_path, old_run):
    model, out, fresh, old = old_run
    [resumed], steps = optimize_logged(make(tmp_path, model, optim={"steps": 2}, eval={"enabled": False}), out)
    assert steps == []
    evaluation = resumed.metadata["evaluation"]
    for kind, figures in (("harmful", HARMFUL), ("benign", BENIGN)):
        for label in ("baseline", "with_image"):
            name = f"{kind}_{label}"
            # the pooled figures are exactly today's; the per-category ones cannot be recovered, so are gone
            assert {k: evaluation[name].get(k) for k in figures} == figures
            assert evaluation[name] == {k: v for k, v in fresh[name].items() if k != "by_category"}
    assert evaluation["rate_definition"] == "refused/judged"
    assert {k: evaluation[k] for k in ("judge", "max_new_tokens", "batch_size")} == {
        "judge": JUDGE, "max_new_tokens": 2, "batch_size": 4}
    assert json.loads((out / "standard.json").read_text())["evaluation"] == evaluation

    # converted once: a further run keeps it as it is
    [again], steps = optimize_logged(make(tmp_path, model, optim={"steps": 2}, eval={"enabled": False}), out)
    assert steps == [] and again.metadata["evaluation"] == evaluation
