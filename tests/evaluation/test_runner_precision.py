"""What a local system's answers depend on beyond its weights: its dtype, device type and chat template.

An evaluation records each in the answers' ``decoding`` and pins it in the run's manifest, so a resume that would
answer otherwise (on a GPU, where ``dtype: auto`` is bfloat16, or after an edit of the chat template) is refused.
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from visalign.errors import VisalignError
from visalign.evaluation.config import EvalConfig
from visalign.evaluation.runner import run_eval

NEW_PINS = ("template", "dtype", "device")


def eval_config(bench, *systems: dict) -> EvalConfig:
    return EvalConfig.model_validate({
        "systems": list(systems),
        "benchmarks": [{"name": "xstest", "source": str(bench / "xstest" / "xstest_prompts.csv"), "limit": 2}],
        "max_new_tokens": 2, "batch_size": 2,
    })  # fmt: skip


def records(out) -> list[dict]:
    return [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]


def kill_after(out, kept: int) -> str:
    """Keep the first ``kept`` records, as a run killed then leaves them; return what is left."""
    lines = (out / "records.jsonl").read_text().splitlines(keepends=True)
    (out / "records.jsonl").write_text("".join(lines[:kept]))
    return (out / "records.jsonl").read_text()


@pytest.fixture
def on_a_cpu(monkeypatch):
    """This machine as one without a GPU (whatever it has); ``on_a_cpu(False)`` makes it one with a GPU."""

    def machine(cpu: bool = True) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: not cpu)

    machine()
    return machine


def test_a_systems_dtype_loads_its_model_in_it_and_is_recorded_and_pinned(tmp_path, tiny_checkpoints, bench, on_a_cpu):
    model = str(tiny_checkpoints["llava"])
    config = eval_config(bench, {"name": "auto", "model": model}, {"name": "bf16", "model": model, "dtype": "bfloat16"})
    run_eval(config, tmp_path / "run")
    # two models: the cache key has the dtype (one shared model would have answered both in one dtype)
    decoding = {r["system"]: (r["decoding"]["dtype"], r["decoding"]["device"]) for r in records(tmp_path / "run")}
    assert decoding == {"auto": ("float32", "cpu"), "bf16": ("bfloat16", "cpu")}
    pinned = json.loads((tmp_path / "run" / "manifest.json").read_text())["pinned"]
    assert {k: v for k, v in pinned.items() if k.endswith((":dtype", ":device"))} == {
        "system:auto:dtype": "float32", "system:auto:device": "cpu",
        "system:bf16:dtype": "bfloat16", "system:bf16:device": "cpu",
    }  # fmt: skip
    # on a CPU ``auto`` is float32: naming it is the same run, which resumes
    named = eval_config(bench, {"name": "auto", "model": model, "dtype": "float32"},
                        {"name": "bf16", "model": model, "dtype": "bfloat16"})  # fmt: skip
    written = kill_after(tmp_path / "run", 3)
    run_eval(named, tmp_path / "run")
    assert (tmp_path / "run" / "records.jsonl").read_text().startswith(written)
    assert len(records(tmp_path / "run")) == 4
    # another dtype is another run
    refusal = r"system 'bf16' began in bfloat16 on cpu, and here it would run in float16 on cpu .*; set dtype: "
    with pytest.raises(VisalignError, match=refusal + r"bfloat16 in system 'bf16' to resume it"):
        run_eval(eval_config(bench, {"name": "auto", "model": model},
                             {"name": "bf16", "model": model, "dtype": "float16"}), tmp_path / "run")  # fmt: skip
    with pytest.raises(ValueError, match="dtype sets a local model's weights"):
        eval_config(bench, {"name": "api", "backend": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "m",
                            "dtype": "float32"})  # fmt: skip


def test_a_run_begun_on_a_cpu_is_refused_on_a_gpu_naming_the_system_and_its_dtype(
    tmp_path, tiny_checkpoints, bench, on_a_cpu
):
    config = eval_config(bench, {"name": "base", "model": str(tiny_checkpoints["llava"])})
    out = tmp_path / "run"
    run_eval(config, out)
    written = kill_after(out, 1)
    on_a_cpu(False)  # resumed where ``dtype: auto`` loads bfloat16 on CUDA: refused before any model loads
    with pytest.raises(VisalignError) as refused:
        run_eval(config, out)
    assert str(refused.value) == (
        f"{out}: system 'base' began in float32 on cpu, and here it would run in bfloat16 on cuda (answers differ "
        "between dtypes and devices); resume it on a cpu machine with dtype: float32 in system 'base', or evaluate "
        "into a new --out directory"
    )
    assert (out / "records.jsonl").read_text() == written
    on_a_cpu()
    run_eval(config, out)  # back on a CPU it resumes
    assert [r["decoding"]["dtype"] for r in records(out)] == ["float32", "float32"]


def test_a_run_recorded_before_the_precision_and_template_were_pinned_resumes_and_gains_them(
    tmp_path, tiny_checkpoints, bench, on_a_cpu
):
    config = eval_config(bench, {"name": "base", "model": str(tiny_checkpoints["llava"])})
    out = tmp_path / "run"
    run_eval(config, out)
    manifest = json.loads((out / "manifest.json").read_text())
    pins = manifest["pinned"]
    manifest["pinned"] = {k: v for k, v in pins.items() if not k.endswith(tuple(f":{p}" for p in NEW_PINS))}
    assert set(pins) - set(manifest["pinned"]) == {f"system:base:{p}" for p in NEW_PINS}
    (out / "manifest.json").write_text(json.dumps(manifest))  # as such a run's manifest reads
    kill_after(out, 1)
    run_eval(config, out)
    assert json.loads((out / "manifest.json").read_text())["pinned"] == pins
    assert len(records(out)) == 2


def test_a_resume_is_refused_when_the_chat_template_or_generation_config_changed(tmp_path, tiny_checkpoints, bench):
    model = shutil.copytree(tiny_checkpoints["llava"], tmp_path / "model")
    config = eval_config(bench, {"name": "base", "model": str(model)})
    out = tmp_path / "run"
    run_eval(config, out)
    written = kill_after(out, 1)
    for name, edit in [
        ("chat_template.jinja", lambda text: text.replace("'ASSISTANT:'", "'Answer in one word. ASSISTANT:'")),
        ("generation_config.json", lambda text: text.replace('"eos_token_id": 2', '"eos_token_id": [2, 5]')),
    ]:
        original = (model / name).read_text()
        assert edit(original) != original
        (model / name).write_text(edit(original))
        with pytest.raises(VisalignError, match="changed since this run began: system:base:template "):
            run_eval(config, out)
        assert (out / "records.jsonl").read_text() == written
        (model / name).write_text(original)
    run_eval(config, out)  # the checkpoint as it was: the run resumes
    assert len(records(out)) == 2
