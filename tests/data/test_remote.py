"""The project's artifacts on an object store: every artifact type round trips through an
S3-compatible server (moto) started on the loopback address, and the project's catalog
writes there when ``data_root`` names a bucket."""

import re
import shutil
import socket
import time
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest
import torch
from kedro.config import OmegaConfigLoader
from kedro.io import DataCatalog, DatasetError
from moto.server import ThreadedMotoServer

from ieu_potion.adapters.datasets import (
    ArraysDataset,
    Cifar10Dataset,
    HtmlDataset,
    ImageFolderDataset,
    ImageSetDataset,
    JsonDataset,
    ModelDataset,
    PlotlyFigureDataset,
    ResultsArchiveDataset,
    ResultsDataset,
    StegaCodecDataset,
    TableDataset,
)
from ieu_potion.attacks.stega import CodecConfig, StegaCodec
from ieu_potion.data import DataLayoutError
from ieu_potion.io import (
    RemotePath,
    atomic_write_bytes,
    local_copy,
    location,
    remove_temporaries,
)
from ieu_potion.models import ModelSpec, build_model
from ieu_potion.results import RunKey
from tests.badinput import bad_input
from tests.data.test_cifar10 import make_cifar_folder
from tests.data.test_folders import make_folder

PROJECT = Path(__file__).resolve().parents[2]
BUCKET = "ieu-runs"
# Fail within seconds, not minutes, if the server stops answering.
CLIENT = {"connect_timeout": 5, "read_timeout": 20, "retries": {"max_attempts": 2}}


@pytest.fixture(scope="module")
def s3_server():
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    deadline = time.monotonic() + 10
    while True:  # up within 10 s, or the tests fail
        try:
            socket.create_connection((host, port), timeout=1).close()
            break
        except OSError:
            if time.monotonic() > deadline:
                server.stop()
                pytest.fail("the moto S3 server did not start within 10 s")
            time.sleep(0.1)
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3(s3_server, monkeypatch, request):
    """A fresh folder in the bucket; the credentials come from the environment, as on a
    cluster, and s3fs's instance cache is bypassed so each test sees the server afresh."""
    for name, value in {
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": s3_server,
    }.items():
        monkeypatch.setenv(name, value)
    root = location(f"s3://{BUCKET}", skip_instance_cache=True, config_kwargs=CLIENT)
    if not root.fs.exists(BUCKET):
        root.fs.mkdir(BUCKET)
    return f"s3://{BUCKET}/{request.node.name}"


def fs_args():
    return {"skip_instance_cache": True, "config_kwargs": CLIENT}


def test_every_artifact_type_round_trips_through_s3(s3, small_set):
    def remote(kind, name, **kwargs):
        dataset = kind(filepath=f"{s3}/{name}", fs_args=fs_args(), **kwargs)
        assert isinstance(dataset._filepath, RemotePath) and not dataset.exists()
        return dataset

    images = remote(ImageSetDataset, "train.npz")
    images.save(small_set)
    loaded = images.load()
    assert images.exists() and np.array_equal(loaded.images, small_set.images)
    assert loaded.class_names == small_set.class_names

    arrays = remote(ArraysDataset, "subsets.npz")
    arrays.save({"a": np.arange(5), "b": np.ones((2, 3))})
    assert np.array_equal(arrays.load()["a"], np.arange(5))

    frame = pd.DataFrame({"epoch": [1, 2], "loss": [0.5, 0.25]})
    table = remote(TableDataset, "history.csv", markdown=True)
    table.save(frame)
    pd.testing.assert_frame_equal(table.load(), frame)
    assert (table._filepath.with_suffix(".md")).read_text().startswith("|")

    rows = RunKey("d", "ns", "blended", 0, "f").rows("none", {"clean_accuracy": 0.5})
    results = remote(ResultsDataset, "results_none.parquet")
    results.save(rows)
    assert results.load().value.tolist() == [0.5]
    archive = remote(ResultsArchiveDataset, "results.csv")
    archive.save(rows)
    archive.save(RunKey("d", "ns", "blended", 1, "f").rows("none", {"clean_accuracy": 0.7}))
    assert sorted(archive.load().value) == [0.5, 0.7]

    for kind, name, value in [
        (JsonDataset, "settings.json", {"alpha": 0.5, "order": ["b", "a"]}),
        (HtmlDataset, "report.html", "<html><body>report</body></html>"),
    ]:
        dataset = remote(kind, name)
        dataset.save(value)
        assert dataset.load() == value
    figure = remote(PlotlyFigureDataset, "figure.json")
    figure.save(go.Figure(go.Bar(x=[1, 2], y=[3, 4])))
    assert list(figure.load().data[0].y) == [3, 4]


def test_models_and_the_codec_round_trip_and_a_missing_commit_mark_is_named(s3):
    model = build_model(ModelSpec("resnet10t", 3))
    dataset = ModelDataset(filepath=f"{s3}/models/undefended", fs_args=fs_args())
    dataset.save(model)
    assert dataset.exists()
    assert same_weights(dataset.load(), model)

    codec = StegaCodec(CodecConfig(), (32, 32))
    codec_set = StegaCodecDataset(filepath=f"{s3}/codec", fs_args=fs_args())
    codec_set.save(codec)
    assert same_weights(codec_set.load(), codec)

    (dataset._filepath / "spec.json").unlink()  # an interrupted save: weights, no spec
    assert not dataset.exists()
    with pytest.raises(DatasetError, match=rf"{s3}/models/undefended/spec.json' missing"):
        dataset.load()


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    left, right = a.state_dict(), b.state_dict()
    return left.keys() == right.keys() and all(torch.equal(left[k], right[k]) for k in left)


def test_an_object_store_write_is_one_upload_and_leaves_no_temporary(s3):
    target = location(f"{s3}/one/payload.bin", **fs_args())
    assert target.object_store
    atomic_write_bytes(target, b"first")
    atomic_write_bytes(target, b"second")
    assert target.read_bytes() == b"second"
    assert target.fs.ls(target.parent.path, detail=False) == [target.path]
    assert remove_temporaries(target.parent) == []


def test_a_file_another_process_wrote_is_seen_despite_a_cached_listing(s3):
    mine = location(f"{s3}/shared/model.json", **fs_args())
    theirs = location(f"{s3}/shared/model.json", **fs_args())  # another worker's client
    atomic_write_bytes(mine.parent / "weights.bin", b"w")
    assert mine.parent.is_dir() and not mine.is_file()  # the folder's listing is cached
    atomic_write_bytes(theirs, b"{}")
    assert mine.is_file()


def test_a_filesystem_with_renames_writes_through_a_temporary_and_clears_killed_ones():
    target = location("memory://ieu-test-rename/run/payload.bin")
    assert not target.object_store
    atomic_write_bytes(target, b"whole")
    assert target.read_bytes() == b"whole"
    assert target.fs.ls(target.parent.path, detail=False) == [target.path]
    stray = target.parent / ".payload.bin.0123.tmp"  # what a killed write leaves
    stray.write_bytes(b"half")
    assert remove_temporaries(target.parent) == [stray] and not stray.is_file()
    target.fs.rm(target.parent.path, recursive=True)


def test_a_protocol_without_its_package_names_the_package():
    with pytest.raises(ImportError, match="gcsfs"):
        location("gs://bucket/run/model")


def test_the_project_catalog_writes_to_the_bucket_that_data_root_names(s3, tmp_path, small_set):
    conf = tmp_path / "conf"
    for env in ("base", "local"):
        (conf / env).mkdir(parents=True)
    shutil.copy(PROJECT / "conf" / "base" / "catalog.yml", conf / "base" / "catalog.yml")
    # the project's globals, with data_root pointing at the bucket
    shipped = (PROJECT / "conf" / "base" / "globals.yml").read_text(encoding="utf-8")
    globals_yml = re.sub(r"(?m)^data_root: .*$", f"data_root: {s3}", shipped)
    assert globals_yml != shipped
    (conf / "base" / "globals.yml").write_text(globals_yml, encoding="utf-8")
    loader = OmegaConfigLoader(str(conf), base_env="base", default_run_env="local")
    catalog = DataCatalog.from_config(loader["catalog"])
    poisoned = catalog.get("blended.seed_0.poisoned_train")
    assert str(poisoned._filepath) == f"{s3}/03_primary/blended/seed_0/poisoned_train.npz"
    catalog.save("blended.seed_0.poisoned_train", small_set)
    assert np.array_equal(catalog.load("blended.seed_0.poisoned_train").labels, small_set.labels)


def same_sets(a, b) -> bool:
    return all(
        np.array_equal(a[split].images, b[split].images)
        and np.array_equal(a[split].labels, b[split].labels)
        for split in ("train", "test")
    )


def test_source_folders_at_a_url_are_read_from_a_local_copy_made_once(s3, tmp_path):
    local = tmp_path / "signs"
    make_folder(local, "train", ["00", "01"], per_class=3)
    make_folder(local, "test", ["00", "01"], per_class=2)
    remote = location(f"{s3}/signs", **fs_args())
    remote.fs.put(str(local) + "/", remote.path, recursive=True)
    cache = tmp_path / "cache"
    settings = {"image_size": 16, "test_dir": "test", "cache": str(cache), "fs_args": fs_args()}
    source = ImageFolderDataset(path=f"{s3}/signs", **settings)
    source.check()
    expected = ImageFolderDataset(path=str(local), image_size=16, test_dir="test").load()
    assert same_sets(source.load(), expected)
    copies = list(cache.iterdir())
    assert len(copies) == 1 and not list(cache.glob(".*"))  # no temporary left behind
    assert same_sets(ImageFolderDataset(path=f"{s3}/signs", **settings).load(), expected)
    assert list(cache.iterdir()) == copies  # the second reader reused the copy
    # a changed remote file makes a new copy, with the new image
    remote.fs.pipe_file(
        f"{remote.path}/train/01/img0.png", (local / "test/00/img0.png").read_bytes()
    )
    changed = ImageFolderDataset(path=f"{s3}/signs", **settings).load()
    assert len(list(cache.iterdir())) == 2 and not same_sets(changed, expected)


def test_a_cifar10_folder_at_a_url_reads_as_the_local_one(s3, tmp_path):
    make_cifar_folder(tmp_path / "cifar-10-batches-py")
    remote = location(f"{s3}/cifar-10-batches-py", **fs_args())
    remote.fs.put(str(tmp_path / "cifar-10-batches-py") + "/", remote.path, recursive=True)
    source = Cifar10Dataset(path=str(remote), fs_args=fs_args(), cache=str(tmp_path / "cache"))
    source.check()
    assert same_sets(
        source.load(), Cifar10Dataset(path=str(tmp_path / "cifar-10-batches-py")).load()
    )


def test_a_missing_source_folder_at_a_url_names_the_url_and_the_layout(s3, tmp_path):
    source = ImageFolderDataset(
        path=f"{s3}/nowhere", image_size=16, fs_args=fs_args(), cache=str(tmp_path / "cache")
    )
    with pytest.raises(DataLayoutError, match=r"nowhere' does not exist; expected a folder"):
        source.check()
    assert not (tmp_path / "cache").exists()


def test_a_remote_name_that_would_leave_the_copy_is_refused(tmp_path, monkeypatch):
    folder = location("memory://escape/data")
    folder.fs.pipe_file("/escape/data/train/a.png", b"x")
    # a listing as a store whose keys may hold ".." could return it
    listing = {"/escape/data/train/a.png": {"size": 1}, "/escape/data/../outside.png": {"size": 1}}
    monkeypatch.setattr(folder.fs, "find", lambda path, detail: listing)
    try:
        with pytest.raises(ValueError, match="would be copied outside the folder"):
            local_copy(folder, tmp_path)
        assert not list(tmp_path.iterdir())
    finally:
        monkeypatch.undo()
        folder.fs.rm("/escape", recursive=True)


@bad_input(
    "a cached copy of a remote source with a file changed or removed, or that others can write",
    "a damaged copy is made afresh; one others can write is refused (PermissionError)",
)
def test_a_cached_copy_is_checked_before_it_is_reused(tmp_path, monkeypatch):
    folder = location("memory://cached/data")
    folder.fs.pipe_file("/cached/data/train/0/a.png", b"12345")
    folder.fs.pipe_file("/cached/data/train/1/b.png", b"678")
    try:
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "home-cache"))
        copy = local_copy(folder)  # the default: the user's cache directory, no /tmp
        assert copy.parent == tmp_path / "home-cache" / "ieu-potion" / "sources"
        (copy / "train/0/a.png").write_bytes(b"planted")
        (copy / "train/1/b.png").unlink()
        again = local_copy(folder)
        assert again == copy and (copy / "train/0/a.png").read_bytes() == b"12345"
        assert (copy / "train/1/b.png").read_bytes() == b"678"
        copy.chmod(0o777)
        with pytest.raises(PermissionError, match="writable by others"):
            local_copy(folder)
    finally:
        folder.fs.rm("/cached", recursive=True)
