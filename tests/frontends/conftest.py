"""Small datasets the DARTS tests share (built once per test module)."""
import pytest

from compressor.data import build_data


@pytest.fixture(scope="module")
def digits():
    return build_data("digits", {})


@pytest.fixture(scope="module")
def insar():
    return build_data("insar-synthetic", {"n_train": 16, "n_val": 8, "n_test": 8, "size": 16})
