"""The built-in precisions, one module each (see `compressor.precision`). This package is the `precisions`
entry of the `compressor.plugins` entry points; importing it imports every module of its folder, so a new
precision is a new module here."""
import importlib as _importlib
import pkgutil as _pkgutil

for _module in sorted(_pkgutil.iter_modules(__path__), key=lambda m: m.name):
    if not _module.name.startswith("_"):
        _importlib.import_module(f"{__name__}.{_module.name}")
