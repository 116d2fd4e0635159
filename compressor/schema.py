"""One schema layer for the JSON documents the compiler reads back from disk.

A stage's `ir.json` and the header of its `weights.safetensors`, a reproducer's `reproduce.json`, a
genotype `.json` and a search's `alpha_history.json` may have been edited, truncated or crafted by
someone else. Each is read with `load_json` (size and nesting bounded before parsing, UTF-8 only) and
checked with `validate` against a declarative schema below, so that a malformed field ends in ONE
line naming the file, the field path and what is valid (`ir.json: inputs[0].shape[1]: expected a
positive integer, got -3; ...`), never in a traceback deep inside the
code that uses it. The schemas check structure and types; checks that need the code's own knowledge
(op names of a genotype, registered passes, tensor offsets against the file size) stay with that code.

Limits (README, Commands): every document nests at most `MAX_DEPTH` levels; `ir.json` is at most
`IR_MAX_BYTES`, `reproduce.json` and a genotype `GENOTYPE_MAX_BYTES`, an alpha history
`HISTORY_MAX_BYTES`, a safetensors header `SAFETENSORS_HEADER_MAX_BYTES` (the format's own limit);
an example input (`InputSpec.example`, batch included) holds at most `MAX_EXAMPLE_ELEMENTS` values.
"""
from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

from compressor.errors import CompressError, ConfigError
from compressor.options import unknown_key_message
from compressor.precision import precision_names

MiB = 1 << 20
MAX_DEPTH = 100  # as for YAML pipelines (compressor.config): no real document nests deeper than ~8
IR_MAX_BYTES = 32 * MiB  # a stage's ir.json: kilobytes usually; prune edits of large models reach ~1 MiB
REPRODUCE_MAX_BYTES = 1 * MiB
GENOTYPE_MAX_BYTES = 1 * MiB  # a genotype is a few hundred bytes; a per-cell one of 50 cells ~20 KB
HISTORY_MAX_BYTES = 64 * MiB  # alpha_history.json: ~6 KB per epoch
SAFETENSORS_HEADER_MAX_BYTES = 100_000_000  # the safetensors format's own MAX_HEADER_SIZE
MAX_EXAMPLE_ELEMENTS = 1 << 28  # 268,435,456 values (1 GiB of float32) in one example input tensor


# ---- reading: bounded JSON ---------------------------------------------------------------------------

# a JSON string literal (brackets inside do not nest); an unterminated one runs to the end of the text, so
# every quote is matched at once and the scan stays linear on crafted input
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*\\?(?:"|\Z)', re.DOTALL)
_BRACKET = re.compile(r"[\[\]{}]")
_UTF16_32_BOMS = (b"\xff\xfe", b"\xfe\xff")  # UTF-32 LE's BOM begins with UTF-16 LE's


def nesting_depth(text: str, limit: int) -> int:
    """How deep the arrays and objects of JSON `text` nest, counted without parsing (so a crafted
    100,000-deep array never reaches the recursive parser); stops counting past `limit`."""
    depth = deepest = 0
    for m in _BRACKET.finditer(_STRING.sub('""', text)):
        if m.group() in "[{":
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > limit:
                    break
        else:
            depth -= 1
    return deepest


def parse_json(data: bytes | str, source: str, what: str, *, max_depth: int = MAX_DEPTH,
               error: type[CompressError] = ConfigError, fix: str = "") -> Any:
    """The JSON value of `data` (UTF-8 bytes, an optional UTF-8 byte-order mark allowed, or text).
    Anything else is `error` in one line naming `source`: another encoding, a binary file, nesting
    deeper than `max_depth`, invalid JSON. `what` names the document ("ir.json", "genotype")."""
    tail = f"; {fix}" if fix else ""
    if isinstance(data, bytes):
        if data.startswith(_UTF16_32_BOMS):
            raise error(f"{source}: the {what} is UTF-16 or UTF-32 text (it starts with a byte-order mark); "
                        f"JSON is read as UTF-8 only: save it as UTF-8{tail}")
        try:
            data = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise error(f"{source}: the {what} is not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset "
                        f"{exc.start}; a binary file?); give a UTF-8 JSON file{tail}") from None
    if nesting_depth(data, max_depth) > max_depth:
        raise error(f"{source}: the {what} nests deeper than {max_depth} levels, the limit for JSON documents; "
                    f"not a document this compiler wrote{tail}")
    try:
        return json.loads(data)
    except json.JSONDecodeError as exc:
        raise error(f"{source}: not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno}){tail}") from None
    except (ValueError, RecursionError) as exc:  # e.g. an integer of more than 4300 digits
        raise error(f"{source}: not valid JSON ({exc}){tail}") from None


def load_json(path: str | Path, what: str, *, max_bytes: int, max_depth: int = MAX_DEPTH,
              error: type[CompressError] = ConfigError, fix: str = "") -> Any:
    """The JSON value of the file `path`, read only when it is at most `max_bytes` long (see
    `parse_json` for what else is refused). Errors are `error`, one line naming the file."""
    path = Path(path)
    tail = f"; {fix}" if fix else ""
    try:
        with open(path, "rb") as f:
            data = f.read(max_bytes + 1)  # one byte more: a file that grew after any stat is still caught
    except OSError as exc:
        raise error(f"cannot read {path}: {exc.strerror or exc}{tail}") from None
    if len(data) > max_bytes:
        raise error(f"{path}: the {what} is larger than {_size(max_bytes)}, the limit for it; not a document "
                    f"this compiler wrote{tail}")
    return parse_json(data, str(path), what, max_depth=max_depth, error=error, fix=fix)


def _size(n: int) -> str:
    return f"{n // MiB} MiB" if n % MiB == 0 else f"{n:,} bytes"


# ---- validating: a small declarative schema ----------------------------------------------------------

class Invalid(Exception):
    """A value that does not fit its schema: where (a field path) and what is wrong with it."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path}: {problem}" if path else problem)
        self.path, self.problem = path, problem


def got(value: Any) -> str:
    """A short rendering of a received value for a message: JSON spelling, at most ~60 characters."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, str):
        text = repr(value)
    elif isinstance(value, (bool, int, float)) or value is None or isinstance(value, (list, tuple, dict)):
        try:
            text = json.dumps(value, default=lambda v: type(v).__name__)
        except (ValueError, RecursionError):
            text = type(value).__name__
    else:
        text = f"{type(value).__name__} {value!r}"
    return text if len(text) <= 60 else text[:57] + "..."


def key_path(path: str, key: str) -> str:
    """`path.key`, or `path["a.b"]` for a key that is not a plain name (tensor names hold dots)."""
    if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_\-]*", key):
        return f"{path}.{key}" if path else key
    return f"{path}[{json.dumps(key)}]"


def _and(words: Sequence[str]) -> str:
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} and {words[-1]}"


class Schema:
    """A node of a schema: `check` raises Invalid (with the field path) when `value` does not fit."""

    description = "a value"

    def check(self, value: Any, path: str) -> None:
        raise NotImplementedError

    def fail(self, value: Any, path: str) -> Invalid:
        return Invalid(path, f"expected {self.description}, got {got(value)}")


class Anything(Schema):
    """Any JSON value (free-form data such as a pass's options or stats)."""

    description = "any value"

    def check(self, value: Any, path: str) -> None:
        pass


ANY = Anything()


class Int(Schema):
    def __init__(self, min: int | None = None, max: int | None = None, description: str | None = None) -> None:
        self.min, self.max = min, max
        self.description = description or (
            "a positive integer" if (min, max) == (1, None) else "a non-negative integer" if (min, max) == (0, None)
            else "an integer" if (min, max) == (None, None) else f"an integer in [{min}, {max}]")

    def check(self, value: Any, path: str) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or (self.min is not None and value < self.min) \
                or (self.max is not None and value > self.max):
            raise self.fail(value, path)


class Number(Schema):
    """A finite number (JSON's NaN and Infinity, which Python's json reads, are refused)."""

    def __init__(self, min: float | None = None, description: str | None = None) -> None:
        self.min = min
        self.description = description or ("a finite number" if min is None else f"a finite number >= {min:g}")

    def check(self, value: Any, path: str) -> None:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.fail(value, path)
        try:
            number = float(value)
        except OverflowError:  # an integer beyond the float range
            number = math.inf
        if not math.isfinite(number) or (self.min is not None and number < self.min):
            raise self.fail(value, path)


class Bool(Schema):
    description = "true or false"

    def check(self, value: Any, path: str) -> None:
        if not isinstance(value, bool):
            raise self.fail(value, path)


class Str(Schema):
    """A string; with `choices`, one of them; with `pattern`, one that matches it in full."""

    def __init__(self, choices: Sequence[str] = (), pattern: str | None = None, description: str | None = None) -> None:
        self.choices, self.pattern = tuple(choices), re.compile(pattern) if pattern else None
        self.description = description or (f"one of {', '.join(repr(c) for c in choices)}" if choices else "a string")

    def check(self, value: Any, path: str) -> None:
        if not isinstance(value, str) or (self.choices and value not in self.choices) \
                or (self.pattern is not None and not self.pattern.fullmatch(value)):
            raise self.fail(value, path)


class Named(Schema):
    """A string naming an entry of a registry that plugins fill, so its names are read when a value is checked."""

    def __init__(self, names: Callable[[], Sequence[str]], what: str) -> None:
        self.names = names
        self.description = f"a registered {what} name"

    def check(self, value: Any, path: str) -> None:
        if not isinstance(value, str) or value not in self.names():
            raise self.fail(value, path)

    def fail(self, value: Any, path: str) -> Invalid:
        return Invalid(path, f"expected one of {', '.join(repr(c) for c in self.names())}, got {got(value)}")


class Nullable(Schema):
    def __init__(self, inner: Schema) -> None:
        self.inner = inner
        self.description = f"{inner.description} or null"

    def check(self, value: Any, path: str) -> None:
        if value is not None:
            self.inner.check(value, path)


def _is_list(value: Any) -> bool:
    """A JSON array, or what Python code passes for one (a tuple, a range): not a string or a mapping."""
    return isinstance(value, Sequence) and not isinstance(value, (str, bytes, bytearray))


class List(Schema):
    def __init__(self, item: Schema = ANY, *, min_len: int = 0, max_len: int | None = None,
                 description: str | None = None) -> None:
        self.item, self.min_len, self.max_len = item, min_len, max_len
        self.description = description or f"a {'non-empty ' if min_len else ''}list, each item {item.description}"

    def check(self, value: Any, path: str) -> None:
        if not _is_list(value) or len(value) < self.min_len or (self.max_len is not None and len(value) > self.max_len):
            raise self.fail(value, path)
        for i, item in enumerate(value):
            self.item.check(item, f"{path}[{i}]")


class Tuple(Schema):
    """A fixed-length list whose items each have their own schema ([op, input_index], [low, high])."""

    def __init__(self, *items: Schema, description: str) -> None:
        self.items, self.description = items, description

    def check(self, value: Any, path: str) -> None:
        if not _is_list(value) or len(value) != len(self.items):
            raise self.fail(value, path)
        for i, (item, schema) in enumerate(zip(value, self.items)):
            schema.check(item, f"{path}[{i}]")


class Record(Schema):
    """A mapping with declared keys, each with its schema; every key is required unless in `optional`.
    An undeclared key is refused (with the closest valid one) unless `extra` gives its schema.
    `noun` names a key in messages ("unknown genotype key 'x'"), `missing` words an absent one."""

    def __init__(self, fields: Mapping[str, Schema], *, optional: Collection[str] = (), extra: Schema | None = None,
                 noun: str = "key", missing: str = "missing key '{key}'", description: str | None = None) -> None:
        self.fields, self.optional, self.extra = dict(fields), frozenset(optional), extra
        self.noun, self.missing = noun, missing
        required = [k for k in self.fields if k not in self.optional]
        self.description = description or f"a mapping with keys {_and(required or list(self.fields))}"

    def check(self, value: Any, path: str) -> None:
        if not isinstance(value, Mapping):
            raise self.fail(value, path)
        for key, item in value.items():
            if not isinstance(key, str):
                raise Invalid(path, f"keys must be strings, got {got(key)}")
            schema = self.fields.get(key, self.extra)
            if schema is None:
                raise Invalid(path, unknown_key_message(key, list(self.fields), self.noun))
            schema.check(item, key_path(path, key))
        for key in self.fields:
            if key not in value and key not in self.optional:
                raise Invalid(path, f"{self.missing.format(key=key)}; expected {self.description}")


class Map(Record):
    """A mapping with string keys and free-form (or uniformly typed) values: meta, options, stats."""

    def __init__(self, values: Schema = ANY, description: str | None = None) -> None:
        super().__init__({}, extra=values, description=description or (
            "a mapping" if values is ANY else f"a mapping, each value {values.description}"))


class Switch(Schema):
    """The schema `choose(value)` picks (by a tag such as a recipe's frontend name, or a key's presence)."""

    def __init__(self, choose: Callable[[Any], Schema], description: str) -> None:
        self.choose, self.description = choose, description

    def check(self, value: Any, path: str) -> None:
        self.choose(value).check(value, path)


class Checked(Schema):
    """`inner`, then a check across its parts: `rule(value)` returns what is wrong, or None."""

    def __init__(self, inner: Schema, rule: Callable[[Any], str | None]) -> None:
        self.inner, self.rule, self.description = inner, rule, inner.description

    def check(self, value: Any, path: str) -> None:
        self.inner.check(value, path)
        problem = self.rule(value)
        if problem is not None:
            raise Invalid(path, problem)


def validate(value: Any, schema: Schema, source: str, *, path: str = "",
             error: type[CompressError] = ConfigError, fix: str = "") -> Any:
    """`value` when it fits `schema`; else `error`: one line, `source: field.path: what is wrong, what
    is valid; fix`. `path` is where `value` sits in its document (e.g. "normal" for a genotype field)."""
    try:
        schema.check(value, path)
    except Invalid as exc:
        where = f"{source}: {exc.path}" if exc.path else source
        raise error(f"{where}: {exc.problem}{f'; {fix}' if fix else ''}") from None
    return value


# ---- the documents -----------------------------------------------------------------------------------

POSITIVE = Int(min=1)
NON_NEGATIVE = Int(min=0)
NAME = Str(pattern=r"[A-Za-z0-9_][A-Za-z0-9_.\-]*", description="a name of letters, digits, '_', '.' and '-'")


def count_elements(shape: Sequence[int | None], batch: int = 1) -> int:
    """How many values a tensor of `shape` holds (a dynamic dimension, null, counts as `batch`)."""
    n = 1
    for d in shape:
        n *= batch if d is None else d
    return n


def _bounded_shape(shape: Sequence[int | None]) -> str | None:
    n = count_elements(shape)
    if n <= MAX_EXAMPLE_ELEMENTS:
        return None
    return (f"{list(shape)} is {n:,} elements at batch 1; an example input holds at most "
            f"{MAX_EXAMPLE_ELEMENTS:,} (1 GiB of float32), so none is allocated for it")


def _ordered_range(pair: Sequence[float]) -> str | None:
    return None if pair[0] < pair[1] else f"low {got(pair[0])} must be below high {got(pair[1])}"


INPUT = Record({
    "name": Str(),
    "shape": Checked(List(Nullable(Int(min=1, description="a positive integer")), min_len=1, max_len=8,
                          description="a list of 1 to 8 dimensions (positive integers; null for a dynamic one)"),
                     _bounded_shape),
    "dtype": Str(choices=("float32", "float16")),
    "value_range": Nullable(Checked(Tuple(Number(), Number(), description="a [low, high] pair of finite numbers"),
                                    _ordered_range)),
})

TASK = Checked(Record({"kind": Str(choices=("classification", "segmentation")), "num_classes": POSITIVE,
                       "ignore_index": Nullable(Int()), "class_names": Nullable(List(Str()))},
                      optional=("ignore_index", "class_names")),
               lambda t: None if t.get("class_names") is None or len(t["class_names"]) == t["num_classes"] else
               f"class_names has {len(t['class_names'])} names for num_classes {t['num_classes']}")

PASS_RECORD = Record({"name": Str(), "options": Map(), "seconds": Number(min=0), "changed": Bool(), "stats": Map()},
                     optional=("stats",))

EDIT = Record({"kind": Str(pattern=r".+", description="a non-empty string")}, extra=ANY,
              description="a mapping with a string 'kind' and its parameters")

# DARTS genotypes (frontends/darts/genotypes.py): the structure; op names and index ranges are checked there.
PAIR = Tuple(Str(description="an op name"), Int(description="an integer input index"),
             description="an [op, input_index] pair such as ['sep_conv_3x3', 1]")
PAIRS = List(PAIR, description="a list of [op, input_index] pairs")
INDICES = List(Int(), description="a list of integer node indices such as [2, 3, 4, 5]")
# a variable-input cell (D-DARTS threshold parsing): the number of pairs of each node, in order
NODE_SIZES = List(Int(), min_len=1, description="a non-empty list of integer node sizes such as [1, 3, 2, 2]")
GENOTYPE = Record({"normal": PAIRS, "normal_concat": INDICES, "reduce": PAIRS, "reduce_concat": INDICES,
                   "normal_nodes": NODE_SIZES, "reduce_nodes": NODE_SIZES},
                  optional=("normal_nodes", "reduce_nodes"), noun="genotype key",
                  missing="missing genotype key '{key}'")
CELL_GENE = Record({"pairs": PAIRS, "concat": INDICES, "nodes": NODE_SIZES}, optional=("nodes",))
CELLS_GENOTYPE = Record({"cells": List(CELL_GENE), "reduce_at": INDICES}, noun="per-cell genotype key")
ANY_GENOTYPE = Switch(lambda v: CELLS_GENOTYPE if isinstance(v, Mapping) and "cells" in v else GENOTYPE,
                      "a genotype mapping (normal, normal_concat, reduce, reduce_concat; or cells, reduce_at)")

SHA256 = Str(pattern=r"[0-9a-f]{64}", description="a sha256 hex digest")
FACTORY = Str(pattern=r"[^:\s]+:[^:\s]+", description="a 'package.module:callable' string")

# What each frontend's `rebuild` reads from its recipe block (frontends/zoo.py, darts/frontend.py, torch.py).
FRONTEND_BLOCKS: dict[str, Record] = {
    "zoo": Record({"name": Str(), "options": Map(), "in_channels": POSITIVE, "num_classes": POSITIVE,
                   "input_hw": List(POSITIVE, min_len=2, max_len=2, description="a [height, width] pair of "
                                                                                "positive integers")}),
    "darts": Record({"name": Str(), "genotype": ANY_GENOTYPE, "task": TASK.inner.fields["kind"],
                     "network": Str(choices=("auto", "cifar", "imagenet", "segmentation")),
                     "in_channels": POSITIVE, "num_classes": POSITIVE, "init_channels": POSITIVE, "layers": POSITIVE,
                     "auxiliary": Bool(), "drop_path_prob": Number(min=0), "seed": Int()},
                    optional=("network", "auxiliary", "drop_path_prob", "seed")),
    "torch": Record({"name": Str(), "factory": FACTORY, "kwargs": Map(), "seed": Int(),
                     "search_path": Nullable(Str())}, optional=("kwargs", "seed", "search_path")),
    "hf": Record({"name": Str(), "path": Str(pattern=r".+", description="a non-empty directory path"),
                  "config_sha256": SHA256, "task": TASK.inner.fields["kind"], "num_labels": POSITIVE}),
}
# a frontend registered by someone else: its name, and its own keys for its own rebuild to check
OTHER_FRONTEND = Record({"name": Str()}, extra=ANY)



def _frontend_block(block: Any) -> Record:
    name = block.get("name") if isinstance(block, Mapping) else None
    return FRONTEND_BLOCKS.get(name, OTHER_FRONTEND) if isinstance(name, str) else OTHER_FRONTEND


FRONTEND_BLOCK = Switch(_frontend_block, "a mapping with the frontend's 'name' and what its rebuild reads")

RECIPE = Record({"frontend": FRONTEND_BLOCK, "edits": List(EDIT)}, optional=("edits",))

IR_DOCUMENT = Record({
    "format": Str(),
    "inputs": List(INPUT, min_len=1, max_len=64),
    "task": TASK,
    "precision": Named(precision_names, "precision"),
    "meta": Map(),
    "history": List(PASS_RECORD),
    "recipe": Nullable(RECIPE),
    "weights": Record({"file": Str(), "sha256": SHA256}),
}, optional=("meta", "history", "weights"))

# safetensors: {name: {dtype, shape, data_offsets}, "__metadata__": {str: str}}
SAFETENSORS_ITEMSIZE = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U64": 8,
                        "U32": 4, "U16": 2, "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}
TENSOR_ENTRY = Record({"dtype": Str(choices=tuple(SAFETENSORS_ITEMSIZE)),
                       "shape": List(NON_NEGATIVE, max_len=16, description="a list of non-negative integers"),
                       "data_offsets": Tuple(NON_NEGATIVE, NON_NEGATIVE,
                                             description="a [begin, end] pair of non-negative integers")})
SAFETENSORS_HEADER = Map(TENSOR_ENTRY, description="a mapping of tensor names to {dtype, shape, data_offsets}")
SAFETENSORS_METADATA = Map(Str(), description="a mapping of strings")

REPRODUCER = Record({
    "format": Int(), "index": NON_NEGATIVE, "kind": Str(choices=("model", "pass", "export")),
    "step": Str(pattern=r".+", description="a non-empty string"), "label": Str(), "options": Map(), "error": Str(),
    "seed": Int(), "device": Str(), "data": Nullable(Record({"name": Str()}, extra=ANY)), "input": Bool(),
    "refs": List(NAME), "trust": Nullable(Record({"frontend": Nullable(Str()), "factory": Nullable(Str())})),
    "evaluate": Nullable(Map()),
}, optional=("index", "label", "options", "error", "seed", "device", "data", "input", "refs", "trust", "evaluate"))


def alpha_history_entry(num_edges: int) -> Record:
    """One epoch of `alpha_history.json` (frontends/darts/search.py `_history_entry`): per edge, the α
    weights and the op names they weigh; search statistics beside them are free-form numbers."""
    rows = List(List(Number()), min_len=num_edges, max_len=num_edges,
                description=f"a list of {num_edges} rows of finite weights (one per edge)")
    names = List(List(Str()), min_len=num_edges, max_len=num_edges,
                 description=f"a list of {num_edges} lists of op names (one per edge)")
    edge = List(Number(), min_len=num_edges, max_len=num_edges, description=f"a list of {num_edges} finite weights")
    return Record({"epoch": Int(), "stage": Int(), "layers": Int(), "normal": rows, "reduce": rows,
                   "primitives_normal": names, "primitives_reduce": names, "edge_normal": edge, "edge_reduce": edge,
                   "genotype": ANY_GENOTYPE, "distance_prev": Nullable(Number()), "unchanged": Nullable(Bool())},
                  optional=("epoch", "stage", "layers", "edge_normal", "edge_reduce", "genotype", "distance_prev",
                            "unchanged"),
                  extra=ANY, missing="missing '{key}'")


__all__ = ["ANY", "ANY_GENOTYPE", "Bool", "Checked", "GENOTYPE", "GENOTYPE_MAX_BYTES", "HISTORY_MAX_BYTES",
           "INDICES", "INPUT", "IR_DOCUMENT", "IR_MAX_BYTES", "Int", "Invalid", "List", "MAX_DEPTH",
           "MAX_EXAMPLE_ELEMENTS", "Map", "NODE_SIZES", "Nullable", "Number", "PAIRS", "REPRODUCER",
           "REPRODUCE_MAX_BYTES", "Record", "SAFETENSORS_HEADER", "SAFETENSORS_HEADER_MAX_BYTES",
           "SAFETENSORS_ITEMSIZE", "SAFETENSORS_METADATA", "Schema", "Str", "Switch", "Tuple", "alpha_history_entry",
           "count_elements", "load_json", "parse_json", "validate"]
