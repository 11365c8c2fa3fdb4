"""Naming a weights dtype and a device: one check for configs (at load time) and for ``load_vlm`` (at run time).

A config's ``dtype: bf16`` or ``device: gpu`` is a config error naming the field and the allowed values, not a
traceback from inside torch after the data has been read. The names are checked without importing torch; whether
the named device exists on this machine is checked where the model is loaded (:func:`unavailable_device`).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Annotated

from pydantic import AfterValidator

from visalign.errors import VisalignError

if TYPE_CHECKING:
    import torch

#: Weights dtypes by name: torch's attribute names for its floating point types (``half`` is ``float16``...).
DTYPE_NAMES = {"float32": "float32", "float": "float32", "bfloat16": "bfloat16", "float16": "float16",
               "half": "float16", "float64": "float64", "double": "float64"}  # fmt: skip
_DTYPE_CHOICES = "float32, bfloat16 or float16"
_DEVICE = re.compile(r"cpu|mps|cuda(:\d+)?")
_DEVICE_CHOICES = "cpu, cuda, cuda:N (the Nth GPU) or mps"


def dtype_name_problem(name: str) -> str | None:
    """Why ``name`` is not a weights dtype name, or None."""
    if name in DTYPE_NAMES:
        return None
    return f"{name!r} is not a weights dtype; use {_DTYPE_CHOICES} (or leave it unset: float32 on CPU, bfloat16 on GPU)"


def device_name_problem(name: str) -> str | None:
    """Why ``name`` is not a device name, or None (whether the device exists here is :func:`unavailable_device`)."""
    if _DEVICE.fullmatch(name):
        return None
    return f"{name!r} is not a device; use {_DEVICE_CHOICES} (or leave it unset: cuda when available, else cpu)"


def _checked(problem):
    def check(value: str | None) -> str | None:
        if value is not None and (reason := problem(value)):
            raise ValueError(reason)
        return value  # unchanged: a valid config dumps and hashes as before

    return check


#: A config field holding an optional weights dtype name, refused at load time when it names none.
DtypeName = Annotated[str | None, AfterValidator(_checked(dtype_name_problem))]
#: A config field holding an optional device name, refused at load time when it names none.
DeviceName = Annotated[str | None, AfterValidator(_checked(device_name_problem))]


def torch_dtype(dtype: torch.dtype | str | None) -> torch.dtype | None:
    """A torch dtype from a dtype or its name (None stays None).

    Raises:
        VisalignError: ``dtype`` names no weights dtype.
    """
    import torch

    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    if isinstance(dtype, str) and dtype in DTYPE_NAMES:
        return getattr(torch, DTYPE_NAMES[dtype])
    raise VisalignError(f"dtype {dtype_name_problem(str(dtype))}")


def unavailable_device(device: str) -> str | None:
    """Why ``device`` cannot be used on this machine (not a device, no CUDA, no such GPU), or None."""
    import torch

    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        return f"device {device_name_problem(str(device)) or repr(device)}"
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            return f"device {device!r}: no CUDA GPU that torch can use on this machine; set device: cpu or unset it"
        count = torch.cuda.device_count()
        if parsed.index is not None and parsed.index >= count:
            return f"device {device!r}: this machine has {count} CUDA GPU(s), numbered from 0"
    if parsed.type == "mps" and not torch.backends.mps.is_available():
        return f"device {device!r}: MPS (Apple GPU) is not available here; set device: cpu or leave it unset"
    return None


def require_device(device: str | None) -> None:
    """Raise a one-line :class:`VisalignError` when ``device`` is set and cannot be used on this machine."""
    if device is not None and (problem := unavailable_device(device)):
        raise VisalignError(problem)
