"""Structural edits: what a pass changed in a module's architecture, as data that can be replayed.

A structural pass edits the module in memory and appends an edit (`{"kind": ..., params}`) to the IR's
recipe. Loading an IR rebuilds the frontend's module and calls each edit's replay function in order,
so the weights then load strictly. Passes register their replay functions here with `@register_edit`;
a replay function takes (module, edit, example inputs) and returns the module (a new object when the
root itself is replaced).
"""
from __future__ import annotations

import fnmatch
from typing import Any, Callable, Iterable

import torch
import torch.nn as nn

from compressor.errors import FrontendError
from compressor.plugins import load_plugins

EditFn = Callable[[nn.Module, dict[str, Any], tuple[torch.Tensor, ...]], "nn.Module | None"]
EDITS: dict[str, EditFn] = {}


def register_edit(kind: str) -> Callable[[EditFn], EditFn]:
    def deco(fn: EditFn) -> EditFn:
        if kind in EDITS:
            raise ValueError(f"edit '{kind}' is registered twice")
        EDITS[kind] = fn
        return fn

    return deco


def apply_edit(module: nn.Module, edit: dict[str, Any], example: tuple[torch.Tensor, ...]) -> nn.Module:
    load_plugins()  # the passes register their edits on import
    kind = edit.get("kind") if isinstance(edit, dict) else None
    fn = EDITS.get(str(kind))
    if fn is None:
        raise FrontendError(f"recipe edit {kind!r} is unknown; valid: {', '.join(sorted(EDITS))} (an IR written by "
                            "another version: re-run the stage)")
    try:
        out = fn(module, edit, example)
    except FrontendError:
        raise
    except Exception as exc:
        raise FrontendError(f"replaying recipe edit '{kind}' failed: {type(exc).__name__}: {exc}; the stage was "
                            "written by another version or its recipe was altered: re-run it") from exc
    return module if out is None else out


def set_submodule(root: nn.Module, path: str, new: nn.Module) -> nn.Module:
    """Put `new` at dotted `path` of `root` (ModuleList / Sequential indices included); returns the root
    (`new` itself when path is '')."""
    if not path:
        return new
    parent_name, _, attr = path.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, attr, new)  # nn.Module.__setattr__ handles ModuleList indices given as strings too
    return root


def unmatched_patterns(root: nn.Module, patterns: Iterable[str]) -> list[str]:
    """The glob patterns (of module paths, e.g. 'head' or 'dec1.*') that match no submodule of `root`:
    what a pass's module-selecting option must refuse rather than silently ignore."""
    names = [n for n, _ in root.named_modules() if n]
    return [p for p in patterns if not any(fnmatch.fnmatch(n, p) for n in names)]
