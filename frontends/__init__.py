"""Frontends: produce a model and lower it to the IR. Importing this package registers them."""
from compressor.frontends import torch as _torch  # noqa: E402,F401
from compressor.frontends import zoo as _zoo  # noqa: E402,F401
from compressor.frontends import hf as _hf  # noqa: E402,F401
from compressor.frontends.darts import frontend as _darts  # noqa: E402,F401
from compressor.frontends import hierarchical as _hierarchical  # noqa: E402,F401
