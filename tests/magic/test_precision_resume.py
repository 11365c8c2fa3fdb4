"""A Magic Image checkpoint resumes only with the weights in the dtype and on the device type it began with.

The configs the project ships leave ``dtype`` unset: float32 on a CPU, bfloat16 on a GPU. Until 2026-11-24 the
resume key covered the config's ``dtype: null`` and not what it resolved to, so a run begun on a CPU went on in
bfloat16 on a GPU without a word (its history half float32, half bfloat16). A GPU machine is simulated the way
``load_vlm`` tells one: ``visalign.models.loading._places_on_cpu`` answering False, which makes it pick bfloat16.
"""

from __future__ import annotations

import json
import logging

import pytest
import torch

import visalign.models.loading as loading
from visalign.errors import VisalignError
from visalign.magic import load_magic_image, optimize_magic_images
from visalign.magic.data import load_training_set
from visalign.magic.optimize import requests_digest, resume_hash, resume_inputs
from visalign.magic.value_systems import get_value_system
from visalign.models import weights_fingerprint

from .helpers import VALUE_SYSTEMS, make, optimize_logged

OPTIMIZE_LOGGER = "visalign.magic.optimize"


def _checkpoint(out):
    return torch.load(out / "work" / "standard" / "checkpoint.pt", weights_only=True)


def test_an_unset_dtype_does_not_resume_in_another_one_and_naming_it_continues_the_run(
    tmp_path, tiny_checkpoints, monkeypatch
):
    model, run = tiny_checkpoints["llava"], tmp_path / "run"
    [whole] = optimize_magic_images(make(tmp_path, model), tmp_path / "whole")  # float32: this machine is a CPU
    optimize_magic_images(make(tmp_path, model, name="half.yaml", optim={"steps": 2}), run)
    checkpoint = run / "work" / "standard" / "checkpoint.pt"
    monkeypatch.setattr(loading, "_places_on_cpu", lambda device, device_map: False)  # a GPU machine's default
    with pytest.raises(VisalignError) as refused:
        optimize_magic_images(make(tmp_path, model), run)
    assert str(refused.value) == (
        f"{checkpoint}: begun with the model's weights in float32 on cpu, but this run loads them in bfloat16 on cpu "
        "(an unset dtype is float32 on a CPU, bfloat16 on a GPU); set dtype: float32 in the config it began with to "
        "continue it, or use a new --out folder"
    )
    state = _checkpoint(run)
    assert [h["step"] for h in state["history"]] == [1, 2]  # nothing was taken in bfloat16
    assert (state["dtype"], state["device_type"]) == ("float32", "cpu")
    # The way on the message gives, on the same machine: the run continues where it stopped, as one float32 run.
    [resumed], steps = optimize_logged(make(tmp_path, model, name="pinned.yaml", dtype="float32"), run)
    assert steps == [("standard", 3), ("standard", 4)]
    assert load_magic_image(resumed.png).image.tobytes() == load_magic_image(whole.png).image.tobytes()
    sidecar = json.loads(resumed.png.with_suffix(".json").read_text())
    assert (sidecar["model"]["dtype"], sidecar["model"]["device_type"]) == ("float32", "cpu")
    assert sidecar["resume_key"] == whole.metadata["resume_key"]  # an unset dtype that meant float32 is the same key


def test_a_checkpoint_keyed_before_the_dtype_was_recorded_resumes_with_a_warning_and_is_pinned(
    tmp_path, tiny_checkpoints, caplog
):
    model, run = tiny_checkpoints["llava"], tmp_path / "run"
    [whole] = optimize_magic_images(make(tmp_path, model), tmp_path / "whole")
    half = make(tmp_path, model, name="half.yaml", optim={"steps": 2})
    [first] = optimize_magic_images(half, run)
    # Rewrite the checkpoint as visalign wrote it until 2026-11-24: keyed by the config's dtype and device names,
    # with no record of what they resolved to.
    system = get_value_system(VALUE_SYSTEMS, "standard")
    requests = requests_digest(load_training_set(half, system, tmp_path / "w"))
    inputs = resume_inputs(weights_fingerprint(str(model)), first.metadata["model"]["template"], requests, None)
    state = {k: v for k, v in _checkpoint(run).items() if k not in ("dtype", "device_type")}
    torch.save({**state, "key": resume_hash(half, system, inputs)}, run / "work" / "standard" / "checkpoint.pt")
    with caplog.at_level(logging.WARNING, logger=OPTIMIZE_LOGGER):
        [resumed], steps = optimize_logged(make(tmp_path, model), run)
    warnings = [r.getMessage() for r in caplog.records if r.name == OPTIMIZE_LOGGER]
    assert warnings == [
        f"{run / 'work' / 'standard' / 'checkpoint.pt'}: written before the weights dtype and device type were "
        "recorded, so what its steps ran in cannot be checked; resuming in float32 on cpu, and recording that from "
        "now on"
    ]
    assert steps == [("standard", 3), ("standard", 4)]  # resumed, not started again
    assert load_magic_image(resumed.png).image.tobytes() == load_magic_image(whole.png).image.tobytes()
    pinned = _checkpoint(run)
    assert (pinned["key"], pinned["dtype"], pinned["device_type"]) == (whole.metadata["resume_key"], "float32", "cpu")
