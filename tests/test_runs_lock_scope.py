"""A run-directory lock lasts as long as the job that took it, not as long as the Python process.

Jobs run from Python (a notebook, a sweep script) let go of their folders when they return or raise; a lock an
outer job took stays held; one taken outside any job stays held until the process ends. A second, real process
checks who holds a folder (:mod:`run_lock_support`).
"""

from __future__ import annotations

import importlib
import os
import threading

import pytest
from run_lock_support import assert_refused_by_live_job, lock_from_another_process

from visalign.runs import RunDir, releases_run_locks, run_lock_scope

CONFIG = {"name": "scoped", "seed": 0}


@releases_run_locks
def job(out, *, fail: bool = False, inner=None) -> str:
    """A job as the real ones are: it locks its folder, writes its manifest, maybe runs another job, maybe fails."""
    RunDir(out).write_manifest(CONFIG)
    if inner is not None:
        inner()
    if fail:
        raise RuntimeError("the job failed")
    return "done"


def test_a_job_lets_go_of_its_folder_when_it_returns_and_when_it_raises(tmp_path):
    out = tmp_path / "run"
    assert job(out) == "done"
    assert lock_from_another_process(out) == "locked"
    with pytest.raises(RuntimeError, match="the job failed"):
        job(out, fail=True)
    assert lock_from_another_process(out) == "locked"


def test_a_job_that_runs_another_keeps_its_folder_and_the_inner_jobs_folder_goes(tmp_path):
    outer, inner = tmp_path / "outer", tmp_path / "inner"
    seen = []

    def inner_job_then_look():
        job(inner)  # its own folder: let go when it returns
        seen.append(lock_from_another_process(inner))
        job(outer)  # the outer job's folder: still the outer job's after this returns
        seen.append(lock_from_another_process(outer))

    job(outer, inner=inner_job_then_look)
    assert seen[0] == "locked"
    assert_refused_by_live_job(seen[1], outer, os.getpid())
    assert lock_from_another_process(outer) == "locked"


def test_a_lock_taken_outside_any_job_is_kept_until_the_process_ends(tmp_path):
    """A script calling write_manifest itself keeps the folder, even after a job on it returns."""
    out = tmp_path / "run"
    RunDir(out).write_manifest(CONFIG)
    job(out)
    assert_refused_by_live_job(lock_from_another_process(out), out, os.getpid())


def test_a_job_ending_in_one_thread_leaves_another_threads_job_its_folder(tmp_path):
    mine, theirs = tmp_path / "mine", tmp_path / "theirs"
    locked, finish = threading.Event(), threading.Event()

    def their_job():
        with run_lock_scope():
            RunDir(theirs).lock()
            locked.set()
            finish.wait(60)

    thread = threading.Thread(target=their_job)
    thread.start()
    try:
        assert locked.wait(60)
        job(mine)
        assert lock_from_another_process(mine) == "locked"
        assert_refused_by_live_job(lock_from_another_process(theirs), theirs, os.getpid())
    finally:
        finish.set()
        thread.join(60)
    assert lock_from_another_process(theirs) == "locked"


def test_a_generator_cannot_be_a_job_scope():
    """It would return before it locks anything, and its locks would outlive the scope."""
    with pytest.raises(TypeError, match="returns before its work is done"):

        @releases_run_locks
        def images(out):
            yield RunDir(out).lock()


@pytest.mark.parametrize(
    "entry",
    [
        "visalign.vsfa.pipeline:build_dataset",  # vsfa data
        "visalign.vsfa.training.trainer:train",  # vsfa train
        "visalign.magic.optimize:optimize_magic_images",  # magic optimize
        "visalign.baselines.refusal_data:build_refusal_dataset",  # baseline refusal-data
        "visalign.quickstart:run_quickstart",  # quickstart
        "visalign.evaluation.runner:run_eval",  # eval
        "visalign.vsfa.shards:merge_shards",  # vsfa merge-shards
    ],
)
def test_every_jobs_entry_function_lets_go_of_the_locks_it_takes(entry):
    module, name = entry.split(":")
    function = getattr(importlib.import_module(module), name)
    assert getattr(function, "releases_run_locks", False), f"{entry} is not decorated with @releases_run_locks"
