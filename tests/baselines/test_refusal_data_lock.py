"""``baseline refusal-data`` on the folder of a live job: refused, naming it, before it reads the folder."""

from __future__ import annotations

import json

import pytest
from magic.helpers import tiny_config
from run_lock_support import Holder, assert_refused_by_live_job

from visalign.baselines import refusal_data
from visalign.errors import VisalignError
from visalign.magic import MagicConfig

# A live `baseline refusal-data`: stops once its manifest is written, before its model loads, until released.
LIVE_BUILD = """
    import json, sys
    from visalign.baselines import refusal_data
    from visalign.magic import MagicConfig
    real = refusal_data.load_vlm

    def pause(*args, **kwargs):
        print("ready", flush=True)
        sys.stdin.read()
        return real(*args, **kwargs)

    refusal_data.load_vlm = pause
    config = MagicConfig.model_validate(json.loads(open(sys.argv[1]).read()))
    refusal_data.build_refusal_dataset(config, "standard", sys.argv[2], max_answer_tokens=4)
"""


def test_a_second_build_on_a_live_builds_folder_is_refused_and_goes_on_once_it_is_killed(
    tmp_path, tiny_checkpoints, monkeypatch
):
    settings = tiny_config(tmp_path, tiny_checkpoints["llava"])
    (tmp_path / "magic.json").write_text(json.dumps(settings))
    out = tmp_path / "refusal"
    live = Holder(LIVE_BUILD, tmp_path / "magic.json", out)
    read = []
    monkeypatch.setattr(refusal_data, "load_training_set", lambda *a, **k: read.append(a) or pytest.fail("read"))
    try:
        with pytest.raises(VisalignError) as refused:  # before locks: it resumed the live build's folder
            refusal_data.build_refusal_dataset(
                MagicConfig.model_validate(settings), "standard", out, max_answer_tokens=4
            )
        assert_refused_by_live_job(str(refused.value), out, live.pid)
        assert not read
        live.kill()  # a killed job leaves no lock behind
    finally:
        live.close()
    with pytest.raises(pytest.fail.Exception, match="read"):  # past the lock: it reads its requests now
        refusal_data.build_refusal_dataset(MagicConfig.model_validate(settings), "standard", out, max_answer_tokens=4)
