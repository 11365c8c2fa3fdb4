"""A NaN objective value stops Magic Image optimisation with one line, before anything non-finite is written."""

from __future__ import annotations

import pytest
import torch

import visalign.magic.optimize as optimize_module
from visalign.errors import VisalignError
from visalign.magic import optimize_magic_images

from .helpers import make


def test_a_nan_loss_stops_before_the_step_and_keeps_the_last_finite_checkpoint(tmp_path, tiny_checkpoints,
                                                                               monkeypatch):  # fmt: skip
    torch.set_num_threads(1)
    real = optimize_module.dual_loss
    calls = {"n": 0}

    def nan_at_step_3(*args, **kwargs):  # as a bf16/fp16 overflow on a GPU would give
        loss, parts = real(*args, **kwargs)
        calls["n"] += 1
        return (loss * float("nan") if calls["n"] == 3 else loss), parts

    monkeypatch.setattr(optimize_module, "dual_loss", nan_at_step_3)
    config = make(tmp_path, tiny_checkpoints["llava"], optim={"steps": 4, "checkpoint_every": 2})
    out = tmp_path / "out"
    with pytest.raises(VisalignError) as failure:
        optimize_magic_images(config, out)
    checkpoint = out / "work" / "standard" / "checkpoint.pt"
    # before the fix: no error; every pixel NaN, an all-black standard.png and a sidecar logging nan
    assert str(failure.value) == (
        "value system 'standard': non-finite loss nan at step 3; optimisation stopped before the step, nothing "
        f"non-finite was written and the last finite checkpoint {checkpoint} is kept; lower optim.lr, in a new "
        "--out folder"
    )
    assert "\n" not in str(failure.value)
    assert not (out / "standard.png").exists() and not (out / "standard.json").exists()
    state = torch.load(checkpoint, weights_only=False)
    assert state["step"] == 2 and [h["step"] for h in state["history"]] == [1, 2]
    assert bool(torch.isfinite(state["pixels"]).all())
    assert all(torch.isfinite(torch.tensor(h["loss"])) for h in state["history"])
