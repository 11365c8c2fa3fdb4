"""Every registered model family is complete: a random-checkpoint builder and differentiable pixels for its images.

A family is registered in :data:`visalign.models.FAMILIES`; the family-parametrised tests (``test_adapters.py``,
``tests/vsfa/test_train_families.py``) take their families from it, so a new family half-added fails here or there.
"""

from __future__ import annotations

import pytest
import torch

from visalign.errors import VisalignError
from visalign.models import FAMILIES, Family, ModuleNames, random_checkpoints
from visalign.models.pixels import native_image_size, pixel_function


def test_every_registered_family_has_a_random_checkpoint_builder():
    assert set(random_checkpoints.FAMILIES) == set(FAMILIES), (
        f"registered without a builder: {sorted(set(FAMILIES) - set(random_checkpoints.FAMILIES))}; "
        f"a builder without registration: {sorted(set(random_checkpoints.FAMILIES) - set(FAMILIES))}"
    )


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_every_registered_family_builds_its_model_type_and_has_differentiable_pixels(family):
    _, config, processor = random_checkpoints.build_parts(family, "tiny")
    assert config.model_type == family == FAMILIES[family].model_type
    image_processor = processor.image_processor
    height, width = native_image_size(image_processor)
    pixels = pixel_function(image_processor)(torch.rand(3, height, width), image_processor)
    assert "pixel_values" in pixels


def test_a_registered_family_without_a_builder_is_named_as_such(monkeypatch, tmp_path):
    names = ModuleNames("model.vision_tower", "model.multi_modal_projector", "model.language_model",
                        "model.vision_tower.encoder.layers")  # fmt: skip
    monkeypatch.setitem(FAMILIES, "my_llava", Family("MyLLaVA", "my_llava", "me/my-llava", names, multi_image=False))
    with pytest.raises(VisalignError, match=r"'my_llava' is registered but has no random-checkpoint builder"):
        random_checkpoints.write_random_checkpoint("my_llava", tmp_path / "x")
