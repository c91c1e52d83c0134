from pathlib import Path

import numpy as np
import pytest

from ieu_potion.data.imageset import ImageSet
from tests.browser import Browser, browser_required, chromium_path
from tests.test_run import ONE_THREAD, kedro, scratch_project, with_tiny_env


@pytest.fixture
def small_set() -> ImageSet:
    """60 random 32 px images, 10 classes (6 of each), every label present."""
    rng = np.random.default_rng(123)
    images = rng.integers(0, 256, size=(60, 32, 32, 3), dtype=np.uint8)
    labels = np.repeat(np.arange(10), 6)
    return ImageSet.clean(images, labels, [f"c{i}" for i in range(10)])


@pytest.fixture
def browser(tmp_path):
    """Headless Chromium; skipped where none is installed, unless REQUIRE_BROWSER=1 (CI)."""
    if chromium_path() is None:
        if browser_required():
            pytest.fail("REQUIRE_BROWSER=1 but no Chromium on PATH")
        pytest.skip("no Chromium on PATH (CI installs it: apt-get install chromium)")
    chrome = Browser(tmp_path)
    yield chrome
    chrome.close()


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """The tiny environment (tests/test_run.py) run once by the sequential runner, one
    torch thread; the tests that use it only read what it wrote."""
    project = with_tiny_env(scratch_project(tmp_path_factory.mktemp("tiny_run")))
    result = kedro(project, "--env", "tiny", env=ONE_THREAD)
    assert result.returncode == 0, result.stderr[-3000:]
    return project
