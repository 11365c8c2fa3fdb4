"""Helpers for the training tests: small visual QA sets written to disk the way `vsfa data` exports them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from config_overrides import merge_overrides
from family_tables import FamilyTable
from PIL import Image

from visalign.vsfa.export import llava_entry, sharegpt_entry

# Image sizes each tiny processor takes without resampling; 224 for the embedded default model. Written by hand:
# they are the fixed inputs behind the numbers the training tests assert, and small, so that the tests stay fast.
IMAGE_SIZE = FamilyTable(
    "IMAGE_SIZE", "tests/vsfa/train_support.py",
    "the (height, width) its tiny processor takes without resampling (visalign.models.pixels.native_image_size of "
    "its image processor gives one)",
    {"qwen2_5_vl": (56, 84), "qwen3_vl": (64, 96), "llava": (32, 32), "llava_next": (32, 32), "default": (224, 224)},
)

QUESTIONS = [
    "What colour is the sky in this picture?",
    "How many people stand near the door?",
    "Describe the street.",
    "What is on the table?",
    "Is it day or night?",
    "What is the weather like?",
    "Which object is closest to the camera?",
    "What is written on the sign?",
]
ANSWERS = [
    "The sky is blue and clear.",
    "Two people stand near the door.",
    "A quiet street with parked cars.",
    "A cup and a book lie on the table.",
    "It is day.",
    "Sunny with a few clouds.",
    "A red bicycle.",
    "The sign says exit.",
]


def one_thread() -> None:
    """Tiny matrices run fastest on one thread, and the test machine is shared."""
    torch.set_num_threads(1)


def noise_png(path: Path, size: tuple[int, int], seed: int) -> str:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(path)
    return path.name


def vsfa_records(root: Path, family: str, count: int = 8) -> list[dict]:
    """Pipeline-shaped VQA records (the input of the exporter) with images under ``root/images``."""
    records = []
    for i in range(count):
        image = f"images/{noise_png(root / 'images' / f'img{i}.png', IMAGE_SIZE[family], seed=i)}"
        pairs = [{"question": QUESTIONS[i % len(QUESTIONS)], "answer": ANSWERS[i % len(ANSWERS)]}]
        if i % 3 == 2:  # some examples have a second turn: length grouping sees different lengths
            pairs.append({"question": "Anything else?", "answer": "Nothing else is visible."})
        records.append({"id": f"rec{i:02d}", "image": image, "pairs": pairs})
    return records


def write_dataset(root: Path, family: str, count: int = 8, fmt: str = "llava") -> Path:
    """Write ``root/llava.json`` or ``root/sharegpt.json`` with the VSFA exporter's own entry functions."""
    records = vsfa_records(root, family, count)
    entry = llava_entry if fmt == "llava" else sharegpt_entry
    path = root / f"{fmt}.json"
    path.write_text(json.dumps([entry(r) for r in records], indent=2))
    return path


def train_config(model: str | Path, data: Path, **overrides) -> dict:
    """A small, fast training config as a dict (validated by the caller)."""
    config = {
        "name": "test",
        "model": str(model),
        "data": {"path": str(data)},
        "seed": 3,
        "epochs": 3,
        "batch_size": 2,
        "grad_accum": 1,
        "checkpoint_every": 4,
        "lora": {"rank": 4, "alpha": 8},
        "optim": {"lr": 0.02, "warmup_steps": 0, "schedule": "constant"},
        "logging": {"progress": False, "tensorboard": False},
    }
    return merge_overrides(config, overrides)


class Crash(RuntimeError):
    """Stands for the process dying: raised after a step, before the next checkpoint."""


def crash_at_3(metrics: dict) -> None:
    """An ``on_step`` callback that 'kills' the run after step 3."""
    if metrics["step"] == 3:
        raise Crash


def killed_after_step_3(config, out) -> None:
    """Train ``config`` into ``out`` until the process 'dies' after step 3 (with checkpoint_every=2: step 2 kept)."""
    import pytest

    from visalign.vsfa.training import read_metrics, train

    with pytest.raises(Crash):
        train(config, out, on_step=crash_at_3)
    assert [m["step"] for m in read_metrics(out)] == [1, 2, 3]


def validated_config(model: str | Path, data: Path, **overrides):
    """:func:`train_config` as a validated :class:`VsfaTrainConfig`."""
    from visalign.vsfa.training import VsfaTrainConfig

    return VsfaTrainConfig.model_validate(train_config(model, data, **overrides))


def train_past_float32(checkpoint: str | Path, tmp_path: Path, capsys, **optim) -> tuple[int, str, Path]:
    """``vsfa train`` (in process) on 4 tiny-llava examples whose step 2 runs at lr 1e38, past float32's range.

    One warm-up step, so step 1 runs at lr 0 and is checkpointed; ``optim`` adds to the optimiser settings.

    Returns:
        The exit code, the standard error and the run folder.
    """
    import yaml
    from cli_in_process import run_in_process

    one_thread()
    data = write_dataset(tmp_path / "data", "llava", count=4)
    config = train_config(checkpoint, data, epochs=1, checkpoint_every=1,
                          optim={"lr": 1.0e38, "max_grad_norm": None, "warmup_steps": 1, **optim})  # fmt: skip
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(config))
    run = tmp_path / "run"
    code, _, err = run_in_process(["vsfa", "train", "--config", str(path), "--out", str(run)], capsys)
    return code, err, run
