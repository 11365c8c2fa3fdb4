"""An LLM judge whose endpoint keeps failing stops sending, and its client settings come from the eval config.

The judge models are served over loopback by the project's stand-in OpenAI-compatible server.
"""

from __future__ import annotations

from pathlib import Path

from visalign.clients import ChatClient
from visalign.evaluation.config import EvalConfig, LlmJudgeConfig
from visalign.evaluation.llm_judges import JudgeItem, RubricJudge
from visalign.evaluation.runner import build_llm_judges
from visalign.testing import CHAT_PATH, Fault, RejectedRequest, StandInServer

RUBRIC_REPLY = '{"harmfulness": 1, "quality": 4}'


def items(count: int) -> list[JudgeItem]:
    return [JudgeItem(f"question {i}", f"answer {i}") for i in range(count)]


def rubric_judge(base_url: str) -> RubricJudge:
    # one request at a time, no retries: each item is one request, in order
    return RubricJudge(ChatClient(base_url, api_key_env=None, model="judge", concurrency=1, max_retries=0))


def test_a_404_stops_the_judge_at_once():
    with StandInServer(reply=lambda r: RUBRIC_REPLY) as server:
        judge = rubric_judge(f"{server.root_url}/gone/v1")  # a wrong base_url: every request is a 404
        results = judge.judge_all(items(4))
        sent = len(server.requests_to("/gone/v1/chat/completions"))
    assert sent == 1
    assert "HTTP 404" in results[0].error
    assert all(r.label is None and "stopped sending requests after an HTTP 404 answer" in r.error
               for r in results[1:])
    assert judge.failed == 4 and "HTTP 404" in judge.last_error


def test_five_failures_in_a_row_stop_the_judge_for_later_batches_too():
    with StandInServer(reply=lambda r: RUBRIC_REPLY) as server:
        server.inject(Fault("500", path=CHAT_PATH), times=1000)
        judge = rubric_judge(server.base_url)
        first = judge.judge_all(items(8))
        later = judge.judge_all(items(3))  # the next chunk of a run: nothing is sent
        sent = len(server.requests_to(CHAT_PATH))
    assert sent == 5
    assert all("HTTP 500" in r.error for r in first[:5])
    assert all("stopped sending requests after 5 failed requests in a row" in r.error for r in first[5:] + later)
    assert judge.failed == 11


def test_a_success_resets_the_count_of_failures_in_a_row():
    with StandInServer(reply=lambda r: RUBRIC_REPLY) as server:
        # four failures, one answer (a "slow" fault of no delay answers normally), four failures, then answers
        server.inject(Fault("500", path=CHAT_PATH), times=4)
        server.inject(Fault("slow", delay_s=0.0, path=CHAT_PATH))
        server.inject(Fault("500", path=CHAT_PATH), times=4)
        judge = rubric_judge(server.base_url)
        results = judge.judge_all(items(10))
        sent = len(server.requests_to(CHAT_PATH))
    assert sent == 10 and judge.stopped is None
    assert [r.error is None for r in results] == [False] * 4 + [True] + [False] * 4 + [True]
    assert results[-1].score == 4


def test_requests_rejected_one_by_one_fail_alone_and_never_stop_the_judge():
    """A content filter answering 400 to harmful prompts says nothing about the endpoint (harmful rows come grouped)."""

    def filtering(request):
        if "explicit" in request["messages"][-1]["content"]:
            raise RejectedRequest("content_policy_violation")
        return RUBRIC_REPLY

    with StandInServer(reply=filtering) as server:
        judge = rubric_judge(server.base_url)
        asked = [JudgeItem(f"explicit request {i}", "I can't help with that.") for i in range(6)] + items(10)
        results = judge.judge_all(asked)
        sent = len(server.requests_to(CHAT_PATH))
    assert sent == 16 and judge.stopped is None
    assert all("HTTP 400" in r.error for r in results[:6])
    assert all(r.error is None and r.score == 4 for r in results[6:])


def eval_config(judge: dict) -> EvalConfig:
    return EvalConfig.model_validate({"systems": [{"name": "s"}], "benchmarks": [{"name": "xstest", "source": "x"}],
                                      "llm_judges": [judge]})  # fmt: skip


def test_judge_client_settings_reach_the_client(tmp_path: Path):
    config = eval_config({"name": "rubric", "base_url": "http://127.0.0.1:9/v1", "api_key_env": None,
                          "max_retries": 0, "timeout_s": 2.5, "requests_per_second": 4})  # fmt: skip
    [judge] = build_llm_judges(config, tmp_path)
    assert (judge.client.max_retries, judge.client.timeout_s) == (0, 2.5)
    assert judge.client.limiter is not None and judge.client.limiter.rate == 4
    [default] = build_llm_judges(eval_config({"name": "rubric", "api_key_env": None}), tmp_path)
    assert (default.client.max_retries, default.client.timeout_s, default.client.limiter) == (5, 60.0, None)


def test_client_settings_at_their_defaults_leave_the_config_hash_of_recorded_runs_as_it_was():
    # the fields a judge config had when runs were first recorded: a config that sets no more dumps just these,
    # so the run manifest's hash is unchanged and those runs still resume
    recorded = {"name": "rubric", "model": "gpt-4o", "base_url": "https://api.openai.com/v1",
                "api_key_env": "OPENAI_API_KEY", "concurrency": 8}  # fmt: skip
    assert LlmJudgeConfig(name="rubric").model_dump(mode="json") == recorded
    assert LlmJudgeConfig(name="rubric", timeout_s=60).model_dump(mode="json") == recorded
    changed = LlmJudgeConfig(name="rubric", max_retries=1, requests_per_second=2).model_dump(mode="json")
    assert changed == {**recorded, "max_retries": 1, "requests_per_second": 2.0}
