"""A magic image remembers which weights it was optimised against; evaluating it on other weights is refused."""

from __future__ import annotations

import shutil

import pytest
import torch

from visalign.errors import VisalignError
from visalign.evaluation.config import SystemConfig
from visalign.evaluation.systems import SystemFactory
from visalign.magic import load_magic_image, model_mismatch, save_magic_image
from visalign.models import loading, weights_fingerprint
from visalign.models.random_checkpoints import write_random_checkpoint


@pytest.fixture(scope="module")
def two_builds(tmp_path_factory):
    """The same tiny architecture drawn with two seeds (two 'builds' of one model), and a copy of the first."""
    root = tmp_path_factory.mktemp("builds")
    first = write_random_checkpoint("llava", root / "first", seed=0)
    second = write_random_checkpoint("llava", root / "second", seed=1)
    copy = shutil.copytree(first, root / "copy")
    return first, second, copy


@pytest.mark.parametrize("sampled", [False, True], ids=["whole-files", "sampled-large-checkpoint"])
def test_fingerprint_tells_builds_apart_and_survives_a_copy(two_builds, monkeypatch, sampled):
    if sampled:  # treat the tiny files as a large checkpoint: names, sizes, first and last MiB only
        monkeypatch.setattr(loading, "_FULL_HASH_BYTES", 0)
    first, second, copy = (str(p) for p in two_builds)
    assert weights_fingerprint(first) == weights_fingerprint(copy)
    assert weights_fingerprint(first) != weights_fingerprint(second)
    assert len(weights_fingerprint(first)) == 16


def test_hub_ids_have_no_fingerprint():
    assert weights_fingerprint("someone/some-model") is None


def _magic_for(model, out):
    metadata = {"model": {"spec": str(model), "family": "llava", "fingerprint": weights_fingerprint(str(model))}}
    return save_magic_image(out, "standard", torch.full((3, 32, 32), 0.5), metadata)


def test_evaluation_refuses_a_magic_image_on_other_weights(two_builds, tmp_path):
    first, second, _ = two_builds
    png = _magic_for(first, tmp_path / "magic")
    assert model_mismatch(load_magic_image(png), str(first)) is None
    reason = model_mismatch(load_magic_image(png), str(second))
    assert reason is not None and str(png) in reason and "visalign magic optimize" in reason

    factory = SystemFactory(max_new_tokens=4, batch_size=2, cache_dir=tmp_path / "cache")
    factory.build(SystemConfig(name="same", model=str(first), magic_image=png))
    with pytest.raises(VisalignError, match="system 'other'.*optimised against model weights"):
        factory.build(SystemConfig(name="other", model=str(second), magic_image=png))
    # a transfer study asks for it on purpose
    factory.build(SystemConfig(name="transfer", model=str(second), magic_image=png, allow_model_mismatch=True))


def test_images_without_a_recorded_fingerprint_are_not_checked(two_builds, tmp_path):
    first, second, _ = two_builds
    png = save_magic_image(tmp_path / "old", "standard", torch.full((3, 32, 32), 0.5), {"model": {"spec": "x"}})
    assert model_mismatch(load_magic_image(png), str(second)) is None
