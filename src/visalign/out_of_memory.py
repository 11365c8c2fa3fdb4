"""Telling an out-of-memory error from other errors, for the one-line messages of the CLI and of training.

Each allocator says it differently: CUDA's raises ``torch.OutOfMemoryError``, torch's CPU allocator a RuntimeError
naming ``DefaultCPUAllocator``, Python a MemoryError, a failed ``mmap`` (safetensors maps weight files) an OSError
with ENOMEM. Nothing here imports torch: torch is looked up only if the process already imported it, and nothing is
imported while memory is short.
"""

from __future__ import annotations

import errno
import re
import sys

from visalign.errors import VisalignError

GPU_MEMORY = "GPU memory"
CPU_RAM = "CPU RAM"


def memory_exhausted(exc: BaseException) -> str | None:
    """Which memory ``exc`` says ran out: :data:`GPU_MEMORY`, :data:`CPU_RAM`, or None when it is another error."""
    if isinstance(exc, VisalignError):
        return None
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(exc, torch.OutOfMemoryError):
        return GPU_MEMORY
    if isinstance(exc, MemoryError) or (isinstance(exc, OSError) and exc.errno == errno.ENOMEM):
        return CPU_RAM
    if isinstance(exc, RuntimeError) and "DefaultCPUAllocator: can't allocate memory" in str(exc):
        return CPU_RAM
    return None


def failed_allocation(exc: BaseException) -> str | None:
    """What the out-of-memory error ``exc`` says failed, for its message: "an allocation of 2.00 GiB failed".

    None when the error does not say how large a request failed (a MemoryError, a failed mmap).
    """
    text = str(exc)
    if found := re.search(r"you tried to allocate (\d+) bytes", text):  # torch's CPU allocator
        size = int(found.group(1))
        shown = f"{size / 2**30:.2f} GiB" if size >= 2**30 else f"{size / 2**20:.1f} MiB"
        return f"an allocation of {shown} failed"
    if found := re.search(r"Tried to allocate ([\d.]+ [KMGT]i?B)", text):  # CUDA's caching allocator
        return f"an allocation of {found.group(1)} failed"
    return None
