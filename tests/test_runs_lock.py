"""One job writes a run directory at a time: the lock, what it keeps out, and the code a resume records.

The claims are about two processes, so a second, real process plays the other job (:mod:`run_lock_support`).
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import re
import shutil
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from run_lock_support import LIVE_MANIFEST_JOB, Holder

import visalign.runs as runs
from visalign.errors import VisalignError
from visalign.runs import JsonlStore, RunDir, git_revision, package_versions

CONFIG = {"name": "same-config", "seed": 0}


def refusal_pattern(out: Path, pid: int) -> str:
    """The one-line refusal of a second job, as a regular expression."""
    return (
        rf"^{re.escape(str(out))}: another visalign job \(pid {pid} on host {re.escape(socket.gethostname())}, "
        r"since \d{4}-\d\d-\d\dT[\d:]+\+00:00\) is writing this run directory; wait for it to finish or use another "
        r"--out$"
    )


def test_a_second_job_is_refused_while_the_first_runs_and_accepted_once_it_is_killed(tmp_path):
    out = tmp_path / "run"
    live = Holder(LIVE_MANIFEST_JOB, out, json.dumps(CONFIG))
    try:
        # the live job is writing a record file atomically: its temporary file is in the folder
        in_progress = out / ".records.jsonl.abcd1234.tmp"
        in_progress.write_bytes(b"half of the live job's write")
        manifest = (out / "manifest.json").read_text()
        with pytest.raises(VisalignError) as refused:
            RunDir(out).write_manifest(CONFIG)  # the same config: before locks, an accepted "resume" of a live job
        assert re.match(refusal_pattern(out, live.pid), str(refused.value)), str(refused.value)
        # refused before anything was touched: no resume recorded, and the live job's temp file is not swept away
        assert (out / "manifest.json").read_text() == manifest
        assert in_progress.read_bytes() == b"half of the live job's write"
        live.kill()  # SIGKILL: no clean-up ran, and the kernel dropped the lock with the process
        again = RunDir(out).write_manifest(CONFIG)
        assert len(again["resumed"]) == 1
        assert not in_progress.exists()  # now a killed job's leftover: swept under this job's lock
        holder = json.loads((out / runs.LOCK_NAME).read_text())
        assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
    finally:
        live.close()


# A job creating a run directory, stopped inside write_manifest where its git subprocess runs (as a busy machine
# stops it): before locks, that was between its read of "no manifest yet" and the write of its own.
SLOW_FIRST_WRITE = """
    import json, sys
    import visalign.runs as runs
    real = runs.git_revision

    def slow_git_revision(*args, **kwargs):
        print("ready", flush=True)  # inside write_manifest: its manifest is not written yet
        sys.stdin.read()
        return real(*args, **kwargs)

    runs.git_revision = slow_git_revision
    runs.RunDir(sys.argv[1]).write_manifest(json.loads(sys.argv[2]))
"""


def test_two_configs_started_together_are_never_both_accepted(tmp_path):
    """The check for another config and the manifest's write are one step: no second job gets in between."""
    out = tmp_path / "run"
    first = Holder(SLOW_FIRST_WRITE, out, json.dumps({"name": "a", "seed": 7}))
    try:
        with pytest.raises(VisalignError, match=refusal_pattern(out, first.pid)):
            RunDir(out).write_manifest({"name": "b", "seed": 8})
        first.release()
    finally:
        first.close()
    assert json.loads((out / "manifest.json").read_text())["config"] == {"name": "a", "seed": 7}


def test_the_process_holding_the_lock_takes_it_again_through_any_path(tmp_path):
    """Tests and the quickstart run several jobs on one folder in one process; a job makes several RunDirs."""
    out = tmp_path / "run"
    assert RunDir(out).lock() and RunDir(out).lock()
    (tmp_path / "link").symlink_to(out)
    assert RunDir(tmp_path / "link").lock()
    RunDir(out).write_manifest(CONFIG)
    assert len(RunDir(tmp_path / "link").write_manifest(CONFIG)["resumed"]) == 1


OTHER_JOB = """
    import json, sys
    from visalign.errors import VisalignError
    from visalign.runs import RunDir
    try:
        RunDir(sys.argv[1]).write_manifest(json.loads(sys.argv[2]))
        print("accepted", flush=True)
    except VisalignError as exc:
        print(exc, flush=True)
"""


def test_a_folder_deleted_and_made_again_is_locked_again(tmp_path):
    """The process's record of its locks is by lock file, not by path: a new folder's new lock file is taken."""
    out = tmp_path / "run"
    RunDir(out).write_manifest(CONFIG)
    shutil.rmtree(out)
    RunDir(out).write_manifest(CONFIG)  # a new run in a new folder of the same name
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(OTHER_JOB), str(out), json.dumps(CONFIG)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert re.match(refusal_pattern(out, os.getpid()), done.stdout.strip()), done.stdout


def test_jobs_run_one_after_another_in_folders_deleted_since_keep_no_descriptor_open(tmp_path):
    """A Python session running job after job in temporary folders would otherwise run out of descriptors."""
    before = len(os.listdir("/proc/self/fd"))
    for number in range(40):
        out = tmp_path / f"run{number}"
        RunDir(out).write_manifest(CONFIG)
        shutil.rmtree(out)
    RunDir(tmp_path / "last").write_manifest(CONFIG)  # lets go of the last deleted folder's lock
    assert len(os.listdir("/proc/self/fd")) <= before + 1  # the live folder's lock only


def test_a_file_system_without_flock_warns_once_and_goes_on_unlocked(tmp_path, monkeypatch, caplog):
    def no_locks(fd, operation):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    out = tmp_path / "nfs-run"
    with caplog.at_level(logging.WARNING, logger="visalign.runs"):
        RunDir(out).write_manifest(CONFIG)
        assert RunDir(out).write_manifest(CONFIG)["resumed"]
    warnings = [r.getMessage() for r in caplog.records if "lock" in r.getMessage()]
    assert warnings == [
        f"{out}: cannot lock the run directory (the file system cannot lock files: No locks available); going on "
        "unlocked: make sure no other visalign job writes it at the same time"
    ]


# Another process appending to a record file: three lines, then half of a fourth, then (told "go") the rest of it
# and a fifth.
APPENDER = """
    import json, os, sys
    lines = [(json.dumps({"id": i, "text": "x" * 200}) + "\\n").encode() for i in range(5)]
    fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.write(fd, b"".join(lines[:3]) + lines[3][:100])
    print("ready", flush=True)
    assert sys.stdin.readline() == "go\\n"
    os.write(fd, lines[3][100:] + lines[4])
    print("done", flush=True)
    sys.stdin.read()
"""


def test_opening_a_store_while_another_process_appends_keeps_its_lines(tmp_path, monkeypatch, caplog):
    """The torn last line is cut away only when the file has not grown since it was read."""
    path = tmp_path / "records.jsonl"
    writer = Holder(APPENDER, path)
    read_bytes = Path.read_bytes

    def read_then_the_writer_goes_on(self):
        data = read_bytes(self)
        if self == path:  # the writer finishes its line and appends another before the store looks at the tail
            writer.process.stdin.write("go\n")
            writer.process.stdin.flush()
            assert writer.process.stdout.readline().strip() == "done"
        return data

    try:
        monkeypatch.setattr(Path, "read_bytes", read_then_the_writer_goes_on)
        with caplog.at_level(logging.WARNING, logger="visalign.runs"):
            opened = JsonlStore(path)
        monkeypatch.undo()
        assert len(opened) == 3  # what was whole when read
        assert [json.loads(line)["id"] for line in path.read_text().splitlines()] == [0, 1, 2, 3, 4]
        assert "another process is appending to it; leaving it as it is" in caplog.text
        writer.release()
    finally:
        writer.close()
    assert len(JsonlStore(path)) == 5


def test_a_resume_under_other_code_warns_naming_what_changed_and_records_the_code(tmp_path, caplog):
    out = tmp_path / "run"
    RunDir(out).write_manifest(CONFIG)
    # the run as another install wrote it: other versions and revision, and a resume recorded before 2026-11
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["versions"].update(transformers="5.17.0", visalign="0.0.9")
    manifest.update(git_revision="b82a5d7" + "0" * 33, git_dirty=False, resumed=["2026-01-02T03:04:05+00:00"])
    (out / "manifest.json").write_text(json.dumps(manifest))
    with caplog.at_level(logging.WARNING, logger="visalign.runs"):
        resumed = RunDir(out).write_manifest(CONFIG)["resumed"]
    now = package_versions()
    [warning] = [r.getMessage() for r in caplog.records]
    assert warning.startswith(
        f"{out}: resuming a run last written by other code (transformers 5.17.0 -> "
        f"{now['transformers']}; visalign 0.0.9 -> {now['visalign']}; git revision "
        "b82a5d700000 -> "
    )
    assert resumed[0] == "2026-01-02T03:04:05+00:00"  # an old entry is kept as it was
    assert set(resumed[1]) == {"time", "versions", "git_revision", "git_dirty"}
    assert resumed[1]["versions"] == now and resumed[1]["git_revision"] == git_revision()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="visalign.runs"):
        again = RunDir(out).write_manifest(CONFIG)  # the code that last wrote it continues: nothing to say
    assert not caplog.records and len(again["resumed"]) == 3
    assert again["versions"]["visalign"] == "0.0.9"  # the creation's record is kept as it was


def _git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(cwd), *args], capture_output=True, text=True, check=True).stdout.strip()


needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


@needs_git
def test_visalign_installed_inside_another_repository_records_no_revision(tmp_path):
    """A virtual environment inside a user's research repository: the user's commit says nothing of visalign's."""
    repo = tmp_path / "my-experiments"
    site = repo / ".venv" / "lib" / "site-packages"
    repo.mkdir()
    _git(repo, "init", "-q")
    _git(repo, "-c", "user.email=a@b", "-c", "user.name=u", "commit", "-q", "--allow-empty", "-m", "experiments")
    shutil.copytree(Path(runs.__file__).parent, site / "visalign", ignore=shutil.ignore_patterns("__pycache__"))
    script = "import visalign.runs as r; print(r.__file__, r.git_revision(), getattr(r, 'git_dirty', lambda: 0)())"
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        cwd=tmp_path,
        env={"PYTHONPATH": str(site), "PATH": os.environ["PATH"]},
    )
    where, revision, dirty = done.stdout.split()
    assert Path(where).is_relative_to(site)
    assert revision == "None"
    assert dirty == "None"


@needs_git
def test_a_manifest_records_the_checkout_revision_and_whether_its_tree_is_dirty(tmp_path):
    top = Path(runs.__file__).resolve().parents[2]
    if (
        not (top / "src" / "visalign" / "runs.py").is_file()
        or subprocess.run(["git", "-C", str(top), "rev-parse", "HEAD"], capture_output=True, check=False).returncode
    ):
        pytest.skip("visalign runs from an installed copy here, not from a git checkout")
    manifest = RunDir(tmp_path / "run").write_manifest(CONFIG)
    assert manifest["git_revision"] == _git(top, "rev-parse", "HEAD")
    assert manifest["git_dirty"] is bool(_git(top, "status", "--porcelain", "--untracked-files=no"))
