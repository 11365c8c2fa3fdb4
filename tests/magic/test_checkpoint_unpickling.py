"""A Magic Image ``checkpoint.pt`` is read with torch's weights-only unpickler: a planted file runs nothing.

The checkpoint is loaded before its resume key is compared, so with a full unpickler any ``checkpoint.pt`` placed in
an output folder (a shared or copied run) ran its code first and was refused only afterwards.
"""

from __future__ import annotations

import torch
from planted_pickle import TouchOnUnpickle, error_of

from visalign.errors import VisalignError
from visalign.magic import optimize_magic_images

from .helpers import make


def test_a_planted_checkpoint_is_refused_in_one_line_and_never_runs(tmp_path, tiny_checkpoints):
    model = tiny_checkpoints["llava"]
    out = tmp_path / "run"
    optimize_magic_images(make(tmp_path, model, name="half.yaml", optim={"steps": 2}), out)
    checkpoint = out / "work" / "standard" / "checkpoint.pt"
    # what the optimiser writes loads under weights_only: key, step, pixels, Adam state, the step log and the
    # weights' dtype and device type
    state = torch.load(checkpoint, weights_only=True)
    assert set(state) == {"key", "step", "pixels", "optimizer", "history", "dtype", "device_type"}
    assert state["step"] == 2
    assert [entry["step"] for entry in state["history"]] == [1, 2]

    marker = tmp_path / "MARKER"
    # the right resume key, so that nothing but the unpickler stands in the way
    torch.save({**state, "history": [*state["history"], TouchOnUnpickle(marker)]}, checkpoint)
    stopped = error_of(lambda: optimize_magic_images(make(tmp_path, model), out))
    assert not marker.exists(), "the planted pickle ran"
    assert isinstance(stopped, VisalignError), stopped
    message = str(stopped)
    assert "\n" not in message
    # named by the global it would call (Path.touch pickles as getattr on Path), not by torch's allow-list advice
    assert message.startswith(f"{checkpoint}: holds Python objects a Magic Image checkpoint never does (getattr), so ")
    assert "add_safe_globals" not in message
    assert message.endswith("delete the file and run the same command again to optimise this value system from step 0")
