"""Loading images from disk safely: one clear error per bad file, never a silent partial image."""

from __future__ import annotations

import io
import os
import struct
import warnings
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, TypeVar

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from visalign.errors import VisalignError

#: Largest image accepted, in pixels. Pillow's own bomb check is a warning up to 2x its limit; we refuse.
MAX_IMAGE_PIXELS = 64_000_000
#: What Pillow raises for a corrupt or truncated image, depending on the format's plugin: mostly OSError
#: (``UnidentifiedImageError`` is one), but a damaged header can surface as ValueError (a PNG's short IHDR chunk, a
#: PPM's header), SyntaxError (a broken PNG chunk), struct.error, IndexError or EOFError. Catch these, not Exception.
DECODE_ERRORS: tuple[type[Exception], ...] = (OSError, ValueError, SyntaxError, EOFError, IndexError, struct.error)

T = TypeVar("T")


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


def decode_image(
    source: str | Path | IO[bytes],
    *,
    name: str | Path,
    max_pixels: int = MAX_IMAGE_PIXELS,
    limit_advice: str = "resize it or raise the limit",
) -> Image.Image:
    """Open an image and decode every pixel, or raise one line that names it; the one place images are opened.

    Changes no process-wide state, so threads may call it (:func:`load_image` wraps it in a filter that makes
    Pillow's decompression-bomb warning an error). The EXIF orientation is not applied and the mode is kept.

    Args:
        source: a file path or a binary file object.
        name: how the error message names the image (its path, or where the bytes came from).
        max_pixels: refuse images with more pixels than this, before decoding (decompression bombs).
        limit_advice: what the over-the-limit message advises.

    Returns:
        The opened, loaded image; the caller closes it (``with decode_image(...) as image``).

    Raises:
        VisalignError: not an image, unreadable, truncated or too large.
    """
    try:
        image = Image.open(source)
    except (*DECODE_ERRORS, Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise _decode_failure(name, exc) from None
    try:
        width, height = image.size
        if width * height > max_pixels:
            raise VisalignError(
                f"{name}: image is {width}x{height} = {width * height:,} pixels, over the limit of {max_pixels:,} "
                f"(possible decompression bomb); {limit_advice}"
            )
        image.load()
    except VisalignError:
        image.close()
        raise
    except (*DECODE_ERRORS, Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        image.close()
        raise _decode_failure(name, exc) from None
    return image


def _decode_failure(name: str | Path, exc: BaseException) -> VisalignError:
    """The one-line error for an image Pillow could not open or decode."""
    if isinstance(exc, UnidentifiedImageError):
        return VisalignError(f"{name}: not an image file Pillow can read; pass a PNG, JPEG or WebP")
    if isinstance(exc, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
        return VisalignError(f"{name}: image too large ({exc}); possible decompression bomb")
    return VisalignError(f"{name}: unreadable or truncated image ({exc}); re-export or replace it")


def load_image(path: str | Path, *, max_pixels: int = MAX_IMAGE_PIXELS) -> Image.Image:
    """Open an image file fully and return it upright (EXIF orientation applied) as RGB (see :func:`to_rgb`).

    Args:
        path: the image file.
        max_pixels: refuse images with more pixels than this (decompression bombs).

    Raises:
        VisalignError: the file is missing, not an image, truncated or too large; the message names the file.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        return _load_image(Path(path), max_pixels)


def _load_image(path: Path, max_pixels: int) -> Image.Image:
    """:func:`load_image` without its warning filter: the caller makes Pillow's bomb warning an error."""
    if not path.is_file():
        raise VisalignError(f"{path}: image file not found; check the path")
    with decode_image(path, name=path, max_pixels=max_pixels) as image:
        try:
            return to_rgb(_upright(image))
        except DECODE_ERRORS as exc:  # a mode that decodes but does not convert
            raise _decode_failure(path, exc) from None


def map_images(function: Callable[[Path], T], paths: Iterable[Path]) -> dict[Path, T]:
    """``function(path)`` for each distinct path, run in threads; the keys keep the order paths first came in.

    Pillow releases the GIL while it decodes, so N threads decode nearly N images at once: checking a benchmark's
    or a training set's images one after another made decoding most of a start's time (23 ms a photo). A path given
    twice is done once. ``function`` must change no process-wide state (the warning filters :func:`load_image`
    sets are; see :func:`image_problems`), and an exception it raises propagates.

    Args:
        function: the work for one image (decode it, and return what the caller keeps: never many decoded images).
        paths: the image files.

    Returns:
        ``{path: function(path)}``.
    """
    unique = list(dict.fromkeys(paths))
    if len(unique) < 2:  # no pool for nothing to share
        return {path: function(path) for path in unique}
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1, len(unique))) as pool:
        return dict(zip(unique, pool.map(function, unique), strict=True))


def image_problems(paths: Iterable[Path], *, max_pixels: int = MAX_IMAGE_PIXELS) -> dict[Path, str | None]:
    """Why each distinct image would fail :func:`load_image` (its one-line message), or None when it loads.

    The images are decoded in threads (:func:`map_images`). :func:`load_image` turns Pillow's decompression-bomb
    warning into an error by swapping the process-wide warning filters, which threads must not do: the filter is
    set here once, around them all, so each image gets the very message :func:`load_image` would raise.

    Args:
        paths: the image files.
        max_pixels: refuse images with more pixels than this (decompression bombs).
    """

    def problem(path: Path) -> str | None:
        try:
            _load_image(path, max_pixels).close()
        except VisalignError as exc:
            return str(exc)
        return None

    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        return map_images(problem, paths)


def png_bytes(image: Image.Image) -> bytes:
    """``image`` encoded as PNG (for content-addressed storage and for image parts of API requests)."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
