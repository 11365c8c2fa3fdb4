"""Replacing a saved adapter: a job killed at any point of the save leaves the old adapter or the new one."""

from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path

import pytest

from visalign.vsfa.training.artefact import read_adapter_metadata, save_adapter


class FakePeftModel:
    """Stands for a ``PeftModel``: ``save_pretrained`` writes the two files peft writes."""

    def __init__(self, tag: str) -> None:
        self.tag = tag

    def save_pretrained(self, folder: str, state_dict=None) -> None:
        Path(folder).mkdir(parents=True, exist_ok=True)
        (Path(folder) / "adapter_config.json").write_text("{}")
        (Path(folder) / "adapter_model.safetensors").write_text(self.tag)


def _save_killed_after(target: Path, calls: int) -> bool:
    """Replace the adapter in a child process killed right after its ``calls``-th delete or rename; True if killed."""
    pid = os.fork()
    if pid == 0:  # the child: count the folder operations of the save, die after the chosen one
        count = 0
        real = {"rmtree": shutil.rmtree, "rename": Path.rename, "replace": os.replace}

        def counted(name):
            def operation(*args, **kwargs):
                nonlocal count
                result = real[name](*args, **kwargs)
                count += 1
                if count == calls:
                    os.kill(os.getpid(), signal.SIGKILL)
                return result

            return operation

        shutil.rmtree, Path.rename, os.replace = counted("rmtree"), counted("rename"), counted("replace")
        try:
            save_adapter(FakePeftModel("new"), target, {"run": "new"})
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    return os.WIFSIGNALED(status)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="kills a forked child")
def test_a_save_killed_at_any_point_leaves_a_whole_adapter(tmp_path):
    calls = 0
    while True:
        calls += 1
        assert calls < 20, "the save never finished"
        target = tmp_path / f"run{calls}" / "adapter"
        save_adapter(FakePeftModel("old"), target, {"run": "old"})
        killed = _save_killed_after(target, calls)
        metadata = read_adapter_metadata(target)  # what a user (or the next eval) reads after the kill
        weights = (target / "adapter_model.safetensors").read_text()
        assert (weights, metadata["run"]) in {("old", "old"), ("new", "new")}, f"killed after operation {calls}"
        save_adapter(FakePeftModel("newer"), target, {"run": "newer"})  # the rerun's save replaces whatever is there
        assert (target / "adapter_model.safetensors").read_text() == "newer"
        assert sorted(p.name for p in target.parent.iterdir()) == ["adapter"]  # nothing left beside it
        if not killed:
            break
    assert calls > 2  # the save was killed at each of its steps before one ran to the end
