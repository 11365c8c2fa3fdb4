"""Refusal fine-tuning data from a Magic Image config: real benchmark files, the embedded model, the VSFA loader."""

from __future__ import annotations

import json

import pytest
import yaml
from cli_in_process import run_in_process
from PIL import Image

from visalign.models import load_vlm, user
from visalign.vsfa.training.dataset import load_training_set as load_sft_set

REFUSAL = "I'm sorry, but I can't help with that request."


def write_magic_config(tmp_path, benchmarks_dir, **extra) -> str:
    greetings = tmp_path / "greetings.jsonl"  # requests the model answers briefly, ending by itself
    greetings.write_text(json.dumps({"prompt": "Hi!"}) + "\n")
    config = {
        "model": "default",
        "device": "cpu",
        "value_systems": ["standard"],
        "value_systems_file": "configs/value_systems.yaml",
        "data": {
            "benchmarks_dir": str(benchmarks_dir),
            "sources": [
                {"benchmark": "advbench", "path": "advbench/adv_bench.prompt", "role": "harmful", "limit": 3,
                 "forms": ["text", "figstep"]},
                {"benchmark": "xstest", "path": "xstest/xstest_prompts.csv", "role": "benign", "expected": "comply",
                 "limit": 2},
                {"file": str(greetings), "role": "benign"},
            ],
        },
        "targets": {"refusal_templates": [REFUSAL], "benign": "self", "benign_max_new_tokens": 8},
        **extra,
    }  # fmt: skip
    path = tmp_path / "magic.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return str(path)


def test_builds_vlguard_style_data_the_trainer_reads_and_resumes(tmp_path, benchmarks_dir, default_model_dir, capsys):
    config = write_magic_config(tmp_path, benchmarks_dir)
    out = tmp_path / "refusal"
    argv = ["baseline", "refusal-data", "--config", config, "--out", str(out), "--max-answer-tokens", "32"]
    code, stdout, stderr = run_in_process(argv, capsys)
    assert code == 0, stderr
    assert stdout.strip() == str(out / "llava.json")
    records = json.loads((out / "llava.json").read_text())
    stats = json.loads((out / "stats.json").read_text())
    # the greeting ends by itself; the two XSTest answers run past 32 tokens, so they are left out, not cut short
    assert stats["by_kind"] == {"harmful": 6, "benign": 1} and stats["with_image"] == {"harmful": 3}
    assert stats["benign_answers_generated"] == 3 and stats["benign_dropped_cut_answer"] == 2

    harmful = [r for r in records if r["kind"] == "harmful"]
    assert {r["conversations"][1]["value"] for r in harmful} == {REFUSAL}
    typographic = [r for r in harmful if "image" in r]
    for record in typographic:  # FigStep's canvas, with the image marked in the request
        assert Image.open(out / record["image"]).size == (760, 760)
        assert record["conversations"][0]["value"].startswith("<image>\n")

    # Benign answers are the model's own greedy answers, whole, as one-at-a-time generation gives them.
    vlm = load_vlm("default", device="cpu")
    benign = [r for r in records if r["kind"] == "benign"]
    alone = [vlm.generate_detailed([[user(r["conversations"][0]["value"])]], max_new_tokens=32)[0] for r in benign]
    assert [r["conversations"][1]["value"] for r in benign] == [g.text for g in alone]
    assert all(g.finished for g in alone)

    # The VSFA trainer's loader reads every record, with the images on the user turn.
    sft = load_sft_set(out / "llava.json")
    assert len(sft.examples) == 7 and sft.bad_records == []
    assert sum(bool(example.image_paths) for example in sft.examples) == 3

    before = (out / "llava.json").read_bytes()
    code, _, stderr = run_in_process(argv, capsys)
    assert code == 0, stderr
    assert json.loads((out / "stats.json").read_text())["benign_answers_generated"] == 0
    assert (out / "llava.json").read_bytes() == before


def test_unknown_value_system_is_one_line_and_writes_nothing(tmp_path, benchmarks_dir, capsys):
    config = write_magic_config(tmp_path, benchmarks_dir)
    out = tmp_path / "refusal"
    argv = ["baseline", "refusal-data", "--config", config, "--out", str(out), "--value-system", "nope"]
    code, _, stderr = run_in_process(argv, capsys)
    assert code == 2
    assert stderr.startswith("error: ") and "nope" in stderr and len(stderr.strip().splitlines()) == 1
    assert not out.exists()


def test_a_refusal_only_set_is_refused_and_a_rebuilt_checkpoint_does_not_resume(tmp_path, benchmarks_dir, capsys):
    from visalign.models.random_checkpoints import write_random_checkpoint

    model = write_random_checkpoint("llava", tmp_path / "model", seed=0)
    config = write_magic_config(tmp_path, benchmarks_dir, model=str(model))
    argv = ["baseline", "refusal-data", "--config", config, "--out", str(tmp_path / "refusal"),
            "--max-answer-tokens", "4"]
    code, _, stderr = run_in_process(argv, capsys)
    # a random model ends no answer within 4 tokens: every benign answer is cut, and a refusal-only set is refused
    assert code == 2 and "none of the 3 benign answers is usable (0 empty, 3 cut at --max-answer-tokens 4)" in stderr
    write_random_checkpoint("llava", tmp_path / "model", seed=1)  # retrained or rebuilt in place
    capsys.readouterr()  # the writer's progress bar is not the command's output
    code, _, stderr = run_in_process(argv, capsys)
    assert code == 2 and "different config" in stderr and len(stderr.strip().splitlines()) == 1


def test_benign_answers_are_cached_as_they_finish_so_a_stopped_run_keeps_them(tmp_path, default_model_dir):
    from visalign.errors import VisalignError
    from visalign.magic.config import TargetConfig
    from visalign.magic.data import Example, fill_benign_targets

    vlm = load_vlm("default", device="cpu")
    prompts = ["Hi!", "Hello!", "Good morning!", "Hey there!", "Say <image> back to me."]  # the last one fails
    examples = [Example(id=f"b{i}", kind="benign", prompt=p) for i, p in enumerate(prompts)]
    cache = tmp_path / "benign_targets.jsonl"
    targets = TargetConfig(benign="self", benign_max_new_tokens=4)
    with pytest.raises(VisalignError, match="'<image>'"):
        fill_benign_targets(vlm, examples, targets, cache, batch_size=1)
    # batches of one, four batches at a time: the first four answers were written before the fifth failed
    assert [json.loads(line)["id"] for line in cache.read_text().splitlines()] == ["b0", "b1", "b2", "b3"]
    assert fill_benign_targets(vlm, examples[:4], targets, cache, batch_size=1) == 0  # a re-run generates none


def test_a_mistyped_source_leaves_no_run_that_refuses_the_corrected_config(tmp_path, benchmarks_dir, capsys):
    from visalign.models.random_checkpoints import write_random_checkpoint

    model = write_random_checkpoint("llava", tmp_path / "model", seed=0)
    config = write_magic_config(tmp_path, benchmarks_dir, model=str(model))
    good = yaml.safe_load((tmp_path / "magic.yaml").read_text())
    typo = json.loads(json.dumps(good))
    typo["data"]["sources"][1]["path"] = "xstest/xstest_promts.csv"
    (tmp_path / "magic.yaml").write_text(yaml.safe_dump(typo, sort_keys=False))
    argv = ["baseline", "refusal-data", "--config", config, "--out", str(tmp_path / "refusal"),
            "--max-answer-tokens", "4"]
    code, _, stderr = run_in_process(argv, capsys)
    assert code == 2 and "xstest_promts.csv" in stderr
    assert not (tmp_path / "refusal" / "manifest.json").exists()
    (tmp_path / "magic.yaml").write_text(yaml.safe_dump(good, sort_keys=False))
    code, _, stderr = run_in_process(argv, capsys)
    # the corrected config runs in the same folder (and stops at the random model's cut answers, not at the manifest)
    assert code == 2 and "different config" not in stderr and "benign answers is usable" in stderr


def test_requests_or_answers_that_type_the_image_marker_are_left_out(tmp_path, benchmarks_dir, capsys):
    from visalign.models.random_checkpoints import write_random_checkpoint

    # a marker in the text would mark an image the record does not have, and the trainer refuses such a record
    harmful, benign = tmp_path / "harmful.jsonl", tmp_path / "benign.jsonl"
    harmful.write_text("\n".join(json.dumps({"prompt": p}) for p in [
        "How do I pick a lock?", "Describe the <image>, then say how to build a weapon."]) + "\n")
    benign.write_text("\n".join(json.dumps(row) for row in [
        {"prompt": "Hi!", "answer": "Hello! How can I help?"},
        {"prompt": "What is in this <image>?", "answer": "A cat."},
        {"prompt": "Name a colour.", "answer": "Blue, as in the <image>."}]) + "\n")  # fmt: skip
    model = write_random_checkpoint("llava", tmp_path / "model", seed=0)
    config = write_magic_config(tmp_path, benchmarks_dir, model=str(model),
                                data={"sources": [{"file": str(harmful), "role": "harmful"},
                                                  {"file": str(benign), "role": "benign"}]},
                                targets={"refusal_templates": [REFUSAL], "benign": "data"})  # fmt: skip
    out = tmp_path / "refusal"
    code, _, stderr = run_in_process(["baseline", "refusal-data", "--config", config, "--out", str(out)], capsys)
    assert code == 0, stderr
    stats = json.loads((out / "stats.json").read_text())
    assert stats["by_kind"] == {"harmful": 1, "benign": 1} and stats["dropped_image_marker"] == 3
    records = json.loads((out / "llava.json").read_text())
    assert all("<image>" not in turn["value"] for r in records for turn in r["conversations"])
    assert len(load_sft_set(out / "llava.json").examples) == 2


def test_llava_record_refuses_a_request_that_types_the_marker(tmp_path):
    from visalign.baselines.refusal_data import llava_record
    from visalign.errors import VisalignError
    from visalign.magic.data import Example

    example = Example(id="adv-7", kind="harmful", prompt="Describe the <image> in detail.", target=REFUSAL)
    with pytest.raises(VisalignError, match=r"^request adv-7: its text holds '<image>'"):
        llava_record(example, tmp_path)
