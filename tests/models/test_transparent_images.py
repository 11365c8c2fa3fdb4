"""A transparent image reaches the model as its processor sees it: laid on white, not on black.

Every Hugging Face image processor composites transparency onto white (``convert_to_rgb``), as
:func:`visalign.images.to_rgb` does; the differentiable pixel path (:func:`visalign.models.pil_to_tensor`, used by
``pixels_from_images`` / ``encode_images``) and the Magic Image canvas (``letterbox``) must agree with it.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from test_adapters import FAMILIES

from visalign.images import to_rgb
from visalign.magic.placement import letterbox
from visalign.models import load_vlm, pil_to_tensor
from visalign.models.pixels import native_image_size


def _half_transparent(height: int, width: int) -> Image.Image:
    """Noise whose left half is fully transparent and whose right half fades from opaque to half transparent."""
    rng = np.random.default_rng(5)
    rgba = rng.integers(0, 256, (height, width, 4), dtype=np.uint8)
    rgba[:, : width // 2, 3] = 0
    rgba[:, width // 2 :, 3] = np.linspace(255, 128, width - width // 2).astype(np.uint8)
    return Image.fromarray(rgba, mode="RGBA")


@pytest.fixture(scope="module", params=[*FAMILIES, "default"])
def vlm(request, tiny_checkpoints, default_model_dir):
    path = default_model_dir if request.param == "default" else tiny_checkpoints[request.param]
    return load_vlm(str(path))


def test_transparent_pixels_equal_the_processors_at_the_native_size(vlm):
    image = _half_transparent(*native_image_size(vlm.processor.image_processor))
    reference = vlm.processor.image_processor(images=[image], return_tensors="pt")
    ours = vlm.pixels_from_images([image])
    assert ours["pixel_values"].shape == reference["pixel_values"].shape
    assert (ours["pixel_values"] - reference["pixel_values"]).abs().max().item() < 1e-5


def test_a_clear_pixel_reads_white_in_the_tensor_and_on_the_canvas():
    image = _half_transparent(24, 40)
    assert pil_to_tensor(image)[:, 0, 0].tolist() == [1.0, 1.0, 1.0]
    assert np.array_equal(np.asarray(pil_to_tensor(image) * 255).round(), np.asarray(to_rgb(image)).transpose(2, 0, 1))
    boxed = letterbox(image, (40, 40))  # 24 rows fitted into 40: white bands above and below
    assert boxed.getpixel((0, 20)) == (255, 255, 255)  # a clear pixel of the image, not a band
    assert np.array_equal(np.asarray(letterbox(image, (24, 40))), np.asarray(to_rgb(image)))
