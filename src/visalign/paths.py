"""Where visalign keeps its own files (the embedded default model, caches), and where it finds the benchmark files."""

from __future__ import annotations

import os
from pathlib import Path


def visalign_home() -> Path:
    """Return ``$VISALIGN_HOME``, or ``~/.cache/visalign`` (respecting ``$XDG_CACHE_HOME``) when unset."""
    explicit = os.environ.get("VISALIGN_HOME")
    if explicit:
        return Path(explicit).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "visalign"


def default_benchmarks_dir() -> Path:
    """The benchmarks folder a config that names none reads: ``$VISALIGN_BENCHMARKS``, else ``../shared/benchmarks``.

    ``../shared/benchmarks`` is read from the working directory, as a Magic Image config's relative paths are
    (the shipped configs are run from the repository root, where the tests find the folder too); else, when the
    package runs from a source checkout (an editable install) with that folder beside it, that one. Never from
    where an installed package lives: in a virtualenv that would be a folder inside it.
    """
    explicit = os.environ.get("VISALIGN_BENCHMARKS")
    if explicit:
        return Path(explicit).expanduser()
    here = Path.cwd().parent / "shared" / "benchmarks"
    checkout = Path(__file__).resolve().parents[2]  # src/visalign/paths.py -> the checkout
    beside = checkout.parent / "shared" / "benchmarks"
    if not here.is_dir() and (checkout / "pyproject.toml").is_file() and beside.is_dir():
        return beside
    return here
