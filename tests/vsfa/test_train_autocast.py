"""Autocast in the training step: float32 LoRA matrices multiply in bf16; weights and gradients stay float32."""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from train_support import IMAGE_SIZE, noise_png, one_thread, train_config, write_dataset

from visalign.errors import VisalignError
from visalign.models import assistant, load_vlm, user
from visalign.vsfa.training import VsfaTrainConfig, read_metrics, train
from visalign.vsfa.training.config import LoraConfig
from visalign.vsfa.training.lora import apply_lora, set_train_mode
from visalign.vsfa.training.trainer import LabelledLoss, autocast_dtype


@pytest.fixture(scope="module")
def bf16_lora_vlm(tiny_checkpoints, tmp_path_factory):
    one_thread()
    vlm = load_vlm(str(tiny_checkpoints["llava"]), dtype=torch.bfloat16, device="cpu")
    apply_lora(vlm, LoraConfig(rank=4, alpha=8))
    set_train_mode(vlm, train_projector=False)
    image = tmp_path_factory.mktemp("img") / "a.png"
    noise_png(image, IMAGE_SIZE["llava"], seed=0)
    batch = vlm.training_inputs([[user("What is shown?", Image.open(image)), assistant("A grey square.")]])
    return vlm, batch


def _lora_a_output_dtype_and_grad(vlm, batch, dtype):
    lora_a = next(m for name, m in vlm.model.named_modules() if name.endswith("lora_A.default"))
    seen = []
    handle = lora_a.register_forward_hook(lambda module, args, out: seen.append(out.dtype))
    try:
        vlm.model.zero_grad(set_to_none=True)
        LabelledLoss(vlm, dtype)(**batch).backward()
    finally:
        handle.remove()
    lora_b = next(m for name, m in vlm.model.named_modules() if name.endswith("lora_B.default"))
    return seen[0], lora_b.weight  # B, not A: B starts at zero, so A's first gradient is zero


def test_autocast_runs_the_lora_matmuls_in_bf16_and_keeps_float32_weights(bf16_lora_vlm):
    vlm, batch = bf16_lora_vlm
    plain_dtype, _ = _lora_a_output_dtype_and_grad(vlm, batch, None)
    cast_dtype, weight = _lora_a_output_dtype_and_grad(vlm, batch, torch.bfloat16)
    assert plain_dtype == torch.float32  # peft keeps adapters in float32 and computes them there
    assert cast_dtype == torch.bfloat16
    assert weight.dtype == torch.float32 and weight.grad.dtype == torch.float32
    assert weight.grad.abs().sum() > 0


def test_autocast_default_and_validation(bf16_lora_vlm, tiny_checkpoints):
    vlm, _ = bf16_lora_vlm
    base = {"name": "t", "model": "x", "data": {"path": "x.json"}}
    assert autocast_dtype(VsfaTrainConfig(**base), vlm) is None  # default: GPUs only
    assert autocast_dtype(VsfaTrainConfig(**base, autocast=True), vlm) == torch.bfloat16
    assert autocast_dtype(VsfaTrainConfig(**base, autocast=False), vlm) is None
    fp32 = load_vlm(str(tiny_checkpoints["llava"]), dtype=torch.float32, device="cpu")
    with pytest.raises(VisalignError, match="autocast: true needs bfloat16"):
        autocast_dtype(VsfaTrainConfig(**base, autocast=True), fp32)


def test_training_with_autocast_follows_the_float32_run_and_saves_float32_adapters(tiny_checkpoints, tmp_path):
    one_thread()
    data = write_dataset(tmp_path / "data", "llava")
    curves = {}
    for name, overrides in (("float32", {}), ("autocast", {"dtype": "bfloat16", "autocast": True})):
        result = train(VsfaTrainConfig(**train_config(tiny_checkpoints["llava"], data, **overrides)), tmp_path / name)
        curves[name] = [m["loss"] for m in read_metrics(tmp_path / name)]
    reference, cast = curves["float32"], curves["autocast"]
    assert sum(cast[-3:]) / 3 < cast[0] - 0.2, cast  # it learns
    assert max(abs(a - b) for a, b in zip(cast, reference, strict=True)) < 0.1, curves  # as float32 does
    weights = load_file(result.adapter / "adapter_model.safetensors")
    assert weights and all(t.dtype == torch.float32 for t in weights.values())
