"""Run directories: a manifest, append-only JSONL records keyed by a stable id, and atomic writes.

Every job writes ``<run dir>/manifest.json`` once (config, versions, seeds, input hashes, git revision) and
appends one JSON line per finished record. A job killed midway and re-run with the same config skips the
keys it already has; a different config is refused so one directory never mixes two configs. One job writes a run
directory at a time: it holds the directory's lock file (:data:`LOCK_NAME`) from before it reads the run's state
until it returns or raises (:func:`releases_run_locks`), and a second job given the same directory meanwhile is
refused (:func:`lock_run_dir`).
"""

from __future__ import annotations

import contextvars
import errno
import functools
import hashlib
import hmac
import inspect
import json
import logging
import os
import platform
import re
import shutil
import socket
import subprocess
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

from visalign.errors import VisalignError
from visalign.temp_files import RENAME_BEFORE_CLOSE, owned_temp_file

try:
    import fcntl
except ImportError:  # Windows: no flock; run directories go unlocked there (see lock_run_dir)
    fcntl = None  # type: ignore[assignment]

logger = logging.getLogger(__name__)


MANIFEST_NAME = "manifest.json"
#: In a run directory whose config has redacted values: the key of their digests in the manifest (never in it).
REDACTION_KEY_NAME = ".redaction-key"
REDACTED = "<redacted>"

# A key whose name has one of these words as a part (``api_key``, ``HF_TOKEN``, ``apiKey``) may hold a secret.
_SECRET_PARTS = frozenset(
    {"key", "apikey", "token", "secret", "password", "passwd", "credential", "credentials", "authorization"}
)
# Names of environment variables are not secrets: ``api_key_env: OPENAI_API_KEY`` is kept as written.
_ENV_VAR_NAME = re.compile(r"^[A-Z_][A-Z0-9_]*$")
# Values shaped like common provider keys are redacted wherever they appear.
_KEY_SHAPED = re.compile(r"^(sk-|sk_|rk-|hf_|xai-|gsk_|AKIA)[A-Za-z0-9_\-]{12,}$|^Bearer\s+\S+$")


# --------------------------------------------------------------------------------------------- atomic writes

#: The names of temporary files a kill before the rename leaves behind: ``.<name>.<8 random characters>.tmp``
#: (``tempfile.mkstemp``'s, which earlier versions wrote) and ``.<name>.<pid>-<host>.<8 hex>.tmp``
#: (:func:`visalign.temp_files.owned_temp_file`'s, which :func:`atomic_write_bytes` writes now).
_TEMP_NAME = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$")
#: Folders a temp-file sweep leaves alone: a response cache may be another run's (shards can name one
#: ``cache_dir``), so another live process may be writing there; a temp file in it is never read anyway.
_UNSWEPT_DIRS = frozenset({"cache"})


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` so that readers see either the old file or the whole new one.

    The bytes go to a temporary file in the same directory (named for this process, see
    :func:`visalign.temp_files.owned_temp_file`, so that a later run can sweep it after a kill), are fsynced, then
    renamed over ``path``.

    Args:
        path: destination file; its parent directories are created.
        data: the complete new content.

    Returns:
        The destination path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = owned_temp_file(path)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
            if RENAME_BEFORE_CLOSE:
                os.replace(temporary, path)  # before the close: the writer's lock is held until the name is gone
        if not RENAME_BEFORE_CLOSE:
            os.replace(temporary, path)
    except BaseException as exc:
        temporary.unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.filename is None:
            raise _named(exc, path) from exc
        raise
    return path


def _named(exc: OSError, path: Path) -> OSError:
    """``exc`` naming ``path``: a write or fsync on a full disk raises an OSError that names no file.

    The CLI prints an OSError as one line with its file name; without it a full disk read only "No space left on
    device", with no hint of which job's file could not be written.
    """
    return OSError(exc.errno, exc.strerror, str(path)) if exc.errno is not None else exc


def atomic_write_text(path: str | Path, text: str, *, encoding: str = "utf-8") -> Path:
    """Write ``text`` atomically (see :func:`atomic_write_bytes`)."""
    return atomic_write_bytes(path, text.encode(encoding))


def atomic_write_json(path: str | Path, obj: Any, *, indent: int | None = 2) -> Path:
    """Write ``obj`` as UTF-8 JSON atomically (see :func:`json_text`)."""
    return atomic_write_text(path, json_text(obj, indent=indent) + "\n")


def replace_dir(staging: str | Path, target: str | Path) -> Path:
    """Put the finished folder ``staging`` at ``target``, keeping the old ``target`` until the new one is in place.

    The old folder is renamed aside (``.<name>.old``), the new one renamed in, and only then is the old one
    deleted. Deleting first would leave no folder at all after a kill between the delete and the rename. A kill
    between the two renames leaves the old folder whole aside, which :func:`restore_replaced_dir` (run first by
    the next replace, and by readers) puts back.

    Returns:
        ``target``.
    """
    staging, target = Path(staging), Path(target)
    restore_replaced_dir(target)
    aside = _aside(target)
    if target.exists():
        target.rename(aside)
    staging.rename(target)
    shutil.rmtree(aside, ignore_errors=True)
    return target


def restore_replaced_dir(target: str | Path) -> None:
    """Finish what a killed :func:`replace_dir` left at ``target``: the old folder back, or its remains deleted."""
    target = Path(target)
    aside = _aside(target)
    if not aside.exists():
        return
    if target.exists():  # the new folder was in place; the old one was being deleted
        shutil.rmtree(aside, ignore_errors=True)
    else:  # killed between the renames: the old folder is whole
        aside.rename(target)


def _aside(target: Path) -> Path:
    return target.with_name(f".{target.name}.old")


def sweep_temp_files(root: str | Path) -> list[Path]:
    """Delete the temporary files that killed :func:`atomic_write_bytes` calls left under ``root``.

    Only call it on a folder no other process is writing (a run directory whose lock this process holds, see
    :func:`lock_run_dir`): a live writer's temporary file matches too. Only regular files named as the writer names
    them are deleted; folders that are another run's (they hold a ``manifest.json``), response caches
    (:data:`_UNSWEPT_DIRS`) and symbolic links are not entered.

    Args:
        root: the folder to clean, with its subfolders.

    Returns:
        The files deleted.
    """
    root = Path(root)
    removed: list[Path] = []
    for folder, dirs, files in os.walk(root):
        here = Path(folder)
        # os.walk does not enter links to folders; pruning ``dirs`` in place keeps it out of caches and other runs
        dirs[:] = [d for d in dirs if d not in _UNSWEPT_DIRS and not (here / d / MANIFEST_NAME).exists()]
        for name in files:
            path = here / name
            if _TEMP_NAME.match(name) and path.is_file() and not path.is_symlink():
                try:
                    path.unlink()
                except OSError:  # no permission, or gone already: not worth stopping the job for
                    continue
                removed.append(path)
    return removed


# ----------------------------------------------------------------------------------------------- run lock

#: The lock file in a run directory. It stays when the job ends: the lock is the kernel's ``flock`` on it, which
#: ends with the job, or with the process that took it (a killed job leaves no stale lock), and deleting the file
#: while a job holds it would let a second job lock a new file beside the first's.
LOCK_NAME = ".visalign.lock"


class _HeldLock:
    """One run-directory lock this process holds, and who keeps it held.

    ``fd`` is the lock file's descriptor, or None where the file system has no flock (warned once per holding).
    ``scopes`` counts the open job scopes (:func:`run_lock_scope`) that took it; ``kept`` says it was taken outside
    any scope too, and so is held until the process ends. With neither, it is let go.
    """

    __slots__ = ("fd", "kept", "scopes")

    def __init__(self, fd: int | None) -> None:
        self.fd = fd
        self.scopes = 0
        self.kept = False


class _LockScope:
    """The locks one job scope took (see :func:`run_lock_scope`)."""

    __slots__ = ("taken",)

    def __init__(self) -> None:
        self.taken: dict[_HeldLock, tuple[int, int]] = {}  # each lock it took, with its key in _HELD_LOCKS


# The run-directory locks this process holds, by the lock file's (device, inode). Keyed by the file, not the path,
# so a relative path, a symbolic link and a folder deleted and made again are each told apart correctly.
_HELD_LOCKS: dict[tuple[int, int], _HeldLock] = {}
_HELD_LOCKS_GUARD = threading.Lock()
# The innermost job scope of this thread or task (a context variable: asyncio tasks and to_thread inherit it)
_CURRENT_SCOPE: contextvars.ContextVar[_LockScope | None] = contextvars.ContextVar(
    "visalign_run_lock_scope", default=None
)
_UNLOCKABLE: set[str] = set()  # without fcntl: the folders warned about
# flock's errors on a file system that does not support it (some network and FUSE mounts)
_NO_FLOCK = frozenset({errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS, errno.EINVAL})


def lock_run_dir(path: str | Path) -> bool:
    """Take this process's exclusive lock on the run directory ``path`` (created if missing) for the current job.

    Two jobs writing one run directory at once would both start as a first run, or one would "resume" the other while it
    runs: records written twice, two configs in one folder, a live job's temporary files swept away. So a job takes this
    lock before it reads the run's state (manifest, records, checkpoints) and keeps it until the job returns or raises:
    every job's entry function (``build_dataset``, ``train``, ``optimize_magic_images``, ``build_refusal_dataset``,
    ``run_eval``, ``run_quickstart``, ``merge_shards``) is a :func:`run_lock_scope`, which lets go of the locks taken
    inside it, except those an enclosing scope took too (a quickstart holds its folder while its stages run; a job that
    runs another keeps what it locked). A lock taken outside any scope (a script calling :meth:`RunDir.write_manifest`
    itself) is held until the process ends. Either way the kernel drops it when the process exits or is killed, so no
    stale lock is ever left. Taking it again in the same process (several jobs, or several :class:`RunDir` objects, on
    one folder) does nothing. Only the process that writes the run takes it: under ``torchrun`` the main one, not the
    other ranks.

    A lock whose folder was deleted is let go at the next call. The lock file (:data:`LOCK_NAME`) records the
    holder's pid, host and start time for the refusal message. On a file system without ``flock`` one warning is
    logged (once per holding) and the job goes on unlocked, as before locks existed.

    Args:
        path: the run directory.

    Returns:
        True when this process holds the lock, False when the file system cannot lock (or fcntl is missing).

    Raises:
        VisalignError: another process holds the lock (the message names its pid, host and start), or the lock
            file cannot be opened.
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    lock_path = path / LOCK_NAME
    if fcntl is None:
        with _HELD_LOCKS_GUARD:
            if str(lock_path.resolve()) not in _UNLOCKABLE:
                _UNLOCKABLE.add(str(lock_path.resolve()))
                _warn_unlocked(path, "this platform has no flock")
        return False
    with _HELD_LOCKS_GUARD:
        _forget_deleted_locks()
    try:  # O_CLOEXEC: a program the job runs (a compiler, a server) does not inherit the lock and outlive the job
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
    except OSError as exc:
        advice = ("close some files or raise the limit (ulimit -n)" if exc.errno == errno.EMFILE
                  else "check the folder's permissions or use another --out")  # fmt: skip
        raise VisalignError(f"{lock_path}: cannot open the run directory's lock file ({exc.strerror}); "
                            f"{advice}") from None  # fmt: skip
    with _HELD_LOCKS_GUARD:
        status = os.fstat(fd)
        key = (status.st_dev, status.st_ino)
        if key in _HELD_LOCKS:  # this process took it already: another RunDir, or the next job on this folder
            os.close(fd)
            held = _HELD_LOCKS[key]
            _claim(key, held)
            return held.fd is not None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in _NO_FLOCK:
                os.close(fd)
                _HELD_LOCKS[key] = held = _HeldLock(None)
                _claim(key, held)
                _warn_unlocked(path, f"the file system cannot lock files: {exc.strerror}")
                return False
            holder = _lock_holder(fd)
            os.close(fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            raise VisalignError(
                f"{path}: another visalign job ({holder}) is writing this run directory; wait for it to finish or "
                "use another --out"
            ) from None
        # the holder's line, for the message a second job prints (written after the lock: only the holder writes)
        since = datetime.now(UTC).isoformat(timespec="seconds")
        line = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": since}) + "\n"
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, line.encode(), 0)
        except OSError:  # a full disk: the lock holds without the line, and the message says less
            pass
        _HELD_LOCKS[key] = held = _HeldLock(fd)
        _claim(key, held)
    return True


def _claim(key: tuple[int, int], held: _HeldLock) -> None:
    """Record who keeps ``held`` (call with ``_HELD_LOCKS_GUARD`` held): this job's scope, or the process."""
    scope = _CURRENT_SCOPE.get()
    if scope is None:
        held.kept = True
    elif held not in scope.taken:
        scope.taken[held] = key
        held.scopes += 1


def _release(key: tuple[int, int], held: _HeldLock) -> None:
    """Let go of one lock (call with ``_HELD_LOCKS_GUARD`` held); one forgotten since is left alone."""
    if _HELD_LOCKS.get(key) is not held:  # its folder was deleted and the descriptor closed already
        return
    del _HELD_LOCKS[key]
    if held.fd is not None:
        # LOCK_UN first: a child forked meanwhile shares the descriptor and would keep the lock until it exits
        with suppress(OSError):
            fcntl.flock(held.fd, fcntl.LOCK_UN)
        os.close(held.fd)


@contextmanager
def run_lock_scope() -> Iterator[None]:
    """The run-directory locks taken inside the block are let go when it ends, returning or raising.

    A job's entry function runs in one (:func:`releases_run_locks`), so a job run from Python (a notebook, a sweep
    script) leaves its folder free for the next job, from this process or another, once it returns. Scopes nest:
    a lock an enclosing scope took too (the quickstart's folder, while its stages run in it) stays held until that
    scope ends, and a lock taken outside any scope stays held until the process ends. Scopes follow the thread or
    asyncio task that opened them: a job ending in one thread does not let go of another thread's job's locks.
    """
    scope = _LockScope()
    token = _CURRENT_SCOPE.set(scope)
    try:
        yield
    finally:
        _CURRENT_SCOPE.reset(token)
        with _HELD_LOCKS_GUARD:
            for held, key in scope.taken.items():
                held.scopes -= 1
                if not held.scopes and not held.kept:
                    _release(key, held)


_Job = TypeVar("_Job", bound=Callable[..., Any])


def releases_run_locks(job: _Job) -> _Job:
    """Run the function ``job`` in a :func:`run_lock_scope`: the locks it takes are let go when it returns or raises.

    For a function that does its work before it returns: a generator or a coroutine function would return at
    once, before it locks anything, so it is refused.

    Raises:
        TypeError: ``job`` is a generator or coroutine function.
    """
    if inspect.isgeneratorfunction(job) or inspect.iscoroutinefunction(job) or inspect.isasyncgenfunction(job):
        raise TypeError(f"releases_run_locks: {job.__qualname__} returns before its work is done; use "
                        "run_lock_scope inside it instead")  # fmt: skip

    @functools.wraps(job)
    def scoped(*args: Any, **kwargs: Any) -> Any:
        with run_lock_scope():
            return job(*args, **kwargs)

    scoped.releases_run_locks = True  # type: ignore[attr-defined]
    return scoped  # type: ignore[return-value]


def _forget_deleted_locks() -> None:
    """Close the held locks whose run directory was deleted since (call with ``_HELD_LOCKS_GUARD`` held).

    A Python session that runs job after job in temporary folders outside job scopes would otherwise keep one open
    descriptor per folder until it ran out of them. A deleted lock file protects nothing: a new job there locks a
    new file. A scope that took one finds it gone when it ends, and leaves it (see :func:`_release`).
    """
    for key, held in list(_HELD_LOCKS.items()):
        if held.fd is not None and os.fstat(held.fd).st_nlink == 0:
            os.close(held.fd)
            del _HELD_LOCKS[key]


def _lock_holder(fd: int) -> str:
    """Who holds the lock, as the lock file's line says: ``pid N on host H, since T``."""
    try:
        holder = json.loads(os.pread(fd, 4096, 0).decode("utf-8", "replace"))
        return f"pid {holder['pid']} on host {holder['host']}, since {holder['since']}"
    except (OSError, ValueError, TypeError, KeyError):  # the holder took the lock and has not written its line yet
        return "details not written yet: it has just started"


def _warn_unlocked(path: Path, why: str) -> None:
    logger.warning("%s: cannot lock the run directory (%s); going on unlocked: make sure no other visalign job "
                   "writes it at the same time", path, why)  # fmt: skip


#: A UTF-16 surrogate code point: valid in a Python string (``json.loads`` gives one for an API reply holding
#: ``"\ud83d"``, half an emoji cut by a server), but not encodable as UTF-8.
_SURROGATE = re.compile("[\ud800-\udfff]")


def json_text(obj: Any, **dumps_kwargs: Any) -> str:
    r"""``json.dumps`` writing non-ASCII text as itself (for UTF-8 files) and ``Path`` values as strings.

    A surrogate is written as the ``\uXXXX`` escape that ``ensure_ascii`` would write, so the text encodes as
    UTF-8 and reads back as the same string; text without one comes out byte for byte as ``json.dumps(obj,
    ensure_ascii=False)`` writes it (record files and cache keys written before stay as they are).

    Args:
        obj: what to serialise.
        dumps_kwargs: passed to ``json.dumps`` (``indent``, ``sort_keys``, ``separators``).
    """
    text = json.dumps(obj, ensure_ascii=False, default=_json_default, **dumps_kwargs)
    return _SURROGATE.sub(lambda found: f"\\u{ord(found.group()):04x}", text)


def _json_default(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"object of type {type(value).__name__} is not JSON serialisable")


# ----------------------------------------------------------------------------------------------- secrets


def looks_secret_name(name: str) -> bool:
    """Return True when a field or variable name suggests a credential (``api_key``, ``HF_TOKEN``).

    Names are split into parts on ``_``, ``-``, ``.`` and camelCase, so ``keywords`` and ``max_tokens`` are
    not secret names while ``openai_api_key``, ``apiKey`` and ``access-token`` are.
    """
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name)
    parts = {part.lower() for part in re.split(r"[_\-.\s]+", spaced) if part}
    return bool(parts & _SECRET_PARTS)


def _secret_env_values() -> set[str]:
    """Values of environment variables whose names look secret (so they are caught wherever they appear)."""
    return {
        value
        for name, value in os.environ.items()
        if looks_secret_name(name) and len(value) >= 8 and not _ENV_VAR_NAME.match(value)
    }


def _scrub_url(value: str) -> str:
    """Hide a URL's user info and query string (``https://user:pass@host/v1?key=...``), where credentials live."""
    if "://" not in value:
        return value
    try:
        parts = urlsplit(value.strip())
    except ValueError:
        return value
    if "@" not in parts.netloc and not parts.query:
        return value
    host = parts.netloc.rsplit("@", 1)[-1]
    netloc = f"{REDACTED}@{host}" if "@" in parts.netloc else host
    return urlunsplit((parts.scheme, netloc, parts.path, REDACTED if parts.query else "", parts.fragment))


def scrub_secrets(obj: Any, *, _secrets: set[str] | None = None) -> Any:
    """Return a copy of ``obj`` with anything that looks like a credential replaced by ``"<redacted>"``.

    Redacted: string values under a name with a part key/token/secret/password (see
    :func:`looks_secret_name`), except environment-variable names such as ``api_key_env: OPENAI_API_KEY``;
    strings shaped like provider keys (``sk-...``, ``hf_...``, ``Bearer ...``); the user info and query string
    of a URL (``https://user:pass@host/v1?key=...``); and the value of any secret-named environment variable
    wherever it appears. Numbers (``max_tokens: 512``) are kept.
    """
    return _scrub(obj, _secret_env_values() if _secrets is None else _secrets, {})


def _scrub(obj: Any, secrets: set[str], hidden: dict[str, str]) -> Any:
    """:func:`scrub_secrets`, recording in ``hidden`` each changed value as it was, under its path (``a.b[0]``)."""

    def visit(value: Any, name: str | None, path: str) -> Any:
        if isinstance(value, Mapping):
            return {str(k): visit(v, str(k), f"{path}.{k}" if path else str(k)) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [visit(item, name, f"{path}[{index}]") for index, item in enumerate(value)]
        if isinstance(value, Path):
            value = str(value)
        if isinstance(value, str):
            shown = _scrub_url(value)
            secret_named = name is not None and looks_secret_name(name) and not _ENV_VAR_NAME.match(shown)
            if secret_named or _KEY_SHAPED.match(shown.strip()) or any(secret in shown for secret in secrets):
                shown = REDACTED
            if shown != value:
                hidden[path or "(config)"] = value
            return shown
        return value

    return visit(obj, None, "")


# ----------------------------------------------------------------------------------------------- manifest


def sha256_file(path: str | Path, *, chunk_size: int = 1 << 20) -> str:
    """Return the hex sha256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def config_hash(config: Mapping[str, Any]) -> str:
    """Return the sha256 of a config's canonical JSON (sorted keys, compact separators)."""
    payload = json.dumps(config, sort_keys=True, separators=(",", ":"), default=_json_default)
    return hashlib.sha256(payload.encode()).hexdigest()


def package_versions() -> dict[str, str | None]:
    """Return the versions of python, torch, transformers and visalign (None where not installed)."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for package in ("torch", "transformers", "visalign"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return versions


def _git(where: Path, *args: str) -> str | None:
    """``git -C where args...``'s output, stripped; None when git is missing, fails or times out."""
    try:
        done = subprocess.run(["git", "-C", str(where), *args], capture_output=True, text=True, timeout=10,
                              check=False)  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def _checkout(directory: str | Path | None) -> Path | None:
    """The git top level to describe: ``directory``'s repository, or by default the visalign checkout itself.

    The default is the repository whose top level holds this very package at ``src/visalign``. A visalign installed
    into a virtual environment inside a user's own repository lies in that repository too, whose commit says
    nothing about visalign's code: that gives None.
    """
    if directory is not None:
        top = _git(Path(directory), "rev-parse", "--show-toplevel")
        return Path(top) if top else None
    package = Path(__file__).resolve().parent
    top = _git(package, "rev-parse", "--show-toplevel")
    if not top:
        return None
    try:
        ours = (Path(top) / "src" / "visalign" / Path(__file__).name).resolve() == Path(__file__).resolve()
    except OSError:
        return None
    return Path(top) if ours else None


def git_revision(directory: str | Path | None = None) -> str | None:
    """Return the git commit of ``directory``'s repository, or None outside git.

    Args:
        directory: a folder in a repository; default: the visalign checkout this code runs from, and None when it
            runs from anywhere else (an installed wheel, even one in a virtual environment inside another repository).
    """
    top = _checkout(directory)
    revision = _git(top, "rev-parse", "HEAD") if top is not None else None
    return revision or None


def git_dirty(directory: str | Path | None = None) -> bool | None:
    """Whether the tracked files of ``directory``'s repository differ from its commit (None where no commit is).

    The commit alone does not name code with uncommitted changes: a run's manifest records both.

    Args:
        directory: as for :func:`git_revision`.
    """
    top = _checkout(directory)
    if top is None or _git(top, "rev-parse", "HEAD") is None:
        return None
    status = _git(top, "status", "--porcelain", "--untracked-files=no")
    return None if status is None else bool(status)


def code_state() -> dict[str, Any]:
    """What code writes a run: ``versions`` (:func:`package_versions`), ``git_revision`` and ``git_dirty``."""
    revision = git_revision()
    return {"versions": package_versions(), "git_revision": revision,
            "git_dirty": git_dirty() if revision else None}  # fmt: skip


def _code_changes(before: Mapping[str, Any], now: Mapping[str, Any]) -> list[str]:
    """What differs between two :func:`code_state` records, as ``name old -> new``, for the resume's warning.

    A value ``before`` does not record is not compared: a manifest from before ``git_dirty`` was recorded compares
    the commit alone.
    """
    changes = []
    old_versions, new_versions = before.get("versions") or {}, now.get("versions") or {}
    for name in sorted(old_versions):
        if old_versions.get(name) != new_versions.get(name):
            changes.append(f"{name} {old_versions.get(name)} -> {new_versions.get(name)}")
    if "git_revision" not in before:
        return changes
    dirty = "git_dirty" in before

    def shown(state: Mapping[str, Any]) -> str:
        sha = state.get("git_revision")
        return f"{str(sha)[:12]}{'-dirty' if dirty and state.get('git_dirty') else ''}" if sha else "none"

    if shown(before) != shown(now):
        changes.append(f"git revision {shown(before)} -> {shown(now)}")
    return changes


def _short(value: Any, width: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= width else text[: width - 3] + "..."


def config_differences(old: Any, new: Any, *, limit: int = 3) -> str:
    """The first ``limit`` settings that differ between two config dumps, as ``path: old -> new`` (for messages)."""
    found: list[str] = []

    def walk(a: Any, b: Any, path: str) -> None:
        if len(found) > limit:
            return
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            for key in sorted(set(a) | set(b), key=str):
                walk(a.get(key, "(unset)"), b.get(key, "(unset)"), f"{path}.{key}" if path else str(key))
        elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
            for index, (x, y) in enumerate(zip(a, b, strict=True)):
                walk(x, y, f"{path}[{index}]")
        elif a != b:
            found.append(f"{path or '(config)'}: {_short(a)} -> {_short(b)}")

    walk(old, new, "")
    shown = "; ".join(found[:limit])
    return shown + ("; ..." if len(found) > limit else "") if old is not None else ""


def _last_code(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """The code that last wrote a run: its latest resume that recorded one, else its creation's (from the manifest)."""
    for entry in reversed(manifest.get("resumed") or []):
        if isinstance(entry, Mapping) and "versions" in entry:  # runs resumed before 2026-11 hold bare times
            return dict(entry)
    return {key: manifest[key] for key in ("versions", "git_revision", "git_dirty") if key in manifest}


class RunDir:
    """A job's output directory: ``manifest.json`` plus JSONL record files.

    Args:
        path: the directory (created on first write).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    @property
    def manifest_path(self) -> Path:
        """Where the manifest lives."""
        return self.path / MANIFEST_NAME

    def lock(self) -> bool:
        """Take this process's lock on the directory (created if missing) until the current job ends.

        :meth:`write_manifest` takes it; a job that reads the run's state before writing the manifest (its
        checkpoints, its manifest for a check of its own) takes it first, so no other job can change that state in
        between. It is let go when the :func:`run_lock_scope` it was taken in ends (every job's entry function is
        one), or when the process ends where it was taken outside any scope. See :func:`lock_run_dir`.

        Returns:
            True when locked, False on a file system that cannot lock (a warning is logged).

        Raises:
            VisalignError: another process holds the lock.
        """
        return lock_run_dir(self.path)

    def read_manifest(self) -> dict[str, Any] | None:
        """Return the manifest as a dict, or None when the directory has none yet.

        Raises:
            VisalignError: the manifest is empty or damaged (a full disk, a copy tool: it is written atomically).
                The message says how to resume from the records beside it rather than pay for them again.
        """
        if not self.manifest_path.is_file():
            return None
        try:
            manifest = json.loads(self.manifest_path.read_text(encoding="utf-8"))
            if not isinstance(manifest, dict):
                raise ValueError(f"a JSON {type(manifest).__name__}, not an object")
        except (OSError, ValueError) as exc:
            # Without a manifest, a job writes a new one and resumes from the records and checkpoints it finds
            # (checked for vsfa data, vsfa train and eval); only the check that they match the config is lost.
            raise VisalignError(
                f"{self.manifest_path}: unreadable manifest ({' '.join(str(exc).split())}); to keep the finished "
                f"records beside it, move it aside (mv {self.manifest_path} {self.manifest_path}.damaged) and re-run "
                "the command that wrote this folder with its original config (for a shard, its vsfa data --shard "
                "command): it resumes from the records and writes a new manifest"
            ) from None
        return manifest

    def write_manifest(
        self,
        config: Mapping[str, Any] | Any,
        *,
        seeds: Mapping[str, int] | int | None = None,
        inputs: Mapping[str, str | Path] | None = None,
        extra: Mapping[str, Any] | None = None,
        pinned: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """Write ``manifest.json``, or check that an existing one was written for the same config.

        The directory's lock (:meth:`lock`) is taken first and kept until the job ends (the process, when called
        outside a :func:`run_lock_scope`), so the check and the write are one step that no other job can interleave
        with. An accepted resume then deletes the temporary files that killed atomic writes left in the run (see
        :func:`sweep_temp_files`); a refused one leaves the directory as it was. A resume records the code that
        continues the run (``versions``, ``git_revision``, ``git_dirty``) in its ``resumed`` entry, with a warning
        naming what changed since the run was last written.

        Args:
            config: the job config, a dict or a pydantic model; secrets are scrubbed before hashing, and a
                change in a scrubbed value is seen through a keyed digest of it (see :meth:`_redacted_digests`).
            seeds: the random seeds the job uses.
            inputs: named input files; each is recorded with its sha256 and size (a changed one is logged).
            extra: anything else worth keeping (backends, counts); scrubbed like the config.
            pinned: named digests of what the job's results depend on beyond its config (weights, images, rows);
                a resume that finds one changed is refused, since the finished records used the old one.

        Returns:
            The manifest as written (or as found, with this start appended to ``resumed``: ``{"time", "versions",
            "git_revision", "git_dirty"}``; runs resumed before 2026-11 hold bare time strings there).

        Raises:
            VisalignError: the directory already holds a run of a different config or different pinned inputs,
                an input is missing, or another process holds the directory's lock.
        """
        clean_config, digest, hidden = self._hashed(config)
        input_records = {
            name: self._describe_input(name, Path(path)) for name, path in (inputs or {}).items()
        }
        now = datetime.now(UTC).isoformat(timespec="seconds")
        # before the manifest is read: between the check below and the write, no other job may write this folder
        self.lock()
        code = code_state()

        existing = self.read_manifest()
        if existing is not None:
            refusal = self._config_refusal(existing, clean_config, digest, hidden)
            if refusal:
                raise VisalignError(refusal)
            if hidden and self._redacted_digests(hidden) != existing.get("redacted"):
                # a run begun before redacted settings were checked, or whose key file is gone: check from now on
                logger.warning("%s: cannot check the redacted settings this run began with (%s); resuming, and "
                               "checking them from now on", self.path, ", ".join(sorted(hidden)))  # fmt: skip
                existing["redacted"] = self._redacted_digests(hidden, create_key=True)
            changed = [
                name
                for name, record in input_records.items()
                if existing.get("inputs", {}).get(name, {}).get("sha256") != record["sha256"]
            ]
            if changed:
                logger.warning("%s: inputs changed since the run started: %s", self.path, ", ".join(changed))
            recorded = existing.setdefault("pinned", {})
            moved = [f"{name} ({recorded[name][:12]} -> {digest[:12]})" for name, digest in (pinned or {}).items()
                     if name in recorded and recorded[name] != digest]
            if moved:
                raise VisalignError(
                    f"{self.path}: changed since this run began: {'; '.join(moved)}; its finished records were made "
                    "with the old version, so restore it or start a new --out directory (if the files are the same, "
                    "this version of visalign reads them differently: see the change log of the loader)"
                )
            recorded.update(pinned or {})  # a run from before a digest was pinned gains it now
            self._sweep_temp_files()
            resumed = existing.setdefault("resumed", [])
            changes = _code_changes(_last_code(existing), code)
            if changes:  # finished records were made by the old code: say so once, and keep both in the manifest
                logger.warning("%s: resuming a run last written by other code (%s); its finished records are kept as "
                               "that code made them", self.path, "; ".join(changes))  # fmt: skip
            resumed.append({"time": now, **code})
            atomic_write_json(self.manifest_path, existing)
            return existing

        manifest = {
            "format": "visalign-run/1",
            "created": now,
            "config_hash": digest,
            "config": clean_config,
            **({"redacted": self._redacted_digests(hidden, create_key=True)} if hidden else {}),
            **code,
            "seeds": scrub_secrets(seeds) if seeds is not None else None,
            "inputs": input_records,
            "extra": scrub_secrets(dict(extra or {})),
            "pinned": dict(pinned or {}),
        }
        atomic_write_json(self.manifest_path, manifest)
        return manifest

    def _sweep_temp_files(self) -> None:
        """Delete the temporary files killed atomic writes left in this run (see :func:`sweep_temp_files`).

        Run when a resume is accepted, under the directory's lock, before the job writes: one job writes a run
        directory at a time (shards write their own; the processes of a multi-GPU training wait while the main one,
        which holds the lock, writes the manifest).
        """
        removed = sweep_temp_files(self.path)
        if removed:
            logger.info("%s: removed %d temporary file(s) left by an interrupted run", self.path, len(removed))

    def config_refusal(self, config: Mapping[str, Any] | Any) -> str | None:
        """Why :meth:`write_manifest` would refuse to resume this directory's run under ``config``, or None.

        None also when the directory holds no run yet. A job that acts on the answer takes :meth:`lock` first, so
        that the manifest it checked is the one it then writes over.
        """
        existing = self.read_manifest()
        return None if existing is None else self._config_refusal(existing, *self._hashed(config))

    @staticmethod
    def _hashed(config: Mapping[str, Any] | Any) -> tuple[dict[str, Any], str, dict[str, str]]:
        """The config as the manifest shows it (secrets scrubbed), its hash, and the redacted values by path.

        The hash is over the scrubbed config, as it always was: a config with nothing redacted hashes as it did.
        What the scrubbing hides is checked separately (:meth:`_redacted_digests`).
        """
        if hasattr(config, "model_dump"):
            config = config.model_dump(mode="json")
        hidden: dict[str, str] = {}
        clean = _scrub(dict(config), _secret_env_values(), hidden)
        return clean, config_hash(clean), hidden

    def _config_refusal(self, existing: dict[str, Any], clean: dict[str, Any], digest: str,
                        hidden: dict[str, str]) -> str | None:  # fmt: skip
        if existing.get("config_hash") != digest:
            differences = config_differences(existing.get("config"), clean)
            where = f": {differences}" if differences else ""
            return (
                f"{self.path}: this directory holds a run with a different config "
                f"(hash {str(existing.get('config_hash'))[:12]} != {digest[:12]}){where}; resuming requires the "
                "same config, so pass the original config or a new --out directory (a setting your file does "
                "not name may be a default that changed: name the old value in the config to resume)"
            )
        recorded = existing.get("redacted")
        current = self._redacted_digests(hidden) if hidden else {}
        if not isinstance(recorded, dict) or not current:
            return None  # nothing is redacted, or a run from before redacted settings were checked
        changed = sorted(path for path in recorded.keys() | current.keys() if recorded.get(path) != current.get(path))
        if changed and None not in current.values():
            return (
                f"{self.path}: this directory holds a run with a different config: redacted setting(s) "
                f"{', '.join(changed)} had another value (not shown: it may be a secret); resuming requires the same "
                "config, so pass the original config or a new --out directory"
            )
        return None

    def _redacted_digests(self, hidden: dict[str, str], *, create_key: bool = False) -> dict[str, str | None]:
        """A keyed digest of each redacted value, by path: a change is seen, the value cannot be recovered.

        The key is random, kept in the run directory beside the manifest (:data:`REDACTION_KEY_NAME`, mode 0600)
        and never in it: a manifest shared on its own reveals nothing of a redacted value, not even a guessable
        one (an ``api-version``, a short password). Without the key file every digest is None.
        """
        key = self._redaction_key(create=create_key)
        return {path: hmac.new(key, value.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()[:32]
                if key else None for path, value in sorted(hidden.items())}  # fmt: skip

    def _redaction_key(self, *, create: bool) -> bytes | None:
        path = self.path / REDACTION_KEY_NAME
        if not path.is_file() and create:
            self.path.mkdir(parents=True, exist_ok=True)
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:  # another process of this run made it first
                pass
            else:
                with os.fdopen(fd, "w") as handle:
                    handle.write(os.urandom(32).hex())
                    handle.flush()
                    os.fsync(handle.fileno())
        try:
            return bytes.fromhex(path.read_text().strip()) or None
        except (OSError, ValueError):
            return None

    @staticmethod
    def _describe_input(name: str, path: Path) -> dict[str, Any]:
        if not path.is_file():
            raise VisalignError(f"{path}: input '{name}' not found; check the path in the config")
        return {"path": str(path), "sha256": sha256_file(path), "bytes": path.stat().st_size}

    def store(self, name: str, *, key: str = "id") -> JsonlStore:
        """Open the JSONL record file ``name`` inside this run directory (e.g. ``"scenes.jsonl"``)."""
        return JsonlStore(self.path / name, key=key)


# ----------------------------------------------------------------------------------------------- JSONL store


class JsonlStore:
    """Append-only JSON-lines records keyed by a stable id; the basis of resume.

    Each :meth:`append` writes one line and fsyncs it, so a killed process loses at most the line it was
    writing. On open, a torn last line (no newline, or not valid JSON) is logged and truncated away. When a
    key is appended twice (a retried failure, say) the later record wins.

    Args:
        path: the ``.jsonl`` file (created with its parent directories on first append).
        key: the field that identifies a record.
    """

    def __init__(self, path: str | Path, *, key: str = "id") -> None:
        self.path = Path(path)
        self.key = key
        self._index: dict[Any, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._handle = None
        self._load()

    def __repr__(self) -> str:
        return f"JsonlStore({str(self.path)!r}, key={self.key!r}, records={len(self._index)})"

    def _load(self) -> None:
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        lines = data.split(b"\n")
        # ``lines[-1]`` is what follows the last newline: empty for a clean file, a torn write otherwise.
        complete, tail = lines[:-1], lines[-1]
        good_bytes = len(data) - len(tail)
        torn = bool(tail.strip())
        for number, raw in enumerate(complete, start=1):
            if not raw.strip():
                continue
            try:
                record = json.loads(raw)
            except ValueError:
                if number == len(complete) and not torn:
                    torn, good_bytes = True, good_bytes - len(raw) - 1
                    break
                raise VisalignError(
                    f"{self.path}:{number}: corrupt JSON line in the middle of the file; "
                    "fix or delete that line, or use a new --out directory"
                ) from None
            self._index_record(record, where=f"{self.path}:{number}")
        if torn:
            self._truncate_torn_tail(len(data), good_bytes)

    def _truncate_torn_tail(self, read_bytes: int, good_bytes: int) -> None:
        """Cut the torn last line away, unless the file grew since it was read.

        A file longer than what was read has a live writer (another process appending, which the run directory's
        lock keeps out between visalign jobs): the "torn" line was its write in progress, and cutting at
        ``good_bytes`` would delete it and every line it appended since. That file is left as it is.
        """
        with open(self.path, "r+b") as handle:
            size = os.fstat(handle.fileno()).st_size
            if size != read_bytes:
                logger.warning("%s: its last line was incomplete when read, and the file has grown since (%d -> %d "
                               "bytes): another process is appending to it; leaving it as it is (run one job per "
                               "run directory at a time)", self.path, read_bytes, size)  # fmt: skip
                return
            logger.warning("%s: ignoring a torn last line (%d bytes) left by an interrupted run; truncating it",
                           self.path, read_bytes - good_bytes)  # fmt: skip
            handle.truncate(good_bytes)
            handle.flush()
            os.fsync(handle.fileno())

    def _index_record(self, record: Any, *, where: str) -> None:
        if not isinstance(record, dict) or self.key not in record:
            raise VisalignError(f"{where}: record has no '{self.key}' field; is this the right file?")
        self._index[record[self.key]] = record

    def done_keys(self) -> set[Any]:
        """Return the keys of every stored record."""
        return set(self._index)

    def get(self, key: Any) -> dict[str, Any] | None:
        """Return the latest record stored under ``key``, or None."""
        return self._index.get(key)

    def __contains__(self, key: Any) -> bool:
        return key in self._index

    def __len__(self) -> int:
        return len(self._index)

    def records(self) -> Iterator[dict[str, Any]]:
        """Yield the latest record for each key, in the order keys were first stored."""
        yield from list(self._index.values())

    def append(self, record: Mapping[str, Any]) -> None:
        """Append one record as a JSON line and fsync it.

        Raises:
            VisalignError: the record lacks the key field or is not JSON serialisable.
        """
        record = dict(record)
        if self.key not in record:
            raise VisalignError(f"{self.path}: record has no '{self.key}' field: {str(record)[:120]}")
        try:
            line = json_text(record)
        except (TypeError, ValueError) as exc:
            raise VisalignError(
                f"{self.path}: record {record[self.key]!r} is not JSON serialisable ({exc})"
            ) from None
        payload = (line + "\n").encode("utf-8")
        with self._lock:
            if self._handle is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._handle = open(self.path, "ab")  # noqa: SIM115 - kept open across appends, closed in close()
            try:
                self._handle.write(payload)
                self._handle.flush()
                os.fsync(self._handle.fileno())
            except OSError as exc:  # a full disk: name the store (a torn last line is cut on the next read)
                if exc.filename is not None:
                    raise
                raise _named(exc, self.path) from exc
            self._index[record[self.key]] = json.loads(line)

    def close(self) -> None:
        """Close the file handle (appending again reopens it)."""
        with self._lock:
            if self._handle is not None:
                self._handle.close()
                self._handle = None

    def __enter__(self) -> JsonlStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
