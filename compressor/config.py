"""YAML → plain data with line numbers, and `--set key=value` overrides.

Mappings loaded here are `LineDict`s: dicts that remember the file and line of every key, so
that validation errors anywhere downstream can name `pipeline.yaml:12`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from compressor.errors import ConfigError


class LineDict(dict):
    """A dict that knows where (file:line) it and each of its keys came from."""

    def __init__(self, *args: Any, source: str = "", line: int | None = None, key_lines: dict | None = None,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.source = source
        self.line = line
        self.key_lines = dict(key_lines or {})

    def location(self, key: str | None = None) -> str:
        line = self.key_lines.get(key, self.line) if key is not None else self.line
        if not self.source:
            return ""
        return f"{self.source}:{line}" if line is not None else self.source


class LineList(list):
    def __init__(self, *args: Any, source: str = "", line: int | None = None, item_lines: list | None = None) -> None:
        super().__init__(*args)
        self.source = source
        self.line = line
        self.item_lines = list(item_lines or [])

    def location(self, index: int | None = None) -> str:
        line = self.line
        if index is not None and 0 <= index < len(self.item_lines):
            line = self.item_lines[index]
        if not self.source:
            return ""
        return f"{self.source}:{line}" if line is not None else self.source


def _make_loader(source: str) -> type:
    class Loader(yaml.SafeLoader):
        pass

    def construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> LineDict:
        key_lines: dict[Any, int] = {}
        out = LineDict(source=source, line=node.start_mark.line + 1)
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            if key in key_lines:
                raise ConfigError(f"{source}:{key_node.start_mark.line + 1}: duplicate key '{key}' "
                                  f"(first at line {key_lines[key]}); keep one of them")
            key_lines[key] = key_node.start_mark.line + 1
            out[key] = loader.construct_object(value_node, deep=True)
        out.key_lines = key_lines
        return out

    def construct_sequence(loader: yaml.SafeLoader, node: yaml.SequenceNode) -> LineList:
        items = [loader.construct_object(n, deep=True) for n in node.value]
        return LineList(items, source=source, line=node.start_mark.line + 1,
                        item_lines=[n.start_mark.line + 1 for n in node.value])

    Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, construct_mapping)
    Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, construct_sequence)
    return Loader


def load_yaml_text(text: str, source: str) -> Any:
    try:
        return yaml.load(text, Loader=_make_loader(source))  # noqa: S506 - SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{source}:{mark.line + 1}" if mark else source
        problem = exc.problem or exc.context or "malformed YAML"
        raise ConfigError(f"{where}: malformed YAML: {problem}; check indentation and colons") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: malformed YAML: {exc}") from None


def load_yaml(path: str | Path) -> Any:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"pipeline file {path} does not exist; pass the path to a pipeline YAML "
                          f"(see samples/quickstart.yaml)")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None
    return load_yaml_text(text, str(path))


def parse_override(text: str) -> tuple[list[str], Any]:
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected key=value, e.g. --set passes.prune-l1.ratio=0.4")
    key, value = text.split("=", 1)
    path = [p for p in key.strip().split(".") if p]
    if not path:
        raise ConfigError(f"--set {text!r}: empty key; e.g. --set model.train.epochs=2")
    try:
        parsed = yaml.safe_load(value) if value.strip() else ""
    except yaml.YAMLError:
        parsed = value
    return path, parsed


def _entry_name(entry: Any) -> str | None:
    if isinstance(entry, str):
        return entry
    if isinstance(entry, dict) and len(entry) == 1:
        return next(iter(entry))
    return None


def apply_override(doc: Any, text: str) -> None:
    """Set a dotted path in the loaded document. In lists (passes, export) a segment is an index
    or the name of an entry (`passes.prune-l1.ratio=0.4`); the value is parsed as YAML."""
    path, value = parse_override(text)
    node = doc
    for i, seg in enumerate(path):
        last = i == len(path) - 1
        if isinstance(node, list):
            idx = None
            if seg.lstrip("-").isdigit():
                idx = int(seg)
                if not -len(node) <= idx < len(node):
                    raise ConfigError(f"--set {text}: index {idx} out of range (the list has {len(node)} entries)")
            else:
                names = [_entry_name(e) for e in node]
                if seg not in names:
                    raise ConfigError(f"--set {text}: no entry '{seg}' here; entries: {', '.join(map(str, names))}")
                idx = names.index(seg)
            if last:
                node[idx] = value
                return
            entry = node[idx]
            if isinstance(entry, str):  # bare "fp16" → {"fp16": {}} so options can be set on it
                entry = node[idx] = LineDict({entry: LineDict()})
            if _entry_name(entry) == seg and isinstance(entry, dict):
                inner = entry[seg]
                if inner is None:
                    inner = entry[seg] = LineDict()
                node = inner
            else:
                node = entry
        elif isinstance(node, dict):
            if last:
                node[seg] = value
                return
            if node.get(seg) is None:
                node[seg] = LineDict()
            node = node[seg]
        else:
            raise ConfigError(f"--set {text}: '{'.'.join(path[:i])}' is not a mapping or list")
