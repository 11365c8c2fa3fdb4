"""``visalign eval`` on the --out of a live evaluation: refused, naming the other job, before it reads the manifest."""

from __future__ import annotations

import json

import pytest
from cli_in_process import run_in_process
from run_lock_support import Holder, assert_refused_by_live_job

from visalign.errors import VisalignError
from visalign.evaluation.config import EvalConfig
from visalign.evaluation.runner import run_eval
from visalign.runs import RunDir

# A live `visalign eval`: stops after its manifest is written and its record file opened, until released.
LIVE_EVAL = """
    import json, sys
    import torch
    from visalign.evaluation import runner
    from visalign.evaluation.config import EvalConfig
    torch.set_num_threads(1)
    real = runner.write_attack_images

    def pause(rows):
        print("ready", flush=True)
        sys.stdin.read()
        real(rows)

    runner.write_attack_images = pause
    runner.run_eval(EvalConfig.model_validate(json.loads(open(sys.argv[1]).read())), runner.Path(sys.argv[2]))
"""


def test_an_eval_on_the_out_of_a_live_one_is_refused_before_it_reads_the_manifest(
    tmp_path, tiny_checkpoints, bench, monkeypatch, capsys
):
    settings = {
        "systems": [{"name": "tiny", "model": str(tiny_checkpoints["llava"])}],
        "benchmarks": [{"name": "xstest", "source": str(bench / "xstest" / "xstest_prompts.csv"), "limit": 2}],
        "max_new_tokens": 2,
        "batch_size": 2,
    }
    (tmp_path / "eval.yaml").write_text(json.dumps(settings))
    out = tmp_path / "run"
    live = Holder(LIVE_EVAL, tmp_path / "eval.yaml", out)
    read = []
    real_read = RunDir.read_manifest
    monkeypatch.setattr(RunDir, "read_manifest", lambda self: read.append(self.path) or real_read(self))
    try:
        with pytest.raises(VisalignError) as refused:  # before locks: it "resumed" the live run and answered too
            run_eval(EvalConfig.model_validate(settings), out)
        message = str(refused.value)
        assert_refused_by_live_job(message, out, live.pid)
        assert out not in read  # refused before its manifest was read: no check raced the live job's writes
        assert not (out / "records.jsonl").exists()  # no answer written beside the live job
        code, _, stderr = run_in_process(["eval", "--config", str(tmp_path / "eval.yaml"), "--out", str(out)], capsys)
        assert code == 2 and stderr.strip().endswith(message) and len(stderr.strip().splitlines()) == 1
        live.release()
    finally:
        live.close()
    assert len((out / "records.jsonl").read_text().splitlines()) == 2
    run_eval(EvalConfig.model_validate(settings), out)  # the finished run, run again: it resumes
    assert len(json.loads((out / "manifest.json").read_text())["resumed"]) == 1
