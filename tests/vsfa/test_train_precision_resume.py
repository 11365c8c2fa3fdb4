"""A resumed training run continues in the dtype, on the device type and under the chat template it began with.

``dtype: auto`` is hashed as ``auto`` but resolves per machine (float32 on a CPU, bfloat16 on a GPU), and the base
model's weights fingerprint does not cover its chat template or tokenizer, which build the labels. Until
2026-11-24 a checkpoint recorded neither, so a run begun on a CPU continued in bfloat16 on a GPU, or on labels from
an edited template, without a word. Each test is a real run on a tiny LLaVA checkpoint, killed after step 3.
"""

from __future__ import annotations

import json
import logging
import shutil

import pytest
from train_support import killed_after_step_3, one_thread, validated_config, write_dataset

from visalign.errors import VisalignError
from visalign.vsfa.training import read_adapter_metadata, read_metrics, train
from visalign.vsfa.training.checkpoint import check_resumable

CHECKPOINT_LOGGER = "visalign.vsfa.training.checkpoint"
PINS = ("template", "dtype", "device_type")  # what state.json records since 2026-11-24


@pytest.fixture(autouse=True)
def _threads():
    one_thread()


def test_an_auto_run_resumes_only_in_the_dtype_it_began_in_and_naming_it_continues_the_run(tiny_checkpoints, tmp_path):
    data = write_dataset(tmp_path / "data", "llava")
    model, run = tiny_checkpoints["llava"], tmp_path / "run"
    config = validated_config(model, data, epochs=1, checkpoint_every=2)  # dtype: auto, float32 on this CPU
    whole = train(config, tmp_path / "whole")
    killed_after_step_3(config, run)
    # Resumed in bfloat16 (what auto gives on a GPU machine, named here since this one has no GPU): refused.
    with pytest.raises(VisalignError) as refused:
        train(validated_config(model, data, epochs=1, checkpoint_every=2, dtype="bfloat16"), run)
    assert str(refused.value) == (
        f"{run}: checkpoint step-00000002 was trained with the weights in float32 on cpu, but this run would load "
        "them in bfloat16 on cpu (dtype: auto is float32 on a CPU, bfloat16 on a GPU); continuing would mix the two "
        "in one run. To continue it, set dtype: float32 in the config (the weights then load in the dtype the run "
        "began in); or train into a new --out directory"
    )
    # The way on the message gives: name the dtype auto recorded. It continues the auto run, on its curve.
    again = train(validated_config(model, data, epochs=1, checkpoint_every=2, dtype="float32"), run)
    assert again.resumed_from == 2 and again.vlm.model.dtype == whole.vlm.model.dtype
    assert [m["loss"] for m in read_metrics(run)] == pytest.approx([m["loss"] for m in read_metrics(whole.out)],
                                                                   abs=1e-6)  # fmt: skip
    assert json.loads((run / "manifest.json").read_text())["config"]["dtype"] == "auto"  # still the same run
    sidecar = read_adapter_metadata(again.adapter)
    assert (sidecar["dtype"], sidecar["device_type"], sidecar["config"]["dtype"]) == ("float32", "cpu", "auto")
    assert sidecar["config_hash"] == config.config_hash()


def test_a_checkpoint_records_what_auto_resolved_to_and_a_gpu_resume_is_refused(tiny_checkpoints, tmp_path):
    data = write_dataset(tmp_path / "data", "llava")
    run = tmp_path / "run"
    config = validated_config(tiny_checkpoints["llava"], data, epochs=1, checkpoint_every=2)
    killed_after_step_3(config, run)
    checkpoint = run / "checkpoints" / "step-00000002"
    state = json.loads((checkpoint / "state.json").read_text())
    assert (state["dtype"], state["device_type"]) == ("float32", "cpu") and len(state["template"]) == 16

    def resume_on(precision):
        return check_resumable(checkpoint, config_hash=config.config_hash(), data_hash=state["data_hash"],
                               base_spec=config.model, base_fingerprint=state["base_fingerprint"],
                               template=state["template"], precision=precision)  # fmt: skip

    resume_on({"dtype": "float32", "device_type": "cpu"})
    # What the trainer passes on a GPU machine under dtype: auto
    with pytest.raises(VisalignError) as refused:
        resume_on({"dtype": "bfloat16", "device_type": "cuda"})
    assert str(refused.value) == (
        f"{run}: checkpoint step-00000002 was trained with the weights in float32 on cpu, but this run would load "
        "them in bfloat16 on cuda (dtype: auto is float32 on a CPU, bfloat16 on a GPU); continuing would mix the two "
        "in one run. To continue it, set dtype: float32 in the config (the weights then load in the dtype the run "
        "began in) and resume it where it trains on cpu (CUDA_VISIBLE_DEVICES= hides the GPUs from torch); or "
        "train into a new --out directory"
    )


def test_an_edited_chat_template_does_not_resume_the_run(tiny_checkpoints, tmp_path):
    model = shutil.copytree(tiny_checkpoints["llava"], tmp_path / "llava")
    data = write_dataset(tmp_path / "data", "llava")
    run = tmp_path / "run"
    config = validated_config(model, data, epochs=1, checkpoint_every=2)
    killed_after_step_3(config, run)
    template = model / "chat_template.jinja"
    original = template.read_text()
    # LLaVA-1.5's system line added in front: every example of the steps to come would be built on other tokens
    template.write_text("{{- 'A chat between a curious human and an artificial intelligence assistant. ' -}}\n"
                        + original)  # fmt: skip
    with pytest.raises(VisalignError, match=r"the chat template or tokenizer files of '.*llava' changed since "
                                            r"checkpoint step-00000002 was written \(template [0-9a-f]{16} != "
                                            r"[0-9a-f]{16}\)"):  # fmt: skip
        train(config, run)
    template.write_text(original)  # the model folder restored: a true resume
    assert train(config, run).resumed_from == 2


def test_a_checkpoint_written_before_the_pins_resumes_with_a_warning_and_is_checked_from_then_on(
    tiny_checkpoints, tmp_path, caplog
):
    data = write_dataset(tmp_path / "data", "llava")
    run = tmp_path / "run"
    config = validated_config(tiny_checkpoints["llava"], data, epochs=1, checkpoint_every=2)
    whole = train(config, tmp_path / "whole")
    killed_after_step_3(config, run)
    state_file = run / "checkpoints" / "step-00000002" / "state.json"
    state = json.loads(state_file.read_text())
    # state.json as the trainer wrote it until 2026-11-24: no template, dtype or device type
    state_file.write_text(json.dumps({k: v for k, v in state.items() if k not in PINS}))
    with caplog.at_level(logging.WARNING, logger=CHECKPOINT_LOGGER):
        again = train(config, run)
    warnings = [r.getMessage() for r in caplog.records if r.name == CHECKPOINT_LOGGER]
    assert warnings == [
        f"{run}: checkpoint step-00000002 was written before its chat template and weights dtype and device type "
        "were recorded, so they cannot be compared; resuming, and recording them from this run's checkpoints on"
    ]
    assert again.resumed_from == 2
    assert [m["loss"] for m in read_metrics(run)] == pytest.approx([m["loss"] for m in read_metrics(whole.out)],
                                                                   abs=1e-6)  # fmt: skip
    final = json.loads((run / "checkpoints" / "step-00000004" / "state.json").read_text())
    assert {k: final[k] for k in PINS} == {k: state[k] for k in PINS}  # recorded again, as this machine has them
