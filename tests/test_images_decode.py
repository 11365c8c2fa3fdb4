"""``decode_image`` decodes every pixel before it returns, and ``load_image`` makes Pillow's bomb warning an error."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from visalign.errors import VisalignError
from visalign.images import decode_image, load_image


def _noise_png(path):
    Image.effect_noise((64, 64), 50).convert("RGB").save(path)
    return path


def test_a_truncated_file_is_refused_by_decode_image_itself(tmp_path):
    data = _noise_png(tmp_path / "cut.png").read_bytes()[:400]
    (tmp_path / "cut.png").write_bytes(data)
    with pytest.raises(VisalignError, match=r"^upload 7: unreadable or truncated image \(") as refused:
        decode_image(tmp_path / "cut.png", name="upload 7")
    assert "\n" not in str(refused.value)
    with pytest.raises(VisalignError, match=r"^reply bytes: unreadable or truncated image \("):
        decode_image(io.BytesIO(data), name="reply bytes")


def test_a_decoded_image_needs_its_source_no_more(tmp_path):
    path = _noise_png(tmp_path / "whole.png")
    with Image.open(path) as reference:
        expected = reference.getpixel((63, 63))
    with open(path, "rb") as source:
        image = decode_image(source, name="whole.png")
    # the file is closed: every pixel was read before decode_image returned
    assert image.getpixel((63, 63)) == expected and image.size == (64, 64)


def test_an_image_over_pillows_own_limit_is_refused_by_load_image(tmp_path, monkeypatch):
    path = tmp_path / "square.png"
    Image.new("RGB", (12, 12), "white").save(path)  # 144 pixels
    # over Pillow's limit and under twice it, where Pillow only warns; our own limit is far above
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    with pytest.raises(VisalignError, match=r"square\.png: image too large \(.*\); possible decompression bomb"):
        load_image(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 200)
    assert load_image(path).size == (12, 12)  # under Pillow's limit it loads
