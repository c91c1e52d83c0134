"""Kedro dataset types: choose and swap data sets in catalog YAML.

Source data sets (``DigitsDataset``, ``Cifar10Dataset``, ``ImageFolderDataset``) are
read-only and load ``{"train": ImageSet, "test": ImageSet}``.  Each has a cheap
``check()`` that the project's hook calls for every input of a run before any node
starts, so that a missing folder or wrong layout is reported up front, with the name of
the catalog entry.  The project's own artifacts (image sets, named arrays, tables, the
shared results table, models, figures) are written atomically and read without pickle.
"""

from __future__ import annotations

import dataclasses
import inspect
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio
from kedro.io import AbstractDataset, DatasetError
from kedro_datasets._typing import PlotlyPreview, TablePreview
from torch import nn

from ieu_potion.attacks.stega import CODEC_SPEC, CODEC_WEIGHTS, StegaCodec, load_codec, save_codec
from ieu_potion.config import settings_from_params
from ieu_potion.data import cifar10, digits, folders
from ieu_potion.data.errors import DataLayoutError
from ieu_potion.data.imageset import ImageSet
from ieu_potion.io import (
    AnyPath,
    atomic_write_bytes,
    atomic_write_text,
    checked_npz,
    local_copy,
    location,
    remove_temporaries,
)
from ieu_potion.models import load_model, save_model
from ieu_potion.models.factory import SPEC_FILE, WEIGHTS_FILE
from ieu_potion.reporting.tables import markdown_table
from ieu_potion.results import KEY_COLUMNS, RESULT_COLUMNS, check_rows
from ieu_potion.training import distributed
from ieu_potion.unlearning.potion import PotionConfig


class _SourceDataset(AbstractDataset[None, dict[str, ImageSet]]):
    """A read-only source of train and test image sets."""

    def save(self, data: Any) -> None:
        raise DatasetError(f"{type(self).__name__} is a read-only source data set")

    def check(self) -> None:
        """Raise ``DataLayoutError`` or ``ValueError`` if ``load`` cannot work."""

    def extent(self) -> tuple[int | None, int | None]:
        """(class count, training images, or an upper bound on them) as far as they are
        known without loading the images (None where not), after ``check``: the run's
        parameters are checked against them before any work."""
        return None, None


class DigitsDataset(_SourceDataset):
    """scikit-learn digits, plain or composited over scikit-image photographs (offline)."""

    def __init__(self, metadata: dict[str, Any] | None = None, **settings: Any) -> None:
        self.metadata = metadata
        if "photos" in settings:
            settings["photos"] = tuple(settings["photos"])
        self._settings = settings

    def check(self) -> None:
        defaults = _defaults(digits.make_digits)
        unknown = sorted(set(self._settings) - set(defaults))
        if unknown:
            raise ValueError(f"unknown digits settings {unknown}; valid: {', '.join(defaults)}")
        merged = {**defaults, **self._settings}
        merged.pop("seed")
        digits.check_settings(**merged)

    def extent(self) -> tuple[int, int]:
        return digits.CLASSES, digits.train_size(**self._settings)

    def load(self) -> dict[str, ImageSet]:
        return digits.make_digits(**self._settings)

    def _describe(self) -> dict[str, Any]:
        return dict(self._settings)


class _FolderSource(_SourceDataset):
    """A source read from a folder: a local path, or an fsspec URL (``s3://...``) whose
    files are copied to a local cache first (``io.local_copy``: once per version of the
    remote files) and then read and checked as a local folder is."""

    def __init__(
        self,
        path: str,
        credentials: dict[str, Any] | None = None,
        fs_args: dict[str, Any] | None = None,
        cache: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        self._path = location(path, credentials, **(fs_args or {}))
        self._cache = cache
        self._copy: Path | None = None
        self.metadata = metadata

    def _layout(self) -> str:
        raise NotImplementedError

    def _folder(self) -> Path:
        """The local folder to read: the path itself, or the copy of the URL's files."""
        if isinstance(self._path, Path):
            return self._path
        if self._copy is None:
            try:
                self._copy = local_copy(self._path, self._cache)
            except FileNotFoundError:
                raise DataLayoutError(
                    f"folder {str(self._path)!r} does not exist; expected {self._layout()}"
                ) from None
        return self._copy

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._path)}


class Cifar10Dataset(_FolderSource):
    """A ``cifar-10-batches-py`` folder, read from its batch files without unpickling code."""

    def _layout(self) -> str:
        return cifar10.LAYOUT

    def check(self) -> None:
        """The batch files exist, are regular files and are under the size limit."""
        cifar10.check_folder(self._folder())

    def extent(self) -> tuple[int, int]:
        return len(cifar10.CLASS_NAMES), cifar10.most_train_images(self._folder())

    def load(self) -> dict[str, ImageSet]:
        return cifar10.read_cifar10(self._folder())


class ImageFolderDataset(_FolderSource):
    """Class-per-subfolder images (GTSRB, TinyImageNet, Imagenette), resized on load."""

    def __init__(
        self,
        path: str,
        image_size: int,
        train_dir: str = "train",
        test_dir: str | None = "val",
        test_fraction: float = 0.2,
        seed: int = 0,
        **source: Any,
    ) -> None:
        super().__init__(path, **source)
        self._kwargs = {
            "image_size": image_size,
            "train_dir": train_dir,
            "test_dir": test_dir,
            "test_fraction": test_fraction,
            "seed": seed,
        }

    def _layout(self) -> str:
        return folders.layout(self._kwargs["train_dir"], self._kwargs["test_dir"])

    def check(self) -> None:
        folder = self._folder()
        for split in (self._kwargs["train_dir"], self._kwargs["test_dir"]):
            if split and not (folder / split).is_dir():
                where = self._path / split
                raise DataLayoutError(
                    f"folder {str(where)!r} does not exist; expected {self._layout()}"
                )

    def extent(self) -> tuple[int, int]:
        return folders.extent(self._folder(), **self._kwargs)

    def load(self) -> dict[str, ImageSet]:
        return folders.read_image_folders(self._folder(), **self._kwargs)

    def _describe(self) -> dict[str, Any]:
        return {**super()._describe(), **self._kwargs}


class _FileDataset(AbstractDataset):
    """An artifact at ``filepath``: a local path, or an fsspec URL (``s3://``, ``gs://``,
    ``abfs://``... with its fsspec package installed) whose filesystem is built with the
    keyword arguments in ``credentials`` and ``fs_args`` (``ieu_potion.io`` says how each
    kind of filesystem keeps writes all-or-nothing)."""

    def __init__(
        self,
        filepath: str,
        credentials: dict[str, Any] | None = None,
        fs_args: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        self._filepath = location(filepath, credentials, **(fs_args or {}))
        self.metadata = metadata

    def _exists(self) -> bool:
        return self._filepath.is_file()

    @property
    def file(self) -> AnyPath:
        """The data set's file (a table's CSV, a model's folder): what experiment
        tracking copies."""
        return self._filepath

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath)}

    def save(self, data: Any) -> None:
        """Write ``data`` (``_write``); under torchrun rank 0 writes and every rank waits
        for it, so a rank reading the artifact next finds it whole."""
        distributed.on_main(lambda: self._write(data), str(self._filepath))

    def _write(self, data: Any) -> None:
        raise NotImplementedError

    def remove_temporaries(self) -> list[AnyPath]:
        """Delete temporary files that a killed write of this data set left behind."""
        folders = [self._filepath.parent]
        if self._filepath.is_dir():
            folders.append(self._filepath)
        return [p for folder in folders for p in remove_temporaries(folder)]


class ImageSetDataset(_FileDataset):
    """One ``ImageSet`` as a compressed ``.npz`` (no pickle), written atomically."""

    def load(self) -> ImageSet:
        return ImageSet.load(self._filepath)

    def _write(self, data: ImageSet) -> None:
        data.save(self._filepath)


class ArraysDataset(_FileDataset):
    """A dictionary of named numeric arrays as ``.npz`` (no pickle), written atomically."""

    def load(self) -> dict[str, np.ndarray]:
        payload = checked_npz(self._filepath.read_bytes(), str(self._filepath))
        with np.load(payload, allow_pickle=False) as archive:
            return {name: archive[name] for name in archive.files}

    def _write(self, data: dict[str, np.ndarray]) -> None:
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **{k: np.asarray(v) for k, v in data.items()})
        atomic_write_bytes(self._filepath, buffer.getvalue())


class TableDataset(_FileDataset):
    """A pandas table as CSV, with a Parquet copy beside it (and, with ``markdown: true``, a
    Markdown one); each written atomically, the CSV last; read from the Parquet copy,
    which keeps the column types.  It exists only when every file does, so a run killed
    between two of them writes it again on resume.  Kedro-Viz previews the first rows."""

    def __init__(self, filepath: str, markdown: bool = False, **kwargs: Any) -> None:
        super().__init__(filepath, **kwargs)
        self._markdown = markdown

    def _companions(self) -> list[Path]:
        suffixes = [".parquet", ".md"] if self._markdown else [".parquet"]
        return [self._filepath.with_suffix(suffix) for suffix in suffixes]

    def _exists(self) -> bool:
        return all(p.is_file() for p in [self._filepath, *self._companions()])

    def load(self) -> pd.DataFrame:
        # The Parquet copy keeps the column types (integer counts with blanks, say).
        return pd.read_parquet(io.BytesIO(self._filepath.with_suffix(".parquet").read_bytes()))

    def _write(self, data: pd.DataFrame) -> None:
        # The CSV is the commit mark: removed first, written last.
        self._filepath.unlink(missing_ok=True)
        buffer = io.BytesIO()
        data.to_parquet(buffer, index=False)
        atomic_write_bytes(self._filepath.with_suffix(".parquet"), buffer.getvalue())
        if self._markdown:
            atomic_write_text(self._filepath.with_suffix(".md"), markdown_table(data))
        atomic_write_text(self._filepath, data.to_csv(index=False))

    def preview(self, nrows: int = 20) -> TablePreview:
        return TablePreview(self.load().head(nrows).to_dict(orient="split"))


class ResultsDataset(_FileDataset):
    """The results rows of one node (one namespace, seed and method): a Parquet file of
    the schema in ``ieu_potion.results``, written atomically."""

    def load(self) -> pd.DataFrame:
        return check_rows(pd.read_parquet(io.BytesIO(self._filepath.read_bytes())))

    def _write(self, data: pd.DataFrame) -> None:
        buffer = io.BytesIO()
        check_rows(data).to_parquet(buffer, index=False)
        atomic_write_bytes(self._filepath, buffer.getvalue())

    def preview(self, nrows: int = 20) -> TablePreview:
        return TablePreview(self.load().head(nrows).to_dict(orient="split"))


class ResultsArchiveDataset(TableDataset):
    """Every results row ever collected in this data folder: saving merges the new rows
    into the file (a row with the same key, i.e. every column but ``value``, is replaced).
    Rows of older configurations stay here, told apart by their fingerprint; only the
    reporting pipeline's ``collect_results`` node writes it."""

    def load(self) -> pd.DataFrame:
        if not self._filepath.is_file():
            return pd.DataFrame(columns=list(RESULT_COLUMNS))
        return pd.read_csv(
            io.BytesIO(self._filepath.read_bytes()),
            dtype={"discovery_share": str, "fingerprint": str, "namespace": str},
        )

    def _write(self, data: pd.DataFrame) -> None:
        old = self.load()
        if set(RESULT_COLUMNS) - set(old.columns):  # an archive of an older schema
            self._filepath.rename(self._filepath.with_suffix(".csv.old"))
            old = pd.DataFrame(columns=list(RESULT_COLUMNS))
        table = pd.concat([old, check_rows(data)], ignore_index=True)
        table = table.drop_duplicates(subset=list(KEY_COLUMNS), keep="last")
        super()._write(table.sort_values(list(KEY_COLUMNS), kind="stable").reset_index(drop=True))


class ModelDataset(_FileDataset):
    """A model as ``<folder>/model.safetensors`` plus ``<folder>/spec.json``; the spec is
    the commit mark (removed first, written last), so a half-saved model does not exist.

    Loading a folder with the weights but no ``spec.json`` (an interrupted save), or with a
    truncated or corrupted file, raises ``ArtifactError`` naming the file (Kedro wraps it
    in a ``DatasetError`` carrying the same message)."""

    def _exists(self) -> bool:
        return all((self._filepath / name).is_file() for name in (WEIGHTS_FILE, SPEC_FILE))

    def load(self) -> nn.Module:
        return load_model(self._filepath)

    def _write(self, data: nn.Module) -> None:
        save_model(data, self._filepath)


class StegaCodecDataset(_FileDataset):
    """ISSBA's codec as ``<folder>/codec.safetensors`` plus ``<folder>/codec.json`` (the
    commit mark: removed first, written last).  Missing halves, truncated or corrupted
    files raise ``ArtifactError`` naming the file, as for ``ModelDataset``."""

    def _exists(self) -> bool:
        return all((self._filepath / name).is_file() for name in (CODEC_WEIGHTS, CODEC_SPEC))

    def load(self) -> StegaCodec:
        return load_codec(self._filepath)

    def _write(self, data: StegaCodec) -> None:
        save_codec(data, self._filepath)


class PlotlyFigureDataset(_FileDataset):
    """A Plotly figure as JSON, written atomically; Kedro-Viz previews it."""

    def load(self) -> go.Figure:
        return pio.from_json(self._filepath.read_text(encoding="utf-8"))

    def _write(self, data: go.Figure) -> None:
        atomic_write_text(self._filepath, pio.to_json(data))

    def preview(self) -> PlotlyPreview:
        return PlotlyPreview(json.loads(self._filepath.read_text(encoding="utf-8")))


class JsonDataset(_FileDataset):
    """A JSON document (key order kept), written atomically."""

    def load(self) -> Any:
        return json.loads(self._filepath.read_text(encoding="utf-8"))

    def _write(self, data: Any) -> None:
        atomic_write_text(self._filepath, json.dumps(data, indent=2, default=str) + "\n")


class PotionSettingsDataset(_FileDataset):
    """A namespace's Potion settings (``PotionConfig``) as JSON, every setting written out;
    read back through the settings class, so a file edited by hand is checked like a
    parameter block."""

    def load(self) -> PotionConfig:
        data = json.loads(self._filepath.read_text(encoding="utf-8"))
        return settings_from_params(PotionConfig, data, repr(str(self._filepath)))

    def _write(self, data: PotionConfig) -> None:
        text = json.dumps(dataclasses.asdict(data), indent=2)
        atomic_write_text(self._filepath, text + "\n")


class HtmlDataset(_FileDataset):
    """A self-contained HTML page (the report), written atomically."""

    def load(self) -> str:
        return self._filepath.read_text(encoding="utf-8")

    def _write(self, data: str) -> None:
        atomic_write_text(self._filepath, data)


def _defaults(function) -> dict[str, Any]:
    return {
        name: p.default
        for name, p in inspect.signature(function).parameters.items()
        if p.default is not inspect.Parameter.empty
    }
