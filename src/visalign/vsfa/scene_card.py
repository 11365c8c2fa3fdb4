"""The offline image backend: a scene card, i.e. the scene text drawn on a seeded generated background.

A scene card is a placeholder, not a photograph: records and the dataset card say so. It lets the whole pipeline
(and the VQA grounded in the scene description) run with no image model and no network.
"""

from __future__ import annotations

import hashlib
import io
import textwrap

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from visalign.vsfa.records import Scene


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    # Pillow's bundled scalable font: identical on every machine, so cards are byte-reproducible.
    return ImageFont.load_default(size=size)


def _background(width: int, height: int, rng: np.random.Generator) -> Image.Image:
    """A vertical two-colour gradient with a few soft blobs, all drawn from ``rng``."""
    top, bottom = rng.integers(20, 200, size=3), rng.integers(20, 200, size=3)
    ramp = np.linspace(0.0, 1.0, height)[:, None, None]
    pixels = (top[None, None, :] * (1 - ramp) + bottom[None, None, :] * ramp).repeat(width, axis=1)
    image = Image.fromarray(pixels.astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(4, 9))):
        cx, cy = rng.integers(0, width), rng.integers(0, height)
        radius = int(rng.integers(min(width, height) // 12, min(width, height) // 4))
        colour = tuple(int(c) for c in rng.integers(0, 256, size=3))
        draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), fill=colour)
    return image.filter(ImageFilter.GaussianBlur(radius=max(2, min(width, height) // 40)))


def render_scene_card(scene: Scene, *, size: str = "448x448", seed: int = 0) -> bytes:
    """Draw ``scene`` as a PNG scene card and return its bytes.

    Args:
        scene: the scene; its title, objects and description are written on the card.
        size: ``WIDTHxHEIGHT`` in pixels.
        seed: with the scene text, seeds the background, so the same inputs give the same bytes.
    """
    width, height = (int(part) for part in size.split("x"))
    digest = hashlib.sha256(f"{seed}\x00{scene.title}\x00{scene.description}".encode()).digest()
    rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
    image = _background(width, height, rng)
    overlay = Image.new("RGBA", image.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    margin = max(8, width // 28)
    if 2 * margin > height:  # a wide, low card: a margin set by the width alone would leave no panel (and fail)
        margin = height // 4
    draw.rectangle((margin, margin, width - margin, height - margin), fill=(0, 0, 0, 150))
    image = Image.alpha_composite(image.convert("RGBA"), overlay).convert("RGB")
    draw = ImageDraw.Draw(image)
    title_size, body_size = max(10, width // 22), max(9, width // 30)
    chars = max(12, int((width - 4 * margin) / (body_size * 0.55)))
    y = 2 * margin
    for line in textwrap.wrap(scene.title, width=max(10, int(chars * body_size / title_size))):
        draw.text((2 * margin, y), line, font=_font(title_size), fill=(255, 230, 120))
        y += int(title_size * 1.3)
    y += body_size // 2
    body = scene.description + ("  Objects: " + ", ".join(scene.objects) + "." if scene.objects else "")
    for line in textwrap.wrap(body, width=chars):
        if y > height - 2 * margin - body_size:
            break
        draw.text((2 * margin, y), line, font=_font(body_size), fill=(240, 240, 240))
        y += int(body_size * 1.35)
    draw.text(
        (2 * margin, height - 2 * margin),
        "placeholder scene card",
        font=_font(max(8, body_size - 2)),
        fill=(180, 180, 180),
    )
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()
