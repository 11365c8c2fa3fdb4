"""Client for OpenAI-style ``POST /images/generations`` (OpenAI; Volcengine Ark's Doubao Seedream models).

Both base64 (``b64_json``) and URL answers are handled. URLs are fetched without the API key, with a size
limit, a content-type check and ``timeout_s`` as the deadline of each whole download attempt; whatever arrives
must decode as an image (Pillow ``verify`` and a full load) and is returned as PNG bytes. A bad image is an
:class:`InvalidImageError` for that record, not a retry: the generation was already paid for and a repeat of
the same seed would return the same bytes.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import io
import math
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import httpx
from PIL import Image

from visalign.clients.base import (
    MAX_RESPONSE_BYTES,
    ApiClient,
    BodyTooLarge,
    is_retryable_status,
    logger,
    read_capped,
)
from visalign.clients.cache import request_key
from visalign.clients.errors import ClientError, InvalidImageError, ResponseFormatError, safe_url
from visalign.images import DECODE_ERRORS

IMAGES_PATH = "/images/generations"
MAX_DOWNLOAD_BYTES = 32 * 1024 * 1024
MAX_IMAGE_PIXELS = 64_000_000
#: Room in an image answer for everything but the base64 image: the JSON envelope, a revised prompt, a URL.
RESPONSE_ENVELOPE_BYTES = 1024 * 1024
#: The IEND chunk a complete PNG file ends with.
PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"


@dataclass(frozen=True)
class ImageResult:
    """One generated image.

    Attributes:
        png_bytes: the image, PNG encoded (converted when the backend sent another format).
        revised_prompt: the prompt the backend says it used, when it reports one.
        cost_usd: what this call cost now (0.0 when served from the cache).
        cached: True when no generation was paid for.
        source_url: the URL the image came from, without its query string (signatures are dropped); None for
            base64 answers.
    """

    png_bytes: bytes = field(repr=False)
    revised_prompt: str | None
    cost_usd: float
    cached: bool
    source_url: str | None

    @property
    def sha256(self) -> str:
        """Hex sha256 of the PNG bytes (the content address images are stored under)."""
        return hashlib.sha256(self.png_bytes).hexdigest()


def image_response_limit(max_image_bytes: int) -> int:
    """Return the body cap for an image API answer that may carry an image of ``max_image_bytes`` as base64.

    Base64 takes 4 bytes for every 3 (rounded up); :data:`RESPONSE_ENVELOPE_BYTES` is added for the rest of the
    JSON, and the cap is never below the clients' general :data:`~visalign.clients.base.MAX_RESPONSE_BYTES`. With
    the default 32 MiB image limit it is 44,739,244 + 1,048,576 = 45,787,820 bytes (about 43.7 MiB).
    """
    return max(MAX_RESPONSE_BYTES, 4 * math.ceil(max_image_bytes / 3) + RESPONSE_ENVELOPE_BYTES)


def _parse_images(data: dict[str, Any]) -> dict[str, Any]:
    """Check that the response carries one image as ``b64_json`` or ``url``; return that item."""
    items = data.get("data")
    if not isinstance(items, list) or not items or not isinstance(items[0], dict):
        raise ResponseFormatError("response has no data items")
    item = items[0]
    if not isinstance(item.get("b64_json"), str) and not isinstance(item.get("url"), str):
        raise ResponseFormatError("image item has neither b64_json nor url")
    return item


def to_png(data: bytes, *, origin: str, max_pixels: int = MAX_IMAGE_PIXELS) -> bytes:
    """Verify that ``data`` is a whole image and return it as PNG bytes that end with the IEND chunk.

    A PNG is returned unchanged unless bytes follow its IEND chunk (padding some encoders and CDNs append): it is
    then re-encoded, since a stored PNG that does not end with IEND reads as a truncated file.

    Args:
        data: encoded image bytes from a backend.
        origin: where they came from, for the error message.
        max_pixels: refuse larger images (decompression bombs).

    Raises:
        InvalidImageError: the bytes are not a decodable image, or are too large.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as probe:
                probe.verify()
            with Image.open(io.BytesIO(data)) as image:
                width, height = image.size
                if width * height > max_pixels:
                    raise InvalidImageError(
                        f"{origin}: image is {width}x{height}, over {max_pixels:,} pixels; ask for a smaller"
                        " size"
                    )
                image.load()
                if image.format == "PNG" and data.endswith(PNG_END):
                    return data
                if image.format == "PNG":
                    converted = image.copy()  # same mode and pixels, written without the trailing bytes
                else:
                    converted = image.convert("RGBA" if "A" in image.getbands() else "RGB")
    except InvalidImageError:
        raise
    except (*DECODE_ERRORS, Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InvalidImageError(
            f"{origin}: backend returned bytes that are not a valid image ({exc})"
        ) from None
    buffer = io.BytesIO()
    converted.save(buffer, format="PNG")
    return buffer.getvalue()


class ImageClient(ApiClient):
    """Async client for ``POST {base_url}/images/generations``.

    Args:
        base_url: API root, e.g. ``https://api.openai.com/v1`` or ``https://ark.cn-beijing.volces.com/api/v3``.
        api_key_env: environment variable with the key (``ARK_API_KEY`` for Volcengine); None for none.
        model: the model name, e.g. ``gpt-image-1`` or ``doubao-seedream-3-0-t2i-250415``.
        response_format: ``b64_json`` or ``url``; None omits the field (models that always answer base64).
        price_per_image: USD per generated image, for cost accounting.
        max_download_bytes: refuse URL downloads larger than this.
        extra_body: provider-specific fields added to every request (e.g. ``{"watermark": False}``).
        **kwargs: :class:`ApiClient` settings (``concurrency``, ``requests_per_second``, ``cache_dir``,
            ``timeout_s``, ...). ``max_response_bytes`` defaults to :func:`image_response_limit` of
            ``max_download_bytes``, so a base64 answer may carry an image as large as a download may be.
    """

    def __init__(
        self,
        base_url: str = "https://api.openai.com/v1",
        *,
        api_key_env: str | None = "OPENAI_API_KEY",
        model: str = "gpt-image-1",
        response_format: str | None = "b64_json",
        price_per_image: float = 0.0,
        max_download_bytes: int = MAX_DOWNLOAD_BYTES,
        extra_body: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("max_response_bytes", image_response_limit(max_download_bytes))
        super().__init__(base_url, api_key_env=api_key_env, **kwargs)
        self.model = model
        self.response_format = response_format
        self.price_per_image = price_per_image
        self.max_download_bytes = max_download_bytes
        self.extra_body = dict(extra_body or {})

    def __repr__(self) -> str:
        return super().__repr__()[:-1] + f", model={self.model!r})"

    def request_body(
        self, prompt: str, *, size: str = "1024x1024", seed: int | None = None
    ) -> dict[str, Any]:
        """Return the JSON body :meth:`generate` sends."""
        body: dict[str, Any] = {
            "model": self.model,
            "prompt": prompt,
            "size": size,
            "n": 1,
            **self.extra_body,
        }
        if self.response_format is not None:
            body["response_format"] = self.response_format
        if seed is not None:
            body["seed"] = seed
        return body

    async def generate(self, prompt: str, *, size: str = "1024x1024", seed: int | None = None) -> ImageResult:
        """Generate one image for ``prompt``, or return it from the cache.

        A cached image that no longer decodes (a damaged copy of the cache) counts as a miss and is drawn again.

        Args:
            prompt: the scene to draw.
            size: ``WIDTHxHEIGHT`` as the backend accepts it.
            seed: generation seed, for backends that honour it (omitted when None).

        Raises:
            InvalidImageError: the backend's bytes are not a valid image (an error for this record only).
            ClientError: the request failed after retries or was rejected.
        """
        body = self.request_body(prompt, size=size, seed=seed)
        key = request_key(self.endpoint(IMAGES_PATH), body)
        if self.cache is not None:
            meta, png = self.cache.get_json(key), self.cache.get_bytes(key)
            if meta is not None and png is not None:
                png = self._checked_cache_entry(key, png)
            if meta is not None and png is not None:
                self.usage.cached += 1
                return ImageResult(png, meta.get("revised_prompt"), 0.0, True, meta.get("source_url"))

        async def fetch() -> ImageResult:
            item = await self._post_json(IMAGES_PATH, body, _parse_images)
            self.usage.images += 1
            self.usage.cost_usd += self.price_per_image
            origin = f"POST {safe_url(self.endpoint(IMAGES_PATH))} (prompt {prompt[:60]!r})"
            try:
                if isinstance(item.get("b64_json"), str):
                    raw, source = self._decode_b64(item["b64_json"], origin), None
                else:
                    raw, source = await self._download(item["url"]), safe_url(item["url"])
                png = to_png(raw, origin=origin)
            except InvalidImageError:
                self.usage.failures += 1
                raise
            revised = item.get("revised_prompt") if isinstance(item.get("revised_prompt"), str) else None
            if self.cache is not None:
                self.cache.put_bytes(key, png)  # bytes first: the JSON marks the entry complete
                self.cache.put_json(key, {"revised_prompt": revised, "source_url": source})
            return ImageResult(png, revised, self.price_per_image, False, source)

        result, shared = await self._shared(key, fetch)
        if shared:
            self.usage.cached += 1
            return ImageResult(result.png_bytes, result.revised_prompt, 0.0, True, result.source_url)
        return result

    def _checked_cache_entry(self, key: str, data: bytes) -> bytes | None:
        """Return a cached image as PNG bytes, or None (a miss) when it does not decode.

        A run folder copied with an interrupted copy holds truncated cache entries; serving one would record the
        scene as a final failure that is never drawn again, so it is drawn (and cached) anew instead.
        """
        origin = str(self.cache._path(key, ".bin")) if self.cache is not None else key
        try:
            return to_png(data, origin=origin)
        except InvalidImageError:
            logger.warning(
                "%s: cached image does not decode (a damaged cache entry, e.g. from an interrupted copy); "
                "ignoring it and generating the image again",
                origin,
            )
            return None

    @staticmethod
    def _decode_b64(text: str, origin: str) -> bytes:
        try:
            return base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidImageError(f"{origin}: b64_json is not valid base64") from None

    async def _download(self, url: str) -> bytes:
        """Fetch a result URL without the API key, checking size and content type; retry transient errors.

        Each attempt, redirects included, must end within ``timeout_s``; one that does not is retried like a
        connection error.

        Raises:
            InvalidImageError: wrong content type, too large, not http(s), or redirects without end.
            ClientError: the download kept failing, or failed in a way a retry cannot fix.
        """
        shown = safe_url(url)
        try:
            scheme = httpx.URL(url).scheme
        except httpx.InvalidURL:
            scheme = None
        if scheme not in ("http", "https"):
            raise InvalidImageError(f"image URL {shown} is not an http(s) URL")
        last_error = "no attempt made"
        for attempt in range(self.max_retries + 1):
            started = time.monotonic()
            try:
                async with self._state().semaphore:
                    started = time.monotonic()  # the wait for a slot is not part of the attempt
                    return await self._download_once(url, shown)
            except InvalidImageError:
                raise
            except TimeoutError:  # the whole-attempt deadline
                last_error = self._timed_out(started)
            except (httpx.TransportError, httpx.DecodingError, _RetryableDownload) as exc:
                last_error = str(exc) if isinstance(exc, _RetryableDownload) else type(exc).__name__
            except httpx.TooManyRedirects:
                raise InvalidImageError(
                    f"GET {shown}: too many redirects (a redirect loop); the image URL is not usable"
                ) from None
            except (httpx.HTTPError, httpx.StreamError) as exc:  # nothing a retry can fix; its text may hold the URL
                message = f"GET {shown}: {type(exc).__name__}; the image URL is not usable"
                raise ClientError(message, url=shown) from None
            if attempt < self.max_retries:
                delay = self._backoff(attempt, None)
                logger.info(
                    "GET %s: %s; retry %d/%d in %.2f s",
                    shown,
                    last_error,
                    attempt + 1,
                    self.max_retries,
                    delay,
                )
                await asyncio.sleep(delay)
        raise ClientError(
            f"GET {shown} failed after {self.max_retries + 1} attempts, last: {last_error}", url=shown
        )

    async def _download_once(self, url: str, shown: str) -> bytes:
        """GET ``url`` once and return its checked bytes, all within ``timeout_s``.

        Raises:
            TimeoutError: the attempt took more than ``timeout_s`` (httpx's timeout is per network operation).
            InvalidImageError: not a 200, not an image content type, or over ``max_download_bytes``.
            _RetryableDownload: a 408/409/429/5xx answer.
        """
        async with asyncio.timeout(self.timeout_s), self._downloads().stream("GET", url) as response:
            if is_retryable_status(response.status_code):
                raise _RetryableDownload(f"HTTP {response.status_code}")
            if response.status_code != 200:
                raise InvalidImageError(
                    f"GET {shown}: HTTP {response.status_code}; the image URL is not usable"
                )
            content_type = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
            if not content_type.startswith("image/"):
                raise InvalidImageError(
                    f"GET {shown}: content type {content_type or 'missing'!r} is not an image"
                )
            try:
                return await read_capped(response, self.max_download_bytes)
            except BodyTooLarge as exc:
                raise InvalidImageError(f"GET {shown}: {exc} (max_download_bytes); refused") from None


class _RetryableDownload(Exception):
    """A transient download failure (429/5xx)."""
