"""Helpers for the CPU benchmarks that compare two paths by time and peak memory, each in its own process.

A path runs in a fresh ``spawn`` child (:func:`in_child`), so neither path's leftovers (freed memory that the
allocator keeps, pyarrow's pool, cached imports) count against the other. In the child the peak is the resident-set
high-water mark ``VmHWM`` of ``/proc/self/status``, reset through ``/proc/self/clear_refs`` to the current RSS just
before the path starts. ``ru_maxrss`` is not used: on Linux it survives ``exec`` and so starts at the parent's
peak. RSS counts everything the process holds (Python objects, pyarrow and Pillow buffers, read-in files), which
is what a memory cap or the OOM killer sees.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status (Linux only)")


def _measured(function: Callable[..., Any], args: tuple) -> dict[str, Any]:
    """Run ``function(*args)`` here: its wall and CPU seconds (all threads), RSS before it and peak RSS (MiB)."""
    before = _status_kib("VmRSS")
    try:
        Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS now
        reset = True
    except OSError:  # not allowed here: VmHWM then also covers the child's imports, a slight overestimate
        reset = False
    started, cpu_started = time.perf_counter(), time.process_time()
    value = function(*args)
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    peak = _status_kib("VmHWM")
    return {
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "rss_before_mib": before / 1024,
        "peak_rss_mib": peak / 1024,
        "peak_increase_mib": (peak - before) / 1024,
        "hwm_reset": reset,
        "value": value,
    }


def in_child(function: Callable[..., Any], *args: Any) -> dict[str, Any]:
    """Run ``function(*args)`` in a fresh spawned process; see :func:`_measured` for what comes back.

    ``function`` must be a module-level function of the calling script (the child imports the script as
    ``__mp_main__``, so the script's top-level imports are done, and not counted, before the path starts).
    """
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(_measured, function, args).result()


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gib() -> float | None:
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError):
        return None


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _commit() -> str | None:
    try:
        root = Path(__file__).resolve().parents[1]
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "src"], cwd=root, capture_output=True, text=True)
    except OSError:
        return None
    return (out.stdout.strip() + ("+uncommitted src changes" if dirty.stdout.strip() else "")) or None


def environment(packages: list[str]) -> dict[str, Any]:
    """The machine (CPU, cores, memory, load average now) and the versions of Python and ``packages``."""
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "commit": _commit(),
        "device": {
            "platform": platform.platform(),
            "cpu": _cpu_model(),
            "cpu_count": os.cpu_count(),
            "memory_gib": _memory_gib(),
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
            "gpu": None,
        },
        "versions": {"python": platform.python_version(), **{name: _version(name) for name in packages}},
    }


def write_json(path: Path, report: dict[str, Any]) -> None:
    """Write ``report`` (with the load average at the end added to its device) as indented JSON."""
    report["device"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {path}")
