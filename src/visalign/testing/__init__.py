"""Test helpers the project owns: a stand-in OpenAI-compatible server on loopback with injectable faults.

Names are imported lazily so that ``python -m visalign.testing.stand_in_server`` runs the module only once.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "CHAT_PATH",
    "IMAGES_PATH",
    "Fault",
    "RecordedRequest",
    "RejectedRequest",
    "StandInServer",
    "default_reply",
    "render_png",
]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module("visalign.testing.stand_in_server"), name)
    raise AttributeError(f"module 'visalign.testing' has no attribute {name!r}")
