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


def test_run_all_keeps_order_and_returns_exceptions(api_key):
    with StandInServer(reply=lambda request: "echo " + request["messages"][-1]["content"]) as server:
        client = make_client(server, max_retries=0)
        messages = [[{"role": "user", "content": f"q{i}"}] for i in range(6)]
        answers = run_all([client.complete(m) for m in messages], show_progress=False)
        assert [r.text for r in answers] == [f"echo q{i}" for i in range(6)]  # input order, whatever the finish order
        server.inject(Fault("500"))
        mixed = run_all([client.complete(m, temperature=0.5) for m in messages], show_progress=False,
                        return_exceptions=True)
    [failed] = [i for i, r in enumerate(mixed) if isinstance(r, ClientError)]
    assert [r.text for i, r in enumerate(mixed) if i != failed] == [f"echo q{i}" for i in range(6) if i != failed]


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


def test_body_that_does_not_decode_is_retried_then_a_client_error(server, api_key):
    server.inject(Fault("bad_gzip"))
    client = make_client(server)
    assert complete(client).text.startswith("stand-in reply")
    assert [r.fault for r in server.requests_to(CHAT_PATH)] == ["bad_gzip", None] and client.usage.retries == 1
    server.inject(Fault("bad_gzip"), times=5)
    with pytest.raises(ClientError) as caught:
        complete(make_client(server, max_retries=1), temperature=0.3)
    message = str(caught.value)
    assert message.startswith(f"POST {server.base_url}/chat/completions failed after 2 attempts")
    assert "the response body does not decode" in message and "\n" not in message
    assert len(server.requests_to(CHAT_PATH)) == 4


@pytest.mark.parametrize(
    ("location", "target", "root"),
    [
        ("https://api.example.com/v1/chat/completions?sig=s3cr3t", "https://api.example.com/v1/chat/completions",
         "https://api.example.com/v1"),
        (None, "{root_url}/moved/v1/chat/completions", "{root_url}/moved/v1"),
        ("https://api.example.com/", "https://api.example.com/", "that address"),
    ],
)  # fmt: skip
def test_redirect_names_its_target_and_is_not_retried(server, api_key, location, target, root):
    server.inject(Fault("redirect", location=location))
    client = make_client(server)
    with pytest.raises(ClientError) as caught:
        complete(client)
    target, root = (text.format(root_url=server.root_url) for text in (target, root))
    assert str(caught.value) == (
        f"POST {server.base_url}/chat/completions: HTTP 301, the server redirected to {target}; set base_url to {root}"
    )
    assert caught.value.status == 301 and "s3cr3t" not in str(caught.value)
    assert len(server.requests_to(CHAT_PATH)) == 1 and client.usage.failures == 1


def test_408_and_409_are_retried_like_429_and_5xx(server, api_key):
    server.inject(Fault("408"), Fault("409"))
    client = make_client(server)
    assert complete(client).text.startswith("stand-in reply")
    assert [r.status for r in server.requests_to(CHAT_PATH)] == [408, 409, 200]
    assert (client.usage.attempts, client.usage.retries, client.usage.failures) == (3, 2, 0)


def test_429_retry_after_holds_back_requests_queued_in_the_rate_limiter(server, api_key):
    server.inject(Fault("429", retry_after="1"))
    client = make_client(server, requests_per_second=10, concurrency=8)
    run_all([client.complete([{"role": "user", "content": f"q{i}"}]) for i in range(4)], show_progress=False)
    seen = server.requests_to(CHAT_PATH)
    [limited] = [r for r in seen if r.status == 429]
    others = sorted(r.started for r in seen if r is not limited)
    assert len(others) == 4  # three queued requests and the retry of the limited one
    assert others[0] - limited.finished >= 1.0 - 0.02, "a request went out inside the Retry-After pause"
    # still paced after: 0.1 s apart at 10/s. Measured where the server sees them, so one request delivered late
    # on a loaded machine shortens one gap; the span of the four keeps most of the pacing (a burst spans ~0 s).
    assert others[-1] - others[0] >= 3 * 0.1 - 0.1


def test_429_retry_after_holds_back_later_requests_without_a_rate_limit(server, api_key):
    server.inject(Fault("429", retry_after="1"))
    client = make_client(server)

    async def main():
        first = asyncio.create_task(client.complete(USER))
        await asyncio.sleep(0.3)  # the 429 has arrived; this request comes during its pause
        await client.complete([{"role": "user", "content": "later"}])
        await first
        await client.aclose()

    asyncio.run(main())
    limited, *rest = server.requests_to(CHAT_PATH)
    assert limited.status == 429 and [r.status for r in rest] == [200, 200]
    assert min(r.started for r in rest) - limited.finished >= 1.0 - 0.02


def test_cancelling_one_caller_leaves_the_shared_request_to_the_others(server, api_key):
    server.inject(Fault("slow", delay_s=0.5))
    client = make_client(server)

    async def main():
        async def impatient():
            return await asyncio.wait_for(client.complete(USER), 0.1)

        async def patient():
            await asyncio.sleep(0.02)
            return await client.complete(USER)

        results = await asyncio.gather(impatient(), patient(), return_exceptions=True)
        await client.aclose()
        return results

    gave_up, result = asyncio.run(main())
    assert isinstance(gave_up, TimeoutError)
    assert result.text.startswith("stand-in reply") and result.cached is False  # it got the paid answer
    assert (client.usage.requests, client.usage.prompt_tokens, client.usage.completion_tokens) == (1, 4, 3)
    assert len(server.requests_to(CHAT_PATH)) == 1


def test_cancelling_every_caller_cancels_the_shared_request(server, api_key):
    server.inject(Fault("slow", delay_s=0.5))
    client = make_client(server)

    async def main():
        calls = [asyncio.wait_for(client.complete(USER), 0.1) for _ in range(2)]
        results = await asyncio.gather(*calls, return_exceptions=True)
        # the shared task's done-callback drops its entry a loop turn or two after the cancellation lands
        for _ in range(50):
            await asyncio.sleep(0)
            if not client._state().in_flight:
                break
        left = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        in_flight = dict(client._state().in_flight)
        await client.aclose()
        return results, left, in_flight

    results, left, in_flight = asyncio.run(main())
    assert all(isinstance(r, TimeoutError) for r in results)
    assert left == [] and in_flight == {} and client.usage.requests == 0


@pytest.mark.parametrize("pasted", ["sk-proj-AbC123dEf456GhI789jKl012", "hf_AbCdEfGh1234567890IjKlMnOpQr"])
def test_a_key_pasted_into_api_key_env_is_not_echoed(server, monkeypatch, pasted):
    monkeypatch.delenv(pasted, raising=False)
    with pytest.raises(VisalignError) as caught:
        ChatClient(server.base_url, api_key_env=pasted)
    message = str(caught.value)
    assert message.startswith(f"api_key_env (a {len(pasted)}-character value that is not an environment variable")
    assert pasted not in message and pasted[:8] not in message
    assert "set api_key_env to its name" in message
