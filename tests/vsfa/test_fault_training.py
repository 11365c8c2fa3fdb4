"""Faults during VSFA training: an update that overflows the weights, and a disk that fills during a save."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors.torch import load_file
from train_support import train_config, train_past_float32, write_dataset


def test_a_fused_adamw_update_that_overflows_writes_no_inf_checkpoint_or_adapter(tiny_checkpoints, tmp_path,
                                                                                 capsys):  # fmt: skip
    # step 1 runs at lr 0 (one warmup step) and is checkpointed; at step 2 the fused AdamW raises nothing and
    # writes inf weights (before the fix: checkpoint step 2 and the adapter full of inf, exit 0)
    code, err, run = train_past_float32(tiny_checkpoints["llava"], tmp_path, capsys, fused=True)
    assert code == 2 and "Traceback" not in err
    kept = run / "checkpoints" / "step-00000001"
    assert err.strip().splitlines()[-1] == (
        "error: non-finite weights after the AdamW update (its step overflowed the weights' dtype) at step 2; "
        f"training stopped, the last good checkpoint is {kept} (it resumes only this config, which fails the same "
        "way again); lower optim.lr (now 1e+38), and train into a new --out directory"
    )
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-00000001"]
    assert not (run / "adapter").exists()
    assert all(bool(torch.isfinite(v).all()) for v in load_file(kept / "trainable.safetensors").values())


# Trains in a child process whose file-size limit drops to 2 KiB after step ``at`` (SIGXFSZ ignored, so a write
# past it fails with EFBIG as on a full disk), then runs the same config again without the limit.
_CHILD = textwrap.dedent("""
    import json, resource, signal, sys
    from pathlib import Path
    import torch
    from visalign.errors import VisalignError
    from visalign.vsfa.training import VsfaTrainConfig, train
    torch.set_num_threads(1)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    config = VsfaTrainConfig.model_validate(json.loads(sys.argv[1]))
    out, at = Path(sys.argv[2]), int(sys.argv[3])
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    def fill_disk(metrics):
        if metrics["step"] == at:
            resource.setrlimit(resource.RLIMIT_FSIZE, (2048, hard))
    try:
        train(config, out, on_step=fill_disk)
        print("FINISHED")
    except VisalignError as exc:
        print("ERROR", exc)
    resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    print("STAGING", sorted(p.name for p in out.rglob("*") if p.name.startswith(".staging") or p.suffix == ".tmp"))
    result = train(config, out)
    print("RESUMED", result.resumed_from, result.final_loss)
    print("REFERENCE", train(config, out.with_name("reference")).final_loss)
""")


@pytest.mark.parametrize("at", [1, 3], ids=["checkpoint", "adapter"])
def test_a_full_disk_during_a_save_is_one_line_and_the_same_command_resumes(tiny_checkpoints, tmp_path, at):
    data = write_dataset(tmp_path / "data", "llava", count=6)
    config = train_config(tiny_checkpoints["llava"], data, epochs=1, checkpoint_every=1)  # 3 steps
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    child = subprocess.run([sys.executable, "-c", _CHILD, json.dumps(config), str(run), str(at)], env=env,
                           capture_output=True, text=True, timeout=300)  # fmt: skip
    assert child.returncode == 0, child.stderr[-3000:]
    lines = dict(line.split(" ", 1) for line in child.stdout.splitlines() if line.split(" ")[0].isupper())
    kept = run / "checkpoints" / f"step-{at:08d}"
    folder = run / "checkpoints" if at == 1 else run / "adapter"
    # before the fix: a raw RuntimeError ("unexpected pos ...") or SafetensorError traceback
    message = lines["ERROR"]
    assert message.startswith(f"{folder}: saving failed (") and "\n" not in message
    assert message.endswith(f"); the disk may be full or not writable; free space and re-run the same command: "
                            f"it resumes from {kept}")  # fmt: skip
    assert lines["STAGING"] == "[]"  # the failed save's staging folder is gone, its space freed
    resumed_from, final_loss = lines["RESUMED"].split()
    assert int(resumed_from) == at
    # the resumed run ends exactly as an uninterrupted one of the same seed
    assert float(final_loss) == float(lines["REFERENCE"])
    assert json.loads((run / "adapter" / "visalign_adapter.json").read_text())["final_loss"] == float(final_loss)
    assert sorted(p.name for p in (run / "checkpoints").iterdir())[-1] == "step-00000003"
