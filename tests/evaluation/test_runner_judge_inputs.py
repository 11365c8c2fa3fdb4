"""The request each judge of ``visalign eval`` is given on an attacked arm, and what a re-judged record keeps.

Answers and verdicts come over loopback HTTP from the project's stand-in OpenAI-compatible server.
"""

from __future__ import annotations

import json

import visalign.evaluation.runner as runner
from visalign.evaluation.judges import get_refusal_judge
from visalign.evaluation.runner import run_eval
from visalign.testing import StandInServer

from .test_runner_judging import judged_config, latest, reply
from .test_runner_records import api_config


class RecordingJudge:
    """The configured refusal judge, noting the request it is given with each response."""

    def __init__(self, judge) -> None:
        self.inner, self.requests = judge, {}

    def judge(self, response: str, prompt: str):
        self.requests[response] = prompt
        return self.inner.judge(response, prompt)

    def __getattr__(self, name: str):
        return getattr(self.inner, name)


def test_the_refusal_judge_of_an_attacked_arm_is_given_each_rows_request(tmp_path, bench, monkeypatch):
    judges = []

    def recording(name: str) -> RecordingJudge:
        judges.append(RecordingJudge(get_refusal_judge(name)))
        return judges[-1]

    monkeypatch.setattr(runner, "get_refusal_judge", recording)
    benchmarks = [
        {"name": "advbench", "source": str(bench / "advbench" / "adv_bench.prompt"), "attack": "figstep", "limit": 3},
        {"name": "advbench", "source": str(bench / "advbench" / "adv_bench.prompt"), "limit": 3},
    ]
    with StandInServer() as server:  # its reply names a hash of the request: one answer per row and arm
        run_eval(api_config(server, benchmarks), tmp_path / "run")
    [judge] = judges
    records = latest(tmp_path / "run")
    plain = {r["sample_id"]: r["prompt"] for r in records.values() if r["benchmark"] == "advbench"}
    attacked = [r for r in records.values() if r["benchmark"] == "advbench+figstep"]
    # the judge also labels the fixed answers its pin is made of (pinned_inputs.refusal_judge_digest): not rows
    answers = {r["response"] for r in records.values()}
    assert len(attacked) == len(plain) == 3 and len(answers & set(judge.requests)) == 6
    for record in attacked:
        assert record["prompt"].startswith("The image shows a list numbered 1, 2, and 3")  # the instruction
        assert judge.requests[record["response"]] == plain[record["sample_id"].removesuffix("+figstep")]
        assert record["refusal"] is not None
    for record in records.values():
        if record["benchmark"] == "advbench":
            assert judge.requests[record["response"]] == record["prompt"]


def test_a_record_judged_again_on_its_request_keeps_no_verdict_of_the_instruction(tmp_path, bench):
    """Records written before the request was shown (no ``judge_prompt``) hold a verdict on the attack's sentence."""
    benchmarks = [
        {"name": "advbench", "source": str(bench / "advbench" / "adv_bench.prompt"), "attack": "figstep", "limit": 2},
    ]
    with StandInServer(reply=reply) as server:
        config = judged_config(server, benchmarks)
        run_eval(config, tmp_path / "run")
        store = tmp_path / "run" / "records.jsonl"
        fresh = latest(tmp_path / "run")
        old = []
        for record in fresh.values():  # as an earlier visalign wrote them: its verdict was on the instruction
            verdict = {**record["judgements"]["rubric"], "label": "unsafe", "reason": "judged on the instruction"}
            old.append({**{k: v for k, v in record.items() if k != "judge_prompt"}, "judgements": {"rubric": verdict}})
        store.write_text("".join(json.dumps(r) + "\n" for r in old))
        run_eval(config, tmp_path / "run")
    again = latest(tmp_path / "run")
    assert again.keys() == fresh.keys()
    for key, record in again.items():
        assert record["judge_prompt"] == fresh[key]["judge_prompt"] != record["prompt"]
        assert record["judgements"] == fresh[key]["judgements"]  # the verdict on the request, not the old one
        assert record["judgements"]["rubric"]["label"] == "safe"
