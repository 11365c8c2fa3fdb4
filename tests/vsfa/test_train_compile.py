"""``compile: true``: the decoder layers and vision blocks run compiled, and training follows the eager run."""

from __future__ import annotations

import torch
from safetensors.torch import load_file
from train_support import one_thread, train_config, write_dataset

from visalign.vsfa.training import VsfaTrainConfig, read_metrics, train

FAMILY = "qwen2_5_vl"  # the family of the GPU benchmark (batched windowed vision attention inside the blocks)


def test_compiled_training_follows_the_eager_run_and_saves_the_same_adapter(tiny_checkpoints, tmp_path):
    one_thread()
    data = write_dataset(tmp_path / "data", FAMILY)
    runs = {}
    for name, compiled in (("eager", False), ("compiled", True)):
        config = VsfaTrainConfig(**train_config(tiny_checkpoints[FAMILY], data, epochs=1, compile=compiled))
        result = train(config, tmp_path / name)
        runs[name] = result, [m["loss"] for m in read_metrics(tmp_path / name)]
    (eager, eager_curve), (compiled, compiled_curve) = runs["eager"], runs["compiled"]

    names = compiled.vlm.family.modules
    for path in (names.decoder_layers, names.vision_blocks):
        blocks = compiled.vlm.model.get_submodule(path)
        assert all(block._compiled_call_impl is not None for block in blocks), path
        assert all(b._compiled_call_impl is None for b in eager.vlm.model.get_submodule(path)), path

    assert len(compiled_curve) == len(eager_curve) == 4
    assert eager_curve[-1] < eager_curve[0]  # it learns, so the comparison below compares moving curves
    assert max(abs(a - b) for a, b in zip(compiled_curve, eager_curve, strict=True)) < 1e-4, runs
    eager_weights = load_file(eager.adapter / "adapter_model.safetensors")
    compiled_weights = load_file(compiled.adapter / "adapter_model.safetensors")
    assert compiled_weights.keys() == eager_weights.keys()  # compilation leaves every name as it was
    for key, weight in eager_weights.items():
        torch.testing.assert_close(compiled_weights[key], weight, rtol=1e-4, atol=1e-5)
