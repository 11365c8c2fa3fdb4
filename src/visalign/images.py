"""Loading images from disk safely: one clear error per bad file, never a silent partial image."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from visalign.errors import VisalignError

#: Largest image accepted, in pixels. Pillow's own bomb check is a warning up to 2x its limit; we refuse.
MAX_IMAGE_PIXELS = 64_000_000


def to_rgb(image: Image.Image) -> Image.Image:
    """Return ``image`` as 8-bit RGB, as a viewer shows it.

    Transparent pixels are laid on white (a plain ``convert("RGB")`` drops the alpha and shows the hidden
    colour, usually black, so black text on a transparent background vanishes), and 16- or 32-bit greyscale is
    scaled to 8 bits (``convert`` clips it, so a 16-bit PNG comes out nearly all white).
    """
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N"):
        grey = np.asarray(image, dtype=np.float64)
        scale = 257.0 if grey.max(initial=0) > 255 else 1.0  # a 16-bit range, or values that already fit 8 bits
        image = Image.fromarray(np.clip(np.rint(grey / scale), 0, 255).astype(np.uint8), mode="L")
    if image.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")
    return image.convert("RGB")


def _upright(image: Image.Image) -> Image.Image:
    """``image`` turned as its EXIF orientation tag says (a phone photo is stored sideways and tagged)."""
    try:
        return ImageOps.exif_transpose(image)
    except Exception:  # noqa: BLE001 - a malformed EXIF block must not reject pixels that decoded fine
        return image


def load_image(path: str | Path, *, max_pixels: int = MAX_IMAGE_PIXELS) -> Image.Image:
    """Open an image file fully and return it upright (EXIF orientation applied) as RGB (see :func:`to_rgb`).

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
                return to_rgb(_upright(image))
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
