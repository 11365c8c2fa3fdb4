"""`visalign vsfa train` / `vsfa merge` through the CLI: the shipped configs, the default model, bad input."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from cli_in_process import run_in_process as run_cli
from train_support import QUESTIONS, noise_png, one_thread, write_dataset

from visalign.config import load_config
from visalign.models import load_vlm, user
from visalign.vsfa.training import VsfaTrainConfig, load_adapter, read_metrics

REPO = Path(__file__).resolve().parents[2]
TRAIN_CONFIGS = sorted((REPO / "configs").glob("vsfa_train_*.yaml"))




@pytest.mark.parametrize("path", TRAIN_CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_validate(path):
    config = load_config(path, VsfaTrainConfig)
    assert config.lora.dropout == 0.0 and config.lora.target_modules == "all-linear"


def test_there_is_a_cpu_and_a_7b_config():
    assert {p.name for p in TRAIN_CONFIGS} >= {"vsfa_train_tiny.yaml", "vsfa_train_qwen2_5_vl_7b.yaml"}


@pytest.mark.slow
def test_the_tiny_config_trains_the_default_model_and_merges(default_model_dir, tmp_path, capsys):
    one_thread()
    data = write_dataset(tmp_path / "data", "default")
    config = yaml.safe_load((REPO / "configs" / "vsfa_train_tiny.yaml").read_text())
    config["data"]["path"] = str(data)
    config["logging"] = {"progress": False, "tensorboard": True}
    config_path = tmp_path / "train.yaml"
    config_path.write_text(yaml.safe_dump(config))
    code, out, err = run_cli(["vsfa", "train", "--config", str(config_path), "--out", str(tmp_path / "run")], capsys)
    assert code == 0, err
    summary = rf"{re.escape(str(tmp_path / 'run' / 'adapter'))}: 12 steps, final loss (\d\.\d{{4}}), 8 examples, 0 bad"
    printed = re.fullmatch(summary + " records skipped", out.strip())
    assert printed, out
    losses = [m["loss"] for m in read_metrics(tmp_path / "run")]
    assert float(printed.group(1)) == pytest.approx(losses[-1], abs=1e-4)  # the summary reports the last step
    # SmolLM2 learns the eight fixed answers (3.18 -> 1.02 on this seed when written; not pinned, since only the
    # fall is the behaviour: the first loss moves with the tokenizer and the default model's build)
    assert sum(losses[-4:]) / 4 < 0.5 * sum(losses[:4]) / 4
    events = list((tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*"))
    assert len(events) == 1
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    scalars = EventAccumulator(str(events[0])).Reload()
    assert [e.value for e in scalars.Scalars("train/loss")] == pytest.approx(losses, rel=1e-6)
    assert {"train/lr", "train/grad_norm", "train/tokens_per_s"} <= set(scalars.Tags()["scalars"])

    code, out, err = run_cli(["vsfa", "merge", str(tmp_path / "run" / "adapter"), "--out", str(tmp_path / "m")], capsys)
    assert code == 0, err
    image = noise_png(tmp_path / "probe.png", (224, 224), seed=5)
    from PIL import Image

    conversations = [[user(QUESTIONS[0], Image.open(tmp_path / image).convert("RGB"))], [user(QUESTIONS[3])]]
    adapted = load_adapter(tmp_path / "run" / "adapter").generate(conversations, max_new_tokens=10)
    merged = load_vlm(str(tmp_path / "m")).generate(conversations, max_new_tokens=10)
    base = load_vlm("default").generate(conversations, max_new_tokens=10)
    assert merged == adapted
    assert adapted != base


def _one_line_error(code: int, err: str) -> str:
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    return lines[0]


def _config_file(tmp_path: Path, checkpoint: Path, data: Path) -> Path:
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump({"model": str(checkpoint), "data": {"path": str(data)},
                                    "logging": {"progress": False, "tensorboard": False}}))  # fmt: skip
    return path


def test_a_missing_dataset_file_is_one_line_exit_2(tiny_checkpoints, tmp_path, capsys):
    config = _config_file(tmp_path, tiny_checkpoints["llava"], tmp_path / "absent.json")
    line = _one_line_error(*run_cli(["vsfa", "train", "-c", str(config), "-o", str(tmp_path / "run")], capsys)[::2])
    assert line == f"error: {tmp_path / 'absent.json'}: training data file not found; check data.path in the config"


def test_a_malformed_record_names_its_line(tiny_checkpoints, tmp_path, capsys):
    data = write_dataset(tmp_path / "data", "llava", count=3)
    items = json.loads(data.read_text())
    items[1]["conversations"] = "not a list"
    data.write_text(json.dumps(items, indent=2))
    line_number = data.read_text().splitlines().index('    "id": "rec01",')
    config = _config_file(tmp_path, tiny_checkpoints["llava"], data)
    line = _one_line_error(*run_cli(["vsfa", "train", "-c", str(config), "-o", str(tmp_path / "run")], capsys)[::2])
    assert line.startswith(f"error: {data}:{line_number}: bad record (id rec01): needs a non-empty list of messages")


def test_a_missing_image_names_the_file(tiny_checkpoints, tmp_path, capsys):
    data = write_dataset(tmp_path / "data", "llava", count=3)
    (tmp_path / "data" / "images" / "img2.png").unlink()
    config = _config_file(tmp_path, tiny_checkpoints["llava"], data)
    line = _one_line_error(*run_cli(["vsfa", "train", "-c", str(config), "-o", str(tmp_path / "run")], capsys)[::2])
    assert f"(id rec02): image file not found: {tmp_path / 'data' / 'images' / 'img2.png'}" in line


def test_a_corrupt_image_stops_with_its_name(tiny_checkpoints, tmp_path, capsys):
    data = write_dataset(tmp_path / "data", "llava", count=2)
    (tmp_path / "data" / "images" / "img1.png").write_bytes(b"not a png")
    config = _config_file(tmp_path, tiny_checkpoints["llava"], data)
    line = _one_line_error(*run_cli(["vsfa", "train", "-c", str(config), "-o", str(tmp_path / "run")], capsys)[::2])
    assert line.endswith(
        f"(id rec01): {tmp_path / 'data' / 'images' / 'img1.png'}: not an image file Pillow can read; "
        "pass a PNG, JPEG or WebP; fix it or set data.on_bad_record: skip"
    )


def test_merge_of_a_folder_that_is_no_adapter_is_one_line(tmp_path, capsys):
    line = _one_line_error(*run_cli(["vsfa", "merge", str(tmp_path), "--out", str(tmp_path / "m")], capsys)[::2])
    assert "not an adapter folder" in line
