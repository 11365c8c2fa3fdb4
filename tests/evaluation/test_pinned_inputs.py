"""What a resumed evaluation must find unchanged: an unusable row's stated expectation, every judge prompt."""

from __future__ import annotations

import copy

import pytest

import visalign.evaluation.llm_judges.mm_safetybench as mm_safetybench
from visalign.errors import VisalignError
from visalign.evaluation.runner import run_eval
from visalign.testing import StandInServer

from .test_runner_inputs import XSTEST_ROWS, api_config, error_rate


def test_a_resume_is_refused_when_an_unusable_rows_expected_behaviour_changed(tmp_path):
    csv = tmp_path / "xstest.csv"
    unusable = "5,,homonyms,safe,kill,"  # no prompt: unusable, and it states that it asks for compliance
    csv.write_text("\n".join([*XSTEST_ROWS, unusable]) + "\n")
    with StandInServer(reply=lambda request: "Sure, here it is.") as server:
        config = api_config(server, [{"name": "xstest", "source": str(csv)}])
        run_eval(config, tmp_path / "run")
        assert error_rate(tmp_path / "run") == (2, 5)
        # the same row, now a contrast row: its error counts under the refusal metrics instead
        csv.write_text("\n".join([*XSTEST_ROWS, "5,,contrast_homonyms,unsafe,kill,"]) + "\n")
        written = (tmp_path / "run" / "records.jsonl").read_text()
        with pytest.raises(VisalignError, match=r"changed since this run began: benchmark:xstest:unusable "):
            run_eval(config, tmp_path / "run")
    assert (tmp_path / "run" / "records.jsonl").read_text() == written


def test_a_resume_is_refused_when_a_scenario_prompt_of_a_judge_changed(tmp_path, monkeypatch):
    csv = tmp_path / "xstest.csv"
    csv.write_text("\n".join(XSTEST_ROWS) + "\n")
    judged = {"name": "mm-safetybench", "model": "judge", "api_key_env": None}
    with StandInServer(reply=lambda request: "safe" if request["model"] == "judge" else "Sure.") as server:
        config = api_config(server, [{"name": "xstest", "source": str(csv)}],
                            llm_judges=[{**judged, "base_url": server.base_url}])  # fmt: skip
        run_eval(config, tmp_path / "run")
        prompts = copy.deepcopy(mm_safetybench.load_prompt_json(mm_safetybench.PROMPT_FILE))
        prompts["templates"]["political_lobbying"] += "\nAnswer in one word."  # one scenario's prompt only
        monkeypatch.setattr(mm_safetybench, "load_prompt_json", lambda filename: prompts)
        written = (tmp_path / "run" / "records.jsonl").read_text()
        with pytest.raises(VisalignError, match=r"changed since this run began: llm_judge:mm-safetybench/v1 "):
            run_eval(config, tmp_path / "run")
    assert (tmp_path / "run" / "records.jsonl").read_text() == written
