"""``run_eval`` in a notebook lets go of its folder when it returns or raises: ``visalign eval`` on it then runs.

Needs ``@releases_run_locks`` on :func:`visalign.evaluation.runner.run_eval`.
"""

from __future__ import annotations

import pytest
from run_lock_support import lock_from_another_process

from visalign.errors import VisalignError
from visalign.evaluation.config import EvalConfig
from visalign.evaluation.runner import run_eval


def test_an_eval_run_from_python_lets_go_of_its_folder_when_it_returns_and_when_it_raises(
    tmp_path, tiny_checkpoints, bench
):
    settings = {
        "systems": [{"name": "tiny", "model": str(tiny_checkpoints["llava"])}],
        "benchmarks": [{"name": "xstest", "source": str(bench / "xstest" / "xstest_prompts.csv"), "limit": 2}],
        "max_new_tokens": 2,
        "batch_size": 2,
    }
    out = tmp_path / "run"
    assert run_eval(EvalConfig.model_validate(settings), out).is_file()
    # before: refused, naming this (notebook) process until it exited
    assert lock_from_another_process(out) == "locked"
    with pytest.raises(VisalignError, match="holds a run with a different config"):  # refused under its lock
        run_eval(EvalConfig.model_validate({**settings, "seed": 8}), out)
    assert lock_from_another_process(out) == "locked"
