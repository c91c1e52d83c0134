"""File output that a reader never sees half-written, on a local disk or any fsspec
filesystem.

A data set's ``filepath`` is a local path (the default) or an fsspec URL such as
``s3://bucket/run/model`` or ``gs://...``; ``location`` turns it into a ``pathlib.Path``
or a ``RemotePath``, which offers the few ``pathlib`` methods the data sets use.  Local
writes go through a temporary file and a rename.  On an object store (``s3``, ``gs``,
``abfs``...) one object is written by a single upload, which the store makes visible
all at once or not at all; artifacts of several files (models, tables) rely on their
commit mark, written last, as on a local disk.  Filesystems that are neither local nor
object stores (``sftp``, ``hdfs``...) are written through a temporary name and a move,
which is atomic only where that filesystem's rename is.

Source data sets (CIFAR-10, image folders) at a URL are read from a local copy that
``local_copy`` makes once per version of the remote folder, so that the readers' checks
(regular files, sizes, layout) run on local files.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import math
import os
import shutil
import tempfile
import uuid
import zipfile
from pathlib import Path, PurePosixPath
from typing import Any

import fsspec
import numpy as np

# Filesystems that have no rename, where one upload is all-or-nothing instead.
OBJECT_STORES = frozenset({"s3", "s3a", "gs", "gcs", "abfs", "abfss", "az", "adl", "oss"})


class RemotePath:
    """A file or folder on an fsspec filesystem, with the subset of ``pathlib.Path``
    that the project's data sets use (``/``, ``name``, ``parent``, ``with_suffix``,
    ``is_file``, ``is_dir``, ``read_bytes``, ``read_text``, ``unlink``, ``rename``)."""

    def __init__(self, fs: fsspec.AbstractFileSystem, path: str) -> None:
        self.fs = fs
        self.path = str(PurePosixPath(path))

    @property
    def object_store(self) -> bool:
        protocols = self.fs.protocol if isinstance(self.fs.protocol, tuple) else (self.fs.protocol,)
        return bool(OBJECT_STORES.intersection(protocols))

    def __truediv__(self, name: str) -> RemotePath:
        return RemotePath(self.fs, f"{self.path}/{name}")

    def __str__(self) -> str:
        return self.fs.unstrip_protocol(self.path)

    def __repr__(self) -> str:
        return f"RemotePath({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RemotePath) and (self.fs, self.path) == (other.fs, other.path)

    def __hash__(self) -> int:
        return hash(self.path)

    @property
    def name(self) -> str:
        return PurePosixPath(self.path).name

    @property
    def parent(self) -> RemotePath:
        return RemotePath(self.fs, str(PurePosixPath(self.path).parent))

    def with_suffix(self, suffix: str) -> RemotePath:
        return RemotePath(self.fs, str(PurePosixPath(self.path).with_suffix(suffix)))

    # Listings are asked afresh: another process (a Dask worker, a torchrun rank) may
    # have written here since this one cached the folder's listing.
    def is_file(self) -> bool:
        self.fs.invalidate_cache(self.path)
        return self.fs.isfile(self.path)

    def is_dir(self) -> bool:
        self.fs.invalidate_cache(self.path)
        return self.fs.isdir(self.path)

    def read_bytes(self) -> bytes:
        return self.fs.cat_file(self.path)

    def read_text(self, encoding: str = "utf-8") -> str:
        return self.read_bytes().decode(encoding)

    def unlink(self, missing_ok: bool = False) -> None:
        try:
            self.fs.rm_file(self.path)
        except FileNotFoundError:
            if not missing_ok:
                raise

    def rename(self, target: RemotePath) -> RemotePath:
        self.fs.mv(self.path, target.path)
        return target

    def write_bytes(self, payload: bytes) -> None:
        """Write the file whole: one upload on an object store, else a temporary name in
        the same folder moved over the target."""
        if self.object_store:
            self.fs.pipe_file(self.path, payload)
            return
        self.fs.makedirs(self.parent.path, exist_ok=True)
        tmp = self.parent / f".{self.name}.{uuid.uuid4().hex[:12]}.tmp"
        try:
            self.fs.pipe_file(tmp.path, payload)
            self.fs.mv(tmp.path, self.path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise


AnyPath = Path | RemotePath


def location(
    filepath: str | os.PathLike | RemotePath,
    credentials: dict[str, Any] | None = None,
    **fs_args: Any,
) -> AnyPath:
    """``filepath`` as a local ``Path`` (no protocol, or ``file://``) or as a
    ``RemotePath`` on the fsspec filesystem its protocol names, built with the keyword
    arguments in ``credentials`` and ``fs_args`` (``key``, ``secret``, ``client_kwargs``
    for s3fs, say).  A protocol whose fsspec package is missing raises ``ImportError``
    naming the package.  A ``RemotePath`` is returned as it is."""
    if isinstance(filepath, RemotePath):
        return filepath
    protocol, path = fsspec.core.split_protocol(str(filepath))
    if protocol in (None, "file", "local"):
        return Path(PurePosixPath(path))
    fs, path = fsspec.core.url_to_fs(str(filepath), **{**(credentials or {}), **fs_args})
    return RemotePath(fs, path)


def atomic_write_bytes(path: AnyPath, payload: bytes) -> None:
    """Write ``payload`` to ``path`` so that no reader sees it half-written: locally
    through a temporary file in the same folder, remotely by ``RemotePath.write_bytes``."""
    if isinstance(path, RemotePath):
        path.write_bytes(payload)
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp_name, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual mode
        with os.fdopen(handle, "wb") as tmp:
            tmp.write(payload)
            tmp.flush()
            os.fsync(tmp.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


TEMPORARY = ".*.tmp"  # what atomic_write_bytes leaves behind when a run is killed


def remove_temporaries(folder: AnyPath) -> list[AnyPath]:
    """Delete what killed writes left in ``folder`` (not below it); the removed paths.
    An object store has none: its single uploads leave nothing behind."""
    if isinstance(folder, RemotePath):
        if folder.object_store:
            return []
        found = folder.fs.glob(f"{folder.path}/{TEMPORARY}")
        stray = [RemotePath(folder.fs, p) for p in found if folder.fs.isfile(p)]
    elif folder.is_dir():
        stray = [p for p in folder.glob(TEMPORARY) if p.is_file()]
    else:
        return []
    for path in stray:
        path.unlink(missing_ok=True)
    return stray


def atomic_write_text(path: AnyPath, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def source_cache() -> Path:
    """Where remote source folders are copied by default: the user's cache directory
    (``$XDG_CACHE_HOME`` or ``~/.cache``), not a shared temporary folder in which another
    user of the machine could plant a copy under a predictable name."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "ieu-potion" / "sources"


def _intact(copy: Path, files: dict[str, tuple[str, Any, str]]) -> bool:
    """Whether an earlier copy is this user's, writable by nobody else, and holds every
    listed file at its listed size."""
    info = copy.stat()
    if info.st_uid != os.getuid() or info.st_mode & 0o022:
        raise PermissionError(
            f"the cached copy {str(copy)!r} belongs to another user or is writable by "
            "others; remove it, or choose another cache folder (the data set's `cache`)"
        )
    for relative, (_, size, _) in files.items():
        path = copy / relative
        if not path.is_file() or (size is not None and path.stat().st_size != size):
            return False
    return True


def local_copy(folder: RemotePath, cache: str | os.PathLike | None = None) -> Path:
    """A local copy of every file below the remote ``folder``, in ``cache`` (default:
    ``source_cache()``, in the user's cache directory), reused while the remote files keep their
    names, sizes and versions (ETag or modification time) and made afresh when they
    change.  The copy is made in a temporary folder and renamed into place, so a copy that
    was interrupted never counts, and of two processes copying at once one copy is kept.
    A copy found in place is checked before it is reused (``_intact``): one that lacks a
    file or holds one of another size is made afresh, and one that another user owns or
    can write is refused.  ``FileNotFoundError`` where ``folder`` is no folder;
    ``ValueError`` for a remote name that would land outside the copy (``..``)."""
    if not folder.is_dir():
        raise FileNotFoundError(f"{str(folder)!r} is not a folder")
    listing = folder.fs.find(folder.path, detail=True)
    root = folder.path.rstrip("/")
    files = {}
    for name, info in sorted(listing.items()):
        relative = PurePosixPath(name[len(root) :].lstrip("/"))
        if relative.is_absolute() or ".." in relative.parts or not relative.parts:
            raise ValueError(
                f"{str(folder)!r}: the name {name!r} would be copied outside the folder"
            )
        version = (
            info.get("ETag") or info.get("etag") or info.get("mtime") or info.get("LastModified")
        )
        files[str(relative)] = (name, info.get("size"), str(version))
    stamp = json.dumps([str(folder), {k: v[1:] for k, v in files.items()}], sort_keys=True)
    cache = Path(cache) if cache is not None else source_cache()
    target = cache / f"{folder.name}-{hashlib.sha256(stamp.encode()).hexdigest()[:16]}"
    if target.is_dir():
        if _intact(target, files):
            return target
        shutil.rmtree(target)  # damaged or incomplete: made afresh below
    cache.mkdir(mode=0o700, parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=cache))
    try:
        local = [staging / relative for relative in files]
        for path in local:
            path.parent.mkdir(parents=True, exist_ok=True)
        if files:
            folder.fs.get([name for name, _, _ in files.values()], [str(p) for p in local])
        staging.rename(target)
    except BaseException as error:
        shutil.rmtree(staging, ignore_errors=True)
        if isinstance(error, OSError) and target.is_dir():  # another process copied first
            return target
        raise
    return target


LOCK_FILE = ".run.lock"


class FolderBusyError(RuntimeError):
    """Another live process holds the lock of an output folder."""


class FolderLock:
    """One run at a time in an output folder: an exclusive ``flock`` on
    ``<folder>/.run.lock``, which the operating system releases when the holder ends, even
    when it is killed (no stale lock).  The file records who holds it (pid, command, start
    time, host) for the message a second run gets."""

    def __init__(self, folder: str | os.PathLike) -> None:
        self.path = Path(folder) / LOCK_FILE
        self._handle: Any = None

    def acquire(self, holder: dict[str, Any]) -> None:
        """Take the lock, or raise ``FolderBusyError`` naming the run that holds it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = self.path.open("a+", encoding="utf-8")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            try:
                other = json.loads(handle.read() or "{}")
            except json.JSONDecodeError:
                other = {}
            handle.close()
            raise FolderBusyError(
                f"the output folder {str(self.path.parent)!r} is in use by another run: pid "
                f"{other.get('pid', '?')} ({other.get('command', 'command unknown')!r}, "
                f"started {other.get('started', '?')} on {other.get('host', '?')}); wait for "
                "it to end, or give this run a data_root of its own (conf/<env>/globals.yml)"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps(holder))
        handle.flush()
        self._handle = handle

    def release(self) -> None:
        if self._handle is not None:
            self._handle.truncate(0)
            fcntl.flock(self._handle, fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None


# The most an .npz member may expand to, relative to the whole compressed file (images
# compress 2-20x; a zip bomb, zeros, over 1000x), plus a floor for small files.
NPZ_MAX_EXPANSION = 100
NPZ_FLOOR_BYTES = 64 * 2**20
_NPY_HEADERS = {
    (1, 0): np.lib.format.read_array_header_1_0,
    (2, 0): np.lib.format.read_array_header_2_0,
}


def checked_npz(payload: bytes, name: str) -> io.BytesIO:
    """``payload`` (an ``.npz`` file's bytes), ready for ``np.load(allow_pickle=False)``
    once every member's header is checked, before any array is allocated: the shape and
    dtype it declares must fill exactly the member's uncompressed size (a header claiming
    10^13 elements is refused, not allocated), and the members together may expand to at
    most ``NPZ_MAX_EXPANSION`` times the file (a zip bomb is refused).  ``name`` is the
    file, for the messages."""
    limit = max(NPZ_FLOOR_BYTES, NPZ_MAX_EXPANSION * len(payload))
    try:
        archive = zipfile.ZipFile(io.BytesIO(payload))
    except zipfile.BadZipFile:
        raise ValueError(f"{name!r} is no .npz file (not a zip archive)") from None
    with archive:
        total = 0
        for member in archive.infolist():
            total += member.file_size
            if total > limit:
                raise ValueError(
                    f"{name!r}: its arrays would expand to over {limit} bytes from a "
                    f"{len(payload)}-byte file; refused (a damaged or crafted archive)"
                )
            with archive.open(member) as stream:
                try:
                    version = np.lib.format.read_magic(stream)
                    read_header = _NPY_HEADERS.get(version)
                    if read_header is None:
                        raise ValueError(f"unsupported .npy format version {version}")
                    shape, _, dtype = read_header(stream)
                except ValueError as exc:
                    raise ValueError(f"{name!r}, member {member.filename!r}: {exc}") from None
                header = stream.tell()
            declared = math.prod(shape) * dtype.itemsize
            if dtype.kind != "O" and declared != member.file_size - header:
                raise ValueError(
                    f"{name!r}, member {member.filename!r}: its header declares shape "
                    f"{shape} of {dtype} ({declared} bytes), but it holds "
                    f"{member.file_size - header} bytes; refused"
                )
    return io.BytesIO(payload)
