"""Ctrl-C on a running job: exit code 130 and one line saying the work is kept, then the same command resumes."""

import os
import signal
import subprocess
import sys
import time

from conftest import REPO, api_config, run_cli, write_yaml
from standin import scripted_reply

from visalign.testing import StandInServer


def test_ctrl_c_exits_130_with_a_message_and_the_run_resumes(corpus, tmp_path):
    with StandInServer(reply=scripted_reply, latency_s=0.15) as server:
        config = write_yaml(tmp_path / "run.yaml", api_config(server.base_url, corpus))
        out = tmp_path / "run"
        args = [sys.executable, "-m", "visalign", "vsfa", "data", "--config", str(config), "--out", str(out),
                "--no-progress"]  # fmt: skip
        process = subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=os.environ)
        images = out / "images.jsonl"
        deadline = time.monotonic() + 60
        while not (images.exists() and images.read_text().count("\n") >= 2) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert process.poll() is None, "the job ended before it could be interrupted"
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
        assert process.returncode == 130, stderr
        assert stderr.decode().strip().splitlines()[-1] == (
            "interrupted; finished work is kept: re-run the same command to resume"
        )
        assert not (out / "dataset" / "llava.json").exists()

        resumed = run_cli("vsfa", "data", "--config", str(config), "--out", str(out), "--no-progress")
    assert resumed.returncode == 0, resumed.stderr
    assert "12 examples, 36 pairs" in resumed.stdout
