"""The pipeline loader on arbitrary input: it accepts a document or raises one of the project's errors,
never anything else (hypothesis, 200 examples here; `python benchmarks/fuzz_config.py` runs 10,000)."""
from __future__ import annotations

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from compressor.errors import CompressError
from compressor.pipeline import Pipeline

KEYS = st.sampled_from(["name", "seed", "device", "data", "model", "passes", "export", "evaluate", "frontend",
                        "zoo", "prune-l1", "ratio", "train", "epochs", "lr", "n_train", "size", "latency",
                        "backends", "width", "finetune", "fp16", "onnx", "teacher", "distill", "x"])
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-10**20, 10**20), st.floats(allow_nan=True),
                    st.text(max_size=8), st.sampled_from(["zoo", "seg-cnn", "digits", "cpu", "cuda", ".nan", "1e20"]))
DOCS = st.recursive(SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                      st.dictionaries(KEYS, inner, max_size=5)), max_leaves=25)


def load(text: str) -> None:
    try:
        Pipeline.from_text(text, source="fuzz.yaml")
    except CompressError:
        pass


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(DOCS)
def test_structured_documents_raise_only_project_errors(doc):
    load(yaml.safe_dump(doc))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(alphabet=st.sampled_from(list("abc:- []{}&*!?<>|#'\"\n\t,.01%@`")), max_size=60))
def test_raw_text_raises_only_project_errors(text):
    load(text)
