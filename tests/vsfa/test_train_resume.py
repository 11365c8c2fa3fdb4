"""Resume equivalence, non-finite losses, gradient checkpointing and a trainable projector, on tiny checkpoints."""

from __future__ import annotations

import json

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
    # float16 weights and lr 1e4: step 1 leaves LoRA weights near 1e4 (finite, float32), and the forward of step 2
    # overflows float16 (weights large enough to overflow float32 stop at the weights check of step 1 instead)
    config = validated_config(tiny_checkpoints["llava"], data, checkpoint_every=1, dtype="float16",
                              optim={"lr": 1e4, "max_grad_norm": None})
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


@pytest.mark.parametrize("kill_at", [2, 4])
def test_a_kill_right_after_a_checkpoint_leaves_no_gap_in_the_metrics(tiny_checkpoints, tmp_path, monkeypatch,
                                                                       kill_at):
    """Step N's metrics line is written before checkpoint N is renamed into place, so no kill can lose it."""
    from visalign.vsfa.training import trainer as trainer_module

    data = write_dataset(tmp_path / "data", "llava")
    config = validated_config(tiny_checkpoints["llava"], data, epochs=1, checkpoint_every=2)  # 4 steps
    whole = train(config, tmp_path / "whole")
    saved = trainer_module.save_checkpoint

    def killed_right_after(out, step, **kwargs):
        done = saved(out, step, **kwargs)
        if step == kill_at:
            raise Crash
        return done

    monkeypatch.setattr(trainer_module, "save_checkpoint", killed_right_after)
    with pytest.raises(Crash):
        train(config, tmp_path / "run")
    monkeypatch.setattr(trainer_module, "save_checkpoint", saved)
    again = train(config, tmp_path / "run")
    assert again.resumed_from == kill_at
    got = read_metrics(tmp_path / "run")
    assert [m["step"] for m in got] == [1, 2, 3, 4]
    assert [m["loss"] for m in got] == pytest.approx([m["loss"] for m in read_metrics(whole.out)], abs=1e-6)
    sidecar = json.loads((again.adapter / "visalign_adapter.json").read_text())
    assert again.final_loss == sidecar["final_loss"] == got[-1]["loss"] is not None


def test_a_finished_run_run_again_reports_its_final_loss_from_the_checkpoint(tiny_checkpoints, tmp_path):
    data = write_dataset(tmp_path / "data", "llava", count=4)
    config = validated_config(tiny_checkpoints["llava"], data, epochs=1)
    first = train(config, tmp_path / "run")
    metrics = tmp_path / "run" / "metrics.jsonl"
    metrics.write_text("".join(metrics.read_text().splitlines(keepends=True)[:-1]))  # its last line lost
    again = train(config, tmp_path / "run")
    assert again.resumed_from == again.steps == 2
    assert again.final_loss == first.final_loss is not None


def _with_text_only(root, records: int, text_only: list[int]):
    """A LLaVA data set in which the records ``text_only`` have no image (LLaVA-Instruct style mixes)."""
    data = write_dataset(root, "llava", count=records)
    rows = json.loads(data.read_text())
    for index in text_only:
        rows[index].pop("image")
        rows[index]["conversations"][0]["value"] = rows[index]["conversations"][0]["value"].replace("<image>", "")
    data.write_text(json.dumps(rows, indent=2))
    return data


def test_a_text_only_batch_gives_a_trained_projector_a_zero_gradient(tiny_checkpoints):
    """What lets DDP reduce the projector's gradient when one process's micro-batch has no image."""
    from visalign.models import assistant, user
    from visalign.vsfa.training.config import LoraConfig
    from visalign.vsfa.training.lora import apply_lora
    from visalign.vsfa.training.trainer import LabelledLoss, _image_params

    vlm = load_vlm(str(tiny_checkpoints["llava"]))
    apply_lora(vlm, LoraConfig(rank=4, train_projector=True))
    projector = _image_params(vlm)
    assert len(projector) == 4  # linear_1 and linear_2, weight and bias
    batch = vlm.training_inputs([[user("Hi there."), assistant("Hello.")]])
    loss = LabelledLoss(vlm, None, projector)(**batch)
    loss.backward()
    assert loss.item() == pytest.approx(vlm.loss(batch).item(), abs=0)
    assert all(p.grad is not None and not p.grad.any() for p in projector)


def test_a_step_without_any_image_leaves_a_trained_projector_alone(tiny_checkpoints, tmp_path):
    """Zero gradients would still move AdamW by its momentum: a step without images takes no projector step."""
    data = _with_text_only(tmp_path / "data", 4, text_only=[2, 3])
    config = validated_config(tiny_checkpoints["llava"], data, epochs=1, batch_size=1,
                              lora={"train_projector": True})  # fmt: skip
    train(config, tmp_path / "run")
    optimizer = torch.load(tmp_path / "run" / "checkpoints" / "step-00000004" / "optimizer.pt", weights_only=False)
    steps = sorted(float(state["step"]) for state in optimizer["state"].values())
    projector = 4
    assert steps[:projector] == [2.0] * projector and set(steps[projector:]) == {4.0}  # 2 of 4 steps had images


def test_a_trained_projector_under_two_processes_with_a_text_only_micro_batch_trains_like_one(tiny_checkpoints,
                                                                                           tmp_path):
    """One process's micro-batch without an image used to abort DDP (gloo) or hang it (NCCL)."""
    import os
    import subprocess
    import sys

    import yaml

    data = _with_text_only(tmp_path / "data", 4, text_only=[3])  # the text-only record shares every step with one
    settings = {"epochs": 2, "batch_size": 1, "lora": {"train_projector": True}}
    config = tmp_path / "train.yaml"
    config.write_text(yaml.safe_dump(train_config(tiny_checkpoints["llava"], data, **settings)))
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "visalign", "vsfa",
               "train", "-c", str(config), "-o", str(tmp_path / "two")]  # fmt: skip
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    two = read_metrics(tmp_path / "two")
    train(validated_config(tiny_checkpoints["llava"], data, **{**settings, "batch_size": 2}), tmp_path / "one")
    one = read_metrics(tmp_path / "one")
    assert len(two) == 4
    assert [m["loss"] for m in two] == pytest.approx([m["loss"] for m in one], rel=1e-5)
    assert [m["grad_norm"] for m in two] == pytest.approx([m["grad_norm"] for m in one], rel=1e-4)
