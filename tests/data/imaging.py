"""Helpers of the image-dataset tests: tiny PNG folders written with PIL, and the CLI's one-line errors."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from click.testing import CliRunner
from PIL import Image

from compressor.cli import main


def write_image(path: Path, size: tuple[int, int] = (16, 16), mode: str = "RGB", seed: int = 0) -> np.ndarray:
    """A random image of `size` (H, W) in `mode` at `path`; returns its pixels."""
    rng = np.random.default_rng(seed)
    shape = size if mode == "L" else (*size, 3)
    pixels = rng.integers(0, 256, shape, dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).convert(mode).save(path)
    return pixels


def write_classes(folder: Path, counts: dict[str, int], size: tuple[int, int] = (16, 16), mode: str = "RGB",
                  seed: int = 0) -> None:
    """`folder/<class>/<i>.png` for each class and count."""
    for c, (name, n) in enumerate(counts.items()):
        for i in range(n):
            write_image(folder / name / f"{i:03d}.png", size, mode, seed=seed * 1000 + c * 100 + i)


def write_mask(path: Path, values: np.ndarray, mode: str = "L") -> None:
    """A mask PNG of `values` in mode L, or P (the values are the palette indices, as VOC stores masks)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = values.astype(np.uint8)
    img = Image.frombytes(mode, (pixels.shape[1], pixels.shape[0]), pixels.tobytes())
    if mode == "P":
        img.putpalette([v for i in range(256) for v in ((37 * i) % 256, (91 * i) % 256, (53 * i) % 256)])
    img.save(path)


def write_segmentation(root: Path, counts: dict[str, int], num_classes: int = 3, size: tuple[int, int] = (16, 16),
                       ignore: int | None = None, seed: int = 0) -> dict[Path, np.ndarray]:
    """`root/<split>/images/<id>.png` + `masks/<id>.png` (values 0..num_classes-1, a corner of `ignore`);
    returns each mask's values by mask path."""
    rng = np.random.default_rng(seed)
    masks = {}
    for split, n in counts.items():
        for i in range(n):
            write_image(root / split / "images" / f"s{i:02d}.png", size, seed=seed * 1000 + i)
            values = rng.integers(0, num_classes, size).astype(np.uint8)
            if ignore is not None:
                values[:2, :2] = ignore
            write_mask(root / split / "masks" / f"s{i:02d}.png", values)
            masks[root / split / "masks" / f"s{i:02d}.png"] = values
    return masks


def pipeline_text(data: str, model: str = "cls-cnn", epochs: int = 1) -> str:
    return (f"name: t\ndata: {data}\nmodel: {{frontend: zoo, model: {model}, width: 4, train: {{epochs: {epochs}, "
            f"batch_size: 4}}}}\nevaluate: {{batch_size: 8, macs: false, latency: {{enabled: false}}}}\n")


def run_cli(tmp_path: Path, text: str, *extra: str, name: str = "p.yaml") -> object:
    """`compress run` of the pipeline `text` (written to tmp_path/name) in this process."""
    p = tmp_path / name
    p.write_text(text)
    return CliRunner().invoke(main, ["run", str(p), "--out", str(tmp_path / "out"), "--quiet", *extra])


def cli_error(tmp_path: Path, data: str, model: str = "cls-cnn") -> str:
    """The one error line `compress run` prints for a pipeline on the data block `data` (exit code 2)."""
    r = run_cli(tmp_path, pipeline_text(data, model))
    assert r.exit_code == 2, (r.exit_code, r.output)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    return lines[0]
