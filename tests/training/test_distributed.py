"""Data-parallel training under torchrun: two gloo ranks on this CPU give what one
process gives with the same global batch (tests/training/ddp_worker.py)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ieu_potion.training.distributed import World, join
from tests.badinput import bad_input
from tests.training import ddp_worker

WORKER = Path(ddp_worker.__file__)
ROOT = WORKER.parents[2]


def torchrun(*args, ranks=2, timeout=240):
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": path}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += ["--nproc_per_node", str(ranks), *map(str, args)]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def one_and_two(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ddp")
    ddp_worker.main(str(folder / "one.json"))
    result = torchrun(WORKER, folder / "two.json")
    assert result.returncode == 0, result.stderr[-3000:]
    return [json.loads((folder / f"{n}.json").read_text()) for n in ("one", "two")]


def test_two_ranks_train_the_weights_one_process_trains(one_and_two):
    one, two = one_and_two
    assert (one["ranks"], two["ranks"]) == (1, 2)
    # the same gradients up to the order of float32 sums: 1e-5 after 33 steps
    np.testing.assert_allclose(two["weights"], one["weights"], rtol=0, atol=1e-5)
    np.testing.assert_allclose(two["plain_loss"], one["plain_loss"], rtol=1e-5)
    np.testing.assert_allclose(two["ieu_loss"], one["ieu_loss"], rtol=1e-5)
    np.testing.assert_allclose(two["flooding_loss"], one["flooding_loss"], rtol=1e-5)


def test_ieu_takes_the_same_unlearning_steps_on_two_ranks(one_and_two):
    one, two = one_and_two
    assert one["unlearning_steps"] == two["unlearning_steps"] and sum(one["unlearning_steps"])
    assert one["samples_queued"] == two["samples_queued"]
    assert one["gate_flagged"] == two["gate_flagged"]


def test_importances_are_summed_over_the_ranks(one_and_two):
    one, two = one_and_two
    np.testing.assert_allclose(two["xlf"], one["xlf"], rtol=1e-5, atol=1e-6)


@bad_input(
    "several torchrun ranks without `distributed: true`",
    "refused before any work (each rank would write every artifact)",
)
def test_ranks_without_the_setting_are_refused(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(RuntimeError, match="torchrun started 2 ranks but the parameter"):
        join(False)
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert join(True) == World()


def test_shards_cover_a_batch_once_in_order():
    sizes = [World(rank, 3).shard(11) for rank in range(3)]
    assert [(s.start, s.stop) for s in sizes] == [(0, 4), (4, 8), (8, 11)]
