"""The layering of ../shared/DESIGN.md, read from the source: flows -> tasks -> sqlcopilot_core, never back; the
library never imports Prefect. Every import counts, also those inside functions."""

from pathlib import Path

import pytest

from sqlcopilot_core.identity import imported_names

REPO = Path(__file__).resolve().parents[1]
FORBIDDEN = {"sqlcopilot_core": ("prefect", "flows", "tasks", "sqlcopilot_cli"), "tasks": ("flows", "sqlcopilot_cli"),
             "flows": ("sqlcopilot_cli",)}


def modules(package):
    for path in sorted((REPO / package).rglob("*.py")):
        parts = path.relative_to(REPO).with_suffix("").parts
        yield ".".join(parts[:-1] if parts[-1] == "__init__" else parts), path


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_imports_flow_one_way(package):
    offences = []
    for name, path in modules(package):
        for imported in imported_names(path, name):
            if imported.split(".")[0] in FORBIDDEN[package]:
                offences.append(f"{path.relative_to(REPO)} imports {imported}")
    assert not offences, "\n".join(sorted(set(offences)))


def test_the_check_sees_function_level_imports(tmp_path):
    source = tmp_path / "late.py"
    source.write_text("def f():\n    from prefect import flow\n    from .sibling import x\n")
    assert {"prefect", "prefect.flow", "pkg.sibling", "pkg.sibling.x"} <= imported_names(source, "pkg.late")
