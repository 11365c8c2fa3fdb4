"""``vsfa train`` and its run directory's lock: a second job is refused before it reads a checkpoint, and a save
stages in a folder of its own that no reader takes for a checkpoint."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from cli_in_process import run_in_process
from run_lock_support import Holder, assert_refused_by_live_job
from train_support import killed_after_step_3, one_thread, train_config, validated_config, write_dataset

from visalign.errors import VisalignError
from visalign.vsfa.training import read_metrics, train
from visalign.vsfa.training.checkpoint import checkpoint_damage, latest_checkpoint, save_checkpoint


@pytest.fixture(autouse=True)
def _threads():
    one_thread()


# A live `vsfa train`: stops after step 2 (its checkpoint written) until the test releases it, then finishes.
LIVE_TRAIN = """
    import json, sys
    import torch
    from visalign.vsfa.training import VsfaTrainConfig, train
    torch.set_num_threads(1)

    def pause(metrics):
        if metrics["step"] == 2:
            print("ready", flush=True)
            sys.stdin.read()

    train(VsfaTrainConfig.model_validate(json.loads(open(sys.argv[1]).read())), sys.argv[2], on_step=pause)
"""


def test_a_second_train_on_a_live_runs_out_is_refused_before_it_reads_a_checkpoint(tiny_checkpoints, tmp_path, capsys):
    data = write_dataset(tmp_path / "data", "llava")
    settings = train_config(tiny_checkpoints["llava"], data, epochs=1, checkpoint_every=1)  # 4 steps
    (tmp_path / "train.json").write_text(json.dumps(settings))
    out = tmp_path / "run"
    live = Holder(LIVE_TRAIN, tmp_path / "train.json", out)
    try:
        saving = out / "checkpoints" / ".staging-step-00000003-0123456789abcdef"  # the live job's next save
        saving.mkdir()
        before = {p.name: p.stat().st_mtime_ns for p in (out / "checkpoints").iterdir()}
        metrics = (out / "metrics.jsonl").read_bytes()
        with pytest.raises(VisalignError) as refused:  # before locks: it resumed from the live job's step 2
            train(validated_config(tiny_checkpoints["llava"], data, epochs=1, checkpoint_every=1), out)
        message = str(refused.value)
        assert_refused_by_live_job(message, out, live.pid)
        # nothing of the live run was touched: its checkpoints, its save in progress, its metrics
        assert {p.name: p.stat().st_mtime_ns for p in (out / "checkpoints").iterdir()} == before
        assert (out / "metrics.jsonl").read_bytes() == metrics
        # the command: one line, exit code 2
        (tmp_path / "train.yaml").write_text(json.dumps(settings))
        code, _, stderr = run_in_process(["vsfa", "train", "-c", str(tmp_path / "train.yaml"), "-o", str(out)], capsys)
        assert code == 2 and stderr.strip().endswith(message) and len(stderr.strip().splitlines()) == 1
        shutil.rmtree(saving)
        live.release()
    finally:
        live.close()
    assert [m["step"] for m in read_metrics(out)] == [1, 2, 3, 4]
    again = train(validated_config(tiny_checkpoints["llava"], data, epochs=1, checkpoint_every=1), out)
    assert again.resumed_from == again.steps == 4


def test_an_unfinished_save_is_never_resumed_from_and_is_deleted_by_the_next_run(tiny_checkpoints, tmp_path):
    """A kill after a save's state.json, before its rename, leaves a staging folder that looks whole."""
    data = write_dataset(tmp_path / "data", "llava")
    config = validated_config(tiny_checkpoints["llava"], data, epochs=2, checkpoint_every=2)
    whole = train(config, tmp_path / "whole")
    run = tmp_path / "run"
    killed_after_step_3(config, run)
    kept = run / "checkpoints" / "step-00000002"
    # the staging folder of a save killed before its rename, under this version's name and under the old fixed one
    for name in (".staging-step-00000004-0123456789abcdef", "step-00000004.tmp"):
        shutil.copytree(kept, run / "checkpoints" / name)
        state = json.loads((kept / "state.json").read_text())
        (run / "checkpoints" / name / "state.json").write_text(json.dumps({**state, "step": 4}))
    assert latest_checkpoint(run) == kept
    again = train(config, run)
    assert again.resumed_from == 2
    assert [m["loss"] for m in read_metrics(run)] == pytest.approx(
        [m["loss"] for m in read_metrics(whole.out)], abs=1e-6
    )
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-00000006", "step-00000008"]


def test_a_save_stages_in_a_folder_of_its_own(tmp_path):
    """Another process's folder under the old fixed staging name is neither used nor deleted by a save."""
    from accelerate import Accelerator

    out = tmp_path / "run"
    theirs = out / "checkpoints" / "step-00000001.tmp"
    theirs.mkdir(parents=True)
    (theirs / "rng-0.pt").write_bytes(b"another process's save in progress")
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    target = save_checkpoint(
        out,
        1,
        model=model,
        optimizer=optimizer,
        scheduler=scheduler,
        state={"config_hash": "h"},
        accelerator=Accelerator(cpu=True),
        keep=2,
    )
    assert (theirs / "rng-0.pt").read_bytes() == b"another process's save in progress"
    assert checkpoint_damage(target) is None and latest_checkpoint(out) == target
    # the checkpoint folder has the mode a plain mkdir gives, as before (a private temp folder would be 0700)
    (tmp_path / "plain").mkdir()
    assert target.stat().st_mode == (tmp_path / "plain").stat().st_mode
    assert not [p for p in (out / "checkpoints").iterdir() if p.name.startswith(".staging-")]
