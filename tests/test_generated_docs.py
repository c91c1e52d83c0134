"""The generated references are current: docs/parameters.md (from the schema) and
docs/bad_input.md (from the tests' bad_input marks)."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("script", ["parameter_reference.py", "bad_input_table.py"])
def test_generated_doc_is_current(script):
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / script), "--check"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr + done.stdout


def test_bad_input_table_lists_every_kind_of_input():
    text = (ROOT / "docs" / "bad_input.md").read_text(encoding="utf-8")
    rows = [line for line in text.splitlines() if line.startswith("| ") and "---" not in line]
    rows = [line for line in rows if line != "| input | what happens |"]
    assert len(rows) >= 40
    for section in ("Parameters", "The command line", "Data and artifact files", "Training"):
        assert f"## {section}" in text
