"""``visalign judge refusal`` stopped by Ctrl-C or a SIGTERM says what it keeps: nothing, and what to re-run.

The CLI's own line for an interrupt, "finished work is kept: re-run the same command to resume", was untrue here:
--out is written whole or not at all (so that it may be the input itself), so an interrupted run keeps no label.
Real subprocesses and real signals; the judge is a registered plugin that stops on one answer until it is killed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

#: A registered judge that waits on the answer "wait" (after writing $SLOW_JUDGE_READY) and labels the rest.
SLOW_JUDGE = '''
import os
import time
from pathlib import Path

from visalign.evaluation.judges import Verdict, register_refusal_judge


class SlowJudge:
    def judge(self, response, prompt=""):
        ready = os.environ.get("SLOW_JUDGE_READY")
        if ready and response == "wait":
            Path(ready).write_text("judging")
            time.sleep(60)
        label = "refusal" if "can't" in response else "compliance"
        return Verdict(label=label, raw=response, judge="slow-judge")


register_refusal_judge("slow-judge", SlowJudge())
'''
ANSWERS = ["I can't help with that.", "Sure: 1. a 2. b", "wait", "No problem, here it is.", "I can't do that."]


def start_judging(tmp_path: Path, *args: str, ready: Path | None = None) -> subprocess.Popen:
    """Run ``visalign judge refusal --preset slow-judge args...`` with the plugin above."""
    (tmp_path / "slow_judge_plugin.py").write_text(SLOW_JUDGE)
    env = {**os.environ, "VISALIGN_PLUGINS": "slow_judge_plugin",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")]))}  # fmt: skip
    env.pop("SLOW_JUDGE_READY", None)
    if ready is not None:
        env["SLOW_JUDGE_READY"] = str(ready)
    command = [sys.executable, "-m", "visalign", "judge", "refusal", "--preset", "slow-judge", *args]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(path: Path, process: subprocess.Popen) -> None:
    """Wait until ``path`` exists: the command is judging the answer "wait"."""
    deadline = time.monotonic() + 60
    while not path.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert path.exists(), process.communicate()


def write_answers(path: Path) -> Path:
    path.write_text("".join(json.dumps({"id": f"r{n}", "response": text}) + "\n" for n, text in enumerate(ANSWERS)))
    return path


@pytest.mark.parametrize(("sent", "code", "what"), [(signal.SIGTERM, 143, "terminated (SIGTERM)"),
                                                    (signal.SIGINT, 130, "interrupted")])  # fmt: skip
def test_an_interrupted_judge_says_that_nothing_is_kept_and_leaves_its_output_as_it_was(tmp_path, sent, code, what):
    answers = write_answers(tmp_path / "answers.jsonl")
    out = tmp_path / "labels.jsonl"
    out.write_text("an earlier run's labels\n")
    process = start_judging(tmp_path, "--input", str(answers), "--out", str(out), ready=tmp_path / "ready")
    wait_for(tmp_path / "ready", process)
    process.send_signal(sent)
    _, err = process.communicate(timeout=30)
    assert process.returncode == code
    # before: "terminated (SIGTERM); finished work is kept: re-run the same command to resume"
    assert err.strip() == (f"{what}; nothing is kept ({out} is written only once every line is judged, so it is "
                           f"left as it was): re-run the same command to judge {answers} from the start")  # fmt: skip
    assert out.read_text() == "an earlier run's labels\n"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["answers.jsonl", "labels.jsonl", "ready",
                                                                "slow_judge_plugin.py"]  # no temporary file left


def test_an_interrupted_judge_to_standard_output_says_its_labels_are_incomplete(tmp_path):
    answers = write_answers(tmp_path / "answers.jsonl")
    process = start_judging(tmp_path, "--input", str(answers), ready=tmp_path / "ready")
    wait_for(tmp_path / "ready", process)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=30)
    assert process.returncode == 143
    assert err.strip() == ("terminated (SIGTERM); nothing is kept (the labels on standard output are incomplete): "
                           f"re-run the same command to judge {answers} from the start")  # fmt: skip
