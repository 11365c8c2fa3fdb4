"""Loading images from disk safely: one clear error per bad file, never a silent partial image."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from visalign.errors import VisalignError

#: Largest image accepted, in pixels. Pillow's own bomb check is a warning up to 2x its limit; we refuse.
MAX_IMAGE_PIXELS = 64_000_000


def load_image(path: str | Path, *, max_pixels: int = MAX_IMAGE_PIXELS) -> Image.Image:
    """Open an image file fully and return it as RGB.

    Args:
        path: the image file.
        max_pixels: refuse images with more pixels than this (decompression bombs).

    Raises:
        VisalignError: the file is missing, not an image, truncated or too large; the message names the file.
    """
    path = Path(path)
    if not path.is_file():
        raise VisalignError(f"{path}: image file not found; check the path")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                width, height = image.size
                if width * height > max_pixels:
                    raise VisalignError(
                        f"{path}: image is {width}x{height} = {width * height:,} pixels, over the limit of "
                        f"{max_pixels:,} (possible decompression bomb); resize it or raise the limit"
                    )
                image.load()
                return image.convert("RGB")
    except VisalignError:
        raise
    except UnidentifiedImageError:
        raise VisalignError(f"{path}: not an image file Pillow can read; pass a PNG, JPEG or WebP") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise VisalignError(f"{path}: image too large ({exc}); possible decompression bomb") from None
    except OSError as exc:
        raise VisalignError(f"{path}: unreadable or truncated image ({exc}); re-export or replace it") from None


def png_bytes(image: Image.Image) -> bytes:
    """``image`` encoded as PNG (for content-addressed storage and for image parts of API requests)."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
