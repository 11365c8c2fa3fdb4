"""An adapter (``load_vlm(adapter=...)``) must fill every LoRA weight peft injects and name only modules the model has.

Otherwise peft leaves the unfilled LoRA weights at their initial values (B = 0: the layer answers as the base) and
drops the tensors that fit nowhere, so a damaged adapter, or one trained on another family, would answer as the base
model under the adapter's name. The adapters here are real peft folders saved from the tiny checkpoints.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import peft
import pytest
import torch
from safetensors.torch import load_file, save_file

from visalign.errors import VisalignError
from visalign.models import VLM, assistant, load_vlm, user
from visalign.vsfa.training.config import LoraConfig
from visalign.vsfa.training.lora import apply_lora

BASE = "qwen2_5_vl"


def _trained_looking(peft_model: peft.PeftModel, seed: int) -> None:
    """Draw every trainable tensor (LoRA A and B, the projector copy) on a fixed seed, as if trained."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, parameter in sorted(peft_model.named_parameters()):
            if parameter.requires_grad:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.2)


def _logits(vlm: VLM) -> torch.Tensor:
    batch = vlm.training_inputs([[user("What is it?"), assistant("A red car.")]])
    with torch.no_grad():
        return vlm.model(**batch).logits


def _save(peft_model: peft.PeftModel, folder: Path) -> Path:
    peft_model.save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="module")
def whole_adapter(tiny_checkpoints, tmp_path_factory) -> tuple[Path, torch.Tensor]:
    """A ``visalign vsfa train``-shaped adapter (LoRA on every LM linear, projector trained) and its logits."""
    vlm = load_vlm(str(tiny_checkpoints[BASE]), device="cpu")
    peft_model = apply_lora(vlm, LoraConfig(rank=4, alpha=8, train_projector=True))
    _trained_looking(peft_model, seed=0)
    vlm.model.eval()
    return _save(peft_model, tmp_path_factory.mktemp("adapter") / "whole"), _logits(vlm)


def test_a_whole_adapter_loads_and_reproduces_the_adapted_outputs(tiny_checkpoints, whole_adapter):
    folder, expected = whole_adapter
    adapted = _logits(load_vlm(str(tiny_checkpoints[BASE]), device="cpu", adapter=folder))
    base = _logits(load_vlm(str(tiny_checkpoints[BASE]), device="cpu"))
    assert torch.allclose(adapted, expected, atol=1e-5)
    assert (adapted - base).abs().max().item() > 0.1  # the adapter changes the answer: this is not the base model


@pytest.mark.parametrize("removed", ["lora_B", "lora_A"])
def test_an_adapter_missing_one_tensor_is_refused_in_one_line(tiny_checkpoints, whole_adapter, tmp_path, removed):
    folder = Path(shutil.copytree(whole_adapter[0], tmp_path / "partial"))
    path = folder / "adapter_model.safetensors"
    tensors = load_file(path)
    dropped = sorted(k for k in tensors if f".{removed}." in k)[3]
    del tensors[dropped]
    save_file(tensors, path, metadata={"format": "pt"})
    with pytest.raises(VisalignError) as info:
        load_vlm(str(tiny_checkpoints[BASE]), device="cpu", adapter=folder)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{folder}: the adapter does not fit this model: 1 LoRA weight(s) the model takes are "
                              f"missing from the files ({dropped.removeprefix('base_model.model.')}) and would keep "
                              "their initial values; apply it to the model it was trained on")  # fmt: skip
    assert message.endswith("copy its adapter_model.safetensors whole")


def test_a_projector_trained_adapter_of_another_family_is_refused(tiny_checkpoints, whole_adapter):
    # tiny LLaVA-NeXT's language model has Qwen2.5-VL's linear names and shapes: only the projector tells them apart
    folder = whole_adapter[0]
    with pytest.raises(VisalignError) as info:
        load_vlm(str(tiny_checkpoints["llava_next"]), device="cpu", adapter=folder)
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{folder}: the adapter does not fit this model: ")
    # Qwen2.5-VL's merger: the RMS norm's weight, two linears' weight and bias
    assert (": 5 tensor(s) in the files name no module of this model (model.visual.merger.ln_q.weight, "
            "model.visual.merger.mlp.0.bias, model.visual.merger.mlp.0.weight and 2 more) and would be dropped; "
            f"apply it to the model it was trained on ({tiny_checkpoints[BASE]})") in message, message


@pytest.mark.parametrize(("targets", "onto", "count", "kind"), [
    # LLaVA-NeXT's CLIP tower has q_proj and v_proj too: peft adds LoRA there that the files cannot fill
    (["q_proj", "v_proj"], "llava_next", 8, "LoRA weight(s) the model takes are missing from the files"),
    # Qwen2.5-VL's vision blocks have gate_proj, Qwen3-VL's have linear_fc1: those tensors fit nowhere
    (["q_proj", "gate_proj"], "qwen3_vl", 4, "tensor(s) in the files name no module of this model"),
])  # fmt: skip
def test_a_leaf_named_adapter_of_another_family_is_refused(tiny_checkpoints, tmp_path, targets, onto, count, kind):
    vlm = load_vlm(str(tiny_checkpoints[BASE]), device="cpu")
    peft_model = peft.get_peft_model(vlm.model, peft.LoraConfig(r=4, lora_alpha=8, target_modules=targets))
    _trained_looking(peft_model, seed=1)
    folder = _save(peft_model, tmp_path / "hub_style")
    load_vlm(str(tiny_checkpoints[BASE]), device="cpu", adapter=folder)  # on its own family it fits
    expected = f"{folder}: the adapter does not fit this model: {count} {kind}"
    with pytest.raises(VisalignError, match="^" + re.escape(expected)):
        load_vlm(str(tiny_checkpoints[onto]), device="cpu", adapter=folder)
