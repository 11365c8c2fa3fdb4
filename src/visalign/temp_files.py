"""Temporary files that name their writer, so that a later run can tell a killed writer's leftovers from a live one's.

A write of ``out`` fills ``.<out>.<pid>-<host>.<8 random>.tmp`` beside it and renames it into place; a SIGKILL (or a
second SIGTERM during cleanup) before the rename leaves that file behind. :func:`sweep_stale_temp_files` deletes one
only when its writer is gone: the name says this host, the process it names no longer runs, and nobody holds the
``flock`` its writer took (the kernel drops it when the writer dies, whatever its pid namespace). Anything else (another
machine's, a live process's, a name without a writer, where locks do not work) is left alone. The name still has the
shape that run folders sweep (``visalign.runs.sweep_temp_files``). Every ``visalign.runs.atomic_write_bytes`` writes
through one; commands that write outside a run folder (``visalign judge refusal --out``, the attack writers) sweep
their own outputs' leftovers with :func:`sweep_stale_temp_files`.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import secrets
import socket
import stat
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: no flock, so no sweep (and os.kill there would end the process it tests)
    fcntl = None  # type: ignore[assignment]

logger = logging.getLogger(__name__)

#: Whether a writer renames its temporary file before closing it, so that its lock is held until the name is gone.
#: Not on Windows: it refuses to rename an open file, and it has no flock to hold anyway.
RENAME_BEFORE_CLOSE = fcntl is not None

#: This machine, as temporary file names carry it: a digest, so that the name holds no host name.
HOST_TAG = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]
#: ``.<target>.<pid>-<host>.<8 random>.tmp``: the random part is hex, so the whole matches the run folders' sweep.
_OWNED = re.compile(r"\.(?P<target>.+)\.(?P<pid>\d{1,10})-(?P<host>[0-9a-f]{8})\.[0-9a-f]{8}\.tmp")


def owned_temp_file(target: str | Path) -> tuple[int, Path]:
    """Create the temporary file that a write of ``target`` fills before renaming it over ``target``.

    It is created beside ``target`` with the mode ``open`` would give it, named for this process and host, and
    locked (``flock``) until its descriptor is closed.

    Returns:
        The open descriptor (write-only) and the file's path.
    """
    target = Path(target)
    while True:
        # a name near the 255-byte limit is cut, so that the temporary name still fits (its leftover, not matching
        # its target's name, is then left to the run folders' sweep)
        path = target.with_name(f".{_cut(target.name)}.{os.getpid()}-{HOST_TAG}.{secrets.token_hex(4)}.tmp")
        try:
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:  # one chance in four billion per try
            continue
        if fcntl is not None:
            with contextlib.suppress(OSError):  # a file system without flock: the pid and host still protect it
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return descriptor, path


def _cut(name: str, limit: int = 200) -> str:
    """``name``, cut to ``limit`` bytes of UTF-8 (on a character boundary): the temporary name adds up to 35 bytes."""
    return name.encode()[:limit].decode(errors="ignore")


def sweep_stale_temp_files(folder: str | Path, targets: str) -> list[Path]:
    """Delete the temporary files in ``folder`` that killed writes of the files named ``targets`` left there.

    Args:
        folder: the folder the targets are in (not entered further).
        targets: a regular expression that the whole target name must match (``re.escape(name)`` for one file).

    Returns:
        The files deleted: only those of :func:`owned_temp_file` on this host whose writer is gone (see the module).
    """
    if fcntl is None:
        return []
    try:
        entries = list(os.scandir(folder))
    except OSError:  # missing, not a folder, unreadable: nothing of ours to clear
        return []
    wanted = re.compile(targets)
    removed = []
    for entry in entries:
        found = _OWNED.fullmatch(entry.name)
        if (found and wanted.fullmatch(found["target"]) and found["host"] == HOST_TAG
                and not _running(int(found["pid"])) and _delete_unlocked(Path(entry.path))):  # fmt: skip
            removed.append(Path(entry.path))
    if removed:
        logger.info("%s: removed %d temporary file(s) left by a killed run", folder, len(removed))
    return removed


def _running(pid: int) -> bool:
    """Whether process ``pid`` exists on this host (seen from this pid namespace; a zombie counts)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (OSError, OverflowError):  # another user's process (EPERM), or no such pid number: leave it
        return True
    return True


def _delete_unlocked(path: Path) -> bool:
    """Delete ``path`` if it is a regular file that nobody holds a ``flock`` on; whether it was deleted."""
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return False
    try:
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            return False
        # held: a live writer, perhaps in another pid namespace; refused (a file system without flock): can't tell
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        path.unlink()
        return True
    except OSError:
        return False
    finally:
        os.close(descriptor)
