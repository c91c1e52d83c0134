"""The project's command line: `python -m ieu_potion` runs the project, a user's mistake
ends with its message and where to look (no traceback), a bug still shows its traceback."""

import subprocess
import sys

import pytest

from tests.badinput import bad_input
from tests.test_run import (
    ONE_THREAD,
    kedro,
    kedro_env,
    scratch_project,
    with_tiny_env,
    written,
)

# A user's mistake is said in a few lines: Kedro's start-up log (wrapped at 80 columns, up
# to a dozen lines), the error and where to look (instead of about 140 traceback lines).
MOST_LINES = 20


@pytest.fixture
def tiny_project(tmp_path):
    return with_tiny_env(scratch_project(tmp_path))


def output(result) -> str:
    return result.stdout + result.stderr


@pytest.mark.slow
def test_python_m_ieu_potion_runs_the_project(tiny_project):
    result = subprocess.run(
        [sys.executable, "-m", "ieu_potion", "--env", "tiny", "--pipeline", "data_poisoning"],
        cwd=tiny_project,
        env=kedro_env(ONE_THREAD),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "03_primary/badnets_white/seed_0/poisoned_train.npz" in written(tiny_project)


@pytest.mark.parametrize(
    "args, says",
    [
        pytest.param(
            ["--params", "ieu.defence.tau=1.5"],
            ["ieu.defence.tau: Input should be 'auto' or less than 1, got 1.5", "docs/parameters"],
            marks=bad_input(
                "`kedro run --params ieu.defence.tau=1.5`: the whole message",
                "the error and where to look, in at most 20 lines, no traceback",
            ),
            id="parameter",
        ),
        pytest.param(
            ["--params", "model.robust.name=resnet_tiny"],
            ["unknown model 'resnet_tiny'", "docs/parameters"],
            id="name",
        ),
    ],
)
def test_a_user_mistake_is_said_without_a_traceback(tiny_project, args, says):
    result = kedro(tiny_project, "--env", "tiny", *args)
    text = output(result)
    assert result.returncode == 1
    assert "Traceback" not in text and 'File "' not in text
    assert len(text.strip().splitlines()) <= MOST_LINES, text
    for words in says:
        assert words in text


def test_missing_data_is_said_without_a_traceback(tiny_project):
    missing = tiny_project / "no_such_folder"
    result = kedro(tiny_project, "--env", "gtsrb", "--params", f"gtsrb_root={missing}")
    text = output(result)
    assert result.returncode == 1
    assert "Traceback" not in text and len(text.strip().splitlines()) <= MOST_LINES, text
    assert "catalog entry 'source_images'" in text and "docs/data.md" in text


BUGGY_RUN = """
import sys
from pathlib import Path
from kedro.framework.cli.cli import KedroCLI
import ieu_potion.hooks


def bug(*args, **kwargs):
    raise RuntimeError("a bug in the project")


ieu_potion.hooks.typed_blocks = bug  # called before any node runs
KedroCLI(Path.cwd()).main(args=["run", *sys.argv[1:]], prog_name="kedro")
"""


def test_a_bug_still_shows_its_traceback(tiny_project):
    result = subprocess.run(
        [sys.executable, "-c", BUGGY_RUN, "--env", "tiny"],
        cwd=tiny_project,
        env=kedro_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    text = output(result)
    assert result.returncode != 0
    assert "Traceback" in text and "RuntimeError: a bug in the project" in text
