"""README's "Extending the compiler" examples work as written: its `my_plugin.py` blocks, put together, are
installed as a third-party plugin package, and its `plugged.yaml` runs with them through `compress run`."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

REPO = Path(__file__).resolve().parent.parent
COMPRESS = Path(sys.executable).with_name("compress")
DIST = "my-compressor-plugin"


def section(text: str, title: str) -> str:
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end >= 0 else None]


def blocks(text: str, lang: str, first_line: str) -> list[str]:
    """The fenced `lang` blocks of `text` whose first line starts with `first_line`."""
    found = re.findall(rf"```{lang}\n(.*?)```", text, re.S)
    return [b for b in found if b.startswith(first_line)]


@pytest.fixture(scope="module")
def readme_plugin(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(site folder holding my_plugin.py and its dist-info, folder holding plugged.yaml)."""
    text = section((REPO / "README.md").read_text(), "Extending the compiler")
    code = blocks(text, "python", "# my_plugin.py")
    yaml = {name: blocks(text, "yaml", f"# {name}") for name in ("plugged.yaml", "plugged-search.yaml",
                                                                 "plugged-sweep.yaml")}
    assert len(code) == 6 and all(len(b) == 1 for b in yaml.values()), (len(code), yaml)
    site = tmp_path_factory.mktemp("site")
    (site / "my_plugin.py").write_text("\n\n".join(code))
    info = site / f"{DIST.replace('-', '_')}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {DIST}\nVersion: 0.1\n")
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    toml = blocks(text, "toml", "# your package's pyproject.toml")
    declared = tomllib.loads(toml[0])["project"]["entry-points"]["compressor.plugins"]
    lines = "".join(f"{name} = {value}\n" for name, value in declared.items())
    (info / "entry_points.txt").write_text(f"[compressor.plugins]\n{lines}")
    work = tmp_path_factory.mktemp("work")
    for name, found in yaml.items():
        (work / name).write_text(found[0])
    return site, work


def compress(site: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([str(COMPRESS), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_the_readme_plugin_lists_its_four_entries_with_their_package(readme_plugin):
    site, work = readme_plugin
    r = compress(site, work, "passes")
    assert r.returncode == 0 and not r.stderr.strip(), r.stderr
    listed = {line.split()[0]: line for line in r.stdout.splitlines() if line.startswith("  ") and line[2] != " "}
    for name in ("scale", "blobs", "tiny-cnn", "weights", "annealed-darts", "sobol", "pool"):
        assert listed[name].endswith(f"  [{DIST}: my_plugin]"), listed.get(name)


def test_the_readme_pipeline_runs_with_the_plugin(readme_plugin):
    site, work = readme_plugin
    r = compress(site, work, "run", "plugged.yaml", "--quiet")
    assert r.returncode == 0, r.stderr
    run = work / "runs" / "plugged"
    report = json.loads((run / "report.json").read_text())
    assert [s["name"] for s in report["stages"]] == ["baseline", "scale", "weights"]
    assert report["stages"][0]["metrics"]["accuracy"] > 0.9  # two well-separated blobs, trained
    before = load_file(run / "00_baseline" / "weights.safetensors")
    after = load_file(run / "01_scale" / "weights.safetensors")
    assert after["4.weight"].allclose(0.5 * before["4.weight"]) and after["0.weight"].equal(before["0.weight"])
    exported = load_file(run / "02_weights" / "weights.safetensors")
    assert exported.keys() == after.keys() and all(exported[k].equal(after[k]) for k in after)
    r = compress(site, work, "inspect", str(run / "02_weights" / "weights.safetensors"))
    assert r.returncode == 0, r.stderr
    assert "weights.safetensors: 4 tensors" in r.stdout


def test_a_frontend_that_does_not_seed_builds_the_same_model_every_run(readme_plugin):
    """tiny-cnn initializes its layers from the global RNG; the model step seeds it from the pipeline's seed."""
    site, work = readme_plugin
    weights = []
    for out in ("again-1", "again-2"):
        r = compress(site, work, "run", "plugged.yaml", "--quiet", "--force", "--out", out)
        assert r.returncode == 0, r.stderr
        weights.append(load_file(work / out / "00_baseline" / "weights.safetensors"))
    assert all(weights[0][k].equal(weights[1][k]) for k in weights[0])


def test_the_readme_search_runs_the_plugin_algorithm(readme_plugin):
    site, work = readme_plugin
    r = compress(site, work, "search", "plugged-search.yaml", "--quiet")
    assert r.returncode == 0, r.stderr
    out = work / "runs" / "plugged-search"
    assert json.loads((out / "genotype.json").read_text())["normal"]
    history = (out / "alpha_history.json").read_text()
    assert '"arch_lr_scale": 0.2' in history and '"arch_lr_scale": 1.0' in history


def test_the_readme_sweep_runs_with_the_plugin_sampler_and_executor(readme_plugin):
    site, work = readme_plugin
    r = compress(site, work, "sweep", "plugged-sweep.yaml", "--quiet")
    assert r.returncode == 0, r.stderr
    rows = (work / "runs" / "plugged-sweep" / "trials.csv").read_text().splitlines()
    assert len(rows) == 4 and all(",complete," in row for row in rows[1:]), rows
