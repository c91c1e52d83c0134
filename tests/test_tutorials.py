"""Each tutorial in docs/tutorials/ done as it says, through a real `kedro run`: the code
blocks it tells the reader to put in a module are imported, its catalog entry is added,
and the tiny environment runs with the new pieces named in the parameters."""

import json
import re
from pathlib import Path

import pytest

from tests.test_run import ONE_THREAD, python_in, scratch_project, with_tiny_env

ROOT = Path(__file__).resolve().parents[1]
MODULE = re.compile(
    r"Put (?:this|it) in\s+`src/ieu_potion/\w+/(\w+)\.py`:\s+```python\n(.*?)```", re.S
)
CATALOG = re.compile(r"```yaml\n(\"\{ns\}.*?)```", re.S)

# The modules imported first (as a package's `__init__.py` would), then two runs of one
# pipeline of the tiny environment: as the tutorial says, then with a setting out of range.
RUN = """
import importlib, json, sys
from pathlib import Path
from kedro.framework.cli.cli import KedroCLI

package, names, pipeline, bad = sys.argv[1:5]
sys.path.insert(0, package)
for name in json.loads(names):
    importlib.import_module(name)
codes = []
for extra in ([], ["--params", bad]):
    try:
        KedroCLI(Path.cwd()).main(
            args=["run", "--env", "tiny", "--pipelines", pipeline, *extra], prog_name="kedro"
        )
    except SystemExit as exc:
        codes.append(exc.code)
print("CODES", json.dumps(codes))
"""


def run_tutorial(project, package, modules, pipeline, bad):
    """The RUN script in ``project``: (exit codes of the two runs, their output)."""
    names = json.dumps([n for n, _ in modules])
    args = ("-c", RUN, str(package), names, pipeline, bad)
    result = python_in(project, *args, env=ONE_THREAD)
    out = result.stdout + result.stderr
    return json.loads(out.split("CODES", 1)[1].split("\n", 1)[0]), out


@pytest.mark.slow
def test_add_a_defence(tmp_path):
    text = (ROOT / "docs" / "tutorials" / "add_a_defence.md").read_text()
    modules = MODULE.findall(text)
    assert [name for name, _ in modules] == ["label_smoothing", "loss_filter"]
    package = tmp_path / "tutorial"
    package.mkdir()
    for name, code in modules:
        (package / f"{name}.py").write_text(code)
    (tmp_path / "project").mkdir()
    project = with_tiny_env(scratch_project(tmp_path / "project"))
    (entry,) = CATALOG.findall(text)
    catalog = project / "conf" / "base" / "catalog.yml"
    catalog.write_text(catalog.read_text() + "\n" + entry)
    parameters = project / "conf" / "tiny" / "parameters.yml"
    listed = "  methods: [none, abl, ibau, attnblock]\n"
    assert listed in parameters.read_text()
    parameters.write_text(
        parameters.read_text().replace(
            listed,
            "  methods: [none, label_smoothing, loss_filter]\n"
            "  label_smoothing: {smoothing: 0.2}\n",
        )
    )
    bad = "baselines.label_smoothing.smoothing=1.5"
    codes, out = run_tutorial(project, package, modules, "baselines", bad)
    assert codes == [0, 1], out[-3000:]
    assert "baselines.label_smoothing.smoothing: Input should be less than 1, got 1.5" in out

    import numpy as np
    import pandas as pd

    run = project / "data/07_model_output/badnets_white/seed_0"
    for method in ("label_smoothing", "loss_filter"):
        rows = pd.read_parquet(run / f"results_{method}.parquet")
        assert {"clean_accuracy", "attack_success_rate"} <= set(rows.metric)
        assert (project / "data/06_models/badnets_white/seed_0" / method).is_dir()
    from ieu_potion.adapters.datasets import ImageSetDataset

    train = ImageSetDataset(
        str(project / "data/03_primary/badnets_white/seed_0/poisoned_train.npz")
    )
    flags = np.load(run / "loss_filter_flags.npz", allow_pickle=False)["flagged"]
    assert len(flags) == max(1, int(0.1 * len(train.load())))  # the default share, 0.1
    rows = pd.read_parquet(run / "results_loss_filter.parquet")
    assert "isolation_precision" in set(rows.metric)


@pytest.mark.slow
def test_add_an_attack_and_add_a_data_set(tmp_path):
    import numpy as np

    from ieu_potion.data import ImageSet

    modules = []
    for page in ("add_an_attack.md", "add_a_data_set.md"):
        modules += MODULE.findall((ROOT / "docs" / "tutorials" / page).read_text())
    assert [name for name, _ in modules] == ["frame", "arrays_source"]
    package = tmp_path / "tutorial"
    package.mkdir()
    for name, code in modules:
        (package / f"{name}.py").write_text(code)
    (tmp_path / "project").mkdir()
    project = with_tiny_env(scratch_project(tmp_path / "project"))
    rng = np.random.default_rng(0)
    labels = {"train": np.arange(80) % 4, "test": np.arange(24) % 4}
    np.savez(
        project / "arrays.npz",
        **{
            f"x_{s}": rng.integers(0, 256, (len(y), 16, 16, 3), dtype=np.uint8)
            for s, y in labels.items()
        },
        **{f"y_{s}": y for s, y in labels.items()},
        class_names=np.array(["a", "b", "c", "d"]),
    )
    (project / "conf" / "tiny" / "catalog.yml").write_text(
        "source_images:\n  type: arrays_source.ArraysSource\n  filepath: arrays.npz\n"
    )
    parameters = project / "conf" / "tiny" / "parameters.yml"
    parameters.write_text(
        parameters.read_text().replace(
            "  attacks: [badnets_white]\n  discovery",
            "  attacks: [badnets_white, frame]\n  discovery",
        )
        + "frame:\n  attack: {name: frame, target_class: 1, rate: 0.1, seed: 0, stamp: after,\n"
        "           settings: {border: 1, weight: 0.6}}\n"
    )
    bad = "frame.attack.settings.weight=1.5"
    codes, out = run_tutorial(project, package, modules, "data_poisoning", bad)
    assert codes == [0, 1], out[-3000:]
    assert "frame.attack: weight must lie in (0, 1], got 1.5" in " ".join(out.split())

    poisoned = ImageSet.load(project / "data/03_primary/frame/seed_0/poisoned_train.npz")
    assert poisoned.class_names == ("a", "b", "c", "d")
    rows = np.flatnonzero(poisoned.poisoned)
    assert len(rows) == round(0.1 * len(poisoned)) and (poisoned.labels[rows] == 1).all()
    # the frame is in the stored images, the originals are kept for the augmented views
    assert (poisoned.images[rows][:, 0, :, 0] >= 0.6 * 255 - 1).all()
    assert len(poisoned.overlay.originals) == len(rows)
