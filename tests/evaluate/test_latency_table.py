"""The per-block latency table: its key, reuse of stored entries, a damaged file, the predictor, rank correlation."""
from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass

import pytest
import torch.nn as nn

from compressor.errors import ConfigError
from compressor.evaluate.latency_table import CALL, LatencyTable, mape, spearman, table_context, table_key

VERSIONS = {"compressor": "0", "torch": "0", "onnx": "0", "onnxruntime": "0"}


@dataclass(frozen=True)
class Conf:
    cin: int
    cout: int
    in_hw: tuple[int, int] = (8, 8)

    def key(self) -> tuple:
        return (self.cin, self.cout, self.in_hw)


def make(cfg: Conf) -> nn.Module:
    return nn.Conv2d(cfg.cin, cfg.cout, 1)


class Counter:
    """A fake measurement: ms = output channels, and a record of every module measured."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def __call__(self, module: nn.Module, shapes: list[tuple]) -> float:
        self.calls.append(tuple(shapes))
        return float(module.out_channels) if isinstance(module, nn.Conv2d) else 0.5


def context(**kw):
    args = {"backend": "onnxruntime-cpu", "input_shape": (3, 8, 8), "batch": 1, "threads": 1, "device": "cpu",
            "versions": VERSIONS, **kw}
    return table_context(**args)


def load(root, configs, counter, **kw):
    ctx = context(**kw)
    return LatencyTable.load_or_measure(root, ctx["backend"], ctx["input_shape"], ctx["batch"], configs, make,
                                        measure=counter, context=ctx)


def test_key_changes_with_batch_input_size_backend_threads_versions():
    base = table_key(context())
    assert base == table_key(context())
    others = [context(batch=2), context(input_shape=(3, 16, 16)), context(backend="onnxruntime-cuda"),
              context(threads=2), context(device="other"), context(versions={**VERSIONS, "onnxruntime": "1"})]
    keys = {table_key(c) for c in others}
    assert base not in keys and len(keys) == len(others)
    assert table_key(context(backend="onnxruntime")) == base  # the alias is the same backend


@pytest.mark.parametrize("backend", ["torch-cpu", "tensorrt", "onnxrt"])
def test_unsupported_backend_is_one_line(backend):
    with pytest.raises(ConfigError) as exc:
        context(backend=backend)
    assert "\n" not in str(exc.value) and "onnxruntime-cpu" in str(exc.value)


def test_reuse_measures_only_missing_parts(tmp_path):
    a, b, c = Conf(3, 4), Conf(4, 8), Conf(8, 16)
    first = Counter()
    table = load(tmp_path, [a, b, b], first)
    assert len(first.calls) == 3 and table.measured == 3  # the call floor, a, b (b once)
    assert table.path.parent == tmp_path / ".tables" and table.path.name == f"latency-{table.key}.json"
    second = Counter()
    again = load(tmp_path, [a, b, c], second)
    assert second.calls == [((8, 8, 8),)] and again.measured == 1  # c only
    third = Counter()
    assert load(tmp_path, [c, a], third).measured == 0 and third.calls == []
    # another batch is another table
    assert load(tmp_path, [a], Counter(), batch=2).key != table.key


def test_predict_sums_entries_less_the_call_floor(tmp_path):
    a, b = Conf(3, 4), Conf(4, 8)
    table = load(tmp_path, [a, b], Counter())
    assert table.entries[CALL] == 0.5
    assert table.predict([a, b]) == pytest.approx(4 + 8 - 0.5)
    assert table.predict([a]) == pytest.approx(4)
    with pytest.raises(ConfigError, match="no entry"):
        table.predict([Conf(5, 5)])


@pytest.mark.parametrize("damage", ["{not json", "[]", "edit", "nan"])
def test_damaged_table_is_one_warning_and_measured_again(tmp_path, caplog, damage):
    a = Conf(3, 4)
    table = load(tmp_path, [a], Counter())
    doc = json.loads(table.path.read_text())
    if damage == "edit":
        doc["entries"][next(iter(doc["entries"]))] = 1e-9
        text = json.dumps(doc)
    elif damage == "nan":
        doc["entries"]["x"] = float("nan")
        text = json.dumps(doc)
    else:
        text = damage
    table.path.write_text(text)
    counter = Counter()
    with caplog.at_level(logging.WARNING, logger="compressor.evaluate.latency_table"):
        again = load(tmp_path, [a], counter)
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "damaged" in warnings[0].getMessage()
    assert len(counter.calls) == 2 and again.predict([a]) == 4
    assert json.loads(table.path.read_text())["entries"] == again.entries  # stored again, intact
    caplog.clear()
    assert load(tmp_path, [a], Counter()).measured == 0 and not caplog.records


def test_spearman_against_hand_examples():
    assert spearman([1, 2, 3, 4], [10, 20, 40, 30]) == pytest.approx(0.8)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # ties averaged: ranks [1, 2.5, 2.5, 4] and [1, 2, 3, 4] -> Pearson of the ranks
    assert spearman([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(4.5 / math.sqrt(4.5 * 5))
    assert math.isnan(spearman([1, 1, 1], [1, 2, 3]))
    with pytest.raises(ValueError):
        spearman([1], [1])


def test_mape():
    assert mape([110, 90], [100, 100]) == pytest.approx(10.0)
    with pytest.raises(ValueError):
        mape([1], [0])
