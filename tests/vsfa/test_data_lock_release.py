"""``vsfa data`` run from Python (a notebook, a sweep script) lets go of its folder when it returns or raises.

Before, the folder stayed locked until the Python process exited: a terminal job on it was refused naming the
notebook's pid. A second, real process plays that terminal job (:mod:`run_lock_support`).
"""

from __future__ import annotations

import os

import pytest
from conftest import api_config
from run_lock_support import assert_refused_by_live_job, lock_from_another_process

from visalign.errors import VisalignError
from visalign.runs import RunDir
from visalign.vsfa import VsfaDataConfig, build_dataset, pipeline


def test_a_job_run_from_python_holds_its_folder_while_it_runs_and_lets_go_when_it_returns_or_raises(
    server, corpus, tmp_path, monkeypatch
):
    settings = api_config(server.base_url, corpus)
    out = tmp_path / "run"
    seen_while_running = []
    real_export = pipeline.export_dataset

    def export_while_another_job_tries(*args, **kwargs):
        seen_while_running.append(lock_from_another_process(out))
        return real_export(*args, **kwargs)

    monkeypatch.setattr(pipeline, "export_dataset", export_while_another_job_tries)
    stats = build_dataset(VsfaDataConfig.model_validate(settings), out, show_progress=False)
    assert stats["export"]["examples"]
    [refusal] = seen_while_running  # held while it ran, by this process
    assert_refused_by_live_job(refusal, out, os.getpid())
    # returned: a terminal job on the folder goes on (before: refused naming this process until it exited)
    assert lock_from_another_process(out) == "locked"

    other_config = VsfaDataConfig.model_validate({**settings, "seed": 8})
    with pytest.raises(VisalignError, match="holds a run with a different config"):  # refused under its lock
        build_dataset(other_config, out, show_progress=False)
    assert lock_from_another_process(out) == "locked"  # raised: let go too


def test_a_job_inside_an_outer_scope_on_the_same_folder_leaves_it_held_until_the_outer_scope_ends(
    server, corpus, tmp_path
):
    from visalign.runs import run_lock_scope

    settings = api_config(server.base_url, corpus)
    out = tmp_path / "run"
    with run_lock_scope():  # as the quickstart holds its folder while a stage runs in it
        RunDir(out).lock()
        build_dataset(VsfaDataConfig.model_validate(settings), out, show_progress=False)
        assert_refused_by_live_job(lock_from_another_process(out), out, os.getpid())
        sent = len(server.requests)
        build_dataset(VsfaDataConfig.model_validate(settings), out, show_progress=False)  # a resume: sends nothing
        assert len(server.requests) == sent
        assert_refused_by_live_job(lock_from_another_process(out), out, os.getpid())
    assert lock_from_another_process(out) == "locked"
