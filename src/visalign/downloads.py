"""Fetching published files that ship inside PyPI wheels (the only registry our machines reach)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from visalign.errors import VisalignError


def pip_download_wheel(requirement: str, dest: Path) -> Path:
    """Download the wheel of ``requirement`` (e.g. ``pyrit==1.1.0``) into ``dest`` with pip, without dependencies.

    Raises:
        VisalignError: pip could not reach the registry or found no wheel; the message says what to check.
    """
    dest.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--quiet",
               "--disable-pip-version-check", requirement, "-d", str(dest)]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise VisalignError(
            f"could not download {requirement} from the package registry ({last}); "
            "check the network or pip's index settings and retry"
        )
    name = requirement.split("==")[0].replace("-", "_").lower()
    wheels = [w for w in dest.glob("*.whl") if w.name.lower().startswith(name)]
    if not wheels:
        raise VisalignError(f"pip downloaded no wheel for {requirement} into {dest}")
    return wheels[0]
