"""The run's progress line after every node, and the estimate of the time left from an
earlier run of the same configuration."""

import json
import logging

from kedro.io import DataCatalog, MemoryDataset
from kedro.pipeline import node, pipeline

from ieu_potion.hooks import RUN_TIMES, ProgressHook


def step(x):
    return x


STEPS = pipeline([node(step, "a", "b", name="first"), node(step, "b", "c", name="second")])


def run(project, parameters, caplog, env="base", resume=False, written=()):
    """Drive the hook through STEPS as a runner would (under ``--only-missing-outputs``
    where ``resume``, skipping the nodes whose outputs ``written`` holds); the progress
    lines it logged."""
    hook = ProgressHook()
    catalog = DataCatalog({"parameters": MemoryDataset(parameters)})
    for name in written:
        catalog[name] = MemoryDataset(1)
    run_params = {"project_path": str(project), "env": env, "only_missing_outputs": resume}
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="ieu_potion.hooks"):
        hook.before_pipeline_run(run_params, STEPS, catalog)
        for each in STEPS.nodes:
            if resume and set(each.outputs) <= set(written):
                continue
            hook.before_node_run(each)
            hook.after_node_run(each)
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("node ")]


def test_each_node_logs_its_count_and_times(tmp_path, caplog):
    lines = run(tmp_path, {"lr": 1}, caplog)
    assert len(lines) == 2
    assert lines[0].startswith("node 1/2 done: first in 0:00; 0:00 since the run started")
    assert lines[1].startswith("node 2/2 done: second in 0:00")
    assert not any("left" in line for line in lines)  # nothing recorded yet
    times = json.loads((tmp_path / RUN_TIMES).read_text())
    assert [set(v) for v in times.values()] == [{"first", "second"}]


def test_a_repeated_configuration_gets_an_estimate_and_another_does_not(tmp_path, caplog):
    run(tmp_path, {"lr": 1}, caplog)
    key = next(iter(json.loads((tmp_path / RUN_TIMES).read_text())))
    # the recorded second node took 125 s: the first line of the repeat estimates that
    (tmp_path / RUN_TIMES).write_text(json.dumps({key: {"first": 1.0, "second": 125.0}}))
    again = run(tmp_path, {"lr": 1}, caplog)
    assert again[0].endswith("; about 2:05 left")
    assert "left" not in again[1]  # nothing left
    other = run(tmp_path, {"lr": 2}, caplog)
    assert not any("left" in line for line in other)
    assert "left" not in "".join(run(tmp_path, {"lr": 1}, caplog, env="gtsrb"))
    assert len(json.loads((tmp_path / RUN_TIMES).read_text())) == 3


def test_an_unreadable_record_is_replaced(tmp_path, caplog):
    (tmp_path / RUN_TIMES).write_text("{not json")
    assert len(run(tmp_path, {"lr": 1}, caplog)) == 2
    assert len(json.loads((tmp_path / RUN_TIMES).read_text())) == 1


def test_a_resumed_run_counts_and_estimates_only_what_it_reruns(tmp_path, caplog):
    run(tmp_path, {"lr": 1}, caplog)
    key = next(iter(json.loads((tmp_path / RUN_TIMES).read_text())))
    (tmp_path / RUN_TIMES).write_text(json.dumps({key: {"first": 600.0, "second": 5.0}}))
    lines = run(tmp_path, {"lr": 1}, caplog, resume=True, written=["b"])
    assert len(lines) == 1 and lines[0].startswith("node 1/1 done: second")


def test_a_forked_child_stays_quiet_and_leaves_the_record_alone(tmp_path, caplog, monkeypatch):
    hook = ProgressHook()
    catalog = DataCatalog({"parameters": MemoryDataset({"lr": 1})})
    hook.before_pipeline_run({"project_path": str(tmp_path), "env": "base"}, STEPS, catalog)
    monkeypatch.setattr("ieu_potion.hooks.os.getpid", lambda: -1)  # as in a forked child
    with caplog.at_level(logging.INFO, logger="ieu_potion.hooks"):
        for each in STEPS.nodes:
            hook.before_node_run(each)
            hook.after_node_run(each)
    assert "done:" not in caplog.text and not (tmp_path / RUN_TIMES).exists()
