"""An ``optim.lr`` so large that AdamW's step overflows float32: one line and exit 2, as a non-finite loss is."""

from __future__ import annotations

from train_support import train_past_float32


def test_an_overflowing_adamw_update_is_one_line_and_keeps_the_last_checkpoint(tiny_checkpoints, tmp_path, capsys):
    # one warmup step: step 1 runs at lr 0 and is checkpointed; step 2's step size, 1e38 / (1 - 0.9**2), is past
    # float32's 3.4e38, which torch's AdamW raises on (before the fix: a RuntimeError traceback, exit 1)
    code, err, run = train_past_float32(tiny_checkpoints["llava"], tmp_path, capsys)
    assert code == 2 and "Traceback" not in err
    # clipping cannot shrink an update of about lr, so the message does not suggest it
    kept = run / "checkpoints" / "step-00000001"
    assert err.strip().splitlines()[-1] == (
        "error: non-finite AdamW update (its step size overflows the weights' dtype) at step 2; training stopped, "
        f"the last good checkpoint is {kept} (it resumes only this config, which fails the same way again); "
        "lower optim.lr (now 1e+38), and train into a new --out directory"
    )
    assert (kept / "trainable.safetensors").is_file() and not (run / "adapter").exists()
