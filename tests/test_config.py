import pytest

from compressor.config import apply_override, load_yaml, load_yaml_text
from compressor.errors import ConfigError


def test_line_numbers_recorded():
    doc = load_yaml_text("name: x\npasses:\n  - prune-l1:\n      ratio: 0.5\n  - fp16\n", "f.yaml")
    assert doc.location("passes") == "f.yaml:2"
    assert doc["passes"].location(1) == "f.yaml:5"
    assert doc["passes"][0]["prune-l1"].location("ratio") == "f.yaml:4"


@pytest.mark.parametrize("text, fragment", [
    ("a: [1, 2\n", "f.yaml:2: malformed YAML"),
    ("a: 1\na: 2\n", "f.yaml:2: duplicate key 'a' (first at line 1)"),
    ("a:\n  - b\n c: 1\n", "malformed YAML"),
])
def test_malformed(text, fragment):
    with pytest.raises(ConfigError) as e:
        load_yaml_text(text, "f.yaml")
    assert fragment in str(e.value)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_yaml(tmp_path / "nope.yaml")


def test_one_loader_for_pipelines_sweeps_and_search_files(tmp_path):
    """Pipeline, SweepSpec and SearchJob read their files through config.load_yaml: a missing file is named
    as what it is, overrides go through the same --set code, and errors name file:line."""
    from compressor.pipeline import Pipeline, SearchJob
    from compressor.sweep.spec import SweepSpec

    missing = tmp_path / "nope.yaml"
    for load, what, example in [(Pipeline.from_yaml, "pipeline", "samples/quickstart.yaml"),
                                (SweepSpec.from_yaml, "sweep", "samples/sweep_mfactor.yaml"),
                                (SearchJob.from_yaml, "search", "samples/pcdarts_search.yaml")]:
        with pytest.raises(ConfigError, match=f"^{what} file {missing} does not exist; pass the path to a {what} "
                                              f"YAML \\(see {example}\\)$"):
            load(missing)
    f = tmp_path / "f.yaml"
    f.write_text("a: 1\nb:\n  - x\n  - y: 2\n")
    doc = load_yaml(f, ["c.d=3", "a=[4]"])
    assert doc == {"a": [4], "b": ["x", {"y": 2}], "c": {"d": 3}} and doc.location("b") == f"{f}:2"
    assert doc["b"][1].location("y") == f"{f}:4" and doc.location("a") == "--set a=[4]"
    f.write_text("- a list\n")
    assert load_yaml(f, ["a=1"]) == ["a list"]  # not a mapping: the caller says what it should be
    with pytest.raises(ConfigError, match=f"^{f}: a sweep is a mapping with keys"):
        SweepSpec.from_yaml(f, ["a=1"])


def test_overrides_by_name_and_index():
    doc = load_yaml_text("model:\n  train: {epochs: 5}\npasses:\n  - prune-l1: {ratio: 0.6}\n  - fp16\n", "f")
    apply_override(doc, "model.train.epochs=2")
    apply_override(doc, "passes.prune-l1.ratio=0.4")
    apply_override(doc, "passes.1=finetune")
    apply_override(doc, "seed=3")
    assert doc["model"]["train"]["epochs"] == 2
    assert doc["passes"][0]["prune-l1"]["ratio"] == 0.4
    assert doc["passes"][1] == "finetune"
    assert doc["seed"] == 3


@pytest.mark.parametrize("text, fragment", [
    ("noequals", "expected key=value"),
    ("passes.distill.alpha=1", "no entry 'distill' here; entries: prune-l1"),
    ("passes.7.ratio=1", "index 7 out of range"),
])
def test_bad_overrides(text, fragment):
    doc = load_yaml_text("passes:\n  - prune-l1: {ratio: 0.6}\n", "f")
    with pytest.raises(ConfigError, match=fragment):
        apply_override(doc, text)
