"""What users run imports nothing from tests/: the test tree is not installed with the package."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PRODUCTION = ("scripts", "worker", "producer", "common", "infra")


def imports_of_tests(path: Path, root: Path = REPO) -> list[str]:
    """`import tests...` / `from tests... import` statements in one file, as 'file:line'."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names = [node.module or ""]
        else:
            continue
        if any(name == "tests" or name.startswith("tests.") for name in names):
            found.append(f"{path.relative_to(root)}:{node.lineno}")
    return found


def test_no_production_file_imports_the_test_tree():
    files = [path for folder in PRODUCTION for path in sorted((REPO / folder).rglob("*.py"))]
    assert len(files) > 100  # the folders are really scanned
    offenders = [hit for path in files for hit in imports_of_tests(path)]
    assert offenders == []


def test_the_scan_sees_both_import_forms(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import tests.support\nfrom tests.support.synthetic import x\nfrom .tests import y\nimport testsuite\n"
    )
    assert imports_of_tests(sample, tmp_path) == ["sample.py:1", "sample.py:2"]
