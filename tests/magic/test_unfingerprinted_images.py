"""Magic images from before weight fingerprints: checked by the weights digest their sidecar records, else warned.

Every image shipped under docs/experiments/ except exp1-1b-cpu-v3/ predates ``model.fingerprint``; until
2026-11-24 such an image was used silently on any weights, although docs/EXPERIMENTS.md says `visalign eval`
refuses an image optimised against other weights.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from visalign.errors import VisalignError
from visalign.evaluation.config import SystemConfig
from visalign.evaluation.systems import SystemFactory
from visalign.magic import find_magic_image, load_magic_image, model_mismatch, save_magic_image, weights_digest
from visalign.models import load_vlm
from visalign.models.random_checkpoints import write_random_checkpoint

SHIPPED = Path(__file__).resolve().parents[2] / "docs" / "experiments"


@pytest.fixture(scope="module")
def two_builds(tmp_path_factory):
    """The same tiny architecture drawn with two seeds: two 'builds' of one model."""
    root = tmp_path_factory.mktemp("builds")
    return write_random_checkpoint("llava", root / "first", seed=0), write_random_checkpoint(
        "llava", root / "second", seed=1
    )


def _old_sidecar_image(out: Path, model: Path, dtype: torch.dtype) -> Path:
    """An image whose sidecar is shaped as one written before fingerprints: the run's weights digest, no fingerprint.

    The digest is taken as that run took it, on the model as loaded in ``dtype`` (bfloat16: a GPU run).
    """
    digest = weights_digest(load_vlm(str(model), dtype=dtype, device="cpu").model)
    metadata = {
        "model": {"spec": str(model), "family": "llava"},
        "value_system": {"name": "standard"},
        "weights_sha256": {"before": digest, "after": digest, "unchanged": True},
    }
    return save_magic_image(out, "standard", torch.full((3, 32, 32), 0.5), metadata)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_an_image_from_before_fingerprints_is_refused_on_other_weights(two_builds, tmp_path, dtype):
    first, second = two_builds
    png = _old_sidecar_image(tmp_path / "magic", first, dtype)
    assert "fingerprint" not in load_magic_image(png).metadata["model"]  # read back from disk, as eval reads it
    assert model_mismatch(load_magic_image(png), str(first)) is None  # its own weights, in whichever dtype
    reason = model_mismatch(load_magic_image(png), str(second))
    assert reason is not None and str(png) in reason and "visalign magic optimize" in reason
    assert "allow_model_mismatch" in reason and "\n" not in reason

    factory = SystemFactory(max_new_tokens=4, batch_size=2, cache_dir=tmp_path / "cache")
    factory.check(SystemConfig(name="same", model=str(first), magic_image=png))
    with pytest.raises(VisalignError, match="system 'other'.*optimised against other weights"):
        factory.check(SystemConfig(name="other", model=str(second), magic_image=png))
    factory.check(SystemConfig(name="transfer", model=str(second), magic_image=png, allow_model_mismatch=True))


def test_an_image_that_records_nothing_of_its_weights_is_used_with_a_one_line_warning(two_builds, tmp_path, caplog):
    png = save_magic_image(
        tmp_path / "older",
        "standard",
        torch.full((3, 32, 32), 0.5),
        {"model": {"spec": "default"}, "value_system": {"name": "standard"}},
    )
    with caplog.at_level(logging.WARNING, logger="visalign.magic.artifact"):
        assert model_mismatch(load_magic_image(png), str(two_builds[1])) is None
        assert model_mismatch(load_magic_image(png), str(two_builds[1])) is None  # warned once, not per use
    [warning] = [r.getMessage() for r in caplog.records if r.name == "visalign.magic.artifact"]
    assert str(png) in warning and "cannot be checked" in warning and "visalign magic optimize" in warning
    assert "\n" not in warning


def test_the_shipped_images_the_docs_point_at_are_checked_against_the_default_model(default_model_dir):
    # docs/EXPERIMENTS.md tells a reader to re-run the CPU evaluation on exp1-1b-cpu-v3/ (fingerprinted, made on
    # today's builder); the builder-2 images (exp1-1b-cpu/, exp1b-gpu/) are refused by their weights digest.
    for folder in ("exp1-1b-cpu-v3/magic", "exp1-1b-cpu-v3/magic-typo-control"):
        assert model_mismatch(find_magic_image(SHIPPED / folder, "standard"), "default") is None, folder
    for folder in ("exp1-1b-cpu/magic", "exp1-1b-cpu/magic-typo-control", "exp1b-gpu/magic"):
        reason = model_mismatch(find_magic_image(SHIPPED / folder, "standard"), "default")
        assert reason is not None and "optimised against other weights" in reason, folder
