from dataclasses import dataclass
from typing import Literal

import pytest

from compressor.config import load_yaml_text
from compressor.errors import ConfigError
from compressor.options import describe_options, format_options, option, parse_options


@dataclass(frozen=True)
class Opts:
    ratio: float = option(0.5, "fraction", min=0, max=1, max_exclusive=True)
    steps: int = option(1, "steps", min=1)
    mode: Literal["freeze", "follow"] = option("freeze", "mode")
    names: list[str] = option([], "names")
    limit: int | None = option(None, "optional limit", min=1)


def test_defaults_and_coercion():
    o = parse_options(Opts, {"ratio": 1 / 4, "steps": 3, "names": ["a", "b"]}, "p")
    assert o == Opts(ratio=0.25, steps=3, names=("a", "b"))
    assert parse_options(Opts, {"ratio": 0}, "p").ratio == 0.0  # int accepted for float


@pytest.mark.parametrize("raw, fragment", [
    ({"ratio": 1.5}, "out of range; valid: [0, 1)"),
    ({"ratio": 1.0}, "out of range"),
    ({"steps": 0}, "out of range; valid: [1, inf]"),
    ({"steps": 2.5}, "expected an integer"),
    ({"steps": True}, "expected an integer"),
    ({"mode": "folow"}, "choose one of 'freeze', 'follow'"),
    ({"names": "a"}, "expected a list"),
    ({"ratoi": 0.3}, "unknown option 'ratoi'; did you mean 'ratio'?"),
    ({"limit": 0}, "out of range"),
])
def test_bad_values(raw, fragment):
    with pytest.raises(ConfigError) as e:
        parse_options(Opts, raw, "prune-l1")
    assert fragment in str(e.value)
    assert str(e.value).startswith("prune-l1")


def test_errors_name_file_and_line():
    doc = load_yaml_text("a: 1\nopts:\n  steps: 2\n  ratoi: 0.3\n", "p.yaml")
    with pytest.raises(ConfigError, match=r"^p\.yaml:4: prune-l1: unknown option 'ratoi'"):
        parse_options(Opts, doc["opts"], "prune-l1")


def test_null_allowed_only_for_optional():
    assert parse_options(Opts, {"limit": None}, "p").limit is None
    with pytest.raises(ConfigError, match="expected an integer, got None"):
        parse_options(Opts, {"steps": None}, "p")


def test_describe_and_format():
    infos = {i.name: i for i in describe_options(Opts)}
    assert infos["ratio"].help == "fraction" and infos["ratio"].default == 0.5
    assert infos["limit"].type == "int | null"
    assert format_options("x", Opts()) == "x"
    assert format_options("x", Opts(ratio=0.6, names=("a",))) == "x{ratio=0.6, names=[a]}"


def test_list_default_not_shared():
    a, b = Opts(), Opts()
    assert a.names == [] and a.names is not b.names
