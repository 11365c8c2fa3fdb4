"""``vsfa data`` on the --out of a live job: refused, naming it, before a request is sent or a record read."""

from __future__ import annotations

import json

import pytest
from conftest import api_config
from run_lock_support import Holder, assert_refused_by_live_job

from visalign.errors import VisalignError
from visalign.vsfa import VsfaDataConfig, build_dataset

# A live `vsfa data`: stops after its manifest and corpus records are written, before its stages, until released.
LIVE_DATA = """
    import asyncio, json, sys
    from visalign.vsfa import VsfaDataConfig, build_dataset, pipeline
    real = pipeline._run_stages

    async def pause(*args, **kwargs):
        print("ready", flush=True)
        await asyncio.to_thread(sys.stdin.read)
        return await real(*args, **kwargs)

    pipeline._run_stages = pause
    build_dataset(VsfaDataConfig.model_validate(json.loads(open(sys.argv[1]).read())), sys.argv[2])
"""


def test_a_second_job_on_a_live_jobs_out_is_refused_before_it_sends_a_request(server, corpus, tmp_path):
    settings = api_config(server.base_url, corpus)
    (tmp_path / "data.json").write_text(json.dumps(settings))
    out = tmp_path / "run"
    live = Holder(LIVE_DATA, tmp_path / "data.json", out)
    try:
        with pytest.raises(VisalignError) as refused:  # before locks: it "resumed" the live run, sending everything
            build_dataset(VsfaDataConfig.model_validate(settings), out)
        assert_refused_by_live_job(str(refused.value), out, live.pid)
        assert not server.requests
        live.release()
    finally:
        live.close()
    sent = len(server.requests)
    assert sent and json.loads((out / "dataset" / "stats.json").read_text())
    build_dataset(VsfaDataConfig.model_validate(settings), out)  # the finished run again: resumed, nothing sent
    assert len(server.requests) == sent
