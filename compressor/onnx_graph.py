"""Helpers on exported ONNX graphs that the exporters and the precision modules share: which module a node
came from (`node_scopes`, `legacy_paths`), naming the nodes of given modules so that the names survive
onnxsim (`tag_layer_nodes`, `missing_layers`), the graph's opset, and silencing the exporters' output."""
from __future__ import annotations

import ast
import contextlib
import io
import logging
import warnings
from typing import Any, Iterator

log = logging.getLogger(__name__)

CHATTY_LOGGERS = ("torch.onnx", "torch.export", "torch._export", "torch._dynamo", "torch.fx",
                  "onnxscript", "onnx_ir", "onnxsim")


@contextlib.contextmanager
def quiet() -> Iterator[io.StringIO]:
    """Silence the exporters' stdout/stderr, warnings and log lines; what they printed goes to the debug log.

    (torch.export prints whole graphs to stderr when it fails; onnxsim prints its checks to stdout.)
    """
    buf = io.StringIO()
    loggers = [logging.getLogger(name) for name in CHATTY_LOGGERS]
    levels = [lg.level for lg in loggers]
    try:
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        with warnings.catch_warnings(), contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
            warnings.simplefilter("ignore")
            yield buf
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)
        if buf.getvalue().strip():
            log.debug("suppressed exporter output:\n%s", buf.getvalue())


def default_opset(model: Any) -> int | None:
    """The default-domain ("" or "ai.onnx") opset of a ModelProto, or None."""
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return int(imp.version)
    return None


def node_scopes(node: Any) -> list[str]:
    """Module names a node came from: the dynamo exporter's `pkg.torch.onnx.name_scopes` metadata,
    or the legacy exporter's node name (`/stem/stem.0/Conv`)."""
    for prop in node.metadata_props:
        if prop.key == "pkg.torch.onnx.name_scopes":
            try:
                return [str(x) for x in ast.literal_eval(prop.value)]
            except (ValueError, SyntaxError):
                break
    return [part for part in node.name.split("/") if part]


def legacy_paths(name: str) -> list[str]:
    """The module paths in a legacy (TorchScript) exporter node name, outermost first. Its components are
    each module's name relative to its parent, a container's child written `<attr>.<index>`:
    `/cells.0/preprocess0/op/op.1/Conv` → cells.0, cells.0.preprocess0, cells.0.preprocess0.op,
    cells.0.preprocess0.op.1."""
    parts = [p for p in name.split("/") if p][:-1]
    out: list[str] = []
    path, last = "", ""
    for part in parts:
        if last and part.startswith(last + "."):
            path += part[len(last):]  # `op.1` under `op`: the child index
        else:
            path = f"{path}.{part}" if path else part
        last = part.split(".")[0]
        out.append(path)
    return out


def tag_layer_nodes(model: Any, layers: list[str], prefix: str, op_types: tuple[str, ...]) -> dict[str, list[str]]:
    """Rename the nodes of type `op_types` each layer (module path) produced to `<prefix><layer>` (`#k` for its
    k-th further node: a layer called twice), from the exporters' name scopes; returns {layer: [node names]}."""
    wanted = set(layers)
    found: dict[str, list[str]] = {}
    for node in model.graph.node:
        if node.op_type not in op_types:
            continue
        scopes = node_scopes(node) + legacy_paths(node.name)
        owner = next((s for s in reversed(scopes) if s in wanted), None)
        if owner is None:
            continue
        names = found.setdefault(owner, [])
        node.name = prefix + owner + (f"#{len(names)}" if names else "")
        names.append(node.name)
    return found


def tagged_nodes(model: Any, prefix: str) -> dict[str, list[Any]]:
    """{layer: its nodes} of the nodes `tag_layer_nodes` named with `prefix`."""
    out: dict[str, list[Any]] = {}
    for node in model.graph.node:
        if node.name.startswith(prefix):
            out.setdefault(node.name[len(prefix):].split("#")[0], []).append(node)
    return out


def missing_layers(model: Any, layers: list[str], prefix: str) -> list[str]:
    """Layers none of whose nodes carries its `<prefix>` name any more (onnxsim merged or renamed them)."""
    have = tagged_nodes(model, prefix)
    return [layer for layer in layers if layer not in have]
