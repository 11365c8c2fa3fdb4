"""The LLaVA / ShareGPT visual Q&A file format's one convention shared by its writers and its reader.

``<image>`` in a turn's text marks where one of the record's images goes. The writers (``vsfa data``'s export,
``baseline refusal-data``) put one marker per image; the reader (``vsfa train``) and other trainers (LLaMA-Factory,
ms-swift) match each marker to an image and refuse a record whose markers outnumber its images.
"""

from __future__ import annotations

IMAGE_MARKER = "<image>"


def holds_image_marker(*texts: str | None) -> bool:
    """True when any of ``texts`` types ``<image>`` itself: written into a record, it would claim one more image."""
    return any(IMAGE_MARKER in (text or "") for text in texts)
