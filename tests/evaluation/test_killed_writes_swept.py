"""A killed ``judge refusal --out``, ``attack figstep`` or ``attack typographic`` leaves a temporary file; the next run
of the command deletes it, and only it: never a live writer's, another machine's, or one it cannot tell.

Real subprocesses killed with SIGKILL while a temporary file is on disk, then re-run as a user would. The judge stops
on one answer (a registered plugin judge); the attack commands stop inside a write (the third ``fsync``: the file is
written, not yet renamed into place).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import re
import socket
import subprocess
import sys
from pathlib import Path

from PIL import Image

from .test_judge_refusal_interrupt import ANSWERS, start_judging, wait_for, write_answers

#: What a killed write leaves: ``.<file>.<pid>-<host digest>.<8 hex>.tmp`` (and, before, ``.<file>.<8 random>.tmp``).
TEMPORARY = re.compile(r"\..+\.tmp")
HOST = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]

#: Runs ``visalign ARGS...`` and stops for good inside the third fsync, once the file it syncs is written.
STOPS_IN_A_WRITE = """
import os, sys, time
from pathlib import Path

ready, calls, real_fsync = Path(sys.argv[1]), [], os.fsync


def fsync(descriptor):
    real_fsync(descriptor)
    calls.append(descriptor)
    if len(calls) == 3:
        ready.write_text("writing")
        time.sleep(60)


os.fsync = fsync
from visalign.cli import main
main(sys.argv[2:])
"""


def temporaries(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir() if TEMPORARY.fullmatch(path.name))


def visalign(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "visalign", *args], capture_output=True, text=True, timeout=300)


def kill_inside_a_write(tmp_path: Path, *args: str) -> None:
    """Run ``visalign args...``, SIGKILL it inside its third write, and reap it."""
    ready = tmp_path / "ready"
    process = subprocess.Popen([sys.executable, "-c", STOPS_IN_A_WRITE, str(ready), *args], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)  # fmt: skip
    wait_for(ready, process)
    process.kill()
    process.communicate(timeout=30)
    ready.unlink()


def dead_pid() -> int:
    """The pid of a process that has ended (and been reaped)."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def labels(path: Path) -> list[tuple[str, str]]:
    return [(record["id"], record["label"]) for record in map(json.loads, path.read_text().splitlines())]


WHOLE = [(f"r{n}", "refusal" if "can't" in text else "compliance") for n, text in enumerate(ANSWERS)]


def test_a_killed_judge_leaves_a_temporary_file_that_the_next_run_deletes(tmp_path):
    answers = write_answers(tmp_path / "answers.jsonl")
    out = tmp_path / "labels.jsonl"
    process = start_judging(tmp_path, "--input", str(answers), "--out", str(out), ready=tmp_path / "ready")
    wait_for(tmp_path / "ready", process)
    process.kill()
    process.communicate(timeout=30)
    [leftover] = temporaries(tmp_path)
    assert leftover.startswith(".labels.jsonl.") and not out.exists()

    process = start_judging(tmp_path, "--input", str(answers), "--out", str(out))
    assert process.communicate(timeout=60)[1].strip() == "2 refusal, 3 compliance, 0 unknown, 0 error lines"
    assert temporaries(tmp_path) == []  # before: the killed run's file stayed, and one more with every kill
    assert labels(out) == WHOLE


def test_a_live_run_and_files_it_cannot_tell_are_left_alone(tmp_path):
    answers = write_answers(tmp_path / "answers.jsonl")
    out = tmp_path / "labels.jsonl"
    live = start_judging(tmp_path, "--input", str(answers), "--out", str(out), ready=tmp_path / "ready")
    wait_for(tmp_path / "ready", live)
    [live_file] = temporaries(tmp_path)
    gone = dead_pid()
    other_host = tmp_path / f".labels.jsonl.{gone}-{'0' * 8 if HOST != '0' * 8 else '1' * 8}.0123abcd.tmp"
    unnamed = tmp_path / ".labels.jsonl.a1b2c3d4.tmp"  # named before writers were: whose it is cannot be told
    locked = tmp_path / f".labels.jsonl.{gone}-{HOST}.0123abcd.tmp"  # a writer that another pid namespace hides
    other_file = tmp_path / f".answers.jsonl.{gone}-{HOST}.0123abcd.tmp"  # not a temporary file of --out
    for path in (other_host, unnamed, locked, other_file):
        path.write_text("partial")
    holder = locked.open("rb")
    fcntl.flock(holder, fcntl.LOCK_EX)
    try:
        process = start_judging(tmp_path, "--input", str(answers), "--out", str(out))
        assert process.communicate(timeout=60)[1].strip() == "2 refusal, 3 compliance, 0 unknown, 0 error lines"
        kept = sorted([live_file, other_host.name, unnamed.name, locked.name, other_file.name])
        assert temporaries(tmp_path) == kept and labels(out) == WHOLE
    finally:
        holder.close()  # the hidden writer ends
        live.kill()
        live.communicate(timeout=30)

    process = start_judging(tmp_path, "--input", str(answers), "--out", str(out))
    assert process.communicate(timeout=60)[1].strip() == "2 refusal, 3 compliance, 0 unknown, 0 error lines"
    assert temporaries(tmp_path) == sorted([other_host.name, unnamed.name, other_file.name])
    assert labels(out) == WHOLE


def test_a_killed_figstep_render_is_cleared_by_the_next_one_and_every_image_is_whole(tmp_path, benchmarks_dir):
    csv = benchmarks_dir / "figstep" / "SafeBench-Tiny.csv"
    out = tmp_path / "images"
    kill_inside_a_write(tmp_path, "attack", "figstep", "--csv", str(csv), "--out", str(out))
    [leftover] = temporaries(out)
    assert leftover.startswith(".query_ForbidQI_") and len(list(out.glob("*.png"))) == 2

    assert visalign("attack", "figstep", "--csv", str(csv), "--out", str(out)).returncode == 0
    assert temporaries(out) == []  # before: the killed render's file stayed
    assert visalign("attack", "figstep", "--csv", str(csv), "--out", str(tmp_path / "fresh")).returncode == 0
    images = sorted(path.name for path in out.iterdir())
    assert len(images) == 50 and images == sorted(path.name for path in (tmp_path / "fresh").iterdir())
    for name in images:
        assert (out / name).read_bytes() == (tmp_path / "fresh" / name).read_bytes()
        with Image.open(out / name) as image:
            image.load()


def test_a_killed_typographic_set_is_cleared_by_the_next_one_and_its_files_are_whole(tmp_path, benchmarks_dir):
    source = benchmarks_dir / "strongreject" / "strongreject_small_dataset.csv"
    out = tmp_path / "set"
    command = ("attack", "typographic", "-b", "strongreject-small", "--source", str(source), "--out")
    kill_inside_a_write(tmp_path, *command, str(out))
    [leftover] = temporaries(out / "images")
    assert leftover.endswith(".tmp") and not (out / "samples.jsonl").exists()

    assert visalign(*command, str(out)).returncode == 0
    assert temporaries(out / "images") == [] and temporaries(out) == []  # before: the killed write's file stayed
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 60 and (out / "errors.jsonl").read_text() == ""
    assert sorted(Path(sample["images"][0]).name for sample in samples) == sorted(
        path.name for path in (out / "images").iterdir()
    )
    for sample in samples:
        with Image.open(sample["images"][0]) as image:
            image.load()
