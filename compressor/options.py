"""Options declared once: a frozen dataclass whose fields carry type, default, bounds and help.

From that one declaration come YAML validation (`parse_options`), the `compress passes` listing
(`describe_options`) and the one-line pipeline form (`format_options`). Passes, frontends,
datasets and exporters all declare their options this way.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import re
import types
from collections.abc import Mapping, Sequence
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

from compressor.errors import ConfigError

_MISSING = dataclasses.MISSING
# an int option without a declared max still stops here (the largest 32-bit signed int, which every
# runtime this compiler drives accepts); declare max= for a tighter bound
INT_LIMIT = 2**31 - 1


def option(
    default: Any = _MISSING,
    help: str = "",
    *,
    min: float | None = None,
    max: float | None = None,
    min_exclusive: bool = False,
    max_exclusive: bool = False,
) -> Any:
    """A dataclass field with a one-line help text and optional numeric bounds.

    Lists and dicts as defaults are copied per instance (no shared mutable defaults).
    """
    meta = {
        "help": help,
        "min": min,
        "max": max,
        "min_exclusive": min_exclusive,
        "max_exclusive": max_exclusive,
    }
    if isinstance(default, (list, dict)):
        value = default
        return dataclasses.field(default_factory=lambda: type(value)(value), metadata=meta)
    if isinstance(default, tuple):
        return dataclasses.field(default=default, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


@dataclasses.dataclass(frozen=True)
class OptionInfo:
    name: str
    type: str
    default: Any
    help: str
    required: bool


def closest(name: str, candidates: Sequence[str]) -> str | None:
    matches = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.5)
    return matches[0] if matches else None


def unknown_key_message(key: str, valid: Sequence[str], what: str) -> str:
    guess = closest(str(key), valid)
    hint = f"did you mean '{guess}'? " if guess else ""
    listing = ", ".join(valid) if valid else "(none)"
    return f"unknown {what} '{key}'; {hint}valid: {listing}"


def type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return "|".join(repr(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        inner = " | ".join(type_name(a) for a in args)
        return f"{inner} | null" if len(args) < len(get_args(tp)) else inner
    if origin in (list, Sequence, tuple):
        args = get_args(tp)
        return f"list[{type_name(args[0])}]" if args else "list"
    if origin in (dict, Mapping):
        return "mapping"
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, path: str) -> Any:
    """Check `value` against the annotation `tp`; return the value in its canonical form."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None:
            if type(None) in args:
                return None
            raise ConfigError(f"{path}: null is not allowed; expected {type_name(tp)}")
        present = [a for a in args if a is not type(None)]
        if len(present) == 1:  # `int | None`: the int's own error says more than "expected int | null"
            return _coerce(value, present[0], path)
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, path)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(f"{path}: expected {type_name(tp)}, got {value!r}")
    if origin is Literal:
        allowed = get_args(tp)
        if value not in allowed:
            raise ConfigError(
                f"{path}: {value!r} is not valid; choose one of {', '.join(repr(a) for a in allowed)}"
            )
        return value
    if origin in (list, tuple, Sequence):
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path}: expected a list ({type_name(tp)}), got {value!r}")
        (inner,) = get_args(tp)[:1] or (Any,)
        items = [_coerce(v, inner, f"{path}[{i}]") for i, v in enumerate(value)]
        return tuple(items)
    if origin in (dict, Mapping) or tp is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{path}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path}: expected an integer, got {value!r}{_number_hint(value, integer=True)}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{path}: expected a number, got {value!r}{_number_hint(value, integer=False)}")
        try:
            number = float(value)
        except OverflowError:  # an int beyond the float range, e.g. 10**400
            number = math.inf
        if not math.isfinite(number):
            raise ConfigError(f"{path}: must be a finite number, got {value!r}")
        return number
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{path}: unsupported option type {tp!r}")  # a declaration bug, not user input


def _number_hint(value: Any, integer: bool) -> str:
    """Why a value is not the number it looks like: YAML 1.1 reads `1e20` as text, '5' is quoted, 2.0 is
    a float."""
    if isinstance(value, str) and re.fullmatch(r"[-+]?\d+[eE][-+]?\d+", value.strip()):
        fix = "write the digits" if integer else f"write {value.lower().replace('e', '.0e', 1)}"
        return f" (text: YAML reads an exponent without a dot as text; {fix})"
    if isinstance(value, str) and re.fullmatch(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?", value.strip()):
        return " (text; write it without quotes)"
    if integer and isinstance(value, float):
        return " (a float; write a whole number, without a decimal point)"
    return ""


def _bound_text(x: float) -> str:
    return str(x) if isinstance(x, int) else f"{x:g}"


def _range_text(meta: Mapping[str, Any], integer: bool) -> str:
    """'[0, 1)' from an option's declared bounds; with `integer`, a missing bound is +-INT_LIMIT."""
    lo, hi = meta.get("min"), meta.get("max")
    left = "(" if meta.get("min_exclusive", False) else "["
    right = ")" if meta.get("max_exclusive", False) else "]"
    if integer and hi is None:
        hi, right = INT_LIMIT, "]"
    if integer and lo is None:
        lo, left = -INT_LIMIT, "["
    lo_s = "-inf" if lo is None else _bound_text(lo)
    hi_s = "inf" if hi is None else _bound_text(hi)
    return f"{left}{lo_s}, {hi_s}{right}"


def _check_bounds(value: Any, meta: Mapping[str, Any], path: str) -> None:
    if isinstance(value, tuple):  # a list option: each item
        for i, item in enumerate(value):
            _check_bounds(item, meta, f"{path}[{i}]")
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    lo, hi = meta.get("min"), meta.get("max")
    lo_x, hi_x = meta.get("min_exclusive", False), meta.get("max_exclusive", False)
    below = lo is not None and (value <= lo if lo_x else value < lo)
    above = hi is not None and (value >= hi if hi_x else value > hi)
    if below or above:
        raise ConfigError(f"{path}: {value!r} is out of range; valid: {_range_text(meta, integer=False)}")
    if isinstance(value, int) and abs(value) > INT_LIMIT:
        raise ConfigError(f"{path}: {value!r} is out of range; valid: {_range_text(meta, integer=True)}")


def location(raw: Any, key: str | None = None) -> str:
    """'file.yaml:12' for a mapping loaded by `config.load_yaml` (per key when given), else ''."""
    loc = getattr(raw, "location", None)
    return loc(key) if loc is not None else ""


def prefix(raw: Any, context: str, key: str | None = None) -> str:
    loc = location(raw, key)
    return f"{loc}: {context}" if loc and context else (loc or context)


def parse_options(cls: type, raw: Mapping[str, Any] | None, context: str, what: str = "option") -> Any:
    """Build `cls` (an options dataclass) from a mapping, validating every key and value.

    `context` names what is being configured (e.g. "prune-l1"); when `raw` was loaded from YAML
    by `config.load_yaml`, every error also names the file and line of the offending key.
    """
    raw = raw if raw is not None else {}
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{context}: expected a mapping of options, got {raw!r}")
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    values: dict[str, Any] = {}
    for key, value in raw.items():
        where = prefix(raw, context, key)
        if key not in fields:
            raise ConfigError(f"{where}: {unknown_key_message(key, list(fields), what)}")
        field = fields[key]
        try:
            coerced = _coerce(value, hints[key], f"{where}: {key}")
        except ConfigError as exc:
            kind = _number_kind(hints[key])
            unbounded = field.metadata.get("min") is None and field.metadata.get("max") is None
            if kind is None or (kind is float and unbounded):
                raise
            valid = _range_text(field.metadata, integer=kind is int)
            raise ConfigError(f"{exc}; valid: {'integers' if kind is int else 'numbers'} in {valid}") from None
        _check_bounds(coerced, field.metadata, f"{where}: {key}")
        values[key] = coerced
    for name, field in fields.items():
        if name not in values and field.default is _MISSING and field.default_factory is _MISSING:
            help_text = field.metadata.get("help", "")
            raise ConfigError(f"{prefix(raw, context)}: missing required {what} '{name}' ({help_text})")
    try:
        return cls(**values)
    except (ValueError, TypeError) as exc:  # __post_init__ cross-field checks
        raise ConfigError(f"{prefix(raw, context)}: {exc}") from None


def _number_kind(tp: Any) -> type | None:
    """int or float for an `int`, `float`, `int | None` or `float | None` option, else None."""
    if get_origin(tp) in (Union, types.UnionType):
        present = [a for a in get_args(tp) if a is not type(None)]
        tp = present[0] if len(present) == 1 else None
    return tp if tp in (int, float) else None


def describe_options(cls: type) -> list[OptionInfo]:
    hints = get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        if f.default is not _MISSING:
            default, required = f.default, False
        elif f.default_factory is not _MISSING:
            default, required = f.default_factory(), False
        else:
            default, required = None, True
        out.append(OptionInfo(f.name, type_name(hints[f.name]), default, f.metadata.get("help", ""), required))
    return out


def options_dict(opts: Any) -> dict[str, Any]:
    """All option values as plain data (tuples become lists), for hashing and reports."""
    if opts is None:
        return {}

    def plain(v: Any) -> Any:
        if isinstance(v, tuple):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return {f.name: plain(getattr(opts, f.name)) for f in dataclasses.fields(opts)}


def changed_options(opts: Any) -> dict[str, Any]:
    """Only the options that differ from their defaults: what the one-line form shows."""
    if opts is None:
        return {}
    defaults = {i.name: i.default for i in describe_options(type(opts))}
    current = options_dict(opts)
    return {k: v for k, v in current.items() if options_dict_value(defaults.get(k)) != v}


def options_dict_value(v: Any) -> Any:
    if isinstance(v, tuple):
        return [options_dict_value(x) for x in v]
    return v


def format_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return "null"
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(format_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k}={format_value(x)}" for k, x in v.items()) + "}"
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def format_options(name: str, opts: Any, always: Sequence[str] = ()) -> str:
    """`prune-l1{ratio=0.6}`: the name and the options that differ from their defaults."""
    changed = changed_options(opts)
    current = options_dict(opts)
    shown = {k: v for k, v in current.items()  # declaration order
             if k in changed or (k in always and v is not None)}
    if not shown:
        return name
    inner = ", ".join(f"{k}={format_value(v)}" for k, v in shown.items())
    return f"{name}{{{inner}}}"
