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
