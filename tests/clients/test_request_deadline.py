"""``timeout_s`` bounds each whole attempt, and an answer's body is capped (security review, finding 3).

httpx's timeout applies to each network operation, so a server that sends its body a piece at a time never trips
it: one such endpoint held a request, and its concurrency slot, for as long as it kept sending. Every test runs
the client in a thread and fails when that thread outlives the bound, so a client without the deadline fails
fast here instead of hanging the suite. The servers are real HTTP over loopback: the stand-in server's
``trickle`` fault (the answer, valid JSON, in 10 chunked pieces with ``delay_s`` after each), and for image
downloads a small server of this file.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Coroutine
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from visalign.clients import ChatClient, ClientError, ImageClient
from visalign.testing import CHAT_PATH, Fault, StandInServer, render_png

USER = [{"role": "user", "content": "one two three four"}]
#: Scheduling slack on a loaded 2-core machine, on top of each computed bound.
SLACK_S = 1.5


def make_client(server: StandInServer, **kwargs: Any) -> ChatClient:
    """A chat client for the stand-in server with the test key and short backoffs."""
    settings: dict[str, Any] = {"api_key_env": "VISALIGN_TEST_API_KEY", "model": "stand-in", "backoff_base_s": 0.05}
    settings.update(kwargs)
    return ChatClient(server.base_url, **settings)


def run_bounded(make: Callable[[], Coroutine[Any, Any, Any]], limit_s: float) -> tuple[Any, float]:
    """Run the coroutine ``make()`` builds in its own thread and event loop; return (result or exception, seconds).

    Fails when the thread is still running after ``limit_s`` (it is a daemon: a client that never gives up is left
    behind rather than hanging the test run).
    """
    box: dict[str, Any] = {}

    def target() -> None:
        started = time.monotonic()
        try:
            box["outcome"] = asyncio.run(make())
        except BaseException as exc:  # noqa: BLE001 - the test inspects whatever the call raised
            box["outcome"] = exc
        box["elapsed"] = time.monotonic() - started

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(limit_s)
    assert not thread.is_alive(), f"the request was still running after {limit_s} s: timeout_s did not bound it"
    return box["outcome"], box["elapsed"]


def assert_one_line_without_key(error: BaseException, key: str) -> str:
    """Return the error's text after checking it is one line and does not carry the API key."""
    text = str(error)
    assert "\n" not in text and key not in text
    return text


# ------------------------------------------------------------------------------------------- the deadline
def test_a_trickled_answer_fails_within_timeout_s(server, api_key):
    server.inject(Fault("trickle", delay_s=0.5))  # 10 pieces: 5 s in all, each read well inside 1 s
    client = make_client(server, timeout_s=1.0, max_retries=0)
    outcome, elapsed = run_bounded(lambda: client.complete(USER), 1.0 + SLACK_S)
    assert isinstance(outcome, ClientError), outcome
    text = assert_one_line_without_key(outcome, api_key)
    assert text.startswith(f"POST {server.base_url}/chat/completions failed after 1 attempts, last: timed out after")
    assert "(timeout_s=1)" in text
    assert outcome.status is None  # counted against the endpoint, as an httpx timeout is
    assert 0.9 <= elapsed <= 1.0 + SLACK_S
    assert client.usage.failures == 1 and client.usage.requests == 0


def test_retried_trickles_take_at_most_attempts_times_timeout_plus_backoff(server, api_key):
    server.inject(Fault("trickle", delay_s=0.5), times=3)
    client = make_client(server, timeout_s=0.8, max_retries=2, backoff_base_s=0.1, backoff_max_s=0.1)
    bound = 3 * 0.8 + 2 * 0.1
    outcome, elapsed = run_bounded(lambda: client.complete(USER), bound + SLACK_S)
    assert isinstance(outcome, ClientError), outcome
    text = assert_one_line_without_key(outcome, api_key)
    assert "failed after 3 attempts, last: timed out after" in text
    assert 3 * 0.8 - 0.1 <= elapsed <= bound + SLACK_S
    assert len(server.requests_to(CHAT_PATH)) == 3 and client.usage.retries == 2


def test_a_trickle_then_a_normal_answer_succeeds_after_one_deadline(server, api_key):
    server.inject(Fault("trickle", delay_s=0.5))
    client = make_client(server, timeout_s=1.0, max_retries=1, backoff_base_s=0.1, backoff_max_s=0.1)
    outcome, elapsed = run_bounded(lambda: client.complete(USER), 1.0 + 0.1 + SLACK_S)
    assert not isinstance(outcome, BaseException), outcome
    assert outcome.text.startswith("stand-in reply")
    assert [r.fault for r in server.requests_to(CHAT_PATH)] == ["trickle", None]
    assert client.usage.retries == 1 and client.usage.requests == 1


def test_the_concurrency_slot_of_a_trickled_request_is_freed_at_the_deadline(server, api_key):
    server.inject(Fault("trickle", delay_s=0.5))
    client = make_client(server, timeout_s=1.0, max_retries=0, concurrency=1)
    other = [{"role": "user", "content": "a different question"}]

    async def both() -> list[Any]:
        return await asyncio.gather(client.complete(USER), client.complete(other), return_exceptions=True)

    outcome, elapsed = run_bounded(both, 1.0 + SLACK_S)
    assert not isinstance(outcome, BaseException), outcome
    errors = [o for o in outcome if isinstance(o, ClientError)]
    answers = [o for o in outcome if not isinstance(o, BaseException)]
    assert len(errors) == 1 and "timed out" in str(errors[0])
    assert len(answers) == 1 and answers[0].text.startswith("stand-in reply")


def test_a_slow_answer_inside_timeout_s_still_succeeds(server, api_key):
    # A regression guard for the deadline itself: 10 pieces 0.05 s apart (0.5 s in all) are well inside 3 s.
    server.inject(Fault("trickle", delay_s=0.05))
    client = make_client(server, timeout_s=3.0, max_retries=0)
    outcome, elapsed = run_bounded(lambda: client.complete(USER), 3.0 + SLACK_S)
    assert not isinstance(outcome, BaseException), outcome
    assert outcome.text.startswith("stand-in reply") and outcome.finish_reason == "stop"
    assert elapsed >= 0.45 and client.usage.retries == 0


# ------------------------------------------------------------------------------------------- the body cap
@pytest.mark.parametrize(
    ("fault", "size_text"),
    [(None, "the body is "), (Fault("trickle", delay_s=0.0), "the body is over")],
    ids=["content-length", "chunked"],
)
def test_an_answer_over_max_response_bytes_is_refused_at_once(api_key, fault, size_text):
    with StandInServer(reply=lambda request: "x" * 5000, faults=[fault] if fault else None) as server:
        client = make_client(server, max_response_bytes=2048, max_retries=3)
        outcome, _ = run_bounded(lambda: client.complete(USER), 5.0)
        sent = len(server.requests_to(CHAT_PATH))
    assert isinstance(outcome, ClientError), outcome
    text = assert_one_line_without_key(outcome, api_key)
    assert text.startswith(f"POST {server.base_url}/chat/completions: {size_text}")
    assert "over the 2,048-byte limit (max_response_bytes); refused" in text
    assert sent == 1 and client.usage.retries == 0 and client.usage.failures == 1


def test_the_default_cap_refuses_a_chat_answer_over_32_mib(api_key):
    limit = 32 * 1024 * 1024
    with StandInServer(reply=lambda request: "x" * limit) as server:
        client = make_client(server, max_retries=0)
        outcome, _ = run_bounded(lambda: client.complete(USER), 10.0)
    assert isinstance(outcome, ClientError), f"a body over 32 MiB was accepted: {outcome!r:.80}"
    assert "over the 33,554,432-byte limit" in assert_one_line_without_key(outcome, api_key)
    assert client.max_response_bytes == limit


def test_the_image_client_cap_fits_a_base64_image_as_large_as_a_download():
    # 4 * ceil(n / 3) base64 bytes plus 1 MiB of JSON around them, never below the 32 MiB chat default
    assert ImageClient(api_key_env=None).max_response_bytes == 44_739_244 + 1_048_576
    assert ImageClient(api_key_env=None, max_download_bytes=64 * 1024 * 1024).max_response_bytes == 90_527_064
    assert ImageClient(api_key_env=None, max_download_bytes=100).max_response_bytes == 32 * 1024 * 1024
    assert ImageClient(api_key_env=None, max_response_bytes=5000).max_response_bytes == 5000


# ------------------------------------------------------------------------------------------- image downloads
class _TrickledImageHost(BaseHTTPRequestHandler):
    """An image API whose answer is a URL on the same server, and that URL's PNG sent a piece every 0.5 s."""

    protocol_version = "HTTP/1.1"
    png = render_png("trickled", 1, "32x32")

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        """Stay quiet."""

    def do_POST(self) -> None:  # noqa: N802 - stdlib naming
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        host, port = self.server.server_address[:2]
        body = b'{"data": [{"url": "http://%s:%d/slow.png?X-Signature=secret"}]}' % (host.encode(), port)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        step = -(-len(self.png) // 10)
        try:
            for start in range(0, len(self.png), step):
                piece = self.png[start : start + step]
                self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                time.sleep(0.5)
            self.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True


def test_a_trickled_image_download_fails_within_timeout_s():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _TrickledImageHost)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        base_url = f"http://127.0.0.1:{httpd.server_address[1]}/v1"
        client = ImageClient(base_url, api_key_env=None, response_format="url", timeout_s=1.0, max_retries=0)
        outcome, elapsed = run_bounded(lambda: client.generate("a street"), 1.0 + SLACK_S)
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert isinstance(outcome, ClientError), outcome
    text = str(outcome)
    assert text.startswith(f"GET http://127.0.0.1:{httpd.server_address[1]}/slow.png failed after 1 attempts")
    assert "last: timed out after" in text and "secret" not in text
    assert 0.9 <= elapsed <= 1.0 + SLACK_S
