"""Plugins: the packages whose modules fill the registries (passes, exporters, frontends, datasets, search
algorithms, sweep samplers and executors, command groups), found through `importlib.metadata` entry points.

A plugin is an entry point in the group `compressor.plugins`. The compiler's own built-ins are six of them
(pyproject.toml); a third-party package declares its own the same way, with no change to this repository:

    [project.entry-points."compressor.plugins"]
    my-passes = "my_package.passes"            # a module: importing it runs its @register_... decorators
    my-data = "my_package.data:register"       # or a callable, called once with no arguments

`load_plugins()` loads every declared plugin once per process: the compressor distribution's first, then the
others by (package, name), so a plugin that reuses a built-in name is the one that fails. A plugin that fails
to load (an import error, a name registered twice, anything its module raises) is one warning line naming it,
its package and the error; the rest still loads. The composition roots (the CLI, `Pipeline`, a sweep, the
reproducer) call it; a registry lookup calls it too, so that a Python user who only imported `compressor.ir`
(and rebuilds a stage) still finds every frontend and edit.

This module imports nothing of the compiler but its errors: the registries use it, and the plugins it loads
import the registries.
"""
from __future__ import annotations

import functools
import logging
import threading
from dataclasses import dataclass
from importlib import import_module, metadata
from types import ModuleType
from typing import Any

from compressor.errors import one_line

log = logging.getLogger(__name__)

GROUP = "compressor.plugins"
DISTRIBUTION = "compressor"

# The built-in plugins, exactly as pyproject.toml declares them (tests/test_plugins.py checks that the two
# agree). They are used only when the installed compressor distribution declares no entry point in GROUP: a
# copy of the sources on sys.path without its metadata (vendored, or never pip-installed), or an install made
# before the entry points existed. Without this fallback such a copy would run with empty registries.
BUILTIN_PLUGINS: tuple[tuple[str, str], ...] = (
    ("data", "compressor.data"),
    ("exporters", "compressor.exporters"),
    ("frontends", "compressor.frontends"),
    ("passes", "compressor.passes"),
    ("precisions", "compressor.precisions"),
    ("sweep", "compressor.sweep.builtin"),
)


@dataclass(frozen=True)
class Plugin:
    """One declared plugin: its entry point's name and value, and the distribution that declares it."""

    name: str
    value: str  # "package.module" or "package.module:callable"
    package: str

    @property
    def module(self) -> str:
        return self.value.partition(":")[0].strip()


@dataclass(frozen=True)
class Failure:
    plugin: Plugin
    error: str  # "ImportError: No module named 'x'"


_loaded: list[Plugin] = []
_failures: list[Failure] = []
_started = False
_lock = threading.RLock()  # another thread waits for the load to finish; a plugin's own lookups return at once


def _normalized(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def discover(entry_points: Any = None) -> list[Plugin]:
    """The declared plugins in load order: the compressor distribution's (or BUILTIN_PLUGINS when its metadata
    declares none), then the others sorted by package and name. `entry_points`: the group's entry points
    (default: what `importlib.metadata` finds on sys.path)."""
    if entry_points is None:
        entry_points = metadata.entry_points(group=GROUP)
    own, others = [], []
    for ep in entry_points:
        package = ep.dist.name if ep.dist is not None else "?"
        plugin = Plugin(ep.name, ep.value, package)
        (own if _normalized(package) == DISTRIBUTION else others).append(plugin)
    if not own:
        own = [Plugin(name, value, DISTRIBUTION) for name, value in BUILTIN_PLUGINS]
    return sorted(own, key=lambda p: p.name) + sorted(others, key=lambda p: (p.package, p.name))


def _load(plugin: Plugin) -> None:
    module_name, _, attr = plugin.value.partition(":")
    obj: Any = import_module(module_name.strip())
    if attr.strip():
        for part in attr.strip().split("."):
            obj = getattr(obj, part)
        if not isinstance(obj, ModuleType):
            obj()


def load_plugins() -> list[Failure]:
    """Load every declared plugin, once per process; return the ones that failed (each already warned about).
    Later calls return at once, also those a plugin makes while it loads (a registry lookup at import)."""
    global _started
    with _lock:
        if _started:
            return list(_failures)
        _started = True
        for plugin in discover():
            _loaded.append(plugin)  # before importing: package_of attributes what it registers to it
            try:
                _load(plugin)
            except (Exception, SystemExit) as exc:  # whatever the plugin's module does at import, even sys.exit()
                text = one_line(str(exc))
                failure = Failure(plugin, f"{type(exc).__name__}: {text}" if text else type(exc).__name__)
                _failures.append(failure)
                log.warning("plugin '%s' (package %s) failed to load and is skipped: %s", plugin.name,
                            plugin.package, failure.error)
        return list(_failures)


def loaded() -> list[Plugin]:
    """The plugins `load_plugins` has loaded or tried to load, in order."""
    return list(_loaded)


def package_of(module: str) -> str:
    """The distribution that provides `module` (where a registered object was defined): the package of the
    plugin whose module shares the longest dotted prefix with it, else what the installed metadata says of its
    top-level package, else that top-level name itself (`__main__` for a script)."""
    parts = module.split(".")
    best, best_len = None, 0
    for plugin in _loaded:
        theirs = plugin.module.split(".")
        n = 0
        while n < min(len(parts), len(theirs)) and parts[n] == theirs[n]:
            n += 1
        if n > best_len:
            best, best_len = plugin.package, n
    if best is not None:
        return best
    owners = _distributions().get(parts[0])
    return owners[0] if owners else parts[0]


@functools.lru_cache(maxsize=1)
def _distributions() -> dict[str, list[str]]:
    return metadata.packages_distributions()  # reads every installed distribution's file list: once
