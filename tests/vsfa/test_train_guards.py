"""What a resumed or reloaded training run refuses (other data, other base weights) and what no longer blocks it."""

from __future__ import annotations

import json
import logging
import math
import re
import shutil

import pytest
from cli_in_process import run_in_process as run_cli
from train_support import Crash, crash_at_3, killed_after_step_3, noise_png, one_thread, validated_config, write_dataset

from visalign.config import JobConfig
from visalign.errors import VisalignError
from visalign.evaluation.config import SystemConfig
from visalign.evaluation.systems import SystemFactory
from visalign.models import weights_fingerprint
from visalign.models.random_checkpoints import write_random_checkpoint
from visalign.runs import config_hash, scrub_secrets
from visalign.vsfa.training import load_adapter, merge_adapter, read_metrics, train
from visalign.vsfa.training.checkpoint import check_resumable


@pytest.fixture(autouse=True)
def _threads():
    one_thread()


def _whole_and_killed_runs(tiny_checkpoints, tmp_path):
    """The data, a config, the run trained through, and the same run killed after step 3 (checkpoint: step 2)."""
    data = write_dataset(tmp_path / "data", "llava")
    config = validated_config(tiny_checkpoints["llava"], data, epochs=2, checkpoint_every=2)
    whole = train(config, tmp_path / "whole")
    killed_after_step_3(config, tmp_path / "run")
    return data, config, whole, tmp_path / "run"


def test_resuming_after_the_images_were_redrawn_is_refused_and_restoring_them_resumes(tiny_checkpoints, tmp_path):
    data = write_dataset(tmp_path / "data", "llava")
    config = validated_config(tiny_checkpoints["llava"], data, epochs=2, checkpoint_every=2)
    run = tmp_path / "run"
    killed_after_step_3(config, run)
    originals = {p: p.read_bytes() for p in (tmp_path / "data" / "images").iterdir()}
    # same file names, same llava.json: only the pixels changed
    for i in range(8):
        noise_png(tmp_path / "data" / "images" / f"img{i}.png", (32, 32), seed=100 + i)
    with pytest.raises(VisalignError) as refused:
        train(config, run)
    message = str(refused.value)
    assert "\n" not in message
    assert message.startswith(f"{run}: the training data changed since checkpoint step-00000002 was written")
    assert message.endswith("restore the data the run began with, or train into a new --out directory")
    for path, content in originals.items():
        path.write_bytes(content)
    resumed = train(config, run)
    assert resumed.resumed_from == 2 and [m["step"] for m in read_metrics(run)] == list(range(1, 9))


def test_resuming_on_a_rebuilt_base_model_is_refused(tmp_path):
    base = write_random_checkpoint("llava", tmp_path / "base", seed=0)
    before = weights_fingerprint(str(base))
    data = write_dataset(tmp_path / "data", "llava")
    config = validated_config(base, data, epochs=2, checkpoint_every=2)
    run = tmp_path / "run"
    killed_after_step_3(config, run)
    state = json.loads((run / "checkpoints" / "step-00000002" / "state.json").read_text())
    assert state["base_fingerprint"] == before and len(before) == 16
    write_random_checkpoint("llava", base, seed=1)  # rebuilt in place: same path, other weights
    after = weights_fingerprint(str(base))
    assert after != before
    with pytest.raises(VisalignError) as refused:
        train(config, run)
    message = str(refused.value)
    assert "\n" not in message
    assert message.startswith(f"{run}: checkpoint step-00000002 was trained on base model weights {before}, "
                              f"but '{base}' here has {after}; LoRA weights do not carry over")  # fmt: skip
    assert message.endswith("or train into a new --out directory")
    write_random_checkpoint("llava", base, seed=0)  # the same weights again: the run continues
    assert train(config, run).resumed_from == 2


def test_an_adapter_refuses_other_base_weights_on_load_and_merge(tmp_path, capsys):
    base = write_random_checkpoint("llava", tmp_path / "base", seed=0)
    trained_on = weights_fingerprint(str(base))
    data = write_dataset(tmp_path / "data", "llava", count=4)
    adapter = train(validated_config(base, data, epochs=1), tmp_path / "run").adapter
    sidecar = json.loads((adapter / "visalign_adapter.json").read_text())
    assert sidecar["base_fingerprint"] == trained_on and sidecar["base_model"] == str(base)
    load_adapter(adapter)  # the base it was trained on loads

    other = write_random_checkpoint("llava", tmp_path / "other", seed=1)
    expected = (f"{adapter}: trained on base model weights {trained_on}, but '{other}' here has "
                f"{weights_fingerprint(str(other))}; LoRA weights do not carry over to other base weights")  # fmt: skip
    with pytest.raises(VisalignError, match="^" + re.escape(expected)):
        load_adapter(adapter, base=str(other))
    with pytest.raises(VisalignError, match="^" + re.escape(expected)):
        merge_adapter(adapter, tmp_path / "merged", base=str(other))
    assert not (tmp_path / "merged").exists()
    capsys.readouterr()  # only the command's own output below
    code, _, err = run_cli(["vsfa", "merge", str(adapter), "--base", str(other), "--out", str(tmp_path / "m")], capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith(f"error: {expected}"), err
    assert lines[0].endswith("(--allow-base-mismatch; allow_model_mismatch in an eval system)")
    assert not (tmp_path / "m").exists()
    # an evaluation system with the adapter on other weights is refused too, unless asked for
    factory = SystemFactory(max_new_tokens=2, batch_size=1, cache_dir=tmp_path / "cache")
    with pytest.raises(VisalignError, match="^system 'tuned': " + re.escape(expected)):
        factory.build(SystemConfig(name="tuned", model=str(other), adapter=adapter))
    factory.build(SystemConfig(name="transfer", model=str(other), adapter=adapter, allow_model_mismatch=True))
    # on purpose (a transfer study), the flag lets it through
    code, out, err = run_cli(["vsfa", "merge", str(adapter), "--base", str(other), "--out", str(tmp_path / "m"),
                              "--allow-base-mismatch"], capsys)  # fmt: skip
    assert code == 0, err
    assert out.strip() == f"{tmp_path / 'm'}: merged checkpoint"
    # the base rebuilt in place is refused through the sidecar's own base_model as well
    write_random_checkpoint("llava", base, seed=1)
    with pytest.raises(VisalignError, match=f"'{base}' here has {weights_fingerprint(str(base))}"):
        load_adapter(adapter)
    # an adapter saved before fingerprints were recorded is not checked
    del sidecar["base_fingerprint"]
    (adapter / "visalign_adapter.json").write_text(json.dumps(sidecar))
    assert load_adapter(adapter).spec == str(base)


def test_a_non_finite_loss_gives_advice_that_works(tiny_checkpoints, tmp_path):
    data = write_dataset(tmp_path / "data", "llava")
    checkpoint = tiny_checkpoints["llava"]
    # float16 weights and lr 1e4: the forward of step 2 overflows (a float32 overflow of the weights themselves stops
    # at step 1, see test_train_lr_overflow)
    bad = validated_config(checkpoint, data, epochs=1, checkpoint_every=1, dtype="float16",
                           optim={"lr": 1e4, "max_grad_norm": None})
    run = tmp_path / "run"
    with pytest.raises(VisalignError) as first:
        train(bad, run)
    message = str(first.value)
    kept = run / "checkpoints" / "step-00000001"
    assert message == (
        f"non-finite loss nan at step 2; training stopped, the last good checkpoint is {kept} (it resumes only this "
        "config, which fails the same way again); lower optim.lr (now 10000) or set optim.max_grad_norm: 1.0 or use "
        "dtype: bfloat16 instead of float16, and train into a new --out directory"
    )
    # what the message says: the same command fails the same way, and a changed config needs a new --out
    with pytest.raises(VisalignError) as again:
        train(bad, run)
    assert str(again.value) == message
    fixed = validated_config(checkpoint, data, epochs=1, checkpoint_every=1, optim={"lr": 1e-3, "max_grad_norm": 1.0})
    with pytest.raises(VisalignError, match="different config"):
        train(fixed, run)
    done = train(fixed, tmp_path / "new")
    # stopped before its first checkpoint: nothing is said to resume
    early = validated_config(checkpoint, data, epochs=1, checkpoint_every=4, dtype="float16",
                             optim={"lr": 1e4, "max_grad_norm": 1.0})
    with pytest.raises(VisalignError) as none_kept:
        train(early, tmp_path / "early")
    assert str(none_kept.value) == ("non-finite loss nan at step 2; training stopped, no checkpoint was written yet; "
                                    "lower optim.lr (now 10000) or use dtype: bfloat16 instead of float16, and train "
                                    "into a new --out directory")  # fmt: skip
    losses = [m["loss"] for m in read_metrics(tmp_path / "new")]
    assert done.steps == 4 and len(losses) == 4 and all(math.isfinite(loss) and 0 < loss < 20 for loss in losses)


def test_a_torn_last_metrics_line_is_dropped_and_the_run_resumes(tiny_checkpoints, tmp_path, caplog):
    data = write_dataset(tmp_path / "data", "llava")
    config = validated_config(tiny_checkpoints["llava"], data, epochs=2, checkpoint_every=2)
    run = tmp_path / "run"
    killed_after_step_3(config, run)
    torn = '{"step": 4, "epoch": 0, "loss": 2.3'  # killed mid-write
    with open(run / "metrics.jsonl", "a") as handle:
        handle.write(torn)
    with caplog.at_level(logging.WARNING, logger="visalign.vsfa.training.metrics"):
        assert [m["step"] for m in read_metrics(run)] == [1, 2, 3]
    assert f"{run / 'metrics.jsonl'}:4: ignoring a torn last line ({len(torn)} bytes)" in caplog.text
    resumed = train(config, run)
    assert resumed.resumed_from == 2 and [m["step"] for m in read_metrics(run)] == list(range(1, 9))
    assert torn not in (run / "metrics.jsonl").read_text()


def test_a_corrupt_metrics_line_before_the_last_names_its_line(tmp_path):
    lines = ['{"step": 1, "loss": 2.0}', '{"step": 2, "lo', '{"step": 3, "loss": 1.0}']
    (tmp_path / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(VisalignError, match=rf"^{tmp_path / 'metrics.jsonl'}:2: corrupt line in the middle"):
        read_metrics(tmp_path)


def test_logging_and_checkpoint_settings_may_change_when_a_run_resumes(tiny_checkpoints, tmp_path):
    data, config, whole, run = _whole_and_killed_runs(tiny_checkpoints, tmp_path)
    watched = validated_config(tiny_checkpoints["llava"], data, epochs=2, checkpoint_every=1, keep_checkpoints=3,
                               logging={"tensorboard": True, "every": 2})  # fmt: skip
    assert watched.config_hash() == config.config_hash()
    resumed = train(watched, run)
    assert resumed.resumed_from == 2
    assert [m["loss"] for m in read_metrics(run)] == pytest.approx([m["loss"] for m in read_metrics(whole.out)],
                                                                   abs=1e-6)  # fmt: skip
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [f"step-0000000{s}" for s in (6, 7, 8)]
    assert len(list((run / "tensorboard").glob("events.out.tfevents.*"))) == 1
    manifest = json.loads((run / "manifest.json").read_text())
    assert "logging" not in manifest["config"] and manifest["config"]["optim"]["lr"] == 0.02
    assert manifest["extra"]["unhashed_settings"] == {"checkpoint_every": 2, "keep_checkpoints": 2,
                                                      "logging": config.logging.model_dump(mode="json")}  # fmt: skip
    # what the weights depend on still counts
    with pytest.raises(VisalignError, match="different config"):
        train(validated_config(tiny_checkpoints["llava"], data, epochs=2, checkpoint_every=2, seed=4), run)


def test_a_run_folder_from_before_the_hash_split_resumes_after_the_upgrade(tiny_checkpoints, tmp_path):
    data, config, whole, run = _whole_and_killed_runs(tiny_checkpoints, tmp_path)
    # what a run killed before 2026-11-23 left: the whole config and its hash in the manifest, the config's full
    # hash (logging settings included) in each checkpoint
    manifest = json.loads((run / "manifest.json").read_text())
    full = scrub_secrets(config.model_dump(mode="json"))
    (run / "manifest.json").write_text(json.dumps({**manifest, "config": full, "config_hash": config_hash(full)}))
    state_file = run / "checkpoints" / "step-00000002" / "state.json"
    state = json.loads(state_file.read_text())
    state_file.write_text(json.dumps({**state, "config_hash": JobConfig.config_hash(config)}))
    resumed = train(config, run)
    assert resumed.resumed_from == 2
    assert [m["loss"] for m in read_metrics(run)] == pytest.approx([m["loss"] for m in read_metrics(whole.out)],
                                                                   abs=1e-6)  # fmt: skip
    other = tmp_path / "other"  # an old folder of another config is still refused
    killed_after_step_3(config, other)
    (other / "manifest.json").write_text(json.dumps({**manifest, "config_hash": "0" * 64}))
    with pytest.raises(VisalignError, match="different config"):
        train(config, other)


def test_a_mistyped_model_folder_leaves_no_run_behind(tiny_checkpoints, tmp_path):
    """The corrected config must be able to use the same --out (a manifest would call it a different config)."""
    data = write_dataset(tmp_path / "data", "llava")
    typo = validated_config(tmp_path / "modles" / "typo", data, epochs=1)
    with pytest.raises(VisalignError, match="typo"):
        train(typo, tmp_path / "run")
    assert not (tmp_path / "run" / "manifest.json").exists()
    result = train(validated_config(tiny_checkpoints["llava"], data, epochs=1), tmp_path / "run")
    assert result.adapter.is_dir()


def test_a_mistyped_model_folder_shaped_like_a_hub_id_leaves_no_run_behind(tiny_checkpoints, tmp_path, monkeypatch):
    """``models/qwen7b`` cannot be told from a hub id by its shape; reading its config before the manifest tells."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # no hub retries on this machine
    data = write_dataset(tmp_path / "data", "llava")
    monkeypatch.chdir(tmp_path)
    typo = validated_config("models/qwen7b", data, epochs=1)
    with pytest.raises(VisalignError, match="models/qwen7b: no such model folder, and no hub model"):
        train(typo, tmp_path / "run")
    assert not (tmp_path / "run" / "manifest.json").exists()


def test_resuming_under_another_process_count_is_refused_and_a_missing_rng_file_is_an_error(tiny_checkpoints,
                                                                                          tmp_path):
    data = write_dataset(tmp_path / "data", "llava")
    config = validated_config(tiny_checkpoints["llava"], data, epochs=2, checkpoint_every=2)
    run = tmp_path / "run"
    killed_after_step_3(config, run)
    checkpoint = run / "checkpoints" / "step-00000002"
    state = json.loads((checkpoint / "state.json").read_text())
    assert (state["num_processes"], state["examples_per_step"], state["total_steps"]) == (1, 2, 8)
    one = {"num_processes": 1, "examples_per_step": 2, "total_steps": 8}
    two = {"num_processes": 2, "examples_per_step": 4, "total_steps": 4}  # what torchrun --nproc_per_node 2 plans

    def check(layout):
        return check_resumable(checkpoint, config_hash=config.config_hash(), data_hash=state["data_hash"],
                               base_spec=config.model, base_fingerprint=state["base_fingerprint"],
                               layout=layout)  # fmt: skip

    with pytest.raises(VisalignError) as refused:
        check(two)
    assert str(refused.value) == (
        f"{run}: checkpoint step-00000002 was written under another batch plan (num_processes 1 -> 2, "
        "examples_per_step 2 -> 4, total_steps 8 -> 4): its step number would point at other examples, and its "
        "schedule was built for its total; resume it in one process (the plain command, without torchrun or "
        "accelerate launch) as it was written, or train into a new --out directory"
    )
    # a checkpoint from before the count was recorded: one rng-<rank>.pt per process tells it
    legacy = {k: v for k, v in state.items() if k not in ("num_processes", "examples_per_step", "loss")}
    (checkpoint / "state.json").write_text(json.dumps(legacy))
    check(one)
    with pytest.raises(VisalignError, match=r"another batch plan \(num_processes 1 -> 2, total_steps 8 -> 4\)"):
        check(two)
    shutil.copy(checkpoint / "rng-0.pt", checkpoint / "rng-1.pt")
    check({**two, "total_steps": 8})  # written by two processes (the total stands in for theirs)
    with pytest.raises(VisalignError, match=r"resume it with 2 processes \(torchrun --nproc_per_node 2, or"):
        check(one)
    (checkpoint / "rng-1.pt").unlink()
    # this process's random state missing: an error, not a resume with other dropout masks
    (checkpoint / "rng-0.pt").rename(tmp_path / "rng-0.pt")
    with pytest.raises(VisalignError) as missing:
        train(config, run)
    assert str(missing.value).startswith(f"{checkpoint}: no rng-0.pt (process 0's random state): the checkpoint is "
                                         "incomplete or was written by fewer processes")  # fmt: skip
    (tmp_path / "rng-0.pt").rename(checkpoint / "rng-0.pt")
    resumed = train(config, run)  # the old checkpoint, in one process as it was written
    assert resumed.resumed_from == 2 and [m["step"] for m in read_metrics(run)] == list(range(1, 9))


def test_the_adapter_records_a_relative_base_folder_as_an_absolute_path(tiny_checkpoints, tmp_path, monkeypatch):
    work = tmp_path / "work"
    shutil.copytree(tiny_checkpoints["llava"], work / "ckpt" / "llava")
    data = write_dataset(work / "data", "llava", count=4)
    monkeypatch.chdir(work)
    config = validated_config("ckpt/llava", data, epochs=2, checkpoint_every=2)  # as the docs write it
    with pytest.raises(Crash):
        train(config, "run", on_step=crash_at_3)
    resumed = train(config, "run")  # the run folder's hashes are unchanged: it resumes
    assert resumed.resumed_from == 2
    sidecar = json.loads((work / "run" / "adapter" / "visalign_adapter.json").read_text())
    assert sidecar["base_model"] == str(work / "ckpt" / "llava") and sidecar["config"]["model"] == "ckpt/llava"
    from visalign.vsfa.training.trainer import _recorded_base

    monkeypatch.chdir(tmp_path)  # elsewhere, the adapter still finds its base (and checks its fingerprint)
    assert load_adapter(work / "run" / "adapter").spec == str(work / "ckpt" / "llava")
    assert [_recorded_base(spec) for spec in ("default", "llava-hf/llava-1.5-7b-hf")] == [
        "default", "llava-hf/llava-1.5-7b-hf"]  # fmt: skip
