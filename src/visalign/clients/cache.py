"""A content-addressed response cache on disk, so a repeated or resumed run never pays for a request twice."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from visalign.runs import atomic_write_bytes, atomic_write_json, json_text

logger = logging.getLogger(__name__)


def request_key(url: str, body: dict[str, Any]) -> str:
    """Return the cache key of a request: sha256 of the endpoint URL and the canonical JSON body.

    The API key travels in a header and is never part of the key.
    """
    canonical = json_text(body, sort_keys=True, separators=(",", ":"))  # a lone surrogate (a cut reply) escaped
    return hashlib.sha256(f"{url}\n{canonical}".encode()).hexdigest()


class ResponseCache:
    """Files ``<dir>/<key[:2]>/<key>.json`` (and ``.bin`` for binary payloads), written atomically.

    Args:
        directory: where the cache lives; created on first write.
    """

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)

    def __repr__(self) -> str:
        return f"ResponseCache({str(self.directory)!r})"

    def _path(self, key: str, suffix: str) -> Path:
        return self.directory / key[:2] / f"{key}{suffix}"

    def get_json(self, key: str) -> dict[str, Any] | None:
        """Return the cached JSON for ``key``, or None (a corrupt entry counts as a miss)."""
        path = self._path(key, ".json")
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            logger.warning("%s: ignoring unreadable cache entry (%s)", path, exc)
            return None

    def put_json(self, key: str, value: dict[str, Any]) -> None:
        """Store JSON for ``key``."""
        atomic_write_json(self._path(key, ".json"), value, indent=None)

    def get_bytes(self, key: str) -> bytes | None:
        """Return cached bytes for ``key``, or None."""
        try:
            return self._path(key, ".bin").read_bytes()
        except FileNotFoundError:
            return None

    def put_bytes(self, key: str, data: bytes) -> None:
        """Store bytes for ``key``."""
        atomic_write_bytes(self._path(key, ".bin"), data)
