"""A magic image remembers which weights it was optimised against; evaluating it on other weights is refused."""

from __future__ import annotations

import hashlib
import json
import os
import shutil

import pytest
import torch

from visalign.errors import VisalignError
from visalign.evaluation.config import SystemConfig
from visalign.evaluation.systems import SystemFactory
from visalign.magic import load_magic_image, model_mismatch, save_magic_image
from visalign.models import weights_fingerprint
from visalign.models.random_checkpoints import write_random_checkpoint


@pytest.fixture(scope="module")
def two_builds(tmp_path_factory):
    """The same tiny architecture drawn with two seeds (two 'builds' of one model), and a copy of the first."""
    root = tmp_path_factory.mktemp("builds")
    first = write_random_checkpoint("llava", root / "first", seed=0)
    second = write_random_checkpoint("llava", root / "second", seed=1)
    copy = shutil.copytree(first, root / "copy")
    return first, second, copy


def test_fingerprint_tells_builds_apart_and_survives_a_copy(two_builds):
    first, second, copy = (str(p) for p in two_builds)
    assert weights_fingerprint(first) == weights_fingerprint(copy)
    assert weights_fingerprint(first) != weights_fingerprint(second)
    assert len(weights_fingerprint(first)) == 16


def test_a_change_in_the_middle_of_a_large_checkpoint_changes_the_fingerprint(tmp_path, monkeypatch):
    # Until 2026-11-23 weight files over 1 GiB were fingerprinted by their first and last MiB only, so two fine-tunes
    # of one base that differ in their middle layers looked the same. Sparse files just over that size (little disk)
    # that differ in one byte in the middle must get different fingerprints.
    monkeypatch.setenv("VISALIGN_HOME", str(tmp_path / "home"))
    size = (1 << 30) + (4 << 20)
    for name, middle in (("base", b"\x00"), ("tuned", b"\x01")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text("{}")
        with open(tmp_path / name / "model.safetensors", "wb") as handle:
            handle.truncate(size)
            handle.seek(size // 2)
            handle.write(middle)
    assert weights_fingerprint(str(tmp_path / "base")) != weights_fingerprint(str(tmp_path / "tuned"))


def test_file_hashes_are_kept_between_processes_and_redone_when_a_file_changes(tmp_path, monkeypatch):
    monkeypatch.setenv("VISALIGN_HOME", str(tmp_path / "home"))
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    weights = model / "model.safetensors"
    weights.write_bytes(b"first weights")
    before = weights_fingerprint(str(model))
    cached = json.loads((tmp_path / "home" / "weight_file_hashes.json").read_text())
    assert list(cached.values()) == [hashlib.sha256(b"first weights").hexdigest()]

    weights.write_bytes(b"other weights")  # same size, new modification time
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))
    assert weights_fingerprint(str(model)) != before
    cached = json.loads((tmp_path / "home" / "weight_file_hashes.json").read_text())
    assert hashlib.sha256(b"other weights").hexdigest() in cached.values()


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


def test_apply_with_a_sidecar_that_names_no_model_asks_for_one(tmp_path, capsys):
    from cli_in_process import run_in_process

    save_magic_image(tmp_path / "images", "standard", torch.ones(3, 8, 8), {"value_system": {"name": "standard"}})
    code, _, err = run_in_process(["magic", "apply", "--images", str(tmp_path / "images"), "--value-system",
                                   "standard", "--prompt", "hi"], capsys)
    assert code == 2 and "Traceback" not in err
    assert "standard image's sidecar names no model; pass --model SPEC" in err


@pytest.mark.parametrize(("field", "value", "message"), [
    ("model", "llava", "'model' must be a mapping, got str"),
    ("value_system", "standard", "'value_system' must be a mapping, got str"),
    ("placement", "sideways", "'placement' must be one of auto, prepend, canvas, square-canvas"),
])
def test_a_hand_edited_sidecar_is_a_one_line_error_naming_the_field(tmp_path, capsys, field, value, message):
    from cli_in_process import run_in_process

    png = save_magic_image(tmp_path / "images", "standard", torch.ones(3, 8, 8),
                           {"model": {"spec": "x"}, "value_system": {"name": "standard"}})
    sidecar = png.with_suffix(".json")
    sidecar.write_text(json.dumps({**json.loads(sidecar.read_text()), field: value}))
    code, _, err = run_in_process(["magic", "apply", "--images", str(tmp_path / "images"), "--value-system",
                                   "standard", "--prompt", "hi"], capsys)
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert f"{sidecar}: {message}" in err


def test_a_png_made_for_another_value_system_is_refused_and_records_name_the_sidecars(two_builds, tmp_path):
    first = str(two_builds[0])
    png = save_magic_image(tmp_path / "magic", "standard", torch.full((3, 32, 32), 0.5),
                           {"model": {"spec": first, "fingerprint": weights_fingerprint(first)},
                            "value_system": {"name": "standard"}})
    factory = SystemFactory(max_new_tokens=4, batch_size=2, cache_dir=tmp_path / "cache")
    with pytest.raises(VisalignError, match="system 'strict'.*value system 'standard' .*not 'strict'"):
        factory.check(SystemConfig(name="strict", model=first, magic_image=png, value_system="strict"))
    assert factory.build(SystemConfig(name="named", model=first, magic_image=png,
                                      value_system="standard")).decoding["value_system"] == "standard"
    assert factory.build(SystemConfig(name="unnamed", model=first, magic_image=png)).decoding["value_system"] == (
        "standard")
