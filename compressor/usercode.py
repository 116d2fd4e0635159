"""User code the compiler is told to run: a `package.module:callable` factory (a model's, a dataset's), and
the one-line wording of what went wrong in it. The torch frontend and the torch-dataset kind share it.
"""
from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any

from compressor.errors import FrontendError


def resolve_factory(spec: str, search_path: str | None = None) -> Any:
    """The callable `spec` ('package.module:callable') names, imported after putting `search_path` (if given) on
    sys.path; a FrontendError in one line for a module that cannot be imported or an attribute that is missing
    or not callable."""
    module_name, attr = spec.split(":")
    if search_path:
        path = str(Path(search_path).resolve())
        if path not in sys.path:
            sys.path.insert(0, path)
    try:
        module = importlib.import_module(module_name)
    except SyntaxError as exc:
        raise FrontendError(f"factory '{spec}': {exc.filename}:{exc.lineno}: syntax error: {exc.msg}; "
                            f"fix the module") from None
    except ImportError as exc:
        missing = getattr(exc, "name", None)
        if missing and module_name != missing and not module_name.startswith(f"{missing}."):
            raise FrontendError(f"'{module_name}' (factory '{spec}') imports '{missing}', which cannot be imported: "
                                f"{exc}; install it") from None
        raise FrontendError(f"cannot import '{module_name}' for factory '{spec}': {exc}; install the package "
                            f"or set search_path to the folder that holds it") from None
    except (Exception, SystemExit) as exc:  # user code at import time: any failure, even sys.exit()
        raise FrontendError(f"importing '{module_name}' for factory '{spec}' failed: {describe_failure(exc)}; "
                            f"fix the module (run `python -c \"import {module_name}\"` to see the traceback)") from None
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise FrontendError(f"'{module_name}' has no attribute '{attr}' (factory '{spec}')")
        obj = getattr(obj, part)
    if not callable(obj):
        raise FrontendError(f"factory '{spec}' is not callable")
    return obj


def describe_failure(exc: BaseException) -> str:
    """'RuntimeError: boom' (first line), or what a SystemExit means."""
    if isinstance(exc, SystemExit):
        return f"it called sys.exit({exc.code!r}); a factory and its module must return, not exit"
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
