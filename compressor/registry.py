"""Registries of passes, exporters, frontends and datasets: module-level dicts filled by decorators.

Registering a name twice raises. Lookups of an unknown name raise a ConfigError that names the
closest registered name.
"""
from __future__ import annotations

import fnmatch
from typing import Any, Callable, TypeVar

from compressor.errors import ConfigError
from compressor.options import unknown_key_message

T = TypeVar("T")


class Registry(dict):
    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind

    def register(self, name: str) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            if name in self:
                raise ValueError(f"{self.kind} '{name}' is registered twice ({self[name]!r} and {obj!r})")
            self[name] = obj
            try:
                obj.name = name  # type: ignore[attr-defined]
            except (AttributeError, TypeError):
                pass
            return obj

        return deco

    def get_or_error(self, name: str, where: str = "") -> Any:
        _load_builtins()
        if name not in self:
            prefix = f"{where}: " if where else ""
            raise ConfigError(prefix + unknown_key_message(name, sorted(self), self.kind))
        return self[name]

    def names(self, pattern: str = "*") -> list[str]:
        _load_builtins()
        return sorted(n for n in self if fnmatch.fnmatch(n, pattern))


PASSES = Registry("pass")
EXPORTERS = Registry("exporter")
FRONTENDS = Registry("frontend")
DATASETS = Registry("dataset")

register_pass = PASSES.register
register_exporter = EXPORTERS.register
register_frontend = FRONTENDS.register
register_dataset = DATASETS.register

_loaded = False


def _load_builtins() -> None:
    """Import the built-in modules so that their decorators fill the registries."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    import compressor.data  # noqa: F401
    import compressor.exporters  # noqa: F401
    import compressor.frontends  # noqa: F401
    import compressor.passes  # noqa: F401
