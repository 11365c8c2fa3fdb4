"""Errors raised by the HTTP clients, and helpers that keep secrets out of their messages."""

from __future__ import annotations

import json

import httpx

from visalign.errors import VisalignError


class ClientError(VisalignError):
    """A request failed for good: retries exhausted, endpoint unreachable, or a non-retryable HTTP status.

    The message is one line naming the URL (without credentials or query string) and what to do.

    Args:
        message: the one-line explanation.
        url: the endpoint, already stripped of secrets.
        status: the last HTTP status seen, if any.
        timed_out: the last attempt ran out of time (a server that is slow, or one that hangs).
    """

    def __init__(
        self, message: str, *, url: str | None = None, status: int | None = None, timed_out: bool = False
    ) -> None:
        super().__init__(message)
        self.url = url
        self.status = status
        self.timed_out = timed_out


class InvalidImageError(ClientError):
    """An image backend returned bytes that are not a usable image (corrupt, wrong type, too large)."""


class ResponseFormatError(ValueError):
    """A 200 response whose body is not what the API promises (invalid JSON, missing fields); retried."""


def safe_url(url: str | httpx.URL) -> str:
    """Return ``url`` without user info, query string or fragment (where signatures and tokens live)."""
    try:
        parsed = httpx.URL(str(url))
    except (httpx.InvalidURL, TypeError, ValueError):
        return "<invalid url>"
    port = f":{parsed.port}" if parsed.port else ""
    return f"{parsed.scheme}://{parsed.host}{port}{parsed.path}"


def _forms(secret: str) -> set[str]:
    r"""The ways ``secret`` may appear in a message: as is, stripped, and escaped as a str, bytes or JSON repr.

    httpx and h11 show a refused header as a bytes repr (``b'Bearer sk-...\r'``), where a control character
    becomes a backslash escape that the plain key does not match.
    """
    forms = {secret, secret.strip()}
    for form in list(forms):
        forms |= {repr(form)[1:-1], form.encode("unicode_escape").decode("ascii"), json.dumps(form)[1:-1]}
        forms.add(repr(form.encode("utf-8", "backslashreplace"))[2:-1])
    return {form for form in forms if form}


def redact(text: str, *secrets: str | None) -> str:
    """Replace every occurrence of each non-empty secret in ``text`` with ``***``, escaped forms included.

    Args:
        text: the message to clean.
        secrets: the values to remove (None and empty ones are skipped).
    """
    for secret in secrets:
        if secret:
            for form in sorted(_forms(secret), key=len, reverse=True):  # longest first: a key inside its repr
                text = text.replace(form, "***")
    return text
