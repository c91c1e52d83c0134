"""Optional MLflow tracking (adapters/tracking.py): its settings, and a tracker's runs,
parameters, metrics and artifacts read back from a SQLite store."""

import pandas as pd
import pytest

from ieu_potion.adapters import tracking
from ieu_potion.adapters.datasets import HtmlDataset, ResultsArchiveDataset
from ieu_potion.config import ParameterError

mlflow = pytest.importorskip("mlflow", reason="the mlflow extra is not installed")


def test_tracking_is_off_unless_the_file_or_the_switch_turns_it_on(monkeypatch):
    monkeypatch.delenv(tracking.SWITCH, raising=False)
    assert not tracking.tracking_config(None).enabled
    assert tracking.tracking_config({"mlflow": {"enabled": True}}).enabled
    monkeypatch.setenv(tracking.SWITCH, "1")
    assert tracking.tracking_config({"mlflow": {"enabled": False}}).enabled
    monkeypatch.setenv(tracking.SWITCH, "0")
    assert not tracking.tracking_config({"mlflow": {"enabled": True}}).enabled
    monkeypatch.setenv(tracking.SWITCH, "yes")
    with pytest.raises(ParameterError, match="IEU_POTION_MLFLOW must be 0 or 1, got 'yes'"):
        tracking.tracking_config(None)
    monkeypatch.delenv(tracking.SWITCH)
    with pytest.raises(ParameterError, match="tracking.mlflow.experimnet"):
        tracking.tracking_config({"mlflow": {"experimnet": "x"}})


@pytest.mark.parametrize(
    "name, expected",
    [
        ("badnets_white.seed_0.ieu_history", ("badnets_white.seed_0", "ieu_history")),
        ("seed_2.backbone_history", ("seed_2", "backbone_history")),
        ("backbone_history", ("", "backbone_history")),
        ("main_table", ("", "main_table")),
    ],
)
def test_a_data_set_belongs_to_the_replicate_its_name_starts_with(name, expected):
    assert tracking.replicate_of(name) == expected


def test_a_tracker_logs_parameters_epochs_results_and_reports_in_nested_runs(tmp_path):
    from mlflow.tracking import MlflowClient

    config = tracking.TrackingConfig(enabled=True, experiment="unit")
    parameters = {"seeds": 1, "potion": {"ptn": {"rho": 0.1}, "shares": [0.1, 0.5]}}
    tracker = tracking.RunTracker.start(config, str(tmp_path), parameters, "a run", {"env": "t"})
    history = pd.DataFrame(
        {"epoch": [1, 2, 3], "train_loss": [2.0, 1.0, float("nan")], "note": ["a", "b", "c"]}
    )
    rows = pd.DataFrame(
        {
            "method": ["xlf_ptn", "xlf_ptn", "none"],
            "discovery_share": ["share_0.1", "share_0.1", "none"],
            "metric": ["poison_healed", "gave_up", "clean_accuracy"],
            "value": [0.8, 0.0, 0.9],
        }
    )
    assert tracker.log_output("ns.seed_0.none_history", history)
    assert tracker.log_output("ns.seed_0.results_potion", rows)
    assert not tracker.log_output("ns.seed_0.results_potion", rows), "logged once"
    assert not tracker.log_output("main_table", rows), "a table, not a history or results"
    report = tmp_path / "08_reporting" / "report.html"
    report.parent.mkdir()
    report.write_text("<html>report</html>")
    layer = {"kedro-viz": {"layer": "reporting"}}
    assert tracker.log_artifact("report_html", HtmlDataset(str(report), metadata=layer))
    archive = ResultsArchiveDataset(str(report.with_name("results.csv")), metadata=layer)
    assert not tracker.log_artifact("results_archive", archive), "only the listed types"
    tracker.finish("FINISHED")

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}")
    parent = client.get_run(tracker.parent)
    assert parent.info.status == "FINISHED" and parent.data.tags["env"] == "t"
    assert parent.data.params == {
        "seeds": "1",
        "potion.ptn.rho": "0.1",
        "potion.shares": "[0.1, 0.5]",
    }
    assert set(parent.data.tags) >= {"fingerprint.seeds", "fingerprint.potion"}
    child = client.get_run(tracker.children["ns.seed_0"])
    assert child.data.tags["mlflow.parentRunId"] == tracker.parent
    assert child.info.status == "FINISHED"
    losses = client.get_metric_history(child.info.run_id, "none/train_loss")
    assert [(m.step, m.value) for m in losses] == [(1, 2.0), (2, 1.0)], "NaN left out"
    assert child.data.metrics["xlf_ptn/share_0.1/poison_healed"] == 0.8
    assert child.data.metrics["none/clean_accuracy"] == 0.9
    assert "none/note" not in child.data.metrics
    assert [a.path for a in client.list_artifacts(tracker.parent)] == ["report.html"]
    assert (tmp_path / "mlflow" / "artifacts").is_dir(), "artifacts beside the store"


def test_tracking_a_remote_data_root_needs_a_store_named(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    config = tracking.TrackingConfig(enabled=True)
    with pytest.raises(ParameterError, match="is remote: set tracking.yml's mlflow.tracking_uri"):
        tracking.RunTracker.start(config, "s3://bucket/root", {}, "r", {})
