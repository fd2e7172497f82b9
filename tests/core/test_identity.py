"""Code and data identity: the modules a stage's key covers are found from the import graph, and a change to one
module invalidates exactly the stages that import it."""

import shutil

import pytest

from sqlcopilot_core.identity import PROJECT_ROOT, code_identity, examples_digest, project_modules
from sqlcopilot_core.sample import build_sample_spider
from sqlcopilot_core.spider import load_split

STAGES = ("download_base", "finetune", "prune", "distill", "export", "build", "evaluate")


def stage_digests(root):
    return {s: code_identity(f"sqlcopilot_core.stages.{s}", root=root)["digest"] for s in STAGES}


def importers(module, root):
    return {s for s in STAGES if module in project_modules(f"sqlcopilot_core.stages.{s}", root=root)}


@pytest.fixture()
def source_copy(tmp_path):
    shutil.copytree(PROJECT_ROOT / "sqlcopilot_core", tmp_path / "sqlcopilot_core",
                    ignore=shutil.ignore_patterns("__pycache__", "profiles"))
    return tmp_path


def test_modules_are_found_through_function_level_and_package_imports():
    finetune = project_modules("sqlcopilot_core.stages.finetune")
    # scoring during exec_guided training: evaluation -> hardness (left out of the hand-kept list it replaces)
    assert {"sqlcopilot_core.finetune", "sqlcopilot_core.training", "sqlcopilot_core.evaluation",
            "sqlcopilot_core.hardness", "sqlcopilot_core.stages", "sqlcopilot_core"} <= set(finetune)
    # the packed data path and the prompt, through the training recipe and the prompt module
    assert {"sqlcopilot_core.packing", "sqlcopilot_core.schema_prompt", "sqlcopilot_core.generate"} <= set(finetune)
    assert "sqlcopilot_core.packing" in project_modules("sqlcopilot_core.stages.distill")
    # nothing of the machinery that runs stages, nor of another stage
    for name in ("sqlcopilot_core.stage", "sqlcopilot_core.tracking", "sqlcopilot_core.export"):
        assert name not in finetune
    with pytest.raises(ModuleNotFoundError):
        project_modules("sqlcopilot_core.stages.no_such_stage")


@pytest.mark.parametrize("module", ["sqlcopilot_core.export", "sqlcopilot_core.hardness", "sqlcopilot_core.prune",
                                    "sqlcopilot_core.report"])
def test_changing_a_module_invalidates_exactly_the_stages_that_import_it(source_copy, module):
    before = stage_digests(source_copy)
    path = source_copy.joinpath(*module.split(".")).with_suffix(".py")
    path.write_text(path.read_text() + "\n# changed\n")
    after = stage_digests(source_copy)
    changed = {s for s in STAGES if before[s] != after[s]}
    assert changed == importers(module, source_copy)
    assert changed and changed != set(STAGES)
    if module == "sqlcopilot_core.report":  # the build stage's shipping rule (retention) reads it; no model stage
        assert changed == {"build"}


def test_examples_digest_is_content_not_place(work_home, tmp_path):
    spider = build_sample_spider(tmp_path / "a")
    copy = shutil.copytree(spider, tmp_path / "b")
    dev = load_split(spider, "dev")
    assert examples_digest(dev) == examples_digest(load_split(copy, "dev"))
    assert examples_digest(dev) != examples_digest(dev[:-1])
