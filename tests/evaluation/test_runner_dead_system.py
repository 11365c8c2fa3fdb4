"""``visalign eval`` against a system whose endpoint is dead or refuses the key: it stops asking, says so, resumes.

Real HTTP over loopback: a port nothing listens on, a small server that answers 401 until it is sent the right key,
then the project's stand-in server on that same port or the right key, for the run that answers what failed.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import yaml
from cli_in_process import run_in_process
from rich.progress import Progress

from visalign.clients import ClientError
from visalign.errors import VisalignError
from visalign.evaluation.config import BenchmarkConfig, EvalConfig
from visalign.evaluation.judges import get_refusal_judge
from visalign.evaluation.llm_judges.base import MAX_FAILURES_IN_A_ROW
from visalign.evaluation.runner import evaluate_system, load_rows, run_eval
from visalign.runs import JsonlStore
from visalign.testing import StandInServer

SAMPLES = 12  # more than the few requests a dead system may cost
KEY_ENV = "VISALIGN_TEST_SYSTEM_KEY"
GOOD_KEY = "sk-standin-good-7c1d9e2a4b6f"


def eval_config(base_url: str, bench, *, api_key_env: str | None = None) -> EvalConfig:
    system = {"name": "served", "model": "m", "backend": "openai", "base_url": base_url, "api_key_env": api_key_env}
    benchmark = {"name": "xstest", "source": str(bench / "xstest" / "xstest_prompts.csv"), "limit": SAMPLES}
    return EvalConfig.model_validate({"systems": [system], "benchmarks": [benchmark], "max_new_tokens": 8})


def latest_records(out) -> dict[str, dict]:
    latest = {}
    for line in (out / "records.jsonl").read_text().splitlines():
        record = json.loads(line)
        latest[record["id"]] = record
    return latest


class ChatServer:
    """An OpenAI-style chat endpoint answering ``decide(authorization, request) -> (status, content)``; counts POSTs."""

    def __init__(self, decide) -> None:
        self.requests = 0
        self.rejected = 0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_POST(self):  # noqa: N802 - stdlib naming
                request = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
                owner.requests += 1
                status, content = decide(self.headers.get("Authorization"), request)
                if status != 200:
                    owner.rejected += 1
                    body = {"error": {"message": content, "code": status}}
                else:
                    body = {"choices": [{"message": {"role": "assistant", "content": content},
                                         "finish_reason": "stop"}]}  # fmt: skip
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self._http.server_address[1]}/v1"

    def __enter__(self) -> ChatServer:
        threading.Thread(target=self._http.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._http.shutdown()
        self._http.server_close()


def KeyCheckingServer() -> ChatServer:  # noqa: N802 - reads as the server it builds
    """Answers 401 unless sent ``GOOD_KEY``."""
    return ChatServer(lambda auth, _: (200, "Sure.") if auth == f"Bearer {GOOD_KEY}"
                      else (401, "Incorrect API key provided"))  # fmt: skip


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_rejected_key_stops_the_system_after_a_few_requests_and_a_good_key_answers_everything(
    tmp_path, bench, monkeypatch, caplog
):
    monkeypatch.setenv(KEY_ENV, "sk-standin-wrong-0000000000")
    out = tmp_path / "run"
    with KeyCheckingServer() as server:
        config = eval_config(server.base_url, bench, api_key_env=KEY_ENV)
        with caplog.at_level(logging.WARNING, logger="visalign.evaluation.runner"):
            report = run_eval(config, out)
        assert report.is_file()  # the run still ends with its summary and report
        assert 1 <= server.requests <= MAX_FAILURES_IN_A_ROW  # not one request (or six) per sample
        records = latest_records(out)
        assert len(records) == SAMPLES and all(r["error"] and r["response"] is None for r in records.values())
        lines = [r.getMessage() for r in caplog.records]
        stop = next(line for line in lines if "stopped sending requests" in line)
        assert "system 'served'" in stop and "HTTP 401" in stop and f"check the API key in ${KEY_ENV}" in stop
        assert "re-run the same command" in stop and "\n" not in stop
        assert any(f"system served: {SAMPLES} answer(s) failed" in line for line in lines)  # the end-of-run line
        with pytest.raises(VisalignError, match=rf"report\.html: written, but answers failed \(served {SAMPLES};"):
            run_eval(config, out, strict=True)  # what the CLI's exit status rests on
        asked = server.requests

        monkeypatch.setenv(KEY_ENV, GOOD_KEY)  # the key fixed: same config, same folder
        caplog.clear()
        run_eval(config, out, strict=True)
    assert server.requests - asked == SAMPLES and server.rejected == asked
    records = latest_records(out)
    assert len(records) == SAMPLES and all(r["error"] is None and r["response"] == "Sure." for r in records.values())
    assert not any("answer(s) failed" in r.getMessage() for r in caplog.records)


def test_a_dead_endpoint_stops_the_system_and_the_run_once_it_is_up_answers_what_failed(tmp_path, bench, caplog):
    port = free_port()  # nothing listens here: every connection is refused
    config = eval_config(f"http://127.0.0.1:{port}/v1", bench)
    out = tmp_path / "run"
    with caplog.at_level(logging.WARNING, logger="visalign.evaluation.runner"):
        run_eval(config, out)
    records = latest_records(out)
    assert len(records) == SAMPLES and all(r["error"] and r["response"] is None for r in records.values())
    tried = [r for r in records.values() if r["error"].startswith("ClientError:")]
    assert 1 <= len(tried) <= MAX_FAILURES_IN_A_ROW  # the rest were not sent (each would cost 6 attempts)
    assert all("Connection refused" in r["error"] or "connection failed" in r["error"] for r in tried)
    stop = next(r.getMessage() for r in caplog.records if "stopped sending requests" in r.getMessage())
    assert f"system 'served' stopped sending requests after {MAX_FAILURES_IN_A_ROW} failed requests" in stop
    assert "check that the endpoint is up and base_url is right" in stop
    unasked = [r for r in records.values() if r not in tried]
    assert unasked and all(r["error"] == stop for r in unasked)

    with StandInServer(reply=lambda request: "I can't help with that.", port=port) as server:
        run_eval(config, out, strict=True)
        asked = len(server.requests_to("/v1/chat/completions"))
    assert asked == SAMPLES
    records = latest_records(out)
    assert all(r["error"] is None and r["response"] == "I can't help with that." for r in records.values())


class FailingSystem:
    """A system whose every request fails with ``status`` after the client's retries (no HTTP: counts the rule)."""

    name = "served"
    decoding: dict = {}

    def __init__(self, status: int | None) -> None:
        self.status = status
        self.asked = 0

    def respond(self, prompts):
        self.asked += len(prompts)
        return [ClientError(f"POST http://x/v1/chat/completions: HTTP {self.status}", status=self.status)
                for _ in prompts]  # fmt: skip


@pytest.mark.parametrize(("status", "answered_before", "stops"), [
    (500, True, True),  # answered before, down now (a resume while the server is still down): it stops too
    (400, False, False),  # each request rejected on its own says nothing about the endpoint
    (500, False, True),
    (403, True, True),  # no key gets past a 403, answers or not
])  # fmt: skip
def test_which_failures_stop_a_system(tmp_path, bench, status, answered_before, stops):
    config = BenchmarkConfig(name="xstest", source=str(bench / "xstest" / "xstest_prompts.csv"), limit=SAMPLES)
    rows = [load_rows(config, base_dir=tmp_path, attack_dir=tmp_path / "attacks", seed=0)]
    store = JsonlStore(tmp_path / "records.jsonl")
    if answered_before:
        first = rows[0].samples[0]
        store.append({"id": f"served::xstest::{first.id}", "system": "served", "response": "Sure.", "error": None})
    system = FailingSystem(status)
    with store, Progress(disable=True) as progress:
        breaker = evaluate_system(system, rows, store, refusal_judge=get_refusal_judge(), llm_judges=[],
                                  chunk_size=4, progress=progress)  # fmt: skip
    assert (breaker.stopped is not None) == stops
    left = SAMPLES - answered_before
    assert breaker.failed == left  # every sample left to answer, asked or not
    assert system.asked < left if stops else system.asked == left


def test_requests_rejected_one_by_one_warn_but_do_not_fail_a_strict_run(tmp_path, bench, caplog):
    # A provider's content filter answers some prompts with a 400, and a re-run would fail them the same way.
    def decide(_, request):
        text = json.dumps(request["messages"]).lower()
        return (400, "content filtered") if "kill" in text else (200, "Sure.")

    with ChatServer(decide) as server:
        config = eval_config(server.base_url, bench)
        with caplog.at_level(logging.WARNING, logger="visalign.evaluation.runner"):
            report = run_eval(config, tmp_path / "run", strict=True)
    records = latest_records(tmp_path / "run")
    rejected = [r for r in records.values() if r["error"]]
    assert report.is_file() and 1 <= len(rejected) < SAMPLES and all("HTTP 400" in r["error"] for r in rejected)
    assert server.rejected == len(rejected)  # a 400 is not retried, and no request was held back
    lines = [r.getMessage() for r in caplog.records]
    assert not any("stopped sending requests" in line for line in lines)
    assert any(f"system served: {len(rejected)} answer(s) failed" in line for line in lines)


def test_the_eval_command_exits_2_naming_the_report_when_a_system_stopped(tmp_path, bench, capsys, monkeypatch):
    monkeypatch.setenv(KEY_ENV, "sk-standin-wrong-0000000000")
    with KeyCheckingServer() as server:
        config = eval_config(server.base_url, bench, api_key_env=KEY_ENV)
        path = tmp_path / "eval.yaml"
        path.write_text(yaml.safe_dump(config.model_dump(mode="json", exclude_none=True)))
        code, out, err = run_in_process(["eval", "--config", str(path), "--out", str(tmp_path / "run")], capsys)
    assert code == 2 and "report:" not in out
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"error: {tmp_path / 'run' / 'report.html'}: written, but answers failed (served {SAMPLES};")
    assert "sk-standin-wrong" not in err and (tmp_path / "run" / "report.html").is_file()


class DyingSystem(FailingSystem):
    """Answers its first ``lives`` prompts, then every request fails with a 503 (a server that went down)."""

    def __init__(self, lives: int) -> None:
        super().__init__(503)
        self.lives = lives

    def respond(self, prompts):
        down = super().respond(prompts)  # counts them as asked
        first = self.asked - len(prompts)
        return ["Sure." if first + i < self.lives else error for i, error in enumerate(down)]


def test_a_system_that_dies_mid_run_stops_after_a_few_failures_in_a_row(tmp_path, bench):
    config = BenchmarkConfig(name="xstest", source=str(bench / "xstest" / "xstest_prompts.csv"), limit=SAMPLES)
    rows = [load_rows(config, base_dir=tmp_path, attack_dir=tmp_path / "attacks", seed=0)]
    store = JsonlStore(tmp_path / "records.jsonl")
    system = DyingSystem(lives=3)
    with store, Progress(disable=True) as progress:
        breaker = evaluate_system(system, rows, store, refusal_judge=get_refusal_judge(), llm_judges=[],
                                  chunk_size=4, progress=progress)  # fmt: skip
    assert breaker.stopped is not None and "5 failed requests in a row" in breaker.stopped
    # chunks of 4: three answers and a failure, then four more failures make five in a row; nothing more is asked
    assert system.asked == 3 + MAX_FAILURES_IN_A_ROW < SAMPLES
    assert breaker.failed == SAMPLES - 3


class SlowSystem(FailingSystem):
    """Answers its first ``lives`` prompts, then every request runs out of time (no status): slow or hung."""

    def __init__(self, lives: int) -> None:
        super().__init__(None)
        self.lives = lives

    def respond(self, prompts):
        first, self.asked = self.asked, self.asked + len(prompts)
        timeout = ClientError("POST http://x/v1/chat/completions failed after 6 attempts, last: timed out after 60.0 s",
                              timed_out=True)  # fmt: skip
        return ["Sure." if first + i < self.lives else timeout for i in range(len(prompts))]


@pytest.mark.parametrize(("lives", "stops"), [(1, False), (0, True)])
def test_timeouts_stop_only_a_system_that_never_answered(tmp_path, bench, lives, stops):
    # One that answered is alive and slow on long answers (a system config has no timeout to raise); one that
    # never answered may be hung, and is stopped like any dead endpoint.
    config = BenchmarkConfig(name="xstest", source=str(bench / "xstest" / "xstest_prompts.csv"), limit=SAMPLES)
    rows = [load_rows(config, base_dir=tmp_path, attack_dir=tmp_path / "attacks", seed=0)]
    store = JsonlStore(tmp_path / "records.jsonl")
    system = SlowSystem(lives)
    with store, Progress(disable=True) as progress:
        breaker = evaluate_system(system, rows, store, refusal_judge=get_refusal_judge(), llm_judges=[],
                                  chunk_size=4, progress=progress)  # fmt: skip
    assert (breaker.stopped is not None) == stops
    # stopped: asked until five timed out in a row (two chunks of 4), not all twelve
    assert system.asked == (8 if stops else SAMPLES)
    assert breaker.failed == SAMPLES - lives
