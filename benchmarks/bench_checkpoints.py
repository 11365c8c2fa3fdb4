"""Random-weight checkpoints shared by the benchmarks, written once under ``$VISALIGN_HOME/bench/``.

A 7B-shaped checkpoint is ~16 GB: the scale check, the training and the Magic Image benchmarks load the same one
instead of writing their own. Weights are drawn on the GPU when there is one (seconds instead of minutes).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import torch

from visalign.models.random_checkpoints import write_random_checkpoint
from visalign.paths import visalign_home


def cached_random_checkpoint(family: str, shape: str, dtype: torch.dtype) -> Path:
    """Return the folder of a random ``family`` checkpoint of ``shape`` and ``dtype``, writing it if missing."""
    folder = visalign_home() / "bench" / f"{family}-{shape}-{str(dtype).removeprefix('torch.')}"
    if (folder / "config.json").is_file():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=folder.parent))
    try:
        device = "cuda" if torch.cuda.is_available() else None
        write_random_checkpoint(family, staging, shape=shape, dtype=dtype, device=device)
        staging.replace(folder)  # atomic: an interrupted write never looks like a checkpoint
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return folder
