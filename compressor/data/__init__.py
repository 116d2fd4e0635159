"""Datasets: a registry of builders that turn validated options into a `DataBundle`.

Each dataset module registers a builder with `@register_dataset("name")`. A builder is an object
with an `Options` attribute (a frozen dataclass declared with `compressor.options.option`) and a
`build(options, seed) -> DataBundle` callable. `build_data(name, raw_options, seed)` validates the
raw mapping (YAML or kwargs) and builds the bundle; `make_loader` wraps one split in a
deterministic `DataLoader`.

What every dataset shares (`DataBundle`, `DataOptions`, `build_data`, `make_loader`, the split helpers)
lives in `compressor.data.base` and is re-exported here. Importing this package registers the built-in
datasets (it is the `data` entry of the `compressor.plugins` entry points).

Built-in datasets: `insar-synthetic`, `insar-folder` (see `compressor.data.insar`), `digits`
(`compressor.data.digits`) and the bring-your-own kinds `image-folder`
(`compressor.data.image_folder`), `segmentation-folder` (`compressor.data.segmentation_folder`),
`hf-dataset` (`compressor.data.hf_dataset`) and `torch-dataset` (`compressor.data.torch_dataset`);
the image kinds share the `preprocess:` block of `compressor.data.preprocess`.
"""
from compressor.data import base
from compressor.data.base import (
    DATASETS,
    SPLITS,
    ArrayDataset,
    DataBundle,
    DataOptions,
    build_data,
    data_factory,
    dataset_options,
    default_workers,
    loader_workers,
    make_loader,
    register_dataset,
    stratified_split,
)

# the built-in datasets: importing them registers them
from compressor.data import digits, hf_dataset, image_folder, insar, segmentation_folder, torch_dataset  # noqa: F401

__all__ = list(base.__all__)
