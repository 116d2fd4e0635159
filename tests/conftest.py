"""Shared fixtures: tiny pipelines and IRs that run in seconds on 2 CPU cores."""
from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import torch

TINY_PIPELINE = textwrap.dedent("""\
    name: tiny
    seed: 0
    data:
      name: insar-synthetic
      n_train: 48
      n_val: 16
      n_test: 16
      size: 32
    model:
      frontend: zoo
      model: seg-cnn
      width: 4
      train:
        epochs: 1
        batch_size: 16
    passes:
      - prune-l1:
          ratio: 0.5
      - finetune:
          epochs: 1
          batch_size: 16
      - fp16
    export:
      - onnx
    evaluate:
      batch_size: 16
      latency:
        warmup: 1
        iters: 3
    """)


@pytest.fixture
def tiny_yaml(tmp_path: Path) -> Path:
    p = tmp_path / "tiny.yaml"
    p.write_text(TINY_PIPELINE)
    return p


@pytest.fixture
def seg_ir():
    from compressor.frontend import input_spec_from, lower
    from compressor.frontends.zoo import SegCNN
    from compressor.ir import TaskSpec

    torch.manual_seed(0)
    recipe = {"name": "zoo", "options": {"model": "seg-cnn", "width": 8}, "in_channels": 2, "num_classes": 1,
              "input_hw": [32, 32]}
    return lower(SegCNN(2, 8), [input_spec_from((2, 32, 32), (-3.1416, 3.1416))], TaskSpec("segmentation", 1),
                 recipe=recipe)


@pytest.fixture
def cls_ir():
    from compressor.frontend import input_spec_from, lower
    from compressor.frontends.zoo import ClsCNN
    from compressor.ir import TaskSpec

    torch.manual_seed(0)
    recipe = {"name": "zoo", "options": {"model": "cls-cnn", "width": 8}, "in_channels": 1, "num_classes": 10,
              "input_hw": [8, 8]}
    return lower(ClsCNN(1, 10, 8), [input_spec_from((1, 8, 8), (0.0, 1.0))], TaskSpec("classification", 10),
                 recipe=recipe)


# Small datasets the DARTS tests share (built once per test module; a module may define its own).
@pytest.fixture(scope="module")
def digits():
    from compressor.data import build_data

    return build_data("digits", {})


@pytest.fixture(scope="module")
def insar():
    from compressor.data import build_data

    return build_data("insar-synthetic", {"n_train": 16, "n_val": 8, "n_test": 8, "size": 16})


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch intra-op thread for a test module of tiny models (`pytestmark = pytest.mark.usefixtures(
    "one_torch_thread")`): as fast alone, and much faster on 2 busy shared cores (Swin's ONNX exports: 7 s + 6 s
    instead of 12 s + 10 s)."""
    was = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(was)
