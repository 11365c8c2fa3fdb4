"""Value systems: named policies of which request categories to refuse and which to allow."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from visalign.config import read_yaml
from visalign.errors import VisalignError


def slug(category: str) -> str:
    """Normalise a category name for matching: ``Legal Opinion`` -> ``legal_opinion``."""
    return re.sub(r"[^a-z0-9]+", "_", category.lower()).strip("_")


#: Names a job's output folder already uses for its own files (``manifest.json``).
RESERVED_NAMES = frozenset({"manifest"})


class ValueSystem(BaseModel):
    """One policy: the categories whose requests are refused and those that are answered.

    Attributes:
        name: the value system's name (the YAML key).
        description: one line for people.
        refuse: category slugs to refuse.
        allow: category slugs to answer helpfully.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    description: str = ""
    refuse: list[str] = Field(min_length=1)
    allow: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _usable_as_file_name(self) -> ValueSystem:
        # a job writes <name>.png and <name>.json beside its manifest.json
        if self.name in RESERVED_NAMES or "/" in self.name or "\\" in self.name or self.name.startswith("."):
            raise ValueError(f"the name {self.name!r} cannot name the job's <name>.png and <name>.json (reserved "
                             "or a path); rename the value system")
        return self

    @model_validator(mode="after")
    def _disjoint(self) -> ValueSystem:
        both = {slug(c) for c in self.refuse} & {slug(c) for c in self.allow}
        if both:
            raise ValueError(f"categories both refused and allowed: {', '.join(sorted(both))}")
        return self

    def decides(self, category: str) -> str | None:
        """Return ``harmful`` (refuse), ``benign`` (allow) or None when the policy does not name ``category``."""
        key = slug(category)
        if key in {slug(c) for c in self.refuse}:
            return "harmful"
        if key in {slug(c) for c in self.allow}:
            return "benign"
        return None


def load_value_systems(path: str | Path) -> dict[str, ValueSystem]:
    """Read a value systems YAML file: ``value_systems: {name: {description, refuse: [...], allow: [...]}}``.

    Raises:
        VisalignError: the file is missing, not YAML, gives a key twice, or a value system is malformed; the message
            names the file and the offending key or system.
    """
    path = Path(path)
    if not path.is_file():
        raise VisalignError(f"{path}: value systems file not found")
    data = read_yaml(path)  # refuses a key given twice (a copy-pasted system, a second 'refuse'): YAML keeps the last
    systems = data.get("value_systems") if isinstance(data, dict) else None
    if not isinstance(systems, dict) or not systems:
        raise VisalignError(f"{path}: expected a mapping 'value_systems: {{name: {{refuse: [...], allow: [...]}}}}'")
    loaded = {}
    for name, body in systems.items():
        try:
            loaded[str(name)] = ValueSystem.model_validate({"name": str(name), **(body or {})})
        except (ValidationError, TypeError) as exc:
            message = exc.errors()[0]["msg"] if isinstance(exc, ValidationError) else str(exc)
            raise VisalignError(f"{path}: value system {name!r} is invalid: {message}") from None
    return loaded


def get_value_system(path: str | Path, name: str) -> ValueSystem:
    """Return the value system ``name`` from ``path``.

    Raises:
        VisalignError: unknown name; the message lists the known ones.
    """
    systems = load_value_systems(path)
    if name not in systems:
        raise VisalignError(f"unknown value system {name!r} in {path}; known: {', '.join(sorted(systems))}")
    return systems[name]
