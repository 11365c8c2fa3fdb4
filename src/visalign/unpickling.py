"""Reading torch ``.pt`` files with the weights-only unpickler: what a failed load raises, and refusal versus damage.

Run folders get shared and copied ("continue this run"), and a full unpickle runs whatever a planted file names
before any check could look at it; so checkpoints are read with ``torch.load(weights_only=True)``. When that load
fails, :func:`refused_object` says whether the unpickler refused an object (a file built to run code, or one this
code never wrote) or could not parse the bytes at all (damage), so the caller can say which.
"""

from __future__ import annotations

import pickle
import re
import zipfile

#: What ``torch.load`` raises for a file it cannot read: EOFError for an empty file, OSError (EINVAL, no file name)
#: for a cut zip or a missing one, RuntimeError or UnpicklingError for garbled contents (and a refused object).
LOAD_ERRORS = (EOFError, OSError, RuntimeError, pickle.UnpicklingError, zipfile.BadZipFile)

# How torch's weights-only unpickler names an object it refuses (a global, a blocked module's global, a class to
# build or a call), as opposed to bytes it cannot parse at all ("Unsupported operand"), which is damage.
_REFUSED_OBJECT = re.compile(r"GLOBAL (\S+) (?:was not an allowed global|whose module)"
                             r"|Can only (?:build|create new object for) [^\n]*but got (<[^>\n]*>)"
                             r"|reduce for unrecognized function ([^\n]+)")  # fmt: skip


def refused_object(exc: BaseException) -> str | None:
    """The object torch's weights-only unpickler refused in ``exc`` (e.g. ``posix.system``), else None.

    None too for bytes it cannot parse at all: that is damage, to be reported as such.
    """
    found = _REFUSED_OBJECT.search(str(exc)) if isinstance(exc, pickle.UnpicklingError) else None
    return next(name for name in found.groups() if name) if found else None


def describe(exc: BaseException) -> str:
    """``exc`` as ``Type: message`` on one line, for an error message that names a file."""
    return " ".join(f"{type(exc).__name__}: {exc}".split())
