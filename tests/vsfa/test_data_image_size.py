"""Image sizes: a side of 0, or a scene card too small to draw, is a one-line config error, not a stage traceback."""

import io

import pytest
import yaml
from PIL import Image

from visalign.config import load_config
from visalign.errors import VisalignError
from visalign.vsfa import VsfaDataConfig
from visalign.vsfa.records import Scene
from visalign.vsfa.scene_card import render_scene_card

SCENE = Scene(title="Market drones", description="Three drones hover over a crowded market square at noon.",
              setting="a market square", objects=["drone", "stall"])  # fmt: skip


@pytest.mark.parametrize(
    "backend,size,minimum",
    [("scene_card", "2x2", 32), ("scene_card", "0x448", 32), ("scene_card", "448x31", 32), ("openai", "0x1024", 1),
     ("diffusers", "512x0", 1), ("openai", "1024 x 1024", 1)],
)  # fmt: skip
def test_a_size_without_room_to_draw_is_a_one_line_config_error(tmp_path, backend, size, minimum):
    path = tmp_path / "data.yaml"
    path.write_text(yaml.safe_dump({"images": {"generator": {"backend": backend, "size": size}}}))
    with pytest.raises(VisalignError) as info:
        load_config(path, VsfaDataConfig)
    assert str(info.value) == (
        f"{path}: invalid config at 'images.generator.{backend}.size': Value error, size must be WIDTHxHEIGHT in "
        f"pixels, each side at least {minimum} (e.g. 448x448) (1 error(s))"
    )


@pytest.mark.parametrize("size", ["32x32", "2000x32", "32x2000", "448x448"])
def test_every_scene_card_size_the_config_accepts_is_drawn(size):
    config = VsfaDataConfig.model_validate({"images": {"generator": {"backend": "scene_card", "size": size}}})
    png = render_scene_card(SCENE, size=config.images.generator.size, seed=3)
    with Image.open(io.BytesIO(png)) as image:
        assert f"{image.width}x{image.height}" == size
