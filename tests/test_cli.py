"""The project's command line: `python -m ieu_potion` runs the project, a bug still shows
its traceback (a user's mistake does not: tests/test_run.py, the refusals), and `kedro
ipython` and `kedro jupyter lab` start with the project loaded."""

import json
import subprocess
import sys
import time

import pytest

from tests.test_run import (
    ONE_THREAD,
    kedro_env,
    python_in,
    scratch_project,
    with_tiny_env,
    written,
)


@pytest.fixture
def tiny_project(tmp_path):
    return with_tiny_env(scratch_project(tmp_path))


def output(result) -> str:
    return result.stdout + result.stderr


@pytest.mark.slow
def test_python_m_ieu_potion_runs_the_project(tiny_project):
    run = ["--env", "tiny", "--pipelines", "data_poisoning"]
    result = python_in(tiny_project, "-m", "ieu_potion", *run, env=ONE_THREAD)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "03_primary/badnets_white/seed_0/poisoned_train.npz" in written(tiny_project)


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
    result = python_in(tiny_project, "-c", BUGGY_RUN, "--env", "tiny")
    text = output(result)
    assert result.returncode != 0
    assert "Traceback" in text and "RuntimeError: a bug in the project" in text


@pytest.mark.slow
def test_kedro_ipython_defines_the_project_variables(tiny_project):
    """`kedro ipython` starts this environment's IPython with Kedro's extension, whatever
    `ipython` the PATH holds."""
    code = "print('CHECK', type(catalog).__name__, sorted(pipelines)[:2], type(session).__name__)"
    result = python_in(
        tiny_project,
        *("-m", "kedro", "ipython", "--env", "tiny"),
        env={"PATH": "/nonexistent"},
        input=f"{code}\nexit()\n",
    )
    assert result.returncode == 0, output(result)[-3000:]
    check = next(line for line in result.stdout.splitlines() if "CHECK" in line)
    assert "DataCatalog" in check and "['__default__', 'baselines']" in check
    assert check.endswith("KedroSession")


@pytest.mark.slow
def test_kedro_jupyter_lab_starts_with_the_project_kernel(tiny_project, tmp_path):
    jupyter = {
        "JUPYTER_DATA_DIR": str(tmp_path / "data"),
        "JUPYTER_CONFIG_DIR": str(tmp_path / "config"),
        "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
    }
    log = tmp_path / "lab.log"
    with log.open("w") as out:
        lab = subprocess.Popen(
            [sys.executable, "-m", "kedro", "jupyter", "lab", "--env", "tiny", "--no-browser"]
            + ["--allow-root", "--ServerApp.port=0", "--IdentityProvider.token=test"],
            cwd=tiny_project,
            env=kedro_env(jupyter),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 180
            while "is running at" not in log.read_text() and lab.poll() is None:
                assert time.monotonic() < deadline, log.read_text()[-3000:]
                time.sleep(0.5)
            assert lab.poll() is None, log.read_text()[-3000:]
        finally:
            lab.terminate()
            lab.wait(timeout=60)
    kernel = json.loads((tmp_path / "data/kernels/kedro_ieu_potion/kernel.json").read_text())
    assert kernel["argv"][0] == sys.executable and "kedro.ipython" in kernel["argv"]
    assert "default_kernel_name=kedro_ieu_potion" in log.read_text()
