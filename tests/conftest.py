"""Shared fixtures: tiny random checkpoints of every family, the embedded default model, benchmark data."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest


class TinyCheckpoints(Mapping[str, Path]):
    """Every registered family's (``visalign.models.FAMILIES``) tiny random checkpoint, by ``model_type``.

    All are written together, when the fixture is first used (writing seeds torch's global generator), except a family
    registered without a random-checkpoint builder: asking for it raises the builder's message naming what to add,
    so only the tests that use that family fail, and the other families' tests still run.
    """

    def __init__(self, root: Path) -> None:
        from visalign.models import FAMILIES
        from visalign.models.random_checkpoints import FAMILIES as BUILDABLE
        from visalign.models.random_checkpoints import write_random_checkpoint

        self._root = root
        self._paths = {family: write_random_checkpoint(family, root / family) for family in FAMILIES
                       if family in BUILDABLE}  # fmt: skip

    def __getitem__(self, family: str) -> Path:
        from visalign.models import FAMILIES
        from visalign.models.random_checkpoints import write_random_checkpoint

        if family in self._paths:
            return self._paths[family]
        if family in FAMILIES:  # registered without a builder: the builder's own one-line error says what to add
            return write_random_checkpoint(family, self._root / family)
        raise KeyError(f"{family!r} is not a registered model family; registered: {', '.join(FAMILIES)}")

    def __iter__(self) -> Iterator[str]:
        from visalign.models import FAMILIES

        return iter(list(FAMILIES))

    def __len__(self) -> int:
        from visalign.models import FAMILIES

        return len(FAMILIES)


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory) -> Mapping[str, Path]:
    """One tiny random checkpoint per registered family, written to disk once per test session."""
    return TinyCheckpoints(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="session")
def default_model_dir() -> Path:
    """The embedded default model, built (or verified) in the user's visalign home, as a user would."""
    from visalign.models.default_model import build_default_model

    return build_default_model()


@pytest.fixture(scope="session")
def benchmarks_dir() -> Path:
    """The shared real benchmark data (../shared/benchmarks or $VISALIGN_BENCHMARKS); fails loudly if missing."""
    path = Path(os.environ.get("VISALIGN_BENCHMARKS", Path(__file__).resolve().parents[2] / "shared" / "benchmarks"))
    if not path.is_dir():
        pytest.fail(f"benchmark data not found at {path}; set VISALIGN_BENCHMARKS to the shared/benchmarks folder")
    return path
