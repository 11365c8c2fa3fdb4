"""LoRA training on a tiny checkpoint of every family: what trains, what stays frozen, the loss, the artefacts."""

from __future__ import annotations

import json
import math

import pytest
import torch
from family_tables import FamilyTable
from PIL import Image
from safetensors.torch import load_file
from train_support import IMAGE_SIZE, noise_png, one_thread, train_config, write_dataset

from visalign.models import FAMILIES as REGISTERED_FAMILIES
from visalign.models import assistant, load_vlm, user
from visalign.vsfa.training import VsfaTrainConfig, load_adapter, merge_adapter, read_metrics, train

#: Every registered family (a new one needs its entries in the tables below, or its tests fail by name).
FAMILIES = tuple(REGISTERED_FAMILIES)
# Dotted prefixes of the vision tower and projector(s) in each family's state dict, written from the HF classes.
FROZEN_VISION = FamilyTable(
    "FROZEN_VISION", "tests/vsfa/test_train_families.py",
    "the state-dict prefixes of its vision tower and projector (a tuple of strings)",
    {
        "qwen2_5_vl": ("model.visual.",),
        "qwen3_vl": ("model.visual.",),
        "llava": ("model.vision_tower.", "model.multi_modal_projector."),
        "llava_next": ("model.vision_tower.", "model.multi_modal_projector."),
    },
)
LM_LINEARS = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}


def _split(state: dict[str, torch.Tensor]) -> tuple[dict, dict]:
    """Split a trained model's state dict into base weights (peft's base_layer names undone) and LoRA weights."""
    base, lora = {}, {}
    for name, tensor in state.items():
        if ".lora_" in name:
            lora[name] = tensor
        else:
            base[name.replace(".base_layer.", ".")] = tensor
    return base, lora


@pytest.fixture(scope="module", params=FAMILIES)
def trained(request, tiny_checkpoints, tmp_path_factory):
    one_thread()
    family = request.param
    root = tmp_path_factory.mktemp(f"train-{family}")
    data = write_dataset(root / "data", family)
    before = {k: v.clone() for k, v in load_vlm(str(tiny_checkpoints[family])).model.state_dict().items()}
    config = VsfaTrainConfig.model_validate(train_config(tiny_checkpoints[family], data))
    result = train(config, root / "run")
    return family, root, result, before


def test_only_lora_weights_change_and_the_vision_side_is_bit_identical(trained):
    family, _, result, before = trained
    base, lora = _split(result.vlm.model.state_dict())
    assert set(base) == set(before)
    changed = [name for name in base if not torch.equal(base[name], before[name])]
    assert changed == []
    vision = [name for name in before if name.startswith(FROZEN_VISION[family])]
    assert len(vision) > 10  # the prefixes really name the tower and projector
    # LoRA sits on the seven linears of every language-model layer, and nowhere else
    layers = result.vlm.model.config.text_config.num_hidden_layers
    assert len(lora) == 2 * 7 * layers
    assert {name.split(".lora_")[0].rsplit(".", 1)[1] for name in lora} == LM_LINEARS
    assert all(name.startswith("model.language_model.layers.") for name in lora)
    # every LoRA B started at zero and moved
    assert all(t.abs().sum() > 0 for n, t in lora.items() if ".lora_B." in n)


def _set_loss(vlm, data) -> float:
    """Mean loss over the whole training file, read independently of the trainer's data code."""
    conversations = []
    for item in json.loads(data.read_text()):
        image = Image.open(data.parent / item["image"]).convert("RGB")
        turns = item["conversations"]
        conversation = [user(turns[0]["value"].replace("<image>", "").strip(), image), assistant(turns[1]["value"])]
        for question, answer in zip(turns[2::2], turns[3::2], strict=True):
            conversation += [user(question["value"]), assistant(answer["value"])]
        conversations.append(conversation)
    with torch.no_grad():
        return vlm.loss(vlm.training_inputs(conversations)).item()


def test_the_loss_falls_from_chance(trained):
    family, root, result, _ = trained
    metrics = read_metrics(root / "run")
    assert len(metrics) == result.steps == 12  # 8 examples / batch 2 x 3 epochs
    assert all(m["tokens"] > 0 and m["tokens_per_s"] > 0 and m["lr"] == 0.02 for m in metrics)
    chance = math.log(len(result.vlm.tokenizer))  # random weights: about uniform over the vocabulary
    assert abs(metrics[0]["loss"] - chance) < 0.3
    data = root / "data" / "llava.json"
    before = _set_loss(load_vlm(result.vlm.spec), data)
    after = _set_loss(result.vlm, data)
    # A tiny random model's frozen final norm and lm_head cap how peaked its logits can get, so the fall is small
    # (measured 0.1-0.3 nats); the embedded default model's test below asserts a large fall.
    assert abs(before - chance) < 0.3
    assert after < before - 0.05, (family, before, after)


def test_adapter_round_trip_and_merge_reproduce_the_trained_model(trained, tmp_path):
    family, root, result, _ = trained
    sidecar = json.loads((result.adapter / "visalign_adapter.json").read_text())
    assert sidecar["base_model"] == result.vlm.spec and sidecar["family"] == family
    assert sidecar["data"]["hash"] == result.data_hash and len(result.data_hash) == 64
    assert sidecar["config_hash"] == VsfaTrainConfig.model_validate(sidecar["config"]).config_hash()
    image = noise_png(tmp_path / "probe.png", IMAGE_SIZE[family], seed=99)
    probe = Image.open(tmp_path / image).convert("RGB")
    conversations = [[user("What colour is the sky in this picture?", probe)], [user("Describe the street.")]]
    scored = [[*c, assistant("The sky is blue and clear.")] for c in conversations]

    def outputs(vlm):
        with torch.no_grad():
            loss = vlm.loss(vlm.training_inputs(scored)).item()
        return vlm.generate(conversations, max_new_tokens=8), loss

    trained_answers, trained_loss = outputs(result.vlm)
    loaded_answers, loaded_loss = outputs(load_adapter(result.adapter))
    assert loaded_answers == trained_answers
    assert loaded_loss == trained_loss
    merged = merge_adapter(result.adapter, tmp_path / "merged")
    merged_answers, merged_loss = outputs(load_vlm(str(merged)))
    assert merged_answers == trained_answers
    assert merged_loss == pytest.approx(trained_loss, abs=1e-4)
    _, base_loss = outputs(load_vlm(result.vlm.spec))
    assert abs(trained_loss - base_loss) > 0.01  # the adapter matters: the round trips are not vacuous


def test_checkpoint_holds_only_the_trainable_weights(trained):
    _, root, result, _ = trained
    weights = load_file(str(root / "run" / "checkpoints" / "step-00000012" / "trainable.safetensors"))
    assert weights and all(".lora_" in name for name in weights)
    assert sorted((root / "run" / "checkpoints").iterdir())[0].name == "step-00000008"  # keep_checkpoints: 2
