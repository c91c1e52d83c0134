"""The layer map (docs/architecture.md) is what import-linter checks: the project keeps it,
and an import that runs up a layer, or library code that imports Kedro, breaks it."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(project: Path) -> subprocess.CompletedProcess:
    """import-linter's contracts of ``project``'s pyproject.toml, over its ``src``."""
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"],
        cwd=project,
        env={**os.environ, "PYTHONPATH": str(project / "src")},
        capture_output=True,
        text=True,
        timeout=300,
    )


def copy_of_source(where: Path) -> Path:
    shutil.copy(ROOT / "pyproject.toml", where / "pyproject.toml")
    shutil.copytree(
        ROOT / "src" / "ieu_potion",
        where / "src" / "ieu_potion",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    return where


def test_the_project_keeps_its_layer_map(tmp_path):
    result = lint_imports(copy_of_source(tmp_path))
    assert result.returncode == 0, result.stdout[-3000:]
    assert "2 kept, 0 broken" in result.stdout


@pytest.mark.parametrize(
    "module, wrong_import, broken",
    [
        # the bottom data layer reaching up into the pipelines (which import Kedro: the
        # second contract breaks too)
        ("data/imageset.py", "import ieu_potion.pipelines.templating", "Layers"),
        # training reaching up into a defence
        ("training/engine.py", "import ieu_potion.defences.ieu", "Layers"),
        # library code importing Kedro
        ("defences/abl.py", "import kedro.io", "imports no Kedro"),
    ],
)
def test_a_wrong_import_breaks_the_contract(tmp_path, module, wrong_import, broken):
    project = copy_of_source(tmp_path)
    path = project / "src" / "ieu_potion" / module
    path.write_text(path.read_text() + f"\n{wrong_import}  # noqa\n")
    result = lint_imports(project)
    assert result.returncode != 0
    verdicts = [line for line in result.stdout.splitlines() if line.endswith(("KEPT", "BROKEN"))]
    assert any(broken in line and line.endswith("BROKEN") for line in verdicts), verdicts
