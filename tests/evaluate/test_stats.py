"""Model statistics: parameter counts, MACs, the per-module table, file bytes."""
from __future__ import annotations

import logging

import pytest
import torch
from torch import nn

from compressor.evaluate.stats import count_macs, count_params, file_bytes, module_table


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.token = nn.Parameter(torch.zeros(5))  # a parameter on a container
        self.body = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.BatchNorm2d(4))
        self.head = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x).mean((2, 3)))


def test_count_params_by_hand() -> None:
    net = Net()
    expected = 5 + (4 * 3 * 3 * 3 + 4) + (4 + 4) + (4 * 2 + 2)
    assert count_params(net) == expected
    shared = nn.Sequential(net.head, net.head)
    assert count_params(shared) == 10  # a shared layer counts once


def test_count_macs_conv_formula() -> None:
    cin, cout, k, h, w = 3, 8, 3, 10, 12
    conv = nn.Conv2d(cin, cout, k, padding=1, bias=False)
    macs = count_macs(conv, (torch.randn(1, cin, h, w),))
    assert macs == cout * cin * k * k * h * w


def test_count_macs_half_module_restores_mode_and_batch_scales() -> None:
    conv = nn.Conv2d(2, 4, 3, padding=1).half().train()
    macs = count_macs(conv, (torch.randn(2, 2, 5, 5).half(),))
    assert macs == 2 * 4 * 2 * 9 * 25
    assert conv.training and conv.weight.dtype == torch.float16


def test_count_macs_failure_returns_none(caplog) -> None:
    with caplog.at_level(logging.WARNING):
        assert count_macs(nn.Linear(3, 2), (torch.randn(1, 5),)) is None
    assert "could not count MACs" in caplog.text


def test_module_table_lists_modules_and_total() -> None:
    table = module_table(Net())
    for name in ("(root)", "body.0", "body.2", "head", "Conv2d", "Linear", "total"):
        assert name in table
    assert "body.1" not in table  # ReLU has no parameters
    total = table.splitlines()[-1].split()
    assert total[0] == "total" and total[1] == f"{count_params(Net()):,}"
    assert total[2] == f"{count_params(Net()) * 4:,}"


def test_file_bytes(tmp_path) -> None:
    (tmp_path / "a").write_bytes(b"x" * 10)
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "b").write_bytes(b"x" * 7)
    assert file_bytes(tmp_path / "a", tmp_path / "d") == 17
    assert file_bytes() == 0
    with pytest.raises(FileNotFoundError):
        file_bytes(tmp_path / "missing")
