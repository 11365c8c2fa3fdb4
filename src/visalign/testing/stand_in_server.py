"""A stand-in OpenAI-compatible HTTP server on loopback, with injectable faults, for tests and benchmarks.

Endpoints (under ``/v1``):

- ``POST /v1/chat/completions``: a deterministic reply from a pluggable ``reply(request_json) -> str``; image
  parts are accepted and counted.
- ``POST /v1/images/generations``: a deterministic PNG per (prompt, seed, size), returned as ``b64_json``
  or as a URL served by this server at ``GET /files/<name>.png``.
- ``GET /stats``: request counts, 429s sent and the most requests in flight at once (for benchmarks).

Faults are either queued (``server.inject(Fault("429", retry_after="1"))`` applies to the next matching
request) or global (``latency_s``, a server-side ``rate_limit_rps``). Every request is recorded (path,
sha256 of the body, status) so tests can assert that completed work was never requested twice.

Run it standalone with ``python -m visalign.testing.stand_in_server --port 8000``.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import json
import re
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

from PIL import Image, ImageDraw

FaultKind = Literal[
    "408",
    "409",
    "429",
    "500",
    "503",
    "timeout",
    "invalid_json",
    "truncated_json",
    "slow",
    "corrupt_image",
    "wrong_content_type",
    "redirect",
    "bad_gzip",
    "redirect_loop",
    "trickle",
]
ReplyFunction = Callable[[dict[str, Any]], str]

CHAT_PATH = "/v1/chat/completions"
IMAGES_PATH = "/v1/images/generations"
_MAX_IMAGE_SIDE = 4096
_APPROX_TOKENS_PER_IMAGE = 85
#: How many pieces a ``trickle`` fault cuts its answer into (a pause of ``delay_s`` follows each).
TRICKLE_PIECES = 10


@dataclass(frozen=True)
class Fault:
    """One injected misbehaviour.

    Args:
        kind: ``429`` (with ``retry_after``), ``408``/``409``/``500``/``503``, ``timeout`` (sleep ``delay_s``
            then drop the connection), ``invalid_json``, ``truncated_json``, ``slow`` (sleep ``delay_s`` then
            answer normally), ``corrupt_image`` (image bytes that are not an image), ``wrong_content_type`` (an
            image URL served as ``text/html``), ``redirect`` (a 301 to ``location``), ``bad_gzip`` (a 200 whose
            body claims gzip encoding but is not gzip), ``redirect_loop`` (an image URL that redirects to itself),
            ``trickle`` (the normal answer, valid JSON, sent chunked without a ``Content-Length`` in
            :data:`TRICKLE_PIECES` pieces, each followed by a pause of ``delay_s``: a slow or hostile server that
            no per-read timeout catches).
        retry_after: the ``Retry-After`` value sent with a 429 (seconds or an HTTP date); None omits it.
        delay_s: the sleep for ``timeout`` and ``slow``; the pause after each piece of a ``trickle``.
        path: apply only to requests on this path (e.g. ``/v1/chat/completions``); None matches any POST.
        location: the ``Location`` of a ``redirect``; None: the same path under ``/moved`` on this server.
    """

    kind: FaultKind
    retry_after: str | None = "1"
    delay_s: float = 2.0
    path: str | None = None
    location: str | None = None


@dataclass(frozen=True)
class RecordedRequest:
    """What the server saw: one HTTP request and the status it answered with."""

    method: str
    path: str
    body_sha256: str
    body: dict[str, Any] | None
    authorization: str | None
    status: int
    fault: str | None
    started: float
    finished: float


def default_reply(request: dict[str, Any]) -> str:
    """Return a deterministic reply naming a short hash of the request's messages."""
    messages = json.dumps(request.get("messages", []), sort_keys=True)
    return f"stand-in reply {hashlib.sha256(messages.encode()).hexdigest()[:12]}"


def render_png(prompt: str, seed: int | None, size: str) -> bytes:
    """Draw a deterministic PNG for ``(prompt, seed, size)``: a hash-coloured background with blocks."""
    match = re.fullmatch(r"(\d+)x(\d+)", size)
    width, height = (int(match.group(1)), int(match.group(2))) if match else (1024, 1024)
    width, height = min(max(width, 8), _MAX_IMAGE_SIDE), min(max(height, 8), _MAX_IMAGE_SIDE)
    digest = hashlib.sha256(f"{prompt}\x00{seed}\x00{size}".encode()).digest()
    image = Image.new("RGB", (width, height), tuple(digest[:3]))
    draw = ImageDraw.Draw(image)
    for i in range(4):
        d = digest[3 + 6 * i : 9 + 6 * i]
        x0, y0 = d[0] * width // 256, d[1] * height // 256
        x1, y1 = x0 + (d[2] + 16) * width // 512, y0 + (d[3] + 16) * height // 512
        draw.rectangle((x0, y0, x1, y1), fill=(d[4], d[5], d[0] ^ d[1]))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _count_prompt_tokens(messages: list[Any]) -> int:
    """Approximate prompt tokens: words of every text part plus a fixed amount per image part."""
    total = 0
    for message in messages:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            total += len(content.split())
        elif isinstance(content, list):
            for part in content:
                if not isinstance(part, dict):
                    continue
                if part.get("type") == "text":
                    total += len(str(part.get("text", "")).split())
                elif part.get("type") == "image_url":
                    total += _APPROX_TOKENS_PER_IMAGE
    return total


class _TokenBucket:
    """Thread-safe server-side limiter: ``rate`` requests per second with a burst of ``capacity``."""

    def __init__(self, rate: float, capacity: float) -> None:
        self.rate, self.capacity = rate, capacity
        self.tokens, self.updated = capacity, time.monotonic()
        self.lock = threading.Lock()

    def try_take(self) -> bool:
        with self.lock:
            now = time.monotonic()
            self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
            self.updated = now
            if self.tokens >= 1:
                self.tokens -= 1
                return True
            return False


class StandInServer:
    """An OpenAI-compatible HTTP server on ``127.0.0.1`` run in a background thread.

    Use as a context manager: ``with StandInServer() as server: ChatClient(server.base_url, ...)``.

    Args:
        reply: builds the chat reply text from the request JSON (default: :func:`default_reply`).
        latency_s: sleep before every POST reply (simulates model latency).
        rate_limit_rps: answer 429 (``Retry-After: 1``) when POSTs exceed this rate; None for no limit.
        rate_limit_burst: bucket size of that limit (default: one second's worth).
        port: the port to bind; 0 picks a free one.
        host: the address to bind.
        faults: faults queued from the start (see :meth:`inject`).
    """

    def __init__(
        self,
        reply: ReplyFunction | None = None,
        *,
        latency_s: float = 0.0,
        rate_limit_rps: float | None = None,
        rate_limit_burst: float | None = None,
        port: int = 0,
        host: str = "127.0.0.1",
        faults: list[Fault] | None = None,
    ) -> None:
        self.reply = reply or default_reply
        self.latency_s = latency_s
        self._limiter = (
            _TokenBucket(rate_limit_rps, rate_limit_burst or max(1.0, rate_limit_rps)) if rate_limit_rps else None
        )
        self._faults: list[Fault] = list(faults or [])
        self._files: dict[str, tuple[bytes, str]] = {}
        self._lock = threading.Lock()
        self._in_flight = 0
        self.max_in_flight = 0
        self.requests: list[RecordedRequest] = []
        self._httpd = ThreadingHTTPServer((host, port), _make_handler(self))
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------------------------------ lifecycle
    @property
    def port(self) -> int:
        """The bound port."""
        return self._httpd.server_address[1]

    @property
    def root_url(self) -> str:
        """``http://127.0.0.1:<port>`` (no ``/v1``)."""
        return f"http://{self._httpd.server_address[0]}:{self.port}"

    @property
    def base_url(self) -> str:
        """The OpenAI-style base URL clients take: ``http://127.0.0.1:<port>/v1``."""
        return f"{self.root_url}/v1"

    def start(self) -> StandInServer:
        """Serve in a daemon thread; returns self."""
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="stand-in-server", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> StandInServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -------------------------------------------------------------------------------------- faults, records
    def inject(self, *faults: Fault, times: int = 1) -> None:
        """Queue faults: each applies once, to the next POST matching its ``path``, in order."""
        with self._lock:
            self._faults.extend(list(faults) * times)

    def clear_faults(self) -> None:
        """Drop every queued fault."""
        with self._lock:
            self._faults.clear()

    def _next_fault(self, path: str) -> Fault | None:
        with self._lock:
            for index, fault in enumerate(self._faults):
                if fault.path is None or fault.path == path:
                    return self._faults.pop(index)
        return None

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(request)

    def requests_to(self, path: str) -> list[RecordedRequest]:
        """Return the recorded requests on ``path`` (e.g. ``CHAT_PATH``)."""
        with self._lock:
            return [r for r in self.requests if r.path == path]

    def body_counts(self, path: str | None = None) -> Counter[str]:
        """Count requests per body hash (``> 1`` means the same request was sent more than once)."""
        with self._lock:
            return Counter(r.body_sha256 for r in self.requests if path is None or r.path == path)

    def stats(self) -> dict[str, Any]:
        """Return request totals per path and status, and the most requests in flight at once."""
        with self._lock:
            return {
                "requests": len(self.requests),
                "by_path": dict(Counter(r.path for r in self.requests)),
                "by_status": {str(k): v for k, v in Counter(r.status for r in self.requests).items()},
                "max_in_flight": self.max_in_flight,
            }

    def _enter(self) -> None:
        with self._lock:
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)

    def _leave(self) -> None:
        with self._lock:
            self._in_flight -= 1

    def _allow_by_rate(self) -> bool:
        return self._limiter is None or self._limiter.try_take()

    # ------------------------------------------------------------------------------------------ endpoints
    def chat_completion(self, request: dict[str, Any]) -> dict[str, Any]:
        """Build the chat completions response for ``request``."""
        messages = request.get("messages")
        if not isinstance(messages, list) or not messages:
            raise RejectedRequest("'messages' must be a non-empty list")
        text = self.reply(request)
        digest = hashlib.sha256(json.dumps(request, sort_keys=True).encode()).hexdigest()
        prompt_tokens = _count_prompt_tokens(messages)
        completion_tokens = len(text.split())
        return {
            "id": f"chatcmpl-{digest[:24]}",
            "object": "chat.completion",
            "created": 0,
            "model": request.get("model", "stand-in"),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }

    def image_generation(self, request: dict[str, Any], fault: Fault | None) -> dict[str, Any]:
        """Build the images/generations response, storing URL files for ``GET /files/<name>.png``."""
        prompt = request.get("prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            raise RejectedRequest("'prompt' must be a non-empty string")
        seed, size = request.get("seed"), str(request.get("size", "1024x1024"))
        png = render_png(prompt, seed, size)
        content_type = "image/png"
        if fault is not None and fault.kind == "corrupt_image":
            png = b"\x89PNG\r\n\x1a\n" + b"this is not really an image" * 8
        if fault is not None and fault.kind == "wrong_content_type":
            content_type = "text/html"
        item: dict[str, Any] = {"revised_prompt": f"{prompt} (stand-in)"}
        if fault is not None and fault.kind == "redirect_loop":
            item["url"] = f"{self.root_url}/loop/{hashlib.sha256(png).hexdigest()[:24]}.png"
        elif request.get("response_format", "url") == "b64_json":
            item["b64_json"] = base64.b64encode(png).decode()
        else:
            name = hashlib.sha256(png + content_type.encode()).hexdigest()[:24]
            with self._lock:
                self._files[name] = (png, content_type)
            item["url"] = f"{self.root_url}/files/{name}.png?X-Signature=stand-in-presigned"
        return {"created": 0, "data": [item]}

    def file(self, name: str) -> tuple[bytes, str] | None:
        """Return ``(bytes, content type)`` of a served file, or None."""
        with self._lock:
            return self._files.get(name)


class RejectedRequest(Exception):
    """A 400 answer with this message; a ``reply`` function raises it to act as a provider's content filter."""


def _make_handler(server: StandInServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as real APIs
        disable_nagle_algorithm = True  # headers and body go out in two writes; avoid the 40 ms delayed-ACK stall
        server_version = "visalign-stand-in/1"

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
            """Stay quiet: tests read the records, not stderr."""

        # Each request is recorded (and leaves the in-flight count) *before* its reply is written, so a client
        # that has its answer always finds the request in ``server.requests``.
        def _begin(self, method: str, path: str) -> None:
            self._method, self._path, self._started = method, path, time.monotonic()
            self._body_hash, self._body, self._fault = hashlib.sha256(b"").hexdigest(), None, None
            self._done = False
            if method == "POST":
                server._enter()

        def _finish(self, status: int) -> None:
            if self._done:
                return
            self._done = True
            if self._method == "POST":
                server._leave()
            server._record(
                RecordedRequest(
                    method=self._method,
                    path=self._path,
                    body_sha256=self._body_hash,
                    body=self._body,
                    authorization=self.headers.get("Authorization"),
                    status=status,
                    fault=self._fault,
                    started=self._started,
                    finished=time.monotonic(),
                )
            )

        def _send(self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None):
            self._finish(status)
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            try:
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True

        def _trickle(self, body: bytes, pause_s: float) -> None:
            """Answer 200 with ``body`` in chunked pieces, pausing ``pause_s`` after each."""
            self._finish(200)
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            step = max(1, -(-len(body) // TRICKLE_PIECES))
            try:
                for start in range(0, len(body), step):
                    piece = body[start : start + step]
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                    time.sleep(pause_s)
                self.wfile.write(b"0\r\n\r\n")
            except (BrokenPipeError, ConnectionResetError):  # the client gave up waiting
                self.close_connection = True

        def _send_json(self, status: int, obj: Any, headers: dict[str, str] | None = None) -> None:
            self._send(status, json.dumps(obj).encode(), "application/json", headers)

        def _error(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
            error = {"error": {"message": message, "type": "stand_in", "code": status}}
            self._send_json(status, error, headers)

        def do_GET(self) -> None:  # noqa: N802 - stdlib naming
            path = self.path.split("?", 1)[0]
            self._begin("GET", path)
            if path == "/stats":
                self._send_json(200, server.stats())
            elif path.startswith("/loop/"):
                self._send(302, b"", "text/plain", {"Location": path})
            elif (match := re.fullmatch(r"/files/([0-9a-f]+)\.png", path)) and server.file(match.group(1)):
                data, content_type = server.file(match.group(1))
                self._send(200, data, content_type)
            else:
                self._error(404, f"no such path {path}")

        def do_POST(self) -> None:  # noqa: N802 - stdlib naming
            self._begin("POST", self.path)
            try:
                self._handle_post()
            finally:
                self._finish(0)  # no reply was written (timeout fault or a dropped connection)

        def _handle_post(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self._body_hash = hashlib.sha256(raw).hexdigest()
            try:
                self._body = body = json.loads(raw)
            except ValueError:
                self._error(400, "request body is not JSON")
                return
            if not server._allow_by_rate():
                self._fault = "rate_limit"
                self._error(429, "rate limit exceeded", {"Retry-After": "1"})
                return
            if server.latency_s:
                time.sleep(server.latency_s)
            fault = server._next_fault(self.path)
            self._fault = kind = fault.kind if fault else None
            if kind == "429":
                headers = {"Retry-After": fault.retry_after} if fault.retry_after is not None else {}
                self._error(429, "injected rate limit", headers)
                return
            if kind in ("408", "409", "500", "503"):
                self._error(int(kind), "injected server error")
                return
            if kind == "redirect":
                location = fault.location or f"{server.root_url}/moved{self.path}"
                self._error(301, "moved", {"Location": location})
                return
            if kind in ("timeout", "slow"):
                time.sleep(fault.delay_s)
                if kind == "timeout":
                    self.close_connection = True
                    return
            try:
                if self.path == CHAT_PATH:
                    payload = server.chat_completion(body)
                elif self.path == IMAGES_PATH:
                    payload = server.image_generation(body, fault)
                else:
                    self._error(404, f"no such endpoint {self.path}")
                    return
            except RejectedRequest as exc:
                self._error(400, str(exc))
                return
            data = json.dumps(payload).encode()
            if kind == "invalid_json":
                data = b"<html>upstream gateway hiccup</html>"
            elif kind == "truncated_json":
                data = data[: len(data) // 2]
            elif kind == "bad_gzip":
                self._send(200, b"this is not gzip", "application/json", {"Content-Encoding": "gzip"})
                return
            elif kind == "trickle":
                self._trickle(data, fault.delay_s)
                return
            self._send(200, data, "application/json")

    return Handler


def main(argv: list[str] | None = None) -> None:
    """Run the stand-in server in the foreground until interrupted."""
    parser = argparse.ArgumentParser(description="Stand-in OpenAI-compatible server for visalign tests.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (printed on start)")
    parser.add_argument("--latency-s", type=float, default=0.0, help="sleep before every POST reply")
    parser.add_argument("--rate-limit-rps", type=float, default=None, help="answer 429 above this rate")
    parser.add_argument("--rate-limit-burst", type=float, default=None)
    args = parser.parse_args(argv)
    server = StandInServer(
        latency_s=args.latency_s,
        rate_limit_rps=args.rate_limit_rps,
        rate_limit_burst=args.rate_limit_burst,
        port=args.port,
        host=args.host,
    )
    print(f"stand-in server listening on {server.base_url}", flush=True)
    try:
        server._httpd.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server._httpd.server_close()


if __name__ == "__main__":
    main()
