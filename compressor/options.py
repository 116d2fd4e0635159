"""Options declared once: a frozen dataclass whose fields carry type, default, bounds and help.

From that one declaration come YAML validation (`parse_options`), the `compress passes` listing
(`describe_options`), the one-line pipeline form (`format_options`) and the sweep spaces
(`search_space`). Passes, frontends, datasets and exporters all declare their options this way.

An option whose type is itself an options dataclass (or `SomeOptions | None`) is a nested block:
YAML gives it as a mapping, validated by the same rules, with errors that name the nested path.

A block whose keys depend on another option's value (the search block: its algorithm's own options) declares
two hooks on its class: `__parse_options__(raw, context, what)` (a classmethod that parses the mapping, with
`parse_values` and `build_options` for its plain fields) and `__option_items__()` (the (name, value, default)
triples that `options_dict`, `changed_options` and the one-line form show). A field declared with
`option(..., hidden=True)` is filled by such a hook, never a YAML key, and `describe_options` leaves it out.
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


@dataclasses.dataclass(frozen=True)
class Range:
    """A numeric sweep space `low..high` (both included): log-uniform with `log`, on a grid with `step`.

    Integer bounds (and step) make an integer range, the only kind an int option accepts.
    """

    low: float
    high: float
    log: bool = False
    step: float | None = None

    def __post_init__(self) -> None:
        ends = (self.low, self.high) + (() if self.step is None else (self.step,))
        if any(isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x) for x in ends):
            raise TypeError(f"Range bounds and step must be finite numbers, got {self!r}")
        if not self.low < self.high:
            raise ValueError(f"Range needs low < high, got {self.low!r}..{self.high!r}")
        if self.log and self.low <= 0:
            raise ValueError(f"a log Range needs low > 0, got {self.low!r}")
        if self.step is not None and (self.step <= 0 or self.log):
            raise ValueError(f"a Range step must be > 0 and cannot be combined with log, got {self!r}")

    @property
    def integer(self) -> bool:
        return all(isinstance(x, int) for x in (self.low, self.high, self.step) if x is not None)

    def __str__(self) -> str:
        text = f"{_bound_text(self.low)}..{_bound_text(self.high)}"
        if self.step is not None:
            text += f" step {_bound_text(self.step)}"
        return text + (" log" if self.log else "")


Space = Union[Sequence[Any], Range]


def option(
    default: Any = _MISSING,
    help: str = "",
    *,
    min: float | None = None,
    max: float | None = None,
    min_exclusive: bool = False,
    max_exclusive: bool = False,
    search: Space | None = None,
    hidden: bool = False,
) -> Any:
    """A dataclass field with a one-line help text, optional numeric bounds and an optional sweep space
    (`search=[v1, v2]`, categorical, or `search=Range(low, high)`).

    Lists, dicts and nested options as defaults are copied per instance (no shared mutable defaults).
    `hidden`: not a YAML key and not listed; a `__parse_options__` hook fills it (see the module docstring).
    """
    meta = {
        "hidden": hidden,
        "help": help,
        "min": min,
        "max": max,
        "min_exclusive": min_exclusive,
        "max_exclusive": max_exclusive,
        "search": _checked_space(search),
    }
    if isinstance(default, (list, dict)):
        value = default
        return dataclasses.field(default_factory=lambda: type(value)(value), metadata=meta)
    if _is_options(default):
        instance = default
        return dataclasses.field(default_factory=lambda: dataclasses.replace(instance), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def _checked_space(space: Any) -> tuple[Any, ...] | Range | None:
    """A declared sweep space as stored in the field metadata (a list becomes a tuple); a malformed one
    raises at declaration (Range checks its own bounds)."""
    if space is None or isinstance(space, Range):
        return space
    if isinstance(space, (str, bytes)) or not isinstance(space, Sequence):
        raise TypeError(f"search must be a list of values or a Range, got {space!r}")
    if not space:
        raise ValueError("search: an empty list; give at least one value or leave search out")
    if any(space.count(v) > 1 for v in space):
        raise ValueError(f"search: {list(space)!r} repeats a value")
    return tuple(space)


@dataclasses.dataclass(frozen=True)
class OptionInfo:
    """One declared option; a nested options block lists its own fields in `children`."""

    name: str
    type: str
    default: Any
    help: str
    required: bool
    search: tuple[Any, ...] | Range | None = None
    children: tuple["OptionInfo", ...] = ()


def closest(name: str, candidates: Sequence[str]) -> str | None:
    matches = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.5)
    return matches[0] if matches else None


def unknown_key_message(key: str, valid: Sequence[str], what: str) -> str:
    guess = closest(str(key), valid)
    hint = f"did you mean '{guess}'? " if guess else ""
    listing = ", ".join(valid) if valid else "(none)"
    return f"unknown {what} '{key}'; {hint}valid: {listing}"


def _is_options(value: Any) -> bool:
    """An options dataclass instance (not the class)."""
    return dataclasses.is_dataclass(value) and not isinstance(value, type)


def _optional_of(tp: Any) -> Any:
    """`X` for an annotation `X` or `X | None`; None for a union of several types."""
    if get_origin(tp) in (Union, types.UnionType):
        present = [a for a in get_args(tp) if a is not type(None)]
        return present[0] if len(present) == 1 else None
    return tp


def options_class(tp: Any) -> type | None:
    """The options dataclass of an annotation `SomeOptions` or `SomeOptions | None`, else None."""
    tp = _optional_of(tp)
    return tp if isinstance(tp, type) and dataclasses.is_dataclass(tp) else None


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
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):  # a mapping was parsed by parse_options
        if not isinstance(value, tp):
            raise ConfigError(f"{path}: expected a mapping ({tp.__name__}), got {value!r}")
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
    by `config.load_yaml`, every error also names the file and line of the offending key. A nested
    options block is parsed the same way, as `context: key` (e.g. "evaluate: latency"); a class with a
    `__parse_options__` hook parses its own mapping.
    """
    raw = raw if raw is not None else {}
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{context}: expected a mapping of options, got {raw!r}")
    hook = getattr(cls, "__parse_options__", None)
    if hook is not None:
        return hook(raw, context, what)
    return build_options(cls, parse_values(cls, raw, context, what), raw, context)


def parse_values(cls: type, raw: Mapping[str, Any], context: str, what: str = "option") -> dict[str, Any]:
    """The validated values of `raw`'s keys, which must be fields of `cls` (hidden ones excluded); a required
    field that `raw` lacks is an error."""
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("hidden")}
    values: dict[str, Any] = {}
    for key, value in raw.items():
        where = prefix(raw, context, key)
        if key not in fields:
            raise ConfigError(f"{where}: {unknown_key_message(key, list(fields), what)}")
        field = fields[key]
        nested = options_class(hints[key])
        if nested is not None and isinstance(value, Mapping):
            # a mapping from YAML carries its own file:line; a plain one is placed at its parent's key
            inner = f"{context}: {key}" if location(value) else f"{where}: {key}"
            values[key] = parse_options(nested, value, inner, f"{key} option")
            continue
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
    return values


def build_options(cls: type, values: Mapping[str, Any], raw: Mapping[str, Any], context: str) -> Any:
    """`cls(**values)`; a cross-field check of its `__post_init__` (ValueError, TypeError) becomes a ConfigError
    placed at `raw`."""
    try:
        return cls(**values)
    except (ValueError, TypeError) as exc:  # __post_init__ cross-field checks
        raise ConfigError(f"{prefix(raw, context)}: {exc}") from None


def _number_kind(tp: Any) -> type | None:
    """int or float for an `int`, `float`, `int | None` or `float | None` option, else None."""
    tp = _optional_of(tp)
    return tp if tp in (int, float) else None


def _default(f: dataclasses.Field) -> Any:
    """A field's default value, or _MISSING for a required option."""
    if f.default is not _MISSING:
        return f.default
    if f.default_factory is not _MISSING:
        return f.default_factory()
    return _MISSING


def describe_options(cls: type) -> list[OptionInfo]:
    """Every declared option of `cls` in declaration order; nested options blocks with their `children`."""
    hints = get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        if f.metadata.get("hidden"):
            continue
        default = _default(f)
        nested = options_class(hints[f.name])
        out.append(OptionInfo(f.name, type_name(hints[f.name]), None if default is _MISSING else default,
                              f.metadata.get("help", ""), default is _MISSING, f.metadata.get("search"),
                              tuple(describe_options(nested)) if nested is not None else ()))
    return out


def search_space(cls: type) -> dict[str, list[Any] | Range]:
    """The declared sweep spaces of `cls` by option path (`ratio`, nested: `latency.iters`).

    Each space is checked against its option's type and bounds; a misfit raises TypeError or ValueError
    (a bug in the declaration, not in user input).
    """
    hints = get_type_hints(cls)
    out: dict[str, list[Any] | Range] = {}
    for f in dataclasses.fields(cls):
        space = f.metadata.get("search")
        if space is not None:
            _check_space_fits(space, hints[f.name], f.metadata, f"{cls.__name__}.{f.name}")
            out[f.name] = space if isinstance(space, Range) else list(space)
        nested = options_class(hints[f.name])
        if nested is not None:
            out.update({f"{f.name}.{path}": sub for path, sub in search_space(nested).items()})
    return out


def _check_space_fits(space: tuple[Any, ...] | Range, tp: Any, meta: Mapping[str, Any], where: str) -> None:
    if isinstance(space, Range):
        kind = _number_kind(tp)
        if kind is None:
            raise TypeError(f"{where}: a Range sweeps a number, but the option is {type_name(tp)}")
        if kind is int and not space.integer:
            raise TypeError(f"{where}: an int option needs a Range of integers, got {space}")
        values: Sequence[Any] = (space.low, space.high)
    else:
        values = space
    for value in values:
        try:
            _check_bounds(_coerce(value, tp, where), meta, where)
        except ConfigError as exc:
            raise ValueError(f"search value {value!r} does not fit its option: {exc}") from None


def format_space(space: Sequence[Any] | Range) -> str:
    """`[0.3, 0.5, 0.7]` or `0.0001..0.1 log`: a sweep space as `compress passes` shows it."""
    if isinstance(space, Range):
        return str(space)
    return "[" + ", ".join(format_value(v) for v in space) + "]"


def options_dict(opts: Any) -> dict[str, Any]:
    """All option values as plain data (tuples become lists, nested options dicts), for hashing and reports."""
    if opts is None:
        return {}
    return {name: options_dict_value(value) for name, value, _ in option_items(opts)}


def option_items(opts: Any) -> list[tuple[str, Any, Any]]:
    """(name, value, default) of every option of `opts` in declaration order (default `_MISSING` when required);
    an options class with an `__option_items__` hook says itself what it holds."""
    hook = getattr(opts, "__option_items__", None)
    if hook is not None:
        return list(hook())
    return [(f.name, getattr(opts, f.name), _default(f)) for f in dataclasses.fields(opts)]


def options_dict_value(v: Any) -> Any:
    """One option value as plain data."""
    if _is_options(v):
        return options_dict(v)
    if isinstance(v, (tuple, list)):
        return [options_dict_value(x) for x in v]
    if isinstance(v, dict):
        return {k: options_dict_value(x) for k, x in v.items()}
    return v


def changed_options(opts: Any) -> dict[str, Any]:
    """Only the options that differ from their defaults, as plain data: what the one-line form shows.

    A nested options block that differs shows only its own changed fields (`{}` when it differs only by
    being given where the default is null).
    """
    if opts is None:
        return {}
    out: dict[str, Any] = {}
    for name, value, default in option_items(opts):
        if _is_options(value):
            changed = changed_options(value)
            if changed or type(value) is not type(default):
                out[name] = changed
        elif default is _MISSING or options_dict_value(value) != options_dict_value(default):
            out[name] = options_dict_value(value)
    return out


def format_value(v: Any) -> str:
    """A value in the one-line form; a nested options block shows its changed fields."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return "null"
    if _is_options(v):
        return format_value(_shown(v, ()))
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(format_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k}={format_value(x)}" for k, x in v.items()) + "}"
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def _shown(opts: Any, always: Sequence[str]) -> dict[str, Any]:
    """The options the one-line form shows, in declaration order: the changed ones and those in `always`
    (when not null); `always` reaches into nested blocks with dotted names, e.g. `search.algorithm`."""
    changed = changed_options(opts)
    out: dict[str, Any] = {}
    for name, value, _ in option_items(opts):
        inner = [a.split(".", 1)[1] for a in always if a.startswith(f"{name}.")]
        if _is_options(value):
            if name in changed or name in always or inner:
                out[name] = _shown(value, inner)
        elif name in changed or (name in always and value is not None):
            out[name] = options_dict_value(value)
    return out


def format_options(name: str, opts: Any, always: Sequence[str] = ()) -> str:
    """`prune-l1{ratio=0.6}`: the name and the options that differ from their defaults (nested blocks:
    only their changed fields, `evaluate{latency={iters=5}}`); `always` names options shown regardless."""
    shown = _shown(opts, always) if opts is not None else {}
    return f"{name}{format_value(shown)}" if shown else name
