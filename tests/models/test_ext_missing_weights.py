"""A checkpoint that lacks weights the model has is refused: they would load at random, differently every time."""

from __future__ import annotations

import logging
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from visalign.errors import VisalignError
from visalign.models import load_vlm


def _rewrite_weights(folder, edit) -> None:
    """Apply ``edit`` to the tensors of ``folder``'s single weight file, keeping its metadata."""
    path = folder / "model.safetensors"
    tensors = load_file(path)
    edit(tensors)
    save_file(tensors, path, metadata={"format": "pt"})


def test_a_checkpoint_missing_a_weight_is_one_line_naming_checkpoint_and_key(tiny_checkpoints, tmp_path):
    folder = tmp_path / "partial"
    shutil.copytree(tiny_checkpoints["llava"], folder)
    # saved in the layout transformers converts on load (``language_model.lm_head.weight``): drop it by its suffix
    _rewrite_weights(folder, lambda tensors: tensors.pop(next(k for k in tensors if k.endswith("lm_head.weight"))))
    with pytest.raises(VisalignError) as info:
        load_vlm(str(folder), device="cpu")
    message = str(info.value)
    assert message.startswith(f"{folder}: ") and "lm_head.weight" in message and "\n" not in message
    assert "save_pretrained" in message  # what to do


def test_a_checkpoint_with_an_unused_weight_loads_with_a_one_line_warning(tiny_checkpoints, tmp_path, caplog):
    folder = tmp_path / "extra"
    shutil.copytree(tiny_checkpoints["llava"], folder)
    _rewrite_weights(folder, lambda tensors: tensors.update({"stray_head.weight": torch.zeros(2, 2)}))
    with caplog.at_level(logging.WARNING, logger="visalign.models.loading"):
        vlm = load_vlm(str(folder), device="cpu")
    assert vlm.family.model_type == "llava"
    [warning] = [r.getMessage() for r in caplog.records if r.name == "visalign.models.loading"]
    assert str(folder) in warning and "stray_head.weight" in warning and "\n" not in warning


def test_whole_checkpoints_load_without_a_warning(tiny_checkpoints, default_model_dir, caplog):
    # the default model stores no lm_head (tied to the embeddings) and names its weights in the older layout
    with caplog.at_level(logging.WARNING, logger="visalign.models.loading"):
        for spec in [*map(str, tiny_checkpoints.values()), "default"]:
            load_vlm(spec, device="cpu")
    assert not [r for r in caplog.records if r.name == "visalign.models.loading"]
