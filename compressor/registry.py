"""Registries of passes, exporters, frontends, datasets, search algorithms, sweep samplers and executors, and
command-line groups: module-level dicts filled by decorators.

Registering a name twice raises. Lookups of an unknown name raise a ConfigError that names the
closest registered name. A registry imports no module that registers into it: the built-ins and
third-party packages are plugins (`compressor.plugins`), loaded once when the composition roots ask, or at
the first lookup (`get_or_error`, `names`) of a process that never did. Each entry remembers the module that
defined it; `origin(name)` adds the distribution that provides it (what `compress passes` shows).

A sampler or an executor is a `Factory`: its options class (declared with `compressor.options.option`, the
sweep file's block) and the function that builds it from those options (`register_sampler("tpe", TPEOptions)`
on the function). A search algorithm is a class with its own `Options` (the frontend that searches defines
the base class); a command-line group is a click group that `compress` mounts under its name.
"""
from __future__ import annotations

import fnmatch
from typing import Any, Callable, NamedTuple, TypeVar

from compressor.errors import ConfigError
from compressor.options import unknown_key_message
from compressor.plugins import load_plugins, package_of

T = TypeVar("T")


class Origin(NamedTuple):
    """Where a registry entry came from: the distribution (package) and the module that defined it."""

    package: str
    module: str


class Registry(dict):
    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self.modules: dict[str, str] = {}  # name -> the module that defined the registered object

    def register(self, name: str) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            if name in self:
                raise ValueError(f"{self.kind} '{name}' is registered twice ({self[name]!r} and {obj!r})")
            self[name] = obj
            self.modules[name] = str(getattr(obj, "__module__", None) or "?")
            try:
                obj.name = name  # type: ignore[attr-defined]
            except (AttributeError, TypeError):
                pass
            return obj

        return deco

    def __delitem__(self, name: str) -> None:
        super().__delitem__(name)
        self.modules.pop(name, None)

    def get_or_error(self, name: str, where: str = "") -> Any:
        load_plugins()
        if name not in self:
            prefix = f"{where}: " if where else ""
            raise ConfigError(prefix + unknown_key_message(name, sorted(self), self.kind))
        return self[name]

    def names(self, pattern: str = "*") -> list[str]:
        load_plugins()
        return sorted(n for n in self if fnmatch.fnmatch(n, pattern))

    def origin(self, name: str) -> Origin:
        """The package and module that registered `name` (KeyError if nothing did)."""
        load_plugins()
        obj = self[name]
        module = self.modules.get(name) or str(getattr(obj, "__module__", None) or "?")
        return Origin(package_of(module), module)


class Factory:
    """A registry entry built from options: `Options` (a frozen options dataclass) and `make(options, *args)`."""

    def __init__(self, Options: type, make: Callable[..., Any], help: str = "") -> None:
        self.Options, self.make = Options, make
        self.__module__ = make.__module__  # where it was defined: Registry.origin reads it
        self.__doc__ = help or (make.__doc__ or "").strip()

    def __repr__(self) -> str:
        return f"Factory({self.Options.__name__}, {self.make.__module__}.{self.make.__qualname__})"


def factory_registrar(registry: Registry) -> Callable[[str, type], Callable[[T], T]]:
    """`register(name, Options)`: a decorator that registers the function it decorates as a Factory."""
    def register(name: str, Options: type, help: str = "") -> Callable[[T], T]:
        def deco(make: T) -> T:
            registry.register(name)(Factory(Options, make, help))  # type: ignore[arg-type]
            return make

        return deco

    return register


PASSES = Registry("pass")
EXPORTERS = Registry("exporter")
FRONTENDS = Registry("frontend")
DATASETS = Registry("dataset")
SEARCHES = Registry("search algorithm")
SAMPLERS = Registry("sampler")
EXECUTORS = Registry("executor")
COMMANDS = Registry("command")

register_pass = PASSES.register
register_exporter = EXPORTERS.register
register_frontend = FRONTENDS.register
register_dataset = DATASETS.register
register_search = SEARCHES.register
register_sampler = factory_registrar(SAMPLERS)
register_executor = factory_registrar(EXECUTORS)
register_command = COMMANDS.register
