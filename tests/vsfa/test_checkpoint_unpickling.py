"""A training checkpoint's ``.pt`` files are read with torch's weights-only unpickler: a planted file runs nothing.

Run folders get shared and copied ("continue this run"). A file in a checkpoint whose pickle would call a function
(here it would create a marker file) must be refused with one line naming it, and the call must never happen. The
files a real run writes (optimiser, scheduler, Python/NumPy/torch RNG states) still load, under an allow-list
scoped to the load.
"""

from __future__ import annotations

import random
import shutil
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from planted_pickle import TouchOnUnpickle, error_of
from train_support import Crash, one_thread, validated_config, write_dataset

from visalign.errors import VisalignError
from visalign.vsfa.training import train
from visalign.vsfa.training.checkpoint import _torch_load, rng_state, set_rng_state


@pytest.fixture(autouse=True)
def _threads():
    one_thread()


@pytest.fixture(scope="module")
def killed(tiny_checkpoints, tmp_path_factory) -> SimpleNamespace:
    """A tiny run killed after step 3, leaving the checkpoint of step 2 (dropout on: the RNG state matters)."""
    one_thread()
    root = tmp_path_factory.mktemp("unpickling")
    data = write_dataset(root / "data", "llava", count=4)
    config = validated_config(tiny_checkpoints["llava"], data, epochs=2, checkpoint_every=2, lora={"dropout": 0.1})

    def crash_at_3(metrics):
        if metrics["step"] == 3:
            raise Crash

    with pytest.raises(Crash):
        train(config, root / "run", on_step=crash_at_3)
    assert sorted(p.name for p in (root / "run" / "checkpoints").iterdir()) == ["step-00000002"]
    return SimpleNamespace(config=config, run=root / "run")


@pytest.mark.parametrize("name", ["optimizer.pt", "scheduler.pt", "rng-0.pt"])
def test_a_planted_pickle_is_refused_in_one_line_and_never_runs(killed, tmp_path, name):
    run = tmp_path / "run"
    shutil.copytree(killed.run, run)
    checkpoint = run / "checkpoints" / "step-00000002"
    marker = tmp_path / "MARKER"
    torch.save({"state": TouchOnUnpickle(marker)}, checkpoint / name)  # a whole zip: the quick damage check passes

    stopped = error_of(lambda: train(killed.config, run))
    assert not marker.exists(), "the planted pickle ran"
    assert isinstance(stopped, VisalignError), stopped
    message = str(stopped)
    assert "\n" not in message
    # named by the global it would call (Path.touch pickles as getattr on Path), not by torch's allow-list advice
    assert message.startswith(f"{checkpoint / name}: holds Python objects a checkpoint never does (getattr), so it ")
    assert "add_safe_globals" not in message
    assert message.endswith(f"delete {checkpoint} and run the same command again to resume from step 0")


def test_the_files_a_run_writes_load_under_the_allow_list(killed):
    checkpoint = killed.run / "checkpoints" / "step-00000002"
    assert np.ndarray not in torch.serialization.get_safe_globals()
    optimizer, scheduler, rng = (_torch_load(checkpoint / n) for n in ("optimizer.pt", "scheduler.pt", "rng-0.pt"))
    assert set(optimizer) == {"state", "param_groups"} and optimizer["state"]
    assert scheduler["last_epoch"] == 2
    assert rng["numpy"][0] == "MT19937" and rng["numpy"][1].dtype == np.uint32
    # the allow-list does not outlive the load (torch registers its own classes on first use, so no list equality)
    assert np.ndarray not in torch.serialization.get_safe_globals()


def test_the_random_state_round_trips_exactly(tmp_path):
    random.seed(5)
    np.random.seed(6)
    torch.manual_seed(7)
    np.random.standard_normal()  # NumPy's state then caches a Gaussian: it must come back too
    torch.save(rng_state(), tmp_path / "rng-0.pt")
    expected = (random.random(), np.random.standard_normal(), np.random.random(), torch.rand(3))
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    set_rng_state(_torch_load(tmp_path / "rng-0.pt"))
    got = (random.random(), np.random.standard_normal(), np.random.random(), torch.rand(3))
    assert got[:3] == expected[:3] and torch.equal(got[3], expected[3])
