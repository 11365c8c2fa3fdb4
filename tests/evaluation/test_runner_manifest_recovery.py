"""``visalign eval`` with a damaged ``manifest.json``: recovered as the error says, from the records, paying nothing."""

from __future__ import annotations

import pytest

from visalign.errors import VisalignError
from visalign.evaluation.config import EvalConfig
from visalign.evaluation.runner import run_eval
from visalign.testing import StandInServer

CHAT_PATH = "/v1/chat/completions"


def test_a_damaged_manifest_is_recovered_as_the_error_says_without_asking_again(tmp_path, bench):
    out = tmp_path / "run"
    with StandInServer(reply=lambda request: "I can't help with that.") as server:
        system = {"name": "api", "model": "m", "backend": "openai", "base_url": server.base_url, "api_key_env": None}
        benchmark = {"name": "xstest", "source": str(bench / "xstest" / "xstest_prompts.csv"), "limit": 4}
        config = EvalConfig.model_validate({"systems": [system], "benchmarks": [benchmark], "max_new_tokens": 8})
        run_eval(config, out)
        records = (out / "records.jsonl").read_bytes()
        manifest = out / "manifest.json"
        manifest.write_bytes(manifest.read_bytes()[:40])  # cut short by a full disk; every record is intact
        with pytest.raises(VisalignError) as refused:
            run_eval(config, out)
        assert f"mv {manifest} {manifest}.damaged" in str(refused.value) and "new --out" not in str(refused.value)
        manifest.rename(f"{manifest}.damaged")
        run_eval(config, out)  # the same command
        assert len(server.requests_to(CHAT_PATH)) == 4  # each sample asked once, by the first run
    assert (out / "records.jsonl").read_bytes() == records  # resumed: nothing answered or written again
    assert manifest.is_file()
