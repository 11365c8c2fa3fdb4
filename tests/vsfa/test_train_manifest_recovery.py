"""``vsfa train`` with a damaged ``manifest.json``: recovered as the error says, from the checkpoints it kept."""

from __future__ import annotations

import pytest
from train_support import Crash, one_thread, validated_config, write_dataset

from visalign.errors import VisalignError
from visalign.vsfa.training import read_metrics, train


def test_a_damaged_manifest_is_recovered_as_the_error_says_and_training_resumes(tiny_checkpoints, tmp_path):
    one_thread()
    data = write_dataset(tmp_path / "data", "llava")
    config = validated_config(tiny_checkpoints["llava"], data, checkpoint_every=2)
    out = tmp_path / "run"

    def crash_at_3(metrics):
        if metrics["step"] == 3:
            raise Crash

    with pytest.raises(Crash):
        train(config, out, on_step=crash_at_3)
    manifest = out / "manifest.json"
    manifest.write_bytes(b"")  # a full disk or a copy tool; the checkpoint of step 2 is intact
    with pytest.raises(VisalignError) as refused:
        train(config, out)
    assert f"mv {manifest} {manifest}.damaged" in str(refused.value) and "new --out" not in str(refused.value)
    manifest.rename(f"{manifest}.damaged")
    again = train(config, out)  # the same command
    assert again.resumed_from == 2 and again.steps == 12
    assert [m["step"] for m in read_metrics(out)] == list(range(1, 13))  # step 3 redone, not logged twice
