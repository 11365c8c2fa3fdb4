"""How a command ends on what a cluster delivers: a SIGTERM before the kill, and a write the disk refuses.

Real subprocesses: a SIGTERM (SLURM, Kubernetes) used to end a command at once with no message; a full disk or
a file size limit printed only "No space left on device" / "File too large", naming no file.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

SLOW_PLUGIN = '''
import time
from pathlib import Path

from visalign.evaluation.benchmarks.registry import register_benchmark
from visalign.evaluation.benchmarks.sample import LoadResult


@register_benchmark("slow-bench", "a loader that takes its time")
def load_slow(source: str | Path) -> LoadResult:
    Path(source).write_text("loading")  # the command is running now, past the CLI's start-up
    time.sleep(60)
    return LoadResult()
'''


def test_sigterm_ends_a_command_like_ctrl_c_with_one_line_and_exit_143(tmp_path):
    (tmp_path / "slow_plugin.py").write_text(SLOW_PLUGIN)
    ready = tmp_path / "ready"
    env = {**os.environ, "VISALIGN_PLUGINS": "slow_plugin",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")]))}  # fmt: skip
    command = [sys.executable, "-m", "visalign", "attack", "typographic", "-b", "slow-bench", "--source", str(ready),
               "--out", str(tmp_path / "out")]  # fmt: skip
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not ready.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ready.exists(), process.communicate()
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=30)
    assert process.returncode == 143  # before: -15, killed by the signal with nothing said
    assert err.strip() == "terminated (SIGTERM); finished work is kept: re-run the same command to resume"


IMPORT_PLUGIN = """
import time
from pathlib import Path

Path(__file__).with_name("ready").write_text("importing")
time.sleep(60)
"""

HANGING_CLEANUP_PLUGIN = """
import time
from pathlib import Path

from visalign.evaluation.benchmarks.registry import register_benchmark
from visalign.evaluation.benchmarks.sample import LoadResult


@register_benchmark("hanging-bench", "a loader whose cleanup hangs")
def load_hanging(source: str | Path) -> LoadResult:
    try:
        Path(source).write_text("loading")
        time.sleep(60)
    finally:
        Path(source).with_name("cleaning").write_text("cleaning up")
        time.sleep(60)
    return LoadResult()
"""


def start(tmp_path: Path, plugin: str, *args: str) -> subprocess.Popen:
    """Run ``visalign args...`` with ``plugin`` written to ``tmp_path/lab_plugin.py`` and named in VISALIGN_PLUGINS."""
    (tmp_path / "lab_plugin.py").write_text(plugin)
    env = {**os.environ, "VISALIGN_PLUGINS": "lab_plugin",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")]))}  # fmt: skip
    return subprocess.Popen([sys.executable, "-m", "visalign", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip


def wait_for(path: Path, process: subprocess.Popen) -> None:
    """Wait until ``path`` exists (the command reached the point under test)."""
    deadline = time.monotonic() + 60
    while not path.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert path.exists(), process.communicate()


def test_sigterm_while_plugins_are_imported_is_the_same_one_line(tmp_path):
    process = start(tmp_path, IMPORT_PLUGIN, "models", "list")
    wait_for(tmp_path / "ready", process)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=30)
    assert process.returncode == 143
    assert err.strip() == "terminated (SIGTERM); finished work is kept: re-run the same command to resume"


def test_a_second_sigterm_kills_a_command_whose_cleanup_hangs(tmp_path):
    process = start(tmp_path, HANGING_CLEANUP_PLUGIN, "attack", "typographic", "-b", "hanging-bench", "--source",
                    str(tmp_path / "ready"), "--out", str(tmp_path / "out"))  # fmt: skip
    wait_for(tmp_path / "ready", process)
    process.send_signal(signal.SIGTERM)
    wait_for(tmp_path / "cleaning", process)
    process.send_signal(signal.SIGTERM)
    process.communicate(timeout=30)  # before: the second SIGTERM interrupted the cleanup as another Ctrl-C
    assert process.returncode == -signal.SIGTERM


LIMITED_RUN = """
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails with EFBIG instead of killing
resource.setrlimit(resource.RLIMIT_FSIZE, (2000, 2000))
from visalign.cli import main
main(sys.argv[1:])
"""


def test_a_write_the_file_system_refuses_names_the_file_and_what_to_do(tmp_path, benchmarks_dir):
    out = tmp_path / "images"
    csv = benchmarks_dir / "figstep" / "SafeBench-Tiny.csv"
    result = subprocess.run([sys.executable, "-c", LIMITED_RUN, "attack", "figstep", "--csv", str(csv), "--out",
                             str(out)], capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 2 and "Traceback" not in result.stderr
    first = out / "query_ForbidQI_1_1_6.png"  # every FigStep PNG is larger than the 2,000-byte limit
    assert result.stderr.strip() == (f"error: {first}: File too large; raise the file size limit (ulimit -f) and "
                                     "re-run the same command to resume")  # fmt: skip
    assert sorted(path.name for path in Path(out).iterdir()) == []  # no temporary file is left behind
