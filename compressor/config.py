"""YAML → plain data with line numbers, and `--set key=value` overrides.

Mappings loaded here are `LineDict`s: dicts that remember the file and line of every key, so
that validation errors anywhere downstream can name `pipeline.yaml:12`.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Sequence

import yaml
from yaml.nodes import MappingNode, Node, SequenceNode

from compressor.errors import ConfigError

# A pipeline is a few dozen values a few levels deep; these limits refuse hostile or broken
# documents (deep nesting, alias "billion laughs" bombs) in milliseconds instead of hanging.
MAX_DEPTH = 100
MAX_NODES = 100_000
MERGE_TAG = "tag:yaml.org,2002:merge"


class LineDict(dict):
    """A dict that knows where (file:line) it and each of its keys came from."""

    def __init__(self, *args: Any, source: str = "", line: int | None = None, key_lines: dict | None = None,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.source = source
        self.line = line
        self.key_lines = dict(key_lines or {})
        self.overrides: dict[Any, str] = {}  # key -> "--set ..." that gave it its value

    def location(self, key: str | None = None) -> str:
        if key is not None and key in self.overrides:
            return self.overrides[key]
        line = self.key_lines.get(key, self.line) if key is not None else self.line
        if not self.source:
            return ""
        return f"{self.source}:{line}" if line is not None else self.source

    def without(self, *keys: str) -> "LineDict":
        """A copy without `keys` that keeps every location (file lines and --set overrides)."""
        out = LineDict({k: v for k, v in self.items() if k not in keys}, source=self.source, line=self.line,
                       key_lines=self.key_lines)
        out.overrides = {k: v for k, v in self.overrides.items() if k not in keys}
        return out


class LineList(list):
    def __init__(self, *args: Any, source: str = "", line: int | None = None, item_lines: list | None = None) -> None:
        super().__init__(*args)
        self.source = source
        self.line = line
        self.item_lines = list(item_lines or [])
        self.overrides: dict[int, str] = {}  # index -> "--set ..." that gave it its value

    def location(self, index: int | None = None) -> str:
        if index is not None and index in self.overrides:
            return self.overrides[index]
        line = self.line
        if index is not None and 0 <= index < len(self.item_lines):
            line = self.item_lines[index]
        if not self.source:
            return ""
        return f"{self.source}:{line}" if line is not None else self.source


def _check_size(root: Node, source: str) -> None:
    """Refuse a composed document that, with every alias expanded, is deeper than MAX_DEPTH or holds
    more than MAX_NODES nodes, or whose aliases form a cycle. Each node is measured once (memoized),
    so a "billion laughs" document is refused after a few thousand steps, never expanded."""
    measured: dict[int, tuple[int, int]] = {}  # id(node) -> (nodes, height), aliases expanded
    active: set[int] = set()

    def where(node: Node) -> str:
        return f"{source}:{node.start_mark.line + 1}"

    def too_deep(node: Node) -> ConfigError:
        return ConfigError(f"{where(node)}: nested deeper than {MAX_DEPTH} levels (aliases expanded); "
                           f"a pipeline needs a few levels: flatten the document")

    def measure(node: Node, depth: int) -> tuple[int, int]:
        if depth > MAX_DEPTH:
            raise too_deep(node)
        known = measured.get(id(node))
        if known is None:
            if id(node) in active:
                raise ConfigError(f"{where(node)}: an alias refers to a node that contains it (a cycle); "
                                  f"point aliases only at earlier, finished anchors")
            active.add(id(node))
            if isinstance(node, SequenceNode):
                children = list(node.value)
            elif isinstance(node, MappingNode):
                children = [n for pair in node.value for n in pair]
            else:
                children = []
            total, height = 1, 1
            for child in children:
                n, h = measure(child, depth + 1)
                total, height = total + n, max(height, h + 1)
                if total > MAX_NODES:
                    raise ConfigError(f"{where(node)}: the document expands to more than {MAX_NODES:,} values "
                                      f"(aliases expanded); a pipeline needs a few hundred: use fewer aliases")
            active.discard(id(node))
            measured[id(node)] = known = (total, height)
        if depth + known[1] - 1 > MAX_DEPTH:  # an alias to a tall node, reached at this depth
            raise too_deep(node)
        return known

    measure(root, 1)


def _make_loader(source: str, lines: bool = True) -> type:
    """A SafeLoader that builds LineDict / LineList (with file lines unless `lines` is False), accepts
    merge keys (`<<: *defaults`), refuses non-string keys and duplicate keys, and enforces
    MAX_DEPTH / MAX_NODES."""

    class Loader(yaml.SafeLoader):
        _depth = 0

        def compose_node(self, parent: Node | None, index: Any) -> Node:
            # the composer recurses once per level: stop before Python's recursion limit does
            self._depth += 1
            try:
                if self._depth > MAX_DEPTH:
                    mark = self.peek_event().start_mark
                    raise ConfigError(f"{source}:{mark.line + 1}: nested deeper than {MAX_DEPTH} levels; "
                                      f"a pipeline needs a few levels: flatten the document")
                return super().compose_node(parent, index)
            finally:
                self._depth -= 1

        def construct_document(self, node: Node) -> Any:
            _check_size(node, source)
            self.own_keys: dict[int, set[int]] = {}
            return super().construct_document(node)

        def flatten_mapping(self, node: MappingNode) -> None:
            # remember a mapping's own keys before merging into it: they may override merged ones
            self.own_keys.setdefault(id(node), {id(k) for k, _ in node.value if k.tag != MERGE_TAG})
            super().flatten_mapping(node)

    def line_of(node: Node) -> int | None:
        return node.start_mark.line + 1 if lines else None

    def construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> LineDict:
        loader.flatten_mapping(node)  # merged pairs first, then the mapping's own
        own = loader.own_keys[id(node)]
        key_lines: dict[Any, int | None] = {}
        own_lines: dict[Any, int | None] = {}
        out = LineDict(source=source, line=line_of(node))
        for key_node, value_node in node.value:
            where = f"{source}:{key_node.start_mark.line + 1}"
            if not isinstance(key_node, yaml.ScalarNode):
                kind = "list" if isinstance(key_node, SequenceNode) else "mapping"
                raise ConfigError(f"{where}: a mapping key must be a string, got a {kind} (a complex '? ' key); "
                                  f"use a plain name such as 'name:'")
            key = loader.construct_object(key_node, deep=True)
            if not isinstance(key, str):
                raise ConfigError(f"{where}: a mapping key must be a string, got {key!r} "
                                  f"({type(key).__name__}); quote it: '{key_node.value}':")
            if id(key_node) in own:
                if key in own_lines:
                    raise ConfigError(f"{where}: duplicate key '{key}' (first at line {own_lines[key]}); "
                                      f"keep one of them")
                own_lines[key] = key_node.start_mark.line + 1
            elif key in key_lines:  # two merged mappings hold the key: the first one listed wins
                continue
            key_lines[key] = line_of(key_node)
            out[key] = loader.construct_object(value_node, deep=True)
        out.key_lines = {k: v for k, v in key_lines.items() if v is not None}
        return out

    def construct_sequence(loader: yaml.SafeLoader, node: yaml.SequenceNode) -> LineList:
        items = [loader.construct_object(n, deep=True) for n in node.value]
        return LineList(items, source=source, line=line_of(node),
                        item_lines=[line_of(n) for n in node.value] if lines else [])

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


def load_yaml(path: str | Path, overrides: Sequence[str] = (), *, what: str = "pipeline",
              example: str = "samples/quickstart.yaml") -> Any:
    """The YAML file at `path` (a pipeline, a sweep, a search file: `what`, with `example` named when the file
    is missing), its mappings LineDicts that name `file:line`, with the `--set KEY=VALUE` `overrides` applied
    when the document is a mapping (otherwise the caller's own check says what it should be)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what} file {path} does not exist; pass the path to a {what} YAML "
                          f"(see {example})")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None
    doc = load_yaml_text(text, str(path))
    if isinstance(doc, dict):
        for override in overrides:
            apply_override(doc, override)
    return doc


def _load_value(text: str, source: str) -> Any:
    """A --set value as YAML, under the same limits as a file; text that is not YAML stays a string."""
    try:
        return yaml.load(text, Loader=_make_loader(source, lines=False))  # noqa: S506 - SafeLoader subclass
    except yaml.YAMLError:
        return text


def parse_override(text: str) -> tuple[list[str], Any]:
    """`a.b[2].c=value` -> (["a", "b", "2", "c"], value parsed as YAML). Values that are mappings or
    lists are LineDicts / LineLists whose location is `--set TEXT`, so errors blame the override."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected key=value, e.g. --set passes.prune-l1.ratio=0.4")
    key, value = text.split("=", 1)
    key = re.sub(r"\[(-?\d+)\]", r".\1", key.strip())  # passes[3].epochs -> passes.3.epochs
    path = [p for p in key.split(".") if p]
    if not path:
        raise ConfigError(f"--set {text!r}: empty key; e.g. --set model.train.epochs=2")
    parsed = _load_value(value, _where(text)) if value.strip() else ""
    return path, parsed


def _where(text: str, who: str = "--set") -> str:
    """How errors name a --set (shortened: a value can be long)."""
    return f"{who} {text if len(text) <= 100 else text[:97] + '...'}"


def _entry_name(entry: Any) -> str | None:
    if isinstance(entry, str):
        return entry
    if isinstance(entry, dict) and len(entry) == 1:
        return next(iter(entry))
    return None


def _list_index(node: list, path: list[str], i: int, text: str, who: str = "--set") -> tuple[int, bool]:
    """The index that path[i] names in the list `node`: a number, or the name of exactly one entry.
    Returns (index, whether it was named)."""
    seg = path[i]
    if re.fullmatch(r"-?\d+", seg):
        idx = int(seg)
        if not -len(node) <= idx < len(node):
            raise ConfigError(f"{who} {text}: index {idx} out of range (the list has {len(node)} entries)")
        return idx % len(node), False
    names = [_entry_name(e) for e in node]
    hits = [j for j, name in enumerate(names) if name == seg]
    if not hits:
        raise ConfigError(f"{who} {text}: no entry '{seg}' here; entries: {', '.join(map(str, names))}")
    if len(hits) > 1:
        where = ".".join(path[:i]) or "the list"
        found = [f"{where}[{j}]" for j in hits]
        listing = ", ".join(found[:-1]) + f" and {found[-1]}"
        example = ".".join([*path[:i], str(hits[-1]), *path[i + 1:]]) + "=" + text.split("=", 1)[1]
        both = "both" if len(hits) == 2 else "all"
        raise ConfigError(f"{who} {text}: '{seg}' is ambiguous, {listing} are {both} '{seg}'; pick one by "
                          f"index, e.g. {who} {example}")
    return hits[0], True


def _set(node: Any, key: Any, value: Any, where: str) -> None:
    """node[key] = value, remembering that `where` (the --set) gave the value: errors in it blame the
    --set, not the file line of the value it replaced."""
    node[key] = value
    if isinstance(node, (LineDict, LineList)):
        node.overrides[key] = where


def apply_override(doc: Any, text: str) -> None:
    """Set a dotted path in the loaded document. In lists (passes, export) a segment is an index
    or the name of an entry (`passes.prune-l1.ratio=0.4`, `passes.3.epochs=1`, `passes[3].epochs=1`);
    a name that several entries share is an error. The value is parsed as YAML."""
    path, value = parse_override(text)
    set_path(doc, path, value, text)


def set_path(doc: Any, path: list[str], value: Any, text: str, who: str = "--set") -> None:
    """Set `path` (segments as `apply_override` reads them) to `value` in `doc`; errors name `who text`
    (a --set, or a sweep's space key)."""
    where = _where(text, who)
    node = doc
    for i, seg in enumerate(path):
        last = i == len(path) - 1
        if isinstance(node, list):
            idx, by_name = _list_index(node, path, i, text, who)
            if last:
                _set(node, idx, value, where)
                return
            entry = node[idx]
            if isinstance(entry, str):  # bare "fp16" -> {"fp16": {}} so options can be set on it
                entry = node[idx] = LineDict({entry: LineDict(source=where)}, source=where)
            name = _entry_name(entry)
            # by name, or by index without the name after it (passes.3.epochs): into the entry's options;
            # by index with the name after it (passes.3.finetune.epochs): the name is the next segment
            if isinstance(entry, dict) and name is not None and (by_name or path[i + 1] != name):
                if entry[name] is None:
                    entry[name] = LineDict(source=where)
                node = entry[name]
            else:
                node = entry
        elif isinstance(node, dict):
            if last:
                _set(node, seg, value, where)
                return
            if node.get(seg) is None:
                node[seg] = LineDict(source=where)
            node = node[seg]
        else:
            raise ConfigError(f"{who} {text}: '{'.'.join(path[:i])}' is not a mapping or list")
