"""Shared by the per-family tests: a hand-written table of expectations, one entry per registered model family."""

from __future__ import annotations

from typing import Any

import pytest

from visalign.models import FAMILIES


class FamilyTable(dict):
    """Per-family test expectations written by hand; a registered family it lacks fails the test, saying what to add.

    The values stay hand-written where reading them from the family's template, tokenizer or processor would only
    repeat the code under test. A family added through the registry then fails (not a bare ``KeyError``, not a silent
    skip) with one line naming the family, the table, where it is and what goes in it.
    """

    def __init__(self, name: str, where: str, what: str, entries: dict[str, Any]) -> None:
        super().__init__(entries)
        self.name, self.where, self.what = name, where, what

    def __missing__(self, family: str) -> Any:
        if family not in FAMILIES:  # a typo in a test, not a family without an entry
            raise KeyError(family)
        pytest.fail(f"registered family '{family}' has no {self.name} entry: add {self.what} to {self.name} in "
                    f"{self.where}")  # fmt: skip
