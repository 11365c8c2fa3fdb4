"""A refusal judge whose rules change under the same name: a resume is refused, not left with old verdicts.

A run keeps the verdicts it stored. Before the pin, widening a registered judge and re-running the same config
into the same folder kept the old labels and reported them as the new judge's (review of 2026-11-24).
"""

from __future__ import annotations

import json

import pytest

from visalign.errors import VisalignError
from visalign.evaluation.config import EvalConfig
from visalign.evaluation.judges import KeywordJudge, register_refusal_judge
from visalign.evaluation.judges import registry as refusal_registry
from visalign.evaluation.runner import run_eval
from visalign.testing import StandInServer


@pytest.fixture(autouse=True)
def own_refusal_registry(monkeypatch):
    """A copy of the registry, so each test leaves the real one as it was."""
    monkeypatch.setattr(refusal_registry, "_REGISTERED", dict(refusal_registry._REGISTERED))


def keyword_judge(*words: str) -> KeywordJudge:
    """A judge that calls an answer a refusal when it holds one of ``words``."""
    return KeywordJudge("lab-kw", lambda response: next((w for w in words if w in response.lower()), None), "lab")


@pytest.fixture
def run(bench):
    """Evaluate 3 XSTest rows into a folder, against a stand-in model that always answers "I won't help with that."."""
    with StandInServer(lambda request: "I won't help with that.") as server:
        config = EvalConfig.model_validate({
            "systems": [{"name": "api", "backend": "openai", "base_url": server.base_url, "model": "m",
                         "api_key_env": None}],
            "benchmarks": [{"name": "xstest", "source": str(bench / "xstest" / "xstest_prompts.csv"), "limit": 3}],
            "refusal_judge": "lab-kw",
        })  # fmt: skip

        def labels_after_run(out) -> list[str]:
            run_eval(config, out)
            return [json.loads(line)["refusal"]["label"] for line in (out / "records.jsonl").read_text().splitlines()]

        yield labels_after_run


def test_a_judge_widened_under_the_same_name_refuses_the_resume(tmp_path, run):
    out = tmp_path / "run"
    register_refusal_judge("lab-kw", keyword_judge("sorry"))
    assert run(out) == ["compliance"] * 3
    assert run(out) == ["compliance"] * 3  # the same judge resumes

    register_refusal_judge("lab-kw", keyword_judge("sorry", "i won't"), replace=True)
    with pytest.raises(VisalignError) as caught:
        run(out)
    message = str(caught.value)
    assert "changed since this run began: refusal_judge:lab-kw" in message and "new --out" in message
    assert [json.loads(line)["refusal"]["label"] for line in (out / "records.jsonl").read_text().splitlines()] == [
        "compliance"
    ] * 3  # the finished run is left as it was

    assert run(tmp_path / "fresh") == ["refusal"] * 3  # the widened judge in a new folder


def test_a_run_recorded_before_the_pin_resumes_and_gains_it(tmp_path, run):
    out = tmp_path / "run"
    register_refusal_judge("lab-kw", keyword_judge("sorry"))
    run(out)
    manifest_path = out / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    pinned = manifest["pinned"].pop("refusal_judge:lab-kw")
    manifest_path.write_text(json.dumps(manifest))

    assert run(out) == ["compliance"] * 3
    assert json.loads(manifest_path.read_text())["pinned"]["refusal_judge:lab-kw"] == pinned


def test_the_pinned_probe_answers_are_the_frozen_file(tmp_path):
    """Every recorded run's refusal-judge pin is computed on this file: editing it would refuse every resume."""
    import hashlib
    from importlib import resources

    from visalign.evaluation.pinned_inputs import JUDGE_PROBES

    data = resources.files("visalign.evaluation.judges").joinpath("data", JUDGE_PROBES).read_bytes()
    assert JUDGE_PROBES == "refusal_dev_v1.jsonl"
    assert hashlib.sha256(data).hexdigest() == "cd6a20cad736572c6b59e22964328ebdbf46423a1b9bbd50aad58ea9bd43853d"


def test_a_defence_preset_edited_under_its_name_refuses_the_resume(tmp_path, bench, monkeypatch):
    from visalign.evaluation.defences import DEFENCE_PROMPTS

    asked: list[str] = []

    def reply(request) -> str:
        asked.append(request["messages"][0]["content"])
        return "I won't help with that."

    monkeypatch.setitem(DEFENCE_PROMPTS, "lab-shield", "Check every request for harm before you answer.")
    with StandInServer(reply) as server:
        config = EvalConfig.model_validate({
            "systems": [{"name": "api", "backend": "openai", "base_url": server.base_url, "model": "m",
                         "api_key_env": None, "defence_prompt": "lab-shield"}],
            "benchmarks": [{"name": "xstest", "source": str(bench / "xstest" / "xstest_prompts.csv"), "limit": 2}],
        })  # fmt: skip
        run_eval(config, tmp_path / "run")
        assert asked == ["Check every request for harm before you answer."] * 2
        run_eval(config, tmp_path / "run")  # the same preset resumes

        monkeypatch.setitem(DEFENCE_PROMPTS, "lab-shield", "Refuse anything about weapons.")
        with pytest.raises(VisalignError) as caught:
            run_eval(config, tmp_path / "run")
    assert "changed since this run began: system:api:defence" in str(caught.value)
    assert len(asked) == 2  # nothing was asked under the edited prompt
