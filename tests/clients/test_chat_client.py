import asyncio
import base64
import io
import json
import socket
import time

import pytest
from PIL import Image

from visalign.clients import ChatClient, ClientError, image_part, run_all
from visalign.errors import VisalignError
from visalign.testing import CHAT_PATH, Fault, StandInServer

USER = [{"role": "user", "content": "one two three four"}]


def make_client(server, **kwargs):
    settings = {"api_key_env": "VISALIGN_TEST_API_KEY", "model": "stand-in", "backoff_base_s": 0.02}
    settings.update(kwargs)
    return ChatClient(server.base_url, **settings)


def complete(client, messages=USER, **kwargs):
    return run_all([client.complete(messages, **kwargs)], show_progress=False)[0]


def test_success_text_tokens_cost_and_auth_header(api_key):
    with StandInServer(reply=lambda request: "hello there friend") as server:
        client = make_client(server, price_per_1k_input=1.0, price_per_1k_output=2.0)
        result = complete(client, max_tokens=32, seed=7)
        [seen] = server.requests_to(CHAT_PATH)
    assert result.text == "hello there friend"
    assert (result.prompt_tokens, result.completion_tokens) == (4, 3)
    assert result.cost_usd == pytest.approx((4 * 1.0 + 3 * 2.0) / 1000)
    assert result.cached is False and result.finish_reason == "stop"
    assert seen.authorization == f"Bearer {api_key}"
    assert seen.body["max_tokens"] == 32 and seen.body["seed"] == 7 and seen.body["model"] == "stand-in"
    assert client.usage.requests == 1 and client.usage.prompt_tokens == 4 and client.usage.completion_tokens == 3


def test_image_parts_reach_the_server(api_key):
    def describe(request):
        part = request["messages"][0]["content"][1]
        data = base64.b64decode(part["image_url"]["url"].split(",", 1)[1])
        with Image.open(io.BytesIO(data)) as image:
            return f"{image.width}x{image.height} {image.getpixel((0, 0))}"

    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 10, 30)).save(buffer, format="PNG")
    messages = [{"role": "user", "content": [{"type": "text", "text": "what"}, image_part(buffer.getvalue())]}]
    with StandInServer(reply=describe) as server:
        result = complete(make_client(server), messages)
    assert result.text == "64x48 (200, 10, 30)"
    assert result.prompt_tokens == 1 + 85


def test_429_retry_after_is_honoured(server, api_key):
    server.inject(Fault("429", retry_after="1"))
    started = time.monotonic()
    result = complete(make_client(server))
    elapsed = time.monotonic() - started
    statuses = [r.status for r in server.requests_to(CHAT_PATH)]
    assert statuses == [429, 200]
    assert elapsed >= 1.0
    assert result.text.startswith("stand-in reply")


def test_429_retry_after_http_date_is_honoured(server, api_key):
    from email.utils import formatdate

    server.inject(Fault("429", retry_after=formatdate(time.time() + 2, usegmt=True)))
    started = time.monotonic()
    complete(make_client(server))
    # An HTTP date has 1 s resolution: the wait is between 1 and 2 seconds.
    assert time.monotonic() - started >= 1.0
    assert [r.status for r in server.requests_to(CHAT_PATH)] == [429, 200]


def test_500_then_success(server, api_key):
    server.inject(Fault("500"), Fault("503"))
    client = make_client(server)
    result = complete(client)
    seen = server.requests_to(CHAT_PATH)
    assert [r.status for r in seen] == [500, 503, 200]
    assert len({r.body_sha256 for r in seen}) == 1
    assert (client.usage.attempts, client.usage.retries, client.usage.requests) == (3, 2, 1)
    assert result.cached is False


def test_timeout_then_success(server, api_key):
    server.inject(Fault("timeout", delay_s=1.5))
    client = make_client(server, timeout_s=0.4)
    started = time.monotonic()
    result = complete(client)
    assert time.monotonic() - started >= 0.4
    assert result.text.startswith("stand-in reply")
    assert client.usage.retries == 1


@pytest.mark.parametrize("kind", ["invalid_json", "truncated_json"])
def test_invalid_body_then_success(server, api_key, kind):
    server.inject(Fault(kind))
    client = make_client(server)
    result = complete(client)
    assert result.text.startswith("stand-in reply")
    assert [r.fault for r in server.requests_to(CHAT_PATH)] == [kind, None]
    assert client.usage.retries == 1


def test_reply_that_is_not_a_completion_is_retried(api_key):
    with StandInServer(reply=lambda request: "ok") as server:
        server.inject(Fault("invalid_json"), times=2)
        result = complete(make_client(server))
    assert result.text == "ok"


def test_retries_exhausted_gives_one_line_error_naming_url(server, api_key):
    server.inject(Fault("500"), times=10)
    client = make_client(server, max_retries=2)
    with pytest.raises(ClientError) as caught:
        complete(client)
    message = str(caught.value)
    assert "\n" not in message
    assert f"{server.base_url}/chat/completions" in message
    assert "3 attempts" in message and "HTTP 500" in message
    assert isinstance(caught.value, VisalignError) and caught.value.status == 500
    assert len(server.requests_to(CHAT_PATH)) == 3
    assert client.usage.failures == 1


def test_unreachable_endpoint(api_key):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = ChatClient(
        f"http://127.0.0.1:{port}/v1", api_key_env="VISALIGN_TEST_API_KEY", max_retries=1, backoff_base_s=0.01
    )
    with pytest.raises(ClientError, match=rf"POST http://127.0.0.1:{port}/v1/chat/completions failed .*connection"):
        complete(client)


def test_client_error_4xx_is_not_retried(server, api_key):
    client = make_client(server)
    with pytest.raises(ClientError, match=r"HTTP 400 \('messages' must be a non-empty list\)"):
        complete(client, messages=[])
    assert len(server.requests_to(CHAT_PATH)) == 1


def test_missing_api_key_names_the_variable(server, monkeypatch):
    monkeypatch.delenv("VISALIGN_NO_SUCH_KEY", raising=False)
    with pytest.raises(VisalignError, match="environment variable VISALIGN_NO_SUCH_KEY is not set"):
        ChatClient(server.base_url, api_key_env="VISALIGN_NO_SUCH_KEY")


def test_local_server_without_key(server):
    result = complete(ChatClient(server.base_url, api_key_env=None))
    assert result.text.startswith("stand-in reply")
    assert server.requests_to(CHAT_PATH)[0].authorization is None


def test_cache_hit_makes_no_second_request(server, api_key, tmp_path):
    client = make_client(server, cache_dir=tmp_path / "cache", price_per_1k_input=1.0)
    first = complete(client)
    second = complete(client)
    resumed_client = make_client(server, cache_dir=tmp_path / "cache", price_per_1k_input=1.0)
    third = complete(resumed_client)
    assert len(server.requests_to(CHAT_PATH)) == 1
    assert first.cached is False and second.cached is True and third.cached is True
    assert first.text == second.text == third.text
    assert second.cost_usd == 0.0 and first.cost_usd == pytest.approx(0.004)
    assert client.usage.cached == 1 and resumed_client.usage.requests == 0
    different = complete(client, temperature=0.7)
    assert different.cached is False and len(server.requests_to(CHAT_PATH)) == 2


def test_identical_concurrent_requests_are_sent_once(api_key):
    with StandInServer(latency_s=0.2) as server:
        client = make_client(server)
        results = run_all([client.complete(USER) for _ in range(5)], show_progress=False)
        assert len(server.requests_to(CHAT_PATH)) == 1
    assert sorted(r.cached for r in results) == [False, True, True, True, True]
    assert len({r.text for r in results}) == 1


def test_client_rate_limit_is_respected(server, api_key):
    client = make_client(server, requests_per_second=20, concurrency=16)
    started = time.monotonic()
    run_all([client.complete([{"role": "user", "content": f"q{i}"}]) for i in range(11)], show_progress=False)
    elapsed = time.monotonic() - started
    starts = sorted(r.started for r in server.requests_to(CHAT_PATH))
    assert elapsed >= 10 / 20
    assert starts[-1] - starts[0] >= 10 / 20 - 0.05  # server-side view of the same pacing
    assert elapsed < 10 / 20 + 1.5


def test_concurrency_cap_is_respected(api_key):
    with StandInServer(latency_s=0.15) as server:
        client = make_client(server, concurrency=3)
        run_all([client.complete([{"role": "user", "content": f"q{i}"}]) for i in range(15)], show_progress=False)
        assert server.max_in_flight == 3
        assert len(server.requests_to(CHAT_PATH)) == 15


def test_server_side_rate_limit_429_recovers(api_key):
    with StandInServer(rate_limit_rps=4, rate_limit_burst=1) as server:
        client = make_client(server, concurrency=4)
        results = run_all(
            [client.complete([{"role": "user", "content": f"q{i}"}]) for i in range(4)], show_progress=False
        )
        statuses = [r.status for r in server.requests_to(CHAT_PATH)]
    assert len(results) == 4
    assert statuses.count(200) == 4 and statuses.count(429) >= 1


def test_run_all_keeps_order_and_returns_exceptions(server, api_key):
    client = make_client(server, max_retries=0)
    messages = [[{"role": "user", "content": f"q{i}"}] for i in range(3)]
    expected = [r.text for r in run_all([client.complete(m) for m in messages], show_progress=False)]
    server.inject(Fault("500"))
    mixed = run_all(
        [client.complete(m, temperature=0.5) for m in messages], show_progress=False, return_exceptions=True
    )
    assert sum(isinstance(r, ClientError) for r in mixed) == 1
    assert len(set(expected)) == 3


def test_client_usable_across_event_loops_and_async_context(server, api_key):
    client = make_client(server)

    async def twice():
        async with client:
            return [await client.complete([{"role": "user", "content": f"{i}"}]) for i in range(2)]

    assert len(asyncio.run(twice())) == 2
    assert len(asyncio.run(twice())) == 2
    assert client.usage.requests == 4


def test_api_key_never_leaks(api_key, tmp_path, caplog):
    with StandInServer() as server, caplog.at_level("DEBUG"):
        server.inject(Fault("500"), Fault("429", retry_after="0"), Fault("invalid_json"), Fault("timeout", delay_s=1))
        client = make_client(server, cache_dir=tmp_path / "cache", timeout_s=0.3)
        complete(client)
        server.inject(Fault("500"), times=5)
        with pytest.raises(ClientError) as caught:
            complete(make_client(server, max_retries=2), temperature=0.9)
        with pytest.raises(ClientError) as rejected:
            complete(client, messages=[])
    texts = [
        str(caught.value),
        repr(caught.value),
        str(rejected.value),
        repr(client),
        caplog.text,
        json.dumps(client.usage.as_dict()),
    ]
    texts += [p.read_text(errors="replace") for p in (tmp_path / "cache").rglob("*") if p.is_file()]
    assert len(texts) > 6  # the cache holds at least one file
    assert "retry" in caplog.text  # the retries were logged, so the log was really searched
    for text in texts:
        assert api_key not in text
        assert "SECRET" not in text


def test_a_key_echoed_in_a_long_error_message_is_hidden_even_where_the_message_is_cut(api_key):
    """Some providers quote the rejected key at the end of a long message; no part of it may reach our error."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from threading import Thread

    class EchoesTheKey(BaseHTTPRequestHandler):
        def log_message(self, *args):  # quiet
            pass

        def do_POST(self):  # noqa: N802 - stdlib naming
            self.rfile.read(int(self.headers["Content-Length"]))
            sent = self.headers["Authorization"].removeprefix("Bearer ")
            # the cut at 200 characters falls inside the key
            intro = " the key you sent was: "
            message = "x" * (200 - len(intro) - len(sent) // 2) + intro + sent
            body = json.dumps({"error": {"message": message}}).encode()
            self.send_response(401)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    http = ThreadingHTTPServer(("127.0.0.1", 0), EchoesTheKey)
    Thread(target=http.serve_forever, daemon=True).start()
    try:
        client = ChatClient(f"http://127.0.0.1:{http.server_address[1]}/v1", api_key_env="VISALIGN_TEST_API_KEY")
        with pytest.raises(ClientError) as failed:
            complete(client)
    finally:
        http.shutdown()
    text = str(failed.value)
    assert "401" in text and not any(api_key[:n] in text for n in range(6, len(api_key) + 1))
