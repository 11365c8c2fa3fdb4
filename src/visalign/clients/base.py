"""Machinery shared by the HTTP clients: API key, connection pool, concurrency cap, rate limit, retries.

A request is retried on 408, 409, 429, 5xx (as the OpenAI SDK does), timeouts, connection errors, bodies
that do not decode and 200 answers whose body is not the JSON the API promises, with exponential backoff and
jitter; a ``Retry-After`` header (seconds or an HTTP date) sets the least wait, and on a 429 it also holds
back every other request of the client until it ends. ``timeout_s`` bounds each whole attempt, from sending the
request to the last byte of the answer, so a server that trickles its body cannot hold a request (and its
concurrency slot) past it. A body over ``max_response_bytes``, redirects, other 4xx answers, a request httpx
refuses to send and other httpx errors fail at once as :class:`ClientError`. Identical requests in flight at the
same time are sent once. The API key, stripped and checked when the client is built, lives only in the request
header: never in messages, logs, cache files or reprs.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import os
import random
import re
import time
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import httpx

from visalign.clients.cache import ResponseCache
from visalign.clients.errors import ClientError, ResponseFormatError, redact, safe_url
from visalign.clients.ratelimit import TokenBucket
from visalign.clients.usage import Usage
from visalign.errors import VisalignError

logger = logging.getLogger("visalign.clients")

T = TypeVar("T")

#: The most bytes (after content decoding) an API answer's body may hold. A chat completion is a few KB, and even
#: one with per-token logprobs for thousands of tokens a few MB; the cap only stops a broken or hostile server from
#: filling memory. :class:`~visalign.clients.images.ImageClient` raises it to fit its largest base64 image.
MAX_RESPONSE_BYTES = 32 * 1024 * 1024

#: Clients that opened connections in each event loop, so :func:`close_clients_in_loop` can close them.
_LIVE: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, weakref.WeakSet[ApiClient]] = (
    weakref.WeakKeyDictionary()
)


class BodyTooLarge(Exception):
    """A response body over a byte limit; the message says so without the URL (the caller adds it, redacted)."""


async def read_capped(response: httpx.Response, limit: int) -> bytes:
    """Read a streamed response's whole (decoded) body, refusing one over ``limit`` bytes.

    A ``Content-Length`` over the limit is refused before any byte is read; a body without one (chunked) or one
    that lies about its length is counted as it arrives and refused once past the limit, so at most ``limit``
    bytes are ever held. The decoded size is what is counted: a small gzip body cannot inflate past the limit.

    Args:
        response: a response opened with ``client.stream(...)`` and not read yet.
        limit: the most bytes the body may hold.

    Raises:
        BodyTooLarge: the body is over ``limit``.
    """
    declared = response.headers.get("Content-Length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(f"the body is {int(declared):,} bytes, over the {limit:,}-byte limit")
    chunks, total = [], 0
    async for chunk in response.aiter_bytes():
        total += len(chunk)
        if total > limit:
            raise BodyTooLarge(f"the body is over the {limit:,}-byte limit")
        chunks.append(chunk)
    return b"".join(chunks)


def is_retryable_status(status: int) -> bool:
    """Return True for an HTTP status a later attempt may get past: 408, 409, 429, 5xx (the OpenAI SDK's set)."""
    return status in (408, 409, 429) or status >= 500


#: What an environment variable name looks like.
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def describe_api_key_env(value: str) -> str:
    """Return how an ``api_key_env`` value may be shown in a message, without echoing a pasted key.

    A value is shown when it is a variable name by convention: letters, digits and ``_``, not starting with a
    digit, and either upper case (``OPENAI_API_KEY``) or without digits (``my_key``). Keys mix case and digits
    (``hf_AbC1...``) or carry ``-`` (``sk-...``), so anything else is described by its length only.

    Args:
        value: the configured ``api_key_env``.
    """
    if _ENV_NAME.fullmatch(value) and (value.upper() == value or not any(c.isdigit() for c in value)):
        return f"environment variable {value}"
    return (
        f"api_key_env (a {len(value)}-character value that is not an environment variable name, not shown: "
        "is it the key itself?)"
    )


def read_api_key(api_key_env: str, base_url: str) -> str:
    r"""Return the API key held in ``api_key_env``, without surrounding whitespace.

    A key read from a ``.env`` file saved with CRLF line endings, or a secret made from a file, often ends in
    ``\r`` or ``\n``; no key contains whitespace, so it is stripped. A key that still holds a character an HTTP
    header cannot carry (a control character, inner whitespace, a smart quote) is refused here, in one line that
    names the variable and never the key: sent as is, the header would fail in httpx with the key in the error.

    Args:
        api_key_env: the environment variable to read.
        base_url: the API root the key is for (named in the message when the variable is unset).

    Raises:
        VisalignError: the variable is unset or blank, or its value cannot go into an HTTP header.
    """
    key = os.environ.get(api_key_env, "").strip()
    if not key:
        raise VisalignError(
            f"{describe_api_key_env(api_key_env)} is not set; export your API key for "
            f"{safe_url(base_url)} in an environment variable and set api_key_env to its name "
            "(a local server without keys can use api_key_env: null)"
        )
    if not (key.isascii() and key.isprintable()) or any(c.isspace() for c in key):
        raise VisalignError(
            f"{describe_api_key_env(api_key_env)} holds characters an HTTP header cannot carry (a control character, "
            "a space or a non-ASCII character such as a smart quote); copy the key again as plain text"
        )
    return key


def parse_retry_after(value: str | None) -> float | None:
    """Return the wait a ``Retry-After`` header asks for, in seconds (None when absent or unreadable).

    Args:
        value: the header value: delta-seconds (``"2"``, ``"1.5"``) or an HTTP date.
    """
    if value is None or not value.strip():
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


@dataclass
class _SharedRequest:
    """One request in flight and how many callers still wait for it."""

    task: asyncio.Task[Any]
    waiters: int = 0
    claimed: bool = False  # the first caller to get the result counts it as paid; the others as shared


@dataclass
class _LoopState:
    """Objects bound to one event loop (asyncio primitives and pooled connections cannot cross loops)."""

    api: httpx.AsyncClient
    semaphore: asyncio.Semaphore
    downloads: httpx.AsyncClient | None = None
    in_flight: dict[str, _SharedRequest] = field(default_factory=dict)


class ApiClient:
    """Base of the OpenAI-compatible clients; holds everything but the request shapes.

    Args:
        base_url: the API root, e.g. ``https://api.openai.com/v1`` or a local ``http://127.0.0.1:8000/v1``.
        api_key_env: the environment variable holding the API key; None sends no key (local servers).
        concurrency: most requests in flight at once.
        requests_per_second: client-side rate limit; None for none.
        burst: how many requests the rate limiter lets through back to back.
        max_retries: retries after the first attempt.
        timeout_s: the most one attempt may take, in seconds: from sending the request to the last byte of the
            answer (a deadline hit is a timeout, retried like one). It also bounds each single network operation.
        cache_dir: directory of the content-addressed response cache; None disables caching.
        backoff_base_s: first retry waits about this long, doubling each retry (with jitter).
        backoff_max_s: the most one backoff waits (a longer Retry-After is still honoured).
        max_retry_after_s: the most a Retry-After header may make us wait.
        max_response_bytes: refuse (at once, no retry) an answer whose body is larger than this.
    """

    def __init__(
        self,
        base_url: str,
        *,
        api_key_env: str | None = "OPENAI_API_KEY",
        concurrency: int = 8,
        requests_per_second: float | None = None,
        burst: float = 1.0,
        max_retries: int = 5,
        timeout_s: float = 60.0,
        cache_dir: str | Path | None = None,
        backoff_base_s: float = 0.5,
        backoff_max_s: float = 30.0,
        max_retry_after_s: float = 120.0,
        max_response_bytes: int = MAX_RESPONSE_BYTES,
    ) -> None:
        if concurrency < 1:
            raise VisalignError(f"concurrency must be >= 1, got {concurrency}")
        if max_retries < 0:
            raise VisalignError(f"max_retries must be >= 0, got {max_retries}")
        if max_response_bytes < 1:
            raise VisalignError(f"max_response_bytes must be >= 1, got {max_response_bytes}")
        try:
            parsed = httpx.URL(base_url)
        except (httpx.InvalidURL, TypeError) as exc:
            raise VisalignError(f"base_url {base_url!r} is not a URL ({exc})") from None
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise VisalignError(f"base_url {safe_url(base_url)} must be an http(s) URL with a host")
        self.base_url = str(base_url).rstrip("/")
        self.api_key_env = api_key_env
        self._api_key: str | None = None
        if api_key_env:
            self._api_key = read_api_key(api_key_env, self.base_url)
        self.concurrency = concurrency
        self.max_retries = max_retries
        self.timeout_s = timeout_s
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self.max_retry_after_s = max_retry_after_s
        self.max_response_bytes = max_response_bytes
        self.limiter = TokenBucket(requests_per_second, burst) if requests_per_second else None
        self._resume_at = 0.0  # time.monotonic() before which no request is sent (a 429's Retry-After)
        self.cache = ResponseCache(cache_dir) if cache_dir is not None else None
        self.usage = Usage()
        self._states: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopState] = (
            weakref.WeakKeyDictionary()
        )

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(base_url={safe_url(self.base_url)!r}, api_key_env={self.api_key_env!r}, "
            f"concurrency={self.concurrency})"
        )

    # -------------------------------------------------------------------------------------- event-loop state
    def _state(self) -> _LoopState:
        loop = asyncio.get_running_loop()
        state = self._states.get(loop)
        if state is None:
            headers = {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}
            api = httpx.AsyncClient(
                headers=headers,
                timeout=httpx.Timeout(self.timeout_s),
                limits=httpx.Limits(
                    max_connections=self.concurrency, max_keepalive_connections=self.concurrency
                ),
            )
            state = _LoopState(api=api, semaphore=asyncio.Semaphore(self.concurrency))
            self._states[loop] = state
            _LIVE.setdefault(loop, weakref.WeakSet()).add(self)
        return state

    def _downloads(self) -> httpx.AsyncClient:
        """A second pool without the API key, for fetching result URLs from third-party hosts."""
        state = self._state()
        if state.downloads is None:
            state.downloads = httpx.AsyncClient(timeout=httpx.Timeout(self.timeout_s), follow_redirects=True)
        return state.downloads

    async def aclose(self) -> None:
        """Close the connections this client opened in the running event loop."""
        state = self._states.pop(asyncio.get_running_loop(), None)
        if state is not None:
            await state.api.aclose()
            if state.downloads is not None:
                await state.downloads.aclose()

    async def __aenter__(self) -> ApiClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # -------------------------------------------------------------------------------------- requests
    def endpoint(self, path: str) -> str:
        """Return the full URL of an API path such as ``/chat/completions``."""
        return f"{self.base_url}/{path.lstrip('/')}"

    def _timed_out(self, started: float) -> str:
        """Describe an attempt that ran out of time (httpx's per-operation timeout or the whole-attempt deadline)."""
        return f"timed out after {time.monotonic() - started:.1f} s (timeout_s={self.timeout_s:g})"

    async def _send_once(self, api: httpx.AsyncClient, url: str, body: dict[str, Any]) -> tuple[httpx.Response, bytes]:
        """POST ``body`` once and read the whole answer; return the response (headers, status) and its body.

        httpx's timeout applies to each network operation, so a server sending a byte a second never trips it;
        the deadline here covers the send and the whole body read, and the body is read with the size cap.

        Raises:
            TimeoutError: the attempt took more than ``timeout_s``.
            BodyTooLarge: the body is over ``max_response_bytes``.
            httpx.HTTPError: as ``httpx.AsyncClient.stream`` raises it.
        """
        async with asyncio.timeout(self.timeout_s), api.stream("POST", url, json=body) as response:
            content = await read_capped(response, self.max_response_bytes)
        return response, content

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        # cap the exponent: 2**1024 overflows a float, and max_retries may be set that high
        delay = min(self.backoff_max_s, self.backoff_base_s * 2 ** min(attempt, 60)) * random.uniform(0.5, 1.0)
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.max_retry_after_s))
        return delay

    async def _shared(self, key: str, compute: Callable[[], Awaitable[T]]) -> tuple[T, bool]:
        """Run ``compute`` once per ``key`` among concurrent callers; returns (value, was_shared).

        The request runs in its own task and each caller awaits it through ``asyncio.shield``, so a caller
        that is cancelled (a timeout, a stopped stage) leaves the others' result intact. The task is cancelled
        only when its last caller is: nobody is left to use the answer, and it would hold a connection.
        """
        state = self._state()
        entry = state.in_flight.get(key)
        if entry is None:
            entry = _SharedRequest(asyncio.ensure_future(compute()))
            state.in_flight[key] = entry
            entry.task.add_done_callback(lambda _: state.in_flight.pop(key, None))
        entry.waiters += 1
        try:
            value = await asyncio.shield(entry.task)
        finally:
            entry.waiters -= 1
            if entry.waiters == 0 and not entry.task.done():
                entry.task.cancel()
        shared, entry.claimed = entry.claimed, True
        return value, shared

    async def _post_json(self, path: str, body: dict[str, Any], parse: Callable[[dict[str, Any]], T]) -> T:
        """POST ``body`` as JSON with retries; return ``parse(response JSON)``.

        ``parse`` raises :class:`ResponseFormatError` (or ``ValueError``/``KeyError``/``TypeError``) for a
        body that lacks what the API promises; that attempt is retried like a 5xx.

        Raises:
            ClientError: a non-retryable status, or retries exhausted; names the URL and the last error.
        """
        url = self.endpoint(path)
        shown = safe_url(url)
        last_error, last_status = "no attempt made", None
        for attempt in range(self.max_retries + 1):
            retry_after: float | None = None
            state = self._state()
            async with state.semaphore:
                if self.limiter is not None:
                    await self.limiter.acquire()
                while (held := self._resume_at - time.monotonic()) > 0:  # a 429 asked every request to wait
                    await asyncio.sleep(held)
                self.usage.attempts += 1
                started = time.monotonic()
                try:
                    response, content = await self._send_once(state.api, url, body)
                except (TimeoutError, httpx.TimeoutException):  # the whole-attempt deadline, or one operation's
                    last_error = self._timed_out(started)
                except BodyTooLarge as exc:  # a larger cap is a setting, not something a retry gets past
                    self.usage.failures += 1
                    # no status: a body that never arrived whole counts against the endpoint, as a timeout does
                    raise ClientError(
                        f"POST {shown}: {exc} (max_response_bytes); refused, check that base_url is the API "
                        "or raise max_response_bytes",
                        url=shown,
                    ) from None
                except httpx.UnsupportedProtocol as exc:
                    self.usage.failures += 1
                    raise ClientError(f"POST {shown}: unsupported URL ({exc})", url=shown) from None
                except httpx.LocalProtocolError as exc:  # refused before sending (e.g. a bad header): no retry helps
                    self.usage.failures += 1
                    # the httpx text quotes the refused header, which may hold the key: only its type is shown
                    raise ClientError(
                        f"POST {shown}: the request could not be sent ({type(exc).__name__}: a header or the body is "
                        "not valid HTTP); check api_key_env's key and the request parameters",
                        url=shown,
                    ) from None
                except httpx.TransportError as exc:
                    last_error = (
                        f"connection failed ({type(exc).__name__}: {redact(str(exc), self._api_key)})"
                    )
                except httpx.DecodingError as exc:  # e.g. a gzip body cut short: another attempt may get it whole
                    last_error = f"the response body does not decode ({redact(str(exc), self._api_key)})"
                except (httpx.HTTPError, httpx.StreamError) as exc:  # nothing a retry can fix
                    self.usage.failures += 1
                    raise ClientError(
                        f"POST {shown}: {type(exc).__name__} ({redact(str(exc), self._api_key)}); check base_url "
                        "and any proxy between here and the server",
                        url=shown,
                    ) from None
                else:
                    last_status = response.status_code
                    if is_retryable_status(last_status):
                        last_error = f"HTTP {last_status}"
                        if last_status == 429:  # the body tells a spent quota from a rate limit
                            last_error += f" ({self._error_detail(content) or 'no detail'})"
                        retry_after = parse_retry_after(response.headers.get("Retry-After"))
                        if last_status == 429 and retry_after:
                            self._hold_back(min(retry_after, self.max_retry_after_s))
                    elif 300 <= last_status < 400:
                        self.usage.failures += 1
                        raise self._redirect_error(shown, path, response)
                    elif last_status >= 400:
                        self.usage.failures += 1
                        raise self._status_error(shown, response, content)
                    else:
                        try:
                            data = json.loads(content)
                            if not isinstance(data, dict):
                                raise ResponseFormatError("body is JSON but not an object")
                            result = parse(data)
                        except (ValueError, KeyError, TypeError, IndexError) as exc:
                            last_error = f"invalid response body ({type(exc).__name__})"
                        else:
                            self.usage.requests += 1
                            return result
            if attempt < self.max_retries:
                delay = self._backoff(attempt, retry_after)
                self.usage.retries += 1
                logger.info(
                    "POST %s: %s; retry %d/%d in %.2f s",
                    shown,
                    last_error,
                    attempt + 1,
                    self.max_retries,
                    delay,
                )
                await asyncio.sleep(delay)
        self.usage.failures += 1
        if last_error.startswith("HTTP 429"):  # the last attempt too was refused for the rate limit or quota
            hint = (
                "the quota or rate limit of this API key is exhausted; check the account's quota and billing, "
                "or lower concurrency/requests_per_second"
            )
        else:
            hint = "check that the endpoint is up and base_url is right, or raise max_retries/timeout_s"
        raise ClientError(
            f"POST {shown} failed after {self.max_retries + 1} attempts, last: {last_error}; {hint}",
            url=shown,
            status=last_status,
            timed_out=last_error.startswith("timed out"),
        )

    def _hold_back(self, seconds: float) -> None:
        """Send no request for ``seconds``: requests queued in the rate limiter or at the send are held too."""
        self._resume_at = max(self._resume_at, time.monotonic() + seconds)
        if self.limiter is not None:
            self.limiter.pause(seconds)  # also re-spaces its queue, so it does not burst when the pause ends

    def _redirect_error(self, shown: str, path: str, response: httpx.Response) -> ClientError:
        """Build the one-line error for a 3xx answer, naming where the server points.

        API requests never follow redirects: a POST would turn into a GET, and the key would go elsewhere.
        """
        status, location = response.status_code, response.headers.get("Location")
        if not location:
            return ClientError(
                f"POST {shown}: HTTP {status} redirect without a Location; check base_url", url=shown, status=status
            )
        try:
            target = safe_url(response.url.join(location))
        except (httpx.InvalidURL, TypeError, ValueError):
            target = "<invalid url>"
        suffix = "/" + path.lstrip("/")
        root = target.removesuffix(suffix) if target.endswith(suffix) else "that address"
        return ClientError(
            f"POST {shown}: HTTP {status}, the server redirected to {target}; set base_url to {root}",
            url=shown,
            status=status,
        )

    def _error_detail(self, content: bytes) -> str:
        """Return the error message of an answer's body on one line, redacted and cut to 200 characters."""
        try:
            detail = json.loads(content).get("error", {}).get("message", "")
        except (ValueError, AttributeError):
            detail = content.decode("utf-8", "replace")
        # redact before cutting: a cut inside the key would leave a prefix that no longer matches it
        return redact(" ".join(str(detail).split()), self._api_key)[:200]

    def _status_error(self, shown: str, response: httpx.Response, content: bytes) -> ClientError:
        """Build the one-line error for a non-retryable 4xx answer whose body is ``content``."""
        detail = self._error_detail(content)
        status = response.status_code
        if status in (401, 403):
            hint = (
                f"check the API key in ${self.api_key_env}" if self.api_key_env else "this server needs a key"
            )
        elif status == 404:
            hint = "check base_url and the model name"
        else:
            hint = "check the request parameters"
        return ClientError(
            f"POST {shown}: HTTP {status} ({detail or 'no detail'}); {hint}", url=shown, status=status
        )


async def close_clients_in_loop() -> None:
    """Close the connections of every client used in the running event loop (end of :func:`run_all`)."""
    for client in list(_LIVE.pop(asyncio.get_running_loop(), ())):
        await client.aclose()
