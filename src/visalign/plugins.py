"""Plugins: the user's own modules that register benchmarks, judges or model families, imported by the CLI.

A benchmark, judge or family registered from Python (``register_benchmark``, ...) exists only in the process that
registered it, so the ``visalign`` command would not know it. Naming the module in the ``VISALIGN_PLUGINS``
environment variable (comma-separated module names, importable from ``PYTHONPATH``) makes every command import it
before it parses its arguments; under ``torchrun`` / ``accelerate launch`` every rank inherits the variable.
"""

from __future__ import annotations

import importlib
import os

from visalign.errors import VisalignError

#: The environment variable naming the plugin modules, comma-separated.
PLUGINS_VARIABLE = "VISALIGN_PLUGINS"


def plugin_modules(spec: str | None = None) -> list[str]:
    """Return the module names in ``spec`` (default: ``$VISALIGN_PLUGINS``), in order, blanks and repeats dropped."""
    spec = os.environ.get(PLUGINS_VARIABLE, "") if spec is None else spec
    names: list[str] = []
    for name in (part.strip() for part in spec.split(",")):
        if name and name not in names:
            names.append(name)
    return names


def load_plugins(spec: str | None = None) -> list[str]:
    """Import each plugin module named in ``spec`` (default: ``$VISALIGN_PLUGINS``); return the names imported.

    Raises:
        VisalignError: a module cannot be found, or raised while it was imported (its registrations are then
            incomplete, so no command runs with half a plugin). The message names the module and the cause.
    """
    names = plugin_modules(spec)
    for name in names:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name or name.startswith(f"{exc.name}."):  # the plugin or its package is missing
                raise VisalignError(f"{PLUGINS_VARIABLE}: no module named {name!r}; check the name and that its "
                                    "folder is on PYTHONPATH") from exc  # fmt: skip
            raise VisalignError(f"{PLUGINS_VARIABLE}: plugin {name!r} failed to import ({exc}); install what it "
                                "needs") from exc  # fmt: skip
        except Exception as exc:
            summary = " ".join(str(exc).split()) or "no message"
            raise VisalignError(f"{PLUGINS_VARIABLE}: plugin {name!r} raised {type(exc).__name__} while it was "
                                f"imported ({summary}); fix it, or add --debug for the traceback") from exc  # fmt: skip
    return names
