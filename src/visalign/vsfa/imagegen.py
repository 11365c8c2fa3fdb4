"""Text-to-image backends behind one interface, and the content-addressed PNG store the images stage writes.

Backends: OpenAI-style ``images/generations`` (OpenAI, Volcengine Ark Doubao Seedream), a local ``diffusers``
pipeline (optional extra, imported lazily) and the offline scene-card renderer (a placeholder, and marked so).
"""

from __future__ import annotations

import asyncio
import hashlib
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from visalign.clients.images import PNG_END
from visalign.devices import require_device, torch_dtype
from visalign.errors import VisalignError
from visalign.images import DECODE_ERRORS, png_bytes
from visalign.runs import atomic_write_bytes
from visalign.vsfa.config import DiffusersConfig, OpenAIImagesConfig, SceneCardConfig
from visalign.vsfa.records import Scene, Usage
from visalign.vsfa.scene_card import render_scene_card


class CorruptImageError(VisalignError):
    """A backend's bytes are not a usable image; the images stage records it as that scene's failure."""


@dataclass
class GeneratedImage:
    """One backend answer before storage: PNG bytes, where they came from, and what they cost."""

    png: bytes
    usage: Usage
    source_url: str | None = None
    revised_prompt: str | None = None


class ImageBackend(Protocol):
    """The interface of the images stage; ``placeholder`` is True when the output is not a real picture."""

    name: str
    placeholder: bool
    concurrency: int

    async def generate(self, scene: Scene, prompt: str, seed: int) -> GeneratedImage:
        """Draw one scene."""
        ...

    def usage_totals(self) -> dict:
        """Return this session's totals."""
        ...

    async def aclose(self) -> None:
        """Release connections or pipelines."""
        ...


class OpenAIImagesBackend:
    """``POST /images/generations`` through :class:`visalign.clients.ImageClient` (URL or base64 answers).

    Args:
        config: endpoint, model, size, limits and price.
        cache_dir: the content-addressed response cache.
    """

    placeholder = False

    def __init__(self, config: OpenAIImagesConfig, cache_dir: Path) -> None:
        from visalign.clients import ImageClient

        self.config = config
        self.client = ImageClient(
            config.base_url,
            api_key_env=config.api_key_env,
            model=config.model,
            response_format=config.response_format,
            price_per_image=config.usd_per_image,
            extra_body=config.extra_body,
            concurrency=config.concurrency,
            requests_per_second=config.requests_per_second,
            max_retries=config.max_retries,
            timeout_s=config.timeout_s,
            cache_dir=cache_dir,
        )
        self.name = f"openai-images:{config.model}"
        self.concurrency = config.concurrency

    async def generate(self, scene: Scene, prompt: str, seed: int) -> GeneratedImage:
        """Generate one image.

        Raises:
            CorruptImageError: the backend's bytes do not decode as an image.
            visalign.clients.ClientError: the request failed after retries.
        """
        from visalign.clients import InvalidImageError

        try:
            result = await self.client.generate(
                prompt, size=self.config.size, seed=seed if self.config.send_seed else None
            )
        except InvalidImageError as exc:
            raise CorruptImageError(str(exc)) from None
        usage = Usage(calls=1, cost_usd=self.config.usd_per_image, cached_calls=int(result.cached))
        return GeneratedImage(result.png_bytes, usage, result.source_url, result.revised_prompt)

    def usage_totals(self) -> dict:
        """Return the client's usage accounting for this session."""
        return self.client.usage.as_dict()

    async def aclose(self) -> None:
        """Close the HTTP connections."""
        await self.client.aclose()


class DiffusersBackend:
    """A local ``diffusers`` text-to-image pipeline, loaded on first use; runs in a worker thread.

    Args:
        config: model id, size, steps, guidance, device and dtype.
    """

    placeholder = False
    concurrency = 1

    def __init__(self, config: DiffusersConfig) -> None:
        try:
            import diffusers  # noqa: F401 - only checking that the optional extra is installed
        except ImportError:
            raise VisalignError(
                "images.generator.backend 'diffusers' needs the optional extra: pip install 'visalign[diffusers]'"
            ) from None
        self.config = config
        self.name = f"diffusers:{config.model}"
        self._pipe = None
        self._lock = asyncio.Lock()
        self._images = 0

    def _pipeline(self):
        if self._pipe is None:
            import torch
            from diffusers import AutoPipelineForText2Image

            require_device(self.config.device)
            dtype = torch_dtype(self.config.dtype)
            pipe = AutoPipelineForText2Image.from_pretrained(self.config.model, torch_dtype=dtype)
            device = self.config.device or ("cuda" if torch.cuda.is_available() else "cpu")
            self._pipe = pipe.to(device)
        return self._pipe

    def _draw(self, prompt: str, seed: int) -> bytes:
        import torch

        width, height = (int(part) for part in self.config.size.split("x"))
        pipe = self._pipeline()
        generator = torch.Generator(device=pipe.device).manual_seed(seed)
        image = pipe(
            prompt,
            width=width,
            height=height,
            num_inference_steps=self.config.steps,
            guidance_scale=self.config.guidance_scale,
            generator=generator,
        ).images[0]
        return png_bytes(image)

    async def generate(self, scene: Scene, prompt: str, seed: int) -> GeneratedImage:
        """Draw one image with the local pipeline (one at a time: it holds the accelerator)."""
        async with self._lock:
            png = await asyncio.to_thread(self._draw, prompt, seed)
        self._images += 1
        return GeneratedImage(png, Usage(calls=1))

    def usage_totals(self) -> dict:
        """Return the number of images drawn this session."""
        return {"images": self._images, "cost_usd": 0.0}

    async def aclose(self) -> None:
        """Drop the pipeline."""
        self._pipe = None


class SceneCardBackend:
    """Offline placeholder images: :func:`render_scene_card` (scene text on a seeded background)."""

    placeholder = True
    concurrency = 2

    def __init__(self, config: SceneCardConfig) -> None:
        self.config = config
        self.name = "scene_card"
        self._images = 0

    async def generate(self, scene: Scene, prompt: str, seed: int) -> GeneratedImage:
        """Render one card."""
        png = render_scene_card(scene, size=self.config.size, seed=seed)
        self._images += 1
        return GeneratedImage(png, Usage(calls=1))

    def usage_totals(self) -> dict:
        """Return the number of cards drawn this session."""
        return {"images": self._images, "cost_usd": 0.0}

    async def aclose(self) -> None:
        """Nothing to release."""


def make_image_backend(config: OpenAIImagesConfig | DiffusersConfig | SceneCardConfig, cache_dir: Path) -> ImageBackend:
    """Build the backend a config section names.

    Raises:
        VisalignError: a missing API key variable or the ``diffusers`` extra (one line).
    """
    if isinstance(config, OpenAIImagesConfig):
        return OpenAIImagesBackend(config, cache_dir)
    if isinstance(config, DiffusersConfig):
        return DiffusersBackend(config)
    return SceneCardBackend(config)


@dataclass(frozen=True)
class StoredImage:
    """A PNG in the store: its path relative to the run directory, content hash and size."""

    path: str
    sha256: str
    width: int
    height: int


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_intact(path: Path) -> bool:
    """Return whether ``path`` is a complete PNG file: present, PNG signature first, IEND chunk last.

    Reads 20 bytes, not the image, so a resume can check thousands of stored images at once; it catches a missing,
    empty, truncated (an interrupted copy) or overwritten file, not a flipped bit inside.
    """
    try:
        with path.open("rb") as handle:
            head = handle.read(len(_PNG_SIGNATURE))
            handle.seek(-len(PNG_END), 2)
            return head == _PNG_SIGNATURE and handle.read() == PNG_END
    except OSError:  # missing, unreadable, or shorter than the end chunk
        return False


def store_png(png: bytes, root: Path, *, origin: str) -> StoredImage:
    """Validate ``png`` and store it as ``<root>/images/<sha256>.png`` (idempotent: same bytes, same file).

    What is stored passes :func:`png_intact`: a PNG with bytes after its IEND chunk is re-encoded without them.

    Args:
        png: image bytes from a backend (any format Pillow reads; converted to PNG when needed).
        root: the run directory.
        origin: names the scene, for the error message.

    Raises:
        CorruptImageError: the bytes do not decode as an image.
    """
    from PIL import Image

    try:
        with Image.open(io.BytesIO(png)) as probe:
            probe.verify()
        with Image.open(io.BytesIO(png)) as image:
            image.load()
            width, height = image.size
            # bytes after IEND (padding some services append) would fail png_intact: every run would redraw it
            if image.format != "PNG" or not png.endswith(PNG_END):
                buffer = io.BytesIO()
                (image if image.format == "PNG" else image.convert("RGB")).save(buffer, format="PNG")
                png = buffer.getvalue()
    except (*DECODE_ERRORS, Image.DecompressionBombError) as exc:
        raise CorruptImageError(f"{origin}: image bytes are not a valid image ({exc})") from None
    digest = hashlib.sha256(png).hexdigest()
    relative = f"images/{digest}.png"
    target = root / relative
    if not target.is_file() or target.read_bytes() != png:  # a damaged copy under the right name is rewritten
        atomic_write_bytes(target, png)
    return StoredImage(path=relative, sha256=digest, width=width, height=height)
