"""Resume equivalence, non-finite losses, gradient checkpointing and a trainable projector, on tiny checkpoints."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file
from train_support import Crash, one_thread, train_config, validated_config, write_dataset

from visalign.errors import VisalignError
from visalign.models import load_vlm
from visalign.vsfa.training import load_adapter, merge_adapter, read_metrics, train


@pytest.fixture(autouse=True)
def _threads():
    one_thread()


def test_a_crashed_and_resumed_run_has_the_uninterrupted_loss_curve(tiny_checkpoints, tmp_path):
    data = write_dataset(tmp_path / "data", "llava")
    # dropout draws random numbers and accumulation spans micro-batches: both must resume exactly
    config = validated_config(tiny_checkpoints["llava"], data, grad_accum=2, checkpoint_every=2,
                              lora={"dropout": 0.1}, optim={"schedule": "cosine", "warmup_steps": 1})
    whole = train(config, tmp_path / "whole")

    def crash_at_3(metrics):
        if metrics["step"] == 3:
            raise Crash

    with pytest.raises(Crash):
        train(config, tmp_path / "resumed", on_step=crash_at_3)
    assert [m["step"] for m in read_metrics(tmp_path / "resumed")] == [1, 2, 3]
    again = train(config, tmp_path / "resumed")
    assert again.resumed_from == 2 and again.steps == whole.steps == 6
    expected, got = read_metrics(tmp_path / "whole"), read_metrics(tmp_path / "resumed")
    assert [m["step"] for m in got] == [1, 2, 3, 4, 5, 6]  # step 3 was redone, not logged twice
    for key in ("loss", "grad_norm", "lr"):
        assert [m[key] for m in got] == pytest.approx([m[key] for m in expected], abs=1e-6), key
    assert len({m["lr"] for m in expected}) > 3  # the schedule really moves, so its state was restored
    a = load_file(str(whole.adapter / "adapter_model.safetensors"))
    b = load_file(str(again.adapter / "adapter_model.safetensors"))
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6, rtol=0) for k in a)


def test_resuming_with_another_config_is_refused(tiny_checkpoints, tmp_path):
    data = write_dataset(tmp_path / "data", "llava", count=4)
    train(validated_config(tiny_checkpoints["llava"], data, epochs=1), tmp_path / "run")
    with pytest.raises(VisalignError, match="different config"):
        train(validated_config(tiny_checkpoints["llava"], data, epochs=1, optim={"lr": 0.5}), tmp_path / "run")


def test_a_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tiny_checkpoints, tmp_path):
    data = write_dataset(tmp_path / "data", "llava")
    config = validated_config(tiny_checkpoints["llava"], data, checkpoint_every=1,
                              optim={"lr": 1e30, "max_grad_norm": None})
    with pytest.raises(VisalignError, match=r"non-finite loss .* at step 2; .*last good checkpoint is .*step-00000001"):
        train(config, tmp_path / "run")
    kept = tmp_path / "run" / "checkpoints" / "step-00000001" / "trainable.safetensors"
    assert all(torch.isfinite(t).all() for t in load_file(str(kept)).values())
    assert not (tmp_path / "run" / "adapter").exists()


def test_out_of_memory_stops_with_advice_and_a_rerun_resumes(tiny_checkpoints, tmp_path):
    data = write_dataset(tmp_path / "data", "llava")
    config = validated_config(tiny_checkpoints["llava"], data, epochs=1, checkpoint_every=1)
    steps_done = []

    def allocator_fails_in_step_3(module, args, output):
        # raised where the CUDA caching allocator raises it: inside a module's forward, mid-step
        if len(steps_done) == 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    hook = torch.nn.modules.module.register_module_forward_hook(allocator_fails_in_step_3)
    try:
        with pytest.raises(VisalignError) as stopped:
            train(config, tmp_path / "run", on_step=lambda metrics: steps_done.append(metrics["step"]))
    finally:
        hook.remove()
    message = str(stopped.value)
    assert "\n" not in message
    assert "batch_size: 1 with grad_accum: 2" in message and "gradient_checkpointing: true" in message
    assert "stopped at step 3" in message
    assert message.endswith("step-00000002 (the same command resumes from it; a changed config trains into a new "
                            "--out directory)")  # each tip changes the config hash, which this --out refuses
    assert [m["step"] for m in read_metrics(tmp_path / "run")] == [1, 2]
    again = train(config, tmp_path / "run")
    assert again.resumed_from == 2 and [m["step"] for m in read_metrics(tmp_path / "run")] == [1, 2, 3, 4]


def test_gradient_checkpointing_gives_the_same_steps(tiny_checkpoints, tmp_path):
    data = write_dataset(tmp_path / "data", "qwen2_5_vl", count=4)
    plain = validated_config(tiny_checkpoints["qwen2_5_vl"], data, epochs=1)
    checkpointed = validated_config(tiny_checkpoints["qwen2_5_vl"], data, epochs=1, gradient_checkpointing=True)
    train(plain, tmp_path / "plain")
    train(checkpointed, tmp_path / "checkpointed")
    a, b = read_metrics(tmp_path / "plain"), read_metrics(tmp_path / "checkpointed")
    assert len(a) == 2
    assert [m["loss"] for m in b] == pytest.approx([m["loss"] for m in a], abs=1e-6)
    assert [m["grad_norm"] for m in b] == pytest.approx([m["grad_norm"] for m in a], rel=1e-5)


def test_a_trainable_projector_trains_with_the_deepstack_mergers_and_merges(tiny_checkpoints, tmp_path):
    data = write_dataset(tmp_path / "data", "qwen3_vl", count=4)
    result = train(validated_config(tiny_checkpoints["qwen3_vl"], data, epochs=2, lora={"train_projector": True}),
                   tmp_path / "run")  # fmt: skip
    base = load_vlm(str(tiny_checkpoints["qwen3_vl"])).model
    merged = load_vlm(str(merge_adapter(result.adapter, tmp_path / "merged"))).model
    loaded = load_adapter(result.adapter).model

    def weight(model, path):
        return model.get_submodule(path).weight

    for path in ("model.visual.merger.linear_fc2", "model.visual.deepstack_merger_list.0.linear_fc2"):
        assert not torch.equal(weight(merged, path), weight(base, path)), path
    for path in ("model.visual.blocks.0.attn.qkv", "model.visual.patch_embed.proj", "lm_head"):
        assert torch.equal(weight(merged, path), weight(base, path)), path
    # the adapter file carries the trained projector: loading it gives the same projector as the merge
    trained = loaded.get_submodule("model.visual.merger").modules_to_save["default"].linear_fc2.weight
    assert torch.equal(trained, weight(merged, "model.visual.merger.linear_fc2"))


def test_two_processes_under_torchrun_split_the_batches_and_train_like_one(tiny_checkpoints, tmp_path):
    """Data parallel on the CPU (gloo): the command a GPU user runs under accelerate/torchrun, no code change."""
    import os
    import subprocess
    import sys

    import yaml

    data = write_dataset(tmp_path / "data", "llava")
    config = tmp_path / "train.yaml"
    config.write_text(yaml.safe_dump(train_config(tiny_checkpoints["llava"], data, epochs=1, checkpoint_every=1)))
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "visalign", "vsfa",
               "train", "-c", str(config), "-o", str(tmp_path / "run")]  # fmt: skip
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("final loss") == 1, done.stdout  # the summary comes from the main process only
    metrics = read_metrics(tmp_path / "run")
    assert [m["step"] for m in metrics] == [1, 2]  # 8 examples / (2 per process x 2 processes)
    last = tmp_path / "run" / "checkpoints" / "step-00000002"
    assert (last / "rng-0.pt").is_file() and (last / "rng-1.pt").is_file()
    trained = load_adapter(tmp_path / "run" / "adapter")
    assert any(".lora_B." in n and p.abs().sum() > 0 for n, p in trained.model.named_parameters())
    # one process with the same global batch sees the same examples per step: the same objective, the same steps
    single_config = validated_config(tiny_checkpoints["llava"], data, epochs=1, checkpoint_every=1, batch_size=4)
    train(single_config, tmp_path / "single")
    single = read_metrics(tmp_path / "single")
    assert [m["loss"] for m in metrics] == pytest.approx([m["loss"] for m in single], rel=1e-5)
    assert [m["grad_norm"] for m in metrics] == pytest.approx([m["grad_norm"] for m in single], rel=1e-4)
    assert [m["tokens"] for m in metrics] == [m["tokens"] for m in single]
