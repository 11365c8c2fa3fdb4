"""Gradient accumulation and data parallelism train the objective of one large batch: every labelled token counts
once, whichever micro-batch or process it falls in."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file
from train_support import one_thread, train_config, write_dataset

from visalign.vsfa.training import VsfaTrainConfig, read_metrics, train


@pytest.fixture(autouse=True)
def _threads():
    one_thread()


@pytest.mark.parametrize("family", ["qwen2_5_vl", "llava"])
def test_two_accumulated_micro_batches_train_like_one_batch_of_both(tiny_checkpoints, tmp_path, family):
    # a third of the examples have a second turn, so micro-batches hold different numbers of labelled tokens
    data = write_dataset(tmp_path / "data", family)
    runs = {}
    for name, batch_size, grad_accum in (("whole", 4, 1), ("accumulated", 2, 2)):
        config = train_config(tiny_checkpoints[family], data, epochs=2, batch_size=batch_size,
                              grad_accum=grad_accum, group_by_length=False)  # fmt: skip
        runs[name] = train(VsfaTrainConfig.model_validate(config), tmp_path / name)
    whole, accumulated = read_metrics(tmp_path / "whole"), read_metrics(tmp_path / "accumulated")
    assert len(whole) == len(accumulated) == 4
    assert [m["loss"] for m in accumulated] == pytest.approx([m["loss"] for m in whole], rel=1e-5)
    assert [m["grad_norm"] for m in accumulated] == pytest.approx([m["grad_norm"] for m in whole], rel=1e-4)
    a = load_file(str(runs["whole"].adapter / "adapter_model.safetensors"))
    b = load_file(str(runs["accumulated"].adapter / "adapter_model.safetensors"))
    assert all(torch.allclose(a[k], b[k], rtol=1e-4, atol=1e-5) for k in a)
    assert any(a[k].abs().sum() > 0 for k in a if "lora_B" in k)  # the adapters did train
