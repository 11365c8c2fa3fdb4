"""``magic optimize`` on the folder of a live job: refused, naming it, before it reads the job's checkpoints."""

from __future__ import annotations

import pytest
from run_lock_support import Holder, assert_refused_by_live_job

from visalign.errors import VisalignError
from visalign.magic import optimize_magic_images

from .helpers import make

# A live `magic optimize`: stops after step 2 (its checkpoint written) until released, then finishes.
LIVE_MAGIC = """
    import sys
    import torch
    from visalign.config import load_config
    from visalign.magic import MagicConfig, optimize_magic_images
    torch.set_num_threads(1)

    def pause(name, step, parts):
        if step == 2:
            print("ready", flush=True)
            sys.stdin.read()

    optimize_magic_images(load_config(sys.argv[1], MagicConfig), sys.argv[2], on_step=pause)
"""


def test_a_second_job_on_a_live_jobs_folder_is_refused_before_it_reads_anything(
    tmp_path, tiny_checkpoints, monkeypatch
):
    from visalign.magic import optimize as optimize_module

    config = make(tmp_path, tiny_checkpoints["llava"])
    out = tmp_path / "images"
    live = Holder(LIVE_MAGIC, tmp_path / "c.yaml", out)
    loaded = []
    real_load = optimize_module.load_training_set
    monkeypatch.setattr(optimize_module, "load_training_set", lambda *a, **k: loaded.append(a) or real_load(*a, **k))
    try:
        with pytest.raises(VisalignError) as refused:  # before locks: it resumed the live job's step-2 checkpoint
            optimize_magic_images(config, out)
        assert_refused_by_live_job(str(refused.value), out, live.pid)
        assert not loaded  # its requests (and their renders in the work folder) were not read
        assert not (out / "standard.png").exists()
        live.release()
    finally:
        live.close()
    assert (out / "standard.png").is_file()
