"""Loading job configs: YAML files validated by pydantic models that forbid unknown keys.

Each capability defines its own config model next to its code (``vsfa/config.py``, ``magic/config.py``,
``evaluation/config.py``) by subclassing :class:`JobConfig`; this module only knows how to read them.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from visalign.errors import VisalignError


class JobConfig(BaseModel):
    """Base for every job config: unknown keys are errors, so a typo never silently falls back to a default."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    def config_hash(self) -> str:
        """Return a short stable hash of the config's content (used to name and verify artefacts)."""
        payload = json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()
        return hashlib.sha256(payload).hexdigest()[:16]


ConfigT = TypeVar("ConfigT", bound=JobConfig)


def yaml_problem(exc: yaml.YAMLError) -> str:
    """What is wrong and where, in one line: ``line 3, column 7: mapping values are not allowed here``."""
    mark, problem = getattr(exc, "problem_mark", None), getattr(exc, "problem", None)
    if mark is not None and problem:
        return f"line {mark.line + 1}, column {mark.column + 1}: {problem}"
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


class UniqueKeyLoader(yaml.SafeLoader):
    """A safe loader that refuses a key given twice in one mapping (plain YAML keeps the last one silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        """Build a mapping as :class:`yaml.SafeLoader` does, first refusing a key that repeats an earlier one."""
        seen: set = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # "<<: *base": merged keys may be overridden after it
                continue
            key = self.construct_object(key_node, deep=deep)
            try:
                hash(key)
            except TypeError:  # ``[seed]: 0``, a stray bracket: the error plain YAML gives, not a traceback
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping", node.start_mark, "found unhashable key", key_node.start_mark
                ) from None
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} is given twice in one mapping; keep one", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: Path) -> object:
    """Parse the YAML file ``path`` with :class:`UniqueKeyLoader` (a byte order mark is dropped).

    Shared by every YAML file a user writes (job configs, value systems), so each refuses a repeated key alike.

    Raises:
        VisalignError: the file is not UTF-8 or not valid YAML (a repeated key included); one line naming the file,
            the line and the problem.
    """
    try:
        return yaml.load(path.read_text(encoding="utf-8-sig"), Loader=UniqueKeyLoader)
    except UnicodeDecodeError as exc:
        raise VisalignError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}); save it as UTF-8") from None
    except yaml.YAMLError as exc:
        raise VisalignError(f"{path}: not valid YAML ({yaml_problem(exc)})") from None


def load_config(path: str | Path, model: type[ConfigT], overrides: dict | None = None) -> ConfigT:
    """Read a YAML file into ``model``, applying top-level ``overrides`` first.

    Raises:
        VisalignError: the file is missing, is not YAML mapping, or does not validate; the message names the
            file and the first offending field.
    """
    path = Path(path)
    if not path.is_file():
        raise VisalignError(f"{path}: config file not found")
    data = read_yaml(path) or {}
    if not isinstance(data, dict):
        raise VisalignError(f"{path}: a config must be a YAML mapping of keys to values")
    data.update(overrides or {})
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "(top level)"
        raise VisalignError(
            f"{path}: invalid config at '{where}': {first['msg']} ({exc.error_count()} error(s))"
        ) from None
