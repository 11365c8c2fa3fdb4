"""A damaged file in a training checkpoint: resume skips to the checkpoint before it, or says which file and what to do.

Checkpoints are written by a real tiny training run, killed after step 5 (checkpoints at steps 2 and 4), then damaged
on disk the ways a failing disk or a cut copy leaves them: empty, or cut in half.
"""

from __future__ import annotations

import json
import logging
import shutil
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import run_cli, write_yaml
from safetensors.torch import load_file
from train_support import Crash, one_thread, train_config, write_dataset

from visalign.errors import VisalignError
from visalign.vsfa.training import VsfaTrainConfig, read_metrics, train

CHECKPOINT_LOGGER = "visalign.vsfa.training.checkpoint"


def _crash_after(step: int):
    def on_step(metrics):
        if metrics["step"] == step:
            raise Crash

    return on_step


@pytest.fixture(scope="module")
def runs(tiny_checkpoints, tmp_path_factory) -> SimpleNamespace:
    """An uninterrupted run and one killed after step 5, of one config (dropout on: the RNG state matters)."""
    one_thread()
    root = tmp_path_factory.mktemp("damage")
    data = write_dataset(root / "data", "llava")
    settings = train_config(tiny_checkpoints["llava"], data, epochs=2, checkpoint_every=2, lora={"dropout": 0.1})
    config = VsfaTrainConfig.model_validate(settings)
    whole = train(config, root / "whole")
    killed = root / "killed"
    with pytest.raises(Crash):
        train(config, killed, on_step=_crash_after(5))
    assert sorted(p.name for p in (killed / "checkpoints").iterdir()) == ["step-00000002", "step-00000004"]
    return SimpleNamespace(settings=settings, config=config, whole=whole.out, killed=killed)


@pytest.fixture(autouse=True)
def _threads():
    one_thread()


def _copy_killed(runs: SimpleNamespace, tmp_path: Path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(runs.killed, run)
    return run


def _empty(file: Path) -> None:
    file.write_bytes(b"")


def _half(file: Path) -> None:
    file.write_bytes(file.read_bytes()[: file.stat().st_size // 2])


def _assert_same_as_uninterrupted(run: Path, whole: Path) -> None:
    expected, got = read_metrics(whole), read_metrics(run)
    assert [m["step"] for m in got] == [m["step"] for m in expected] == list(range(1, 9))
    for key in ("loss", "grad_norm", "lr"):
        assert [m[key] for m in got] == pytest.approx([m[key] for m in expected], abs=1e-6), key
    a = load_file(str(whole / "adapter" / "adapter_model.safetensors"))
    b = load_file(str(run / "adapter" / "adapter_model.safetensors"))
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6, rtol=0) for k in a)


@pytest.mark.parametrize(
    ("name", "damage"),
    [
        ("state.json", _empty),
        ("trainable.safetensors", _empty),
        ("trainable.safetensors", _half),
        ("optimizer.pt", _empty),
        ("optimizer.pt", _half),
        ("scheduler.pt", _empty),
        ("rng-0.pt", _half),
    ],
)
def test_a_damaged_newest_checkpoint_is_skipped_and_the_run_ends_as_an_uninterrupted_one(
    runs, tmp_path, caplog, name, damage
):
    run = _copy_killed(runs, tmp_path)
    damaged = run / "checkpoints" / "step-00000004" / name
    damage(damaged)
    with caplog.at_level(logging.WARNING, logger=CHECKPOINT_LOGGER):
        resumed = train(runs.config, run)
    assert resumed.resumed_from == 2
    warnings = [r.getMessage() for r in caplog.records if r.name == CHECKPOINT_LOGGER]
    assert len(warnings) == 1 and "\n" not in warnings[0]
    assert warnings[0].startswith(f"{damaged}: damaged (")
    assert "resuming from the older checkpoint step-00000002 instead" in warnings[0]
    _assert_same_as_uninterrupted(run, runs.whole)
    # step 4 was written again, whole, and pruned like any other
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-00000006", "step-00000008"]


def test_a_second_kill_after_skipping_a_damaged_checkpoint_still_resumes(runs, tmp_path):
    """The skipped checkpoint (a later step) must not outrank the ones the resumed run writes when pruning."""
    run = _copy_killed(runs, tmp_path)
    _half(run / "checkpoints" / "step-00000004" / "optimizer.pt")
    fewer = VsfaTrainConfig.model_validate({**runs.settings, "checkpoint_every": 1, "keep_checkpoints": 1})
    with pytest.raises(Crash):
        train(fewer, run, on_step=_crash_after(3))
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-00000003", "step-00000004"]
    assert train(fewer, run).resumed_from == 3
    _assert_same_as_uninterrupted(run, runs.whole)


def _garble_pickle(file: Path) -> None:
    """Keep the zip whole (its directory reads fine) but replace the pickled object with bytes that do not unpickle."""
    with zipfile.ZipFile(file) as source:
        members = {info.filename: source.read(info) for info in source.infolist()}
    pickled = next(name for name in members if name.endswith("data.pkl"))
    members[pickled] = b"\x80\x02not a pickle" + bytes(64)
    with zipfile.ZipFile(file, "w", zipfile.ZIP_STORED) as target:
        for member, data in members.items():
            target.writestr(member, data)


def test_damage_inside_a_file_is_one_line_naming_it_and_the_checkpoint_to_resume_from(runs, tmp_path):
    run = _copy_killed(runs, tmp_path)
    newest = run / "checkpoints" / "step-00000004"
    _garble_pickle(newest / "optimizer.pt")
    with pytest.raises(VisalignError) as stopped:
        train(runs.config, run)
    message = str(stopped.value)
    assert "\n" not in message
    assert message.startswith(f"{newest / 'optimizer.pt'}: damaged checkpoint file (")
    assert message.endswith(f"; delete {newest} and run the same command again to resume from checkpoint step-00000002")
    shutil.rmtree(newest)  # what the message says to do
    assert train(runs.config, run).resumed_from == 2
    _assert_same_as_uninterrupted(run, runs.whole)


@pytest.mark.parametrize(("name", "damage"), [("optimizer.pt", _empty), ("state.json", _empty)])
def test_when_no_checkpoint_is_whole_the_cli_names_the_file_in_one_line(runs, tmp_path, name, damage):
    run = _copy_killed(runs, tmp_path)
    shutil.rmtree(run / "checkpoints" / "step-00000002")
    damaged = run / "checkpoints" / "step-00000004" / name
    damage(damaged)
    config = write_yaml(tmp_path / "train.yaml", runs.settings)
    result = run_cli("vsfa", "train", "--config", str(config), "--out", str(run))
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and "aborted" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: {damaged}: damaged ("), result.stderr
    assert last.endswith(
        f"and no older checkpoint in {run / 'checkpoints'} is whole; restore the file, or delete "
        f"{run / 'checkpoints'} and run the same command again to train from step 0"
    )
    assert json.loads((run / "manifest.json").read_text())  # the run folder is left as it was, for the user
