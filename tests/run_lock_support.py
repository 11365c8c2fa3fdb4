"""Shared by the run-directory lock tests: a second, real process that holds a run directory while a test runs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

READY = "ready"


class Holder:
    """A child Python process running ``script``; it prints :data:`READY` once it holds what the test needs.

    The script blocks on its standard input after that (``sys.stdin.read()``): :meth:`release` lets it finish and
    exit normally, :meth:`kill` ends it with SIGKILL, as a job killed by a scheduler or the OOM killer ends.
    """

    def __init__(self, script: str, *args: str | Path, env: dict[str, str] | None = None, timeout: float = 120):
        self.process = subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(script), *map(str, args)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})},
        )
        self.lines: list[str] = []
        for line in self.process.stdout:  # the child's own lines up to READY (a crash ends the loop)
            if line.strip() == READY:
                return
            self.lines.append(line)
        self.process.wait(timeout=timeout)
        raise AssertionError(f"the holder process exited before it was ready: {self.process.stderr.read()[-3000:]}")

    @property
    def pid(self) -> int:
        """The child's process id."""
        return self.process.pid

    def release(self, timeout: float = 120) -> str:
        """Let the child finish; return its standard error (it must exit 0)."""
        _, err = self.process.communicate("", timeout=timeout)
        assert self.process.returncode == 0, err[-3000:]
        return err

    def kill(self) -> None:
        """End the child with SIGKILL and wait for it."""
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.communicate(timeout=60)

    def close(self) -> None:
        """Make sure the child is gone (for ``finally`` blocks)."""
        if self.process.poll() is None:
            self.kill()


#: A "live job": writes the manifest of a run directory (``argv[1]``) with the config JSON ``argv[2]``, which on
#: a visalign with locks takes the directory's lock, then keeps running until released.
LIVE_MANIFEST_JOB = """
    import json, sys
    from visalign.runs import RunDir
    RunDir(sys.argv[1]).write_manifest(json.loads(sys.argv[2]))
    print("ready", flush=True)
    sys.stdin.read()
"""


def assert_refused_by_live_job(message: str, out: Path, pid: int) -> None:
    """``message`` is the one-line refusal of a job whose run directory ``out`` the process ``pid`` holds."""
    import re
    import socket

    expected = (
        rf"^{re.escape(str(out))}: another visalign job \(pid {pid} on host {re.escape(socket.gethostname())}, "
        r"since [^)]+\) is writing this run directory; wait for it to finish or use another --out$"
    )
    assert re.match(expected, message), message


#: Another job's first step: lock the run directory ``argv[1]``, then exit at once (letting go of it).
TRY_LOCK = """
    import sys
    from visalign.errors import VisalignError
    from visalign.runs import RunDir
    try:
        RunDir(sys.argv[1]).lock()
        print("locked", flush=True)
    except VisalignError as exc:
        print(exc, flush=True)
"""


def lock_from_another_process(out: Path) -> str:
    """Lock ``out`` from a second, real process that exits at once: ``"locked"``, or its one-line refusal."""
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(TRY_LOCK), str(out)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    return done.stdout.strip()
