"""Safe image loading: every bad file gives one clear error that names it."""

from __future__ import annotations

import pytest
from PIL import Image

from visalign.errors import VisalignError
from visalign.images import load_image


def test_loads_a_png_as_rgb(tmp_path):
    path = tmp_path / "grey.png"
    Image.new("L", (10, 7), 128).save(path)
    image = load_image(path)
    assert image.mode == "RGB" and image.size == (10, 7) and image.getpixel((3, 3)) == (128, 128, 128)


def test_missing_file(tmp_path):
    with pytest.raises(VisalignError, match="missing.png: image file not found"):
        load_image(tmp_path / "missing.png")


def test_not_an_image(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("these are notes, not pixels")
    with pytest.raises(VisalignError, match="notes.png: not an image file"):
        load_image(path)


def test_truncated_image(tmp_path):
    path = tmp_path / "cut.png"
    Image.effect_noise((64, 64), 50).convert("RGB").save(path)
    path.write_bytes(path.read_bytes()[:400])
    with pytest.raises(VisalignError, match="cut.png: unreadable or truncated image"):
        load_image(path)


def test_decompression_bomb_is_refused_before_decoding(tmp_path):
    path = tmp_path / "bomb.png"
    Image.new("1", (9000, 9000)).save(path)  # 81 Mpx, a few kB on disk
    assert path.stat().st_size < 100_000
    with pytest.raises(VisalignError, match="bomb.png: image is 9000x9000"):
        load_image(path)


def test_transparent_pixels_load_on_white_and_sixteen_bit_images_are_scaled(tmp_path):
    import numpy as np
    from PIL import ImageDraw

    text = Image.new("RGBA", (60, 20), (0, 0, 0, 0))  # black text on a fully transparent background
    ImageDraw.Draw(text).rectangle((10, 5, 30, 12), fill=(0, 0, 0, 255))
    text.save(tmp_path / "text.png")
    pixels = np.asarray(load_image(tmp_path / "text.png"))
    assert pixels[0, 0].tolist() == [255, 255, 255] and pixels[8, 20].tolist() == [0, 0, 0]

    ramp = np.tile(np.linspace(0, 65535, 64).astype(np.uint16), (8, 1))  # a 16-bit greyscale gradient
    Image.fromarray(ramp).save(tmp_path / "ramp.png")
    grey = np.asarray(load_image(tmp_path / "ramp.png"))[0, :, 0]
    assert grey[0] == 0 and grey[-1] == 255 and 120 <= grey[32] <= 135  # a ramp, not clipped to white


def test_a_photo_tagged_as_rotated_is_loaded_upright(tmp_path):
    """A phone stores a portrait photo as landscape pixels plus an EXIF orientation tag; viewers turn it."""
    stored = Image.new("RGB", (200, 100), "white")
    stored.paste((255, 0, 0), (0, 0, 20, 100))  # a red band on the stored image's left edge
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    path = tmp_path / "portrait.jpg"
    stored.save(path, exif=exif.tobytes(), quality=95)
    image = load_image(path)
    assert image.size == (100, 200)
    assert image.getpixel((50, 5))[0] > 200 and image.getpixel((50, 5))[1] < 60  # the band is now on top


def _png_with_short_ihdr(path):
    """A PNG whose IHDR length byte says 5 instead of 13: Pillow raises ValueError, not OSError, opening it."""
    import io

    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, format="PNG")
    data = bytearray(buffer.getvalue())
    data[11] = 5
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize("name", ["short_ihdr.png", "bad_header.ppm"])
def test_a_header_pillow_fails_on_with_value_error_is_one_line(tmp_path, name):
    path = tmp_path / name
    if name.endswith(".png"):
        _png_with_short_ihdr(path)
    else:
        path.write_bytes(b"P6\n8 ?0\n255\n" + b"\0" * 192)  # a PPM whose header has a non-number
    with pytest.raises(VisalignError, match=f"{name}: unreadable or truncated image"):
        load_image(path)


def test_image_bytes_in_an_offline_chat_message_that_do_not_decode_are_one_line(tmp_path):
    import asyncio

    from visalign.vsfa.config import OfflineLLMConfig
    from visalign.vsfa.llm import Message, OfflineChatBackend

    backend = OfflineChatBackend(OfflineLLMConfig(model=str(tmp_path / "never-loaded")))
    bad = _png_with_short_ihdr(tmp_path / "bad.png").read_bytes()
    with pytest.raises(VisalignError, match="an image of the conversation: unreadable or truncated image"):
        asyncio.run(backend.complete([Message(role="user", text="What is shown?", images=[bad])]))
