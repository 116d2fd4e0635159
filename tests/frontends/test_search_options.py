"""The search block: each algorithm owns its options block; the flat keys from before the blocks still read,
with one deprecation warning per key; the stage keys do not change; search and distillation students are
frontend capabilities, looked up by name."""
from __future__ import annotations

import logging

import pytest

from compressor.errors import ConfigError, PassError
from compressor.frontend import offering_students, searching
from compressor.frontends.darts import search_base
from compressor.frontends.darts.search import SearchOptions
from compressor.options import parse_options
from compressor.pipeline import Pipeline, SearchJob
from compressor.steps import stable_hash

SAMPLE = "samples/pcdarts_insar.yaml"
SEARCH = ["model.genotype=null"]

# The model stage's key data (stable_hash of ModelSpec.as_data(), what ModelStep.key hashes besides the data
# spec, seed and versions) of samples/pcdarts_insar.yaml with these overrides, computed with the flat keys
# before the options had blocks. The flat and the block form must both still give them. hpe-darts's key changed
# once, on purpose, when its defaults changed (NetPerfProxy in every hybrid stage, the scoring batches drawn per
# round, `hpe.schedule`, `hpe.accuracy_batch`); the other algorithms hash the hpe block as before.
PINNED = {
    "genotype": ([], [], "2529193545c2241e"),
    "pc-darts": (["model.search.epochs=10"], ["model.search.epochs=10"], "faecf2996b182942"),
    "hpe-darts": (["model.search.algorithm=hpe-darts", "model.search.hpe_ops_per_edge=[8,4,1]",
                   "model.search.hpe_batch=32"],
                  ["model.search.algorithm=hpe-darts", "model.search.hpe.ops_per_edge=[8,4,1]",
                   "model.search.hpe.batch=32"], "3349e22b5ba6cbb0"),  # changed on purpose: the hpe schedule
    "evolution": (["model.search.algorithm=evolution", "model.search.evo_population=4",
                   "model.search.evo_objectives=[metric,macs]"],
                  ["model.search.algorithm=evolution", "model.search.evolution.population=4",
                   "model.search.evolution.objectives=[metric,macs]"], "ada8655f8bce162a"),
    "d-darts": (["model.search.algorithm=d-darts", "model.search.dd_w01=2.0"],
                ["model.search.algorithm=d-darts", "model.search.ddarts.w01=2.0"], "168163eb4ab8390f"),
    "p-darts": (["model.search.algorithm=p-darts", "model.search.pdarts_stages=[3,4]", "model.search.pdarts_keep=[3,1]",
                 "model.search.pdarts_skip_dropout=[0.1,0.2]"],
                ["model.search.algorithm=p-darts", "model.search.pdarts.stages=[3,4]", "model.search.pdarts.keep=[3,1]",
                 "model.search.pdarts.skip_dropout=[0.1,0.2]"], "e21922ba7796f2d3"),
    "pc-darts-k": (["model.search.pc_k=2"], ["model.search.pc.k=2"], "7070fa24584b394e"),
}


def model_key(overrides: list[str]) -> str:
    return stable_hash(Pipeline.from_yaml(SAMPLE, overrides).model.as_data())


@pytest.mark.parametrize("case", sorted(PINNED))
def test_flat_and_block_forms_keep_the_stage_key_of_before_the_blocks(case):
    flat, block, key = PINNED[case]
    extra = SEARCH if case != "genotype" else []
    assert model_key(extra + flat) == key
    assert model_key(extra + block) == key


def test_the_search_folders_and_checkpoints_keep_their_flat_form():
    """`compress search samples/pcdarts_search.yaml`: its options as search folders, checkpoints and results
    record them (the hash of the flat dict the options gave before the blocks)."""
    job = SearchJob.from_yaml("samples/pcdarts_search.yaml")
    assert stable_hash(job.options.key_data()) == "746db9c4482c0c8a"
    assert "pc_k" in job.options.key_data() and "hpe_batch" in job.options.key_data()


def test_a_flat_key_warns_once_per_key_naming_its_block(caplog, tmp_path):
    search_base._warned.clear()
    path = tmp_path / "s.yaml"
    path.write_text("data: digits\nsearch:\n  algorithm: hpe-darts\n  hpe_batch: 32\n  hpe_decay: weight\n")
    with caplog.at_level(logging.WARNING):
        first = SearchJob.from_yaml(path)
        SearchJob.from_yaml(path)
    lines = [r.getMessage() for r in caplog.records if "deprecated" in r.getMessage()]
    assert lines == [f"{path}:4: search.hpe_batch is deprecated: write search: {{hpe: {{batch: ...}}}} (the flat key "
                     f"will be removed in the next version)",
                     f"{path}:5: search.hpe_decay is deprecated: write search: {{hpe: {{decay: ...}}}} (the flat key "
                     f"will be removed in the next version)"]
    assert first.options.hpe.batch == 32 and first.options.hpe.decay == "weight"
    assert first.options == SearchOptions.of(algorithm="hpe-darts", hpe={"batch": 32, "decay": "weight"})


def test_block_errors_are_one_line_with_file_and_line(tmp_path):
    def error(text: str) -> str:
        path = tmp_path / "s.yaml"
        path.write_text("data: digits\nsearch:\n" + text)
        with pytest.raises(ConfigError) as exc:
            SearchJob.from_yaml(path)
        assert "\n" not in str(exc.value)
        return str(exc.value).replace(str(path), "s.yaml")

    assert error("  algorithm: hpe-darts\n  hpe_batch: 8\n  hpe: {batch: 16}\n") == \
        "s.yaml:4: search: hpe_batch and hpe: {batch} give the same option twice; keep only hpe: {batch: ...}"
    assert error("  algorithm: pc-darts\n  hpe: {batch: 16}\n") == \
        "s.yaml:4: search: the hpe block holds the options of the hpe-darts algorithm, but algorithm is pc-darts; " \
        "remove it or set algorithm: hpe-darts"
    assert error("  evo_population: 4\n") == \
        "s.yaml:3: search: evo_population is an option of the evolution algorithm, but algorithm is pc-darts; " \
        "remove it or set algorithm: evolution"
    assert error("  algorithm: hpe-darts\n  hpe:\n    batch: 1\n") == \
        "s.yaml:5: search: hpe: batch: 1 is out of range; valid: [2, 4096]"
    assert error("  algorithm: evolution\n  evolution:\n    populaton: 4\n").startswith(
        "s.yaml:5: search: evolution: unknown evolution option 'populaton'; did you mean 'population'?")
    assert "did you mean 'hpe'" in error("  algorithm: hpe-darts\n  hpee: {}\n")


def test_the_algorithm_name_is_accepted_as_its_block_name_and_reads_back():
    by_name = parse_options(SearchOptions, {"algorithm": "d-darts", "d-darts": {"wab": 0.25}}, "search")
    assert by_name.ddarts.wab == 0.25 and by_name.block == by_name.ddarts
    p = Pipeline.from_dict({"data": "digits", "model": {"frontend": "darts", "search": {
        "algorithm": "evolution", "evolution": {"population": 4}}}})
    doc = p.to_dict()
    assert doc["model"]["search"]["evolution"]["population"] == 4 and "evo_population" not in doc["model"]["search"]
    assert Pipeline.from_dict(doc).to_dict() == doc
    assert p.to_line() == "darts{search={algorithm=evolution, evolution={population=4}}}"


def test_search_is_a_frontend_capability(tmp_path):
    assert searching() == ["darts", "hierarchical"]
    path = tmp_path / "s.yaml"
    path.write_text("data: digits\nfrontend: zoo\nsearch: {epochs: 1}\n")
    with pytest.raises(ConfigError,
                       match=r"s\.yaml:2: frontend zoo does not search; frontends that do: darts, hierarchical$"):
        SearchJob.from_yaml(path)
    path.write_text("data: digits\nfrontend: darts\nsearch: {algorithm: darts, epochs: 1}\n")
    assert SearchJob.from_yaml(path).options.algorithm == "darts"


def test_students_come_from_the_teachers_frontend(digits):
    from compressor.context import PassContext
    from compressor.frontends.zoo import Zoo
    from compressor.passes import Distill

    assert offering_students() == ["darts", "hierarchical", "zoo"]
    teacher = Zoo(model="cls-cnn", width=8).build(digits, PassContext(progress=False))
    out = Distill(student="zoo", student_init_channels=4, epochs=1, batch_size=16, max_steps=1)(
        teacher, PassContext(data=digits, teacher=teacher, progress=False))
    assert out.meta["width"] == 4 and out.recipe.frontend["options"]["width"] == 4
    assert out.parameter_count() < teacher.parameter_count()
    with pytest.raises(PassError, match="student: darts needs a teacher built by the darts frontend, but teacher "
                                        "'baseline' comes from zoo"):
        Distill(student="darts", epochs=1)(teacher, PassContext(data=digits, teacher=teacher, progress=False))
    with pytest.raises(ConfigError, match="student: 'torch' is not valid; choose current or a frontend that builds "
                                          "students: darts, hierarchical, zoo"):
        Distill(student="torch")


def test_the_readme_lists_what_the_registries_hold():
    import re
    from pathlib import Path

    from compressor.registry import EXECUTORS, SAMPLERS, SEARCHES

    text = " ".join((Path(__file__).parents[2] / "README.md").read_text().split())
    for label, registry in [("Registered samplers:", SAMPLERS), ("Registered executors:", EXECUTORS),
                            ("Registered search algorithms:", SEARCHES)]:
        listed = text.split(label, 1)[1].split(".", 1)[0]
        assert re.findall(r"`([^`]+)`", listed) == registry.names(), label
