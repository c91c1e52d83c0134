"""Shared by the bad-input tests: the marker that lists a test in docs/bad_input.md and
the assertion that an input is refused with a clear error and nothing is lost.

Every bad input is one test (or one ``pytest.param``) marked
``@bad_input("the input", "what happens")``; ``scripts/bad_input_table.py`` reads these
marks from the test sources and writes the table in docs/bad_input.md, and
``tests/test_bad_input_table.py`` fails when the table is stale.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

bad_input = pytest.mark.bad_input


def snapshot(folder: Path | None) -> dict[str, str]:
    """Every file below ``folder`` with a hash of its bytes (empty for None)."""
    if folder is None or not Path(folder).exists():
        return {}
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(Path(folder).rglob("*"))
        if p.is_file()
    }


def rejects(
    action: Callable[[], Any],
    error: type[BaseException],
    *culprits: str,
    unchanged: Path | None = None,
) -> BaseException:
    """Run ``action``, which must raise ``error`` whose message names every culprit
    (case-insensitive), and leave every file below ``unchanged`` as it was."""
    before = snapshot(unchanged)
    with pytest.raises(error) as caught:
        action()
    message = str(caught.value)
    for culprit in culprits:
        assert re.search(re.escape(culprit), message, re.IGNORECASE), (
            f"the error does not name {culprit!r}: {message}"
        )
    assert snapshot(unchanged) == before, "a file changed although the input was refused"
    return caught.value
