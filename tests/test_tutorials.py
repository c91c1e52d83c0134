"""Each tutorial in docs/tutorials/ done as it says, through a real `kedro run`: the code
blocks it tells the reader to put in a module are imported, its catalog entry is added,
and the tiny environment runs with the new pieces named in the parameters."""

import json
import re
import shutil
from pathlib import Path

import pytest

from tests.test_run import ONE_THREAD, python_in, scratch_project, with_tiny_env

ROOT = Path(__file__).resolve().parents[1]
MODULE = re.compile(
    r"Put (?:this|it) in\s+`src/ieu_potion/\w+/(\w+)\.py`:\s+```python\n(.*?)```", re.S
)
CATALOG = re.compile(r"```yaml\n(\"\{ns\}.*?)```", re.S)

# The modules imported first (as a package's `__init__.py` would), then `kedro run` with
# each list of arguments in turn (the tiny environment's pipeline as the tutorial says,
# say, then with a setting out of range).
RUN = """
import importlib, json, sys
from pathlib import Path
from kedro.framework.cli.cli import KedroCLI

package, names, commands = sys.argv[1:4]
sys.path.insert(0, package)
for name in json.loads(names):
    importlib.import_module(name)
codes = []
for args in json.loads(commands):
    try:
        KedroCLI(Path.cwd()).main(args=["run", *args], prog_name="kedro")
    except SystemExit as exc:
        codes.append(exc.code)
print("CODES", json.dumps(codes))
"""


def run_tutorial(project, package, modules, *commands):
    """The RUN script in ``project``: (exit codes of the runs, their output)."""
    names = json.dumps([n for n, _ in modules])
    args = ("-c", RUN, str(package), names, json.dumps(commands))
    result = python_in(project, *args, env=ONE_THREAD)
    out = result.stdout + result.stderr
    return json.loads(out.split("CODES", 1)[1].split("\n", 1)[0]), out


def as_written_and_refused(pipeline, bad):
    """The tiny environment's ``pipeline``, then again with the setting ``bad``."""
    tiny = ["--env", "tiny", "--pipelines", pipeline]
    return tiny, [*tiny, "--params", bad]


def tutorial_modules(tmp_path, *pages):
    """The modules that ``pages`` tell the reader to write, written to a folder of their
    own: (that folder, [(name, code)])."""
    modules = []
    for page in pages:
        modules += MODULE.findall((ROOT / "docs" / "tutorials" / page).read_text())
    package = tmp_path / "tutorial"
    package.mkdir()
    for name, code in modules:
        (package / f"{name}.py").write_text(code)
    return package, modules


@pytest.mark.slow
def test_add_a_defence(tmp_path):
    text = (ROOT / "docs" / "tutorials" / "add_a_defence.md").read_text()
    package, modules = tutorial_modules(tmp_path, "add_a_defence.md")
    assert [name for name, _ in modules] == ["label_smoothing", "loss_filter"]
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
    codes, out = run_tutorial(project, package, modules, *as_written_and_refused("baselines", bad))
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

    package, modules = tutorial_modules(tmp_path, "add_an_attack.md", "add_a_data_set.md")
    assert [name for name, _ in modules] == ["frame", "arrays_source"]
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
    commands = as_written_and_refused("data_poisoning", bad)
    codes, out = run_tutorial(project, package, modules, *commands)
    assert codes == [0, 1], out[-3000:]
    assert "frame.attack: weight must lie in (0, 1], got 1.5" in " ".join(out.split())

    poisoned = ImageSet.load(project / "data/03_primary/frame/seed_0/poisoned_train.npz")
    assert poisoned.class_names == ("a", "b", "c", "d")
    rows = np.flatnonzero(poisoned.poisoned)
    assert len(rows) == round(0.1 * len(poisoned)) and (poisoned.labels[rows] == 1).all()
    # the frame is in the stored images, the originals are kept for the augmented views
    assert (poisoned.images[rows][:, 0, :, 0] >= 0.6 * 255 - 1).all()
    assert len(poisoned.overlay.originals) == len(rows)


@pytest.mark.slow
def test_add_a_report_figure(tmp_path, tiny_run):
    """The figure added to a finished run (a copy of the tiny run): only its node and the
    report run; the figure is saved with its reading and shown in the report."""
    import pandas as pd
    import plotly.io as pio

    from ieu_potion.reporting import figures

    package, modules = tutorial_modules(tmp_path, "add_a_report_figure.md")
    assert [name for name, _ in modules] == ["accuracy_vs_asr"]
    project = tmp_path / "project"
    shutil.copytree(tiny_run, project)
    reporting = project / "data" / "08_reporting"
    before = {p: p.read_bytes() for p in (reporting / "figures").iterdir()}
    command = ["--env", "tiny", "--from-nodes", "accuracy_vs_asr_figure"]
    codes, out = run_tutorial(project, package, modules, command)
    assert codes == [0], out[-3000:]
    said = " ".join(out.split())  # the log wraps long lines
    assert "Running node: accuracy_vs_asr_figure" in said and "Running node: report" in said
    assert "Running node: timing_figure" not in said, "only the new figure and the report"
    assert {p: p.read_bytes() for p in before} == before, "the other figures are untouched"

    figure = pio.from_json((reporting / "figures" / "accuracy_vs_asr.json").read_text())
    results = pd.read_csv(reporting / "tables" / "results_long.csv")
    shown = results[(results.discovery_share == "none") & (results.metric == "clean_accuracy")]
    assert sum(len(trace.x) for trace in figure.data) == len(shown)
    text = figures.reading(figure)
    assert text.startswith(f"{len(shown)} models (N = 1 seeds). The lowest mean attack")
    report = (reporting / "report.html").read_text()
    assert "Clean accuracy against attack success rate, one point per seed" in report
    assert text.split(".")[0] in report

    # a name the report already uses is refused where the module is imported
    def timing(results):
        return None

    with pytest.raises(ValueError, match="a report figure named 'timing' exists already"):
        figures.register_figure(timing)
