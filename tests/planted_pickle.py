"""Shared by the checkpoint-unpickling tests: a pickle that would run code, and a call's error seen after the fact."""

from __future__ import annotations

import pathlib
from collections.abc import Callable
from pathlib import Path


class TouchOnUnpickle:
    """Pickles as a call to ``Path.touch(marker)``: unpickling it with a full unpickler creates the marker."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


def error_of(call: Callable[[], object]) -> Exception | None:
    """What ``call()`` raised, or None: so a test can first assert that the planted marker was not created (old
    code fails there), then which error stopped the run."""
    try:
        call()
    except Exception as exc:
        return exc
    return None
