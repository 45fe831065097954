"""A video database on disk: what ingestion measured from each video, nothing model-specific.

Folder layout (one database = one folder)::

    CURRENT          the name of the live version folder ("v000003"): replacing this one small
                     file is the commit of a new version
    v000003/         manifest.json  the shards and how many rows of each are committed; replacing
                                    it (atomically) is the commit of an append
                     keypoints-000000.npy  (4096, 16, 17, 3) float16: normalised COCO-17 keypoints
                                           + confidence, fixed-size shards (``store.py``)
                     object-000000.npy     (4096, 1024) float16: I3D (Kinetics-400) pooled features
                     videos-000000.jsonl   one JSON record per row (id, source, key, ...)
                     hashes-000000.npy     64-bit hashes of each row's key and id (look-ups)
                     ids-000000.npy        each row's id, fixed-width bytes (``ids``, ``row``
                                           read this column, not the records)
    skipped.jsonl    videos that could not be used, with the reason (latest attempt)
    shards/          per-video results of an ingestion run not merged yet (resume state)
    .write.lock      held (flock) by the one process allowed to change the database

Adding videos appends: the new rows go into the tail shard's free rows and new shards, then
``manifest.json`` is replaced; the cost is that of the new rows (plus a look-up in the hash
column), not of the database. Any other change (a first save, a save elsewhere) writes a whole
new version folder, then switches ``CURRENT``. A crash at any point leaves either the old or
the new database, never a mix (``save``). Reading memory-maps the arrays and reads the records
on first use, so a database of a million videos opens in megabytes.

A folder without ``CURRENT`` holding ``keypoints.npy``, ``object.npy`` and ``videos.jsonl``
directly (the shipped ``checkpoints/videodb``, databases of earlier versions), or a version
folder holding those three files, is read as is, as one read-only shard, and moves to the
sharded layout on its next change. Writers take ``writer_lock`` first: a second writer waits,
saying which process holds the database.

Model outputs (retriever embeddings, the FAISS index) live beside it, under ``index/``, and
are rebuilt from these arrays whenever the retriever changes.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from backend.checkpoints import data_home
from backend.retrieval.videos.store import (MANIFEST, SHARD_ROWS, Appender, RowArray,
                                            ShardedStore, StoreError, empty_manifest,
                                            read_manifest, text_hash)
from motioncore.io import atomic_save_npy, atomic_write_bytes, atomic_write_jsonl  # noqa: F401

NUM_FRAMES, NUM_JOINTS = 16, 17
OBJECT_DIM = 1024
FILES = ("keypoints.npy", "object.npy", "videos.jsonl")
_VERSION = re.compile(r"^v(\d{6,})$")


class DatabaseError(RuntimeError):
    """A database folder is missing, incomplete or inconsistent."""


def read_jsonl(path: Path, missing_ok: bool = True) -> list[dict]:
    if not path.is_file():
        if not missing_ok:
            raise FileNotFoundError(path)
        return []
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except ValueError as exc:
                raise DatabaseError(f"{path}:{n}: not JSON ({exc})") from exc
    return rows


@dataclass
class VideoFeatures:
    """What the motion LLM reads of one video: per-frame action features (the retriever's), one
    object feature and, for a pose prefix, the sampled frames' keypoints."""

    frames: np.ndarray  # (F, action_dim) float32, F >= 1
    object: np.ndarray  # (object_dim,) float32
    keypoints: np.ndarray | None = None  # (F, 17, 3) person-centred COCO keypoints (pose prefix)

    def __post_init__(self):
        fr = self.frames.detach().cpu().numpy() if hasattr(self.frames, "detach") else self.frames
        ob = self.object.detach().cpu().numpy() if hasattr(self.object, "detach") else self.object
        fr = np.asarray(fr, dtype=np.float32)
        ob = np.asarray(ob, dtype=np.float32)
        if fr.ndim != 2 or fr.shape[0] < 1 or fr.shape[1] < 1:
            raise ValueError(f"VideoFeatures.frames must have shape (F >= 1, action_dim), got {fr.shape}")
        if ob.ndim != 1 or ob.shape[0] < 1:
            raise ValueError(f"VideoFeatures.object must have shape (object_dim,), got {ob.shape}")
        if not (np.all(np.isfinite(fr)) and np.all(np.isfinite(ob))):
            raise ValueError("VideoFeatures contain NaN or infinite values")
        self.frames, self.object = fr, ob
        if self.keypoints is not None:
            kp = np.nan_to_num(np.asarray(self.keypoints, dtype=np.float32))
            if kp.ndim != 3 or kp.shape[0] < 1 or kp.shape[1:] != (17, 3):
                raise ValueError(f"VideoFeatures.keypoints must have shape (F, 17, 3), got {kp.shape}")
            self.keypoints = kp

    def check(self, action_dim: int, object_dim: int) -> "VideoFeatures":
        if self.frames.shape[1] != action_dim or self.object.shape[0] != object_dim:
            raise ValueError(f"VideoFeatures of dims (action {self.frames.shape[1]}, object "
                             f"{self.object.shape[0]}) do not match the model's (action {action_dim}, "
                             f"object {object_dim})")
        return self


class VideoDatabase:
    """The records and arrays of one database folder.

    A sharded database (``manifest.json``) is opened without reading its arrays: ``keypoints``
    and ``object`` are ``RowArray`` views over memory-mapped float16 shards, read as float32
    rows on indexing, and the records are read on first use. A legacy folder (flat
    ``keypoints.npy`` / ``object.npy``) is one read-only shard. ``extend`` keeps new rows in
    memory until ``save``, which appends them (O(new rows)) when the database was opened from
    the folder it is saved to, and writes a whole new version otherwise."""

    def __init__(self, root, records: list[dict], keypoints, object):  # noqa: A002 (the field's name)
        self.root = Path(root)
        self._store: ShardedStore | None = None      # committed rows, read from disk
        self._legacy: tuple[list[dict], np.ndarray, np.ndarray] | None = None
        self._new_records = list(records)            # rows not in the store (not saved yet)
        self._new_kp = [np.asarray(keypoints, np.float32)]
        self._new_ob = [np.asarray(object, np.float32)]

    # ------------------------------------------------------------------------------ reading
    @property
    def records(self) -> list[dict]:
        """Every record in row order (on a sharded database, read on first use)."""
        if self._store is None:
            return self._new_records
        if not self._new_records:
            return self._store.records
        if "_all" not in self.__dict__:
            self._all = self._store.records + self._new_records
        return self._all

    @records.setter
    def records(self, value: list[dict]) -> None:
        if len(value) != len(self):
            raise ValueError(f"{len(value)} records for a database of {len(self)} rows")
        kp, ob = self.keypoints, self.object
        self._store = None
        self._new_records, self._new_kp, self._new_ob = list(value), [np.asarray(kp)], [np.asarray(ob)]
        self.__dict__.pop("_rows", None)
        self.__dict__.pop("_all", None)
        self.__dict__.pop("_idlist", None)

    def _parts(self, name: str) -> list[np.ndarray]:
        base = getattr(self._store, name) if self._store is not None else []
        return base + [a for a in (self._new_kp if name == "keypoints" else self._new_ob) if len(a)]

    @property
    def keypoints(self):
        """(N, 16, 17, 3) float32 rows: an ndarray for an in-memory database, else a RowArray."""
        if self._store is None and len(self._new_kp) == 1:
            return self._new_kp[0]
        return RowArray(self._parts("keypoints"), (NUM_FRAMES, NUM_JOINTS, 3))

    @property
    def object(self):
        """(N, 1024) float32 rows (see ``keypoints``)."""
        if self._store is None and len(self._new_ob) == 1:
            return self._new_ob[0]
        return RowArray(self._parts("object"), (OBJECT_DIM,))

    @property
    def ids(self) -> list[str]:
        """Every row's id in row order (read-only: the list is cached). A sharded database reads
        its ids column (memory-mapped), not the records."""
        if "_idlist" not in self.__dict__:
            if self._store is None:
                self._idlist = [r["id"] for r in self._new_records]
            else:
                self._idlist = self._store.ids() + [r["id"] for r in self._new_records]
        return self._idlist

    def row_hashes(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """(stop - start, 2) uint64: the 64-bit hashes of rows start..stop's key and id (what a
        cache of per-row model outputs checks it still belongs to these rows). A sharded
        database reads its hash column for those rows only."""
        stop = len(self) if stop is None else stop
        if not 0 <= start <= stop <= len(self):
            raise IndexError(f"rows {start}..{stop} of a database of {len(self)}")
        n_store = self._store.count if self._store is not None else 0
        parts = []
        if start < n_store:
            parts.append(self._store.hash_rows(start, min(stop, n_store)))
        if stop > n_store:
            recs = self._new_records[max(start - n_store, 0):stop - n_store]
            parts.append(np.stack([text_hash([r["key"] for r in recs]), text_hash([r["id"] for r in recs])],
                                  axis=1) if recs else np.zeros((0, 2), np.uint64))
        return np.concatenate(parts) if parts else np.zeros((0, 2), np.uint64)

    def __len__(self) -> int:
        return (self._store.count if self._store is not None else 0) + len(self._new_records)

    def row(self, video_id: str) -> int:
        try:
            return self._rows[video_id]
        except AttributeError:
            self._rows = {v: i for i, v in enumerate(self.ids)}
            return self.row(video_id)
        except KeyError:
            raise KeyError(f"no video {video_id!r} in the database {self.root}") from None

    def record(self, video_id: str) -> dict:
        return self.records[self.row(video_id)]

    def present(self, values: list[str], field: str = "key") -> set[str]:
        """Which of ``values`` are already the ``key`` (or ``id``) of a row. On a sharded
        database this reads a 64-bit hash column, not the records."""
        column = {"key": 0, "id": 1}[field]
        found = {r[field] for r in self._new_records} & set(values)
        if self._store is not None:
            found |= self._store.present(list(values), column)
        return found

    @property
    def shard_rows(self) -> int:
        """Rows per shard of the committed rows (the default for a database not sharded yet)."""
        return int(self._store.manifest["shard_rows"]) if self._store is not None else SHARD_ROWS

    @property
    def sharded(self) -> bool:
        """Whether the committed rows come from a sharded (appendable) version folder."""
        return self._store is not None

    # ------------------------------------------------------------------------------ opening
    @classmethod
    def empty(cls, root) -> "VideoDatabase":
        return cls(Path(root), [], np.zeros((0, NUM_FRAMES, NUM_JOINTS, 3), np.float32),
                   np.zeros((0, OBJECT_DIM), np.float32))

    @classmethod
    def load(cls, root) -> "VideoDatabase":
        root = Path(root)
        for attempt in range(3):                  # a writer may remove the version we just read
            folder = live_folder(root)
            if folder is None:
                raise DatabaseError(f"{root.name or root} is not a video database (no videos.jsonl); "
                                    "create one with `python -m backend index DIR`")
            try:
                return cls._load_files(root, folder)
            except FileNotFoundError:
                if attempt == 2:
                    raise DatabaseError(f"{root.name}: its files keep disappearing") from None
                time.sleep(0.05)
        raise AssertionError("unreachable")

    @classmethod
    def _load_files(cls, root: Path, folder: Path) -> "VideoDatabase":
        if (folder / MANIFEST).is_file():
            try:
                store = ShardedStore.open(folder)
            except FileNotFoundError:
                raise
            except (OSError, ValueError, KeyError, StoreError) as exc:
                raise DatabaseError(f"{root.name}: cannot read the sharded arrays ({exc})") from exc
            db = cls.empty(root)
            db._store = store
            return db
        records = read_jsonl(folder / "videos.jsonl", missing_ok=False)
        try:                                     # the flat layout: one read-only shard
            kp = np.load(folder / "keypoints.npy", mmap_mode="r", allow_pickle=False)
            ob = np.load(folder / "object.npy", mmap_mode="r", allow_pickle=False)
        except FileNotFoundError:
            raise
        except (OSError, ValueError) as exc:
            raise DatabaseError(f"{root.name}: cannot read the feature arrays ({exc})") from exc
        if not (len(records) == len(kp) == len(ob)) or kp.shape[1:] != (NUM_FRAMES, NUM_JOINTS, 3) \
                or ob.shape[1:] != (OBJECT_DIM,):
            raise DatabaseError(f"{root.name}: inconsistent database ({len(records)} records, keypoints "
                                f"{kp.shape}, object {ob.shape})")
        return cls(root, records, kp.astype(np.float32), ob.astype(np.float32))

    @classmethod
    def open(cls, root) -> "VideoDatabase":
        """Load, or an empty database if the folder holds none yet."""
        root = Path(root)
        return cls.load(root) if live_folder(root) is not None else cls.empty(root)

    # ------------------------------------------------------------------------------ writing
    def save(self, root=None, shard_rows: int = SHARD_ROWS) -> Path:
        """Commit this database to ``root`` (default: where it was loaded from) as one change.
        Call it while holding ``writer_lock(root)``.

        Appending (this database was opened from ``root``'s live sharded version, which has not
        changed since): the new rows go past the committed ones, into the tail shard's free rows
        and new shards, then ``manifest.json`` is replaced (the commit). Anything else (a first
        save, a legacy folder, another folder): a whole new version folder of ``shard_rows``-row
        shards, then ``CURRENT`` is switched to it (the commit) and what it replaces is removed.
        Both pass the same ``_crash_point`` labels; a crash at any of them leaves the old
        database readable."""
        root = Path(root or self.root)
        root.mkdir(parents=True, exist_ok=True)
        _crash_point("start")
        if self._can_append(root):
            self._append()
        else:
            name = self._write_version(root, shard_rows)
            _crash_point("committed")
            _remove_stale(root, keep=name)
            if root.resolve() != self.root.resolve():
                return root
        self._reopen()
        return root

    def _can_append(self, root: Path) -> bool:
        if self._store is None or root.resolve() != self.root.resolve():
            return False
        live = live_folder(root)
        if live is None or live.resolve() != self._store.folder.resolve():
            return False
        try:
            return read_manifest(live).get("commit") == self._store.manifest.get("commit")
        except (FileNotFoundError, StoreError):
            return False

    def _append(self) -> None:
        app = Appender(self._store.folder, self._store.manifest)
        self._write_rows(app)
        _crash_point("version folder in place")
        atomic_write_bytes(self._store.folder / MANIFEST, json.dumps(app.new, indent=1).encode())
        _crash_point("committed")

    def _write_rows(self, app: Appender, records=None, keypoints=None, object_feats=None) -> None:
        """The rows not committed yet (or the given ones) through ``app``, in chunks of at most
        one shard, so a whole-database write never holds more than a shard in memory."""
        if records is None:
            records = self._new_records
            keypoints = _concat(self._new_kp, (NUM_FRAMES, NUM_JOINTS, 3))
            object_feats = _concat(self._new_ob, (OBJECT_DIM,))
        if not (len(keypoints) == len(object_feats) == len(records)):
            raise DatabaseError(f"{self.root.name}: {len(records)} records but keypoints "
                                f"{keypoints.shape} and object {object_feats.shape}")
        step = app.rows
        for name, arr in (("keypoints", keypoints), ("object", object_feats)):
            for s in range(0, len(arr), step):
                app.write_array(name, np.asarray(arr[s:s + step], np.float32), offset=s)
            _crash_point(f"{name} written")
        for s in range(0, len(records), step):
            app.write_records(records[s:s + step], offset=s)
        if not len(records):
            app.write_records([])
        _crash_point("records written")

    def _write_version(self, root: Path, shard_rows: int) -> str:
        number = max([_version_number(p.name) for p in root.iterdir()] + [0]) + 1
        name = f"v{number:06d}"
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=root))
        try:
            app = Appender(tmp, empty_manifest(shard_rows))
            self._write_rows(app, self.records, self.keypoints, self.object)
            atomic_write_bytes(tmp / MANIFEST, json.dumps(app.new, indent=1).encode())
            os.replace(tmp, root / name)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        _crash_point("version folder in place")
        atomic_write_bytes(root / "CURRENT", (name + "\n").encode())
        return name

    def _reopen(self) -> None:
        """After a commit to this database's own folder: read what was committed."""
        fresh = VideoDatabase.load(self.root)
        self._store, self._new_records = fresh._store, fresh._new_records
        self._new_kp, self._new_ob = fresh._new_kp, fresh._new_ob
        self.__dict__.pop("_rows", None)
        self.__dict__.pop("_all", None)
        self.__dict__.pop("_idlist", None)

    def write_flat(self, folder) -> tuple[Path, ...]:
        """The three files of the flat layout (what ``checkpoints/videodb`` ships), atomically."""
        folder = Path(folder)
        atomic_save_npy(folder / "keypoints.npy", self.keypoints[:].astype(np.float16))
        atomic_save_npy(folder / "object.npy", self.object[:].astype(np.float16))
        atomic_write_jsonl(folder / "videos.jsonl", self.records)
        return tuple(folder / f for f in FILES)

    def extend(self, records: list[dict], keypoints: np.ndarray, object_feats: np.ndarray) -> int:
        """Append rows whose ``key`` is not present yet; returns how many were added."""
        have = self.present([r["key"] for r in records], "key")
        keep = []
        for i, r in enumerate(records):
            if r["key"] not in have:
                have.add(r["key"])
                keep.append(i)
        if not keep:
            return 0
        self._new_records = self._new_records + [records[i] for i in keep]
        self._new_kp.append(np.asarray(keypoints, np.float32)[keep])
        self._new_ob.append(np.asarray(object_feats, np.float32)[keep])
        self.__dict__.pop("_rows", None)
        self.__dict__.pop("_all", None)
        self.__dict__.pop("_idlist", None)
        return len(keep)


def _concat(blocks: list[np.ndarray], row_shape: tuple) -> np.ndarray:
    blocks = [b for b in blocks if len(b)]
    return np.concatenate(blocks) if blocks else np.zeros((0, *row_shape), np.float32)


def _crash_point(label: str) -> None:
    """A point in ``save`` where a crash must leave a usable database (tests raise here)."""


def _version_number(name: str) -> int:
    m = _VERSION.match(name)
    if m:
        return int(m.group(1))
    m = re.match(r"^\.(v\d{6,})\.", name)       # a half-written version folder
    return int(m.group(1)[1:]) if m else 0


def live_folder(root: Path) -> Path | None:
    """The folder holding the committed files of the database at ``root`` (None: no database)."""
    root = Path(root)
    try:
        name = (root / "CURRENT").read_text().strip()
    except FileNotFoundError:
        name = None
    if name:
        if not _VERSION.match(name):
            raise DatabaseError(f"{root.name}/CURRENT names {name!r}, not a version folder")
        return root / name
    return root if (root / "videos.jsonl").is_file() else None


def remove_stale(root: Path) -> None:
    """Remove what a crash may have left: versions other than the live one (call it while
    holding the writer lock)."""
    live = live_folder(root)
    if live is not None and live != Path(root):
        _remove_stale(Path(root), live.name)


def _remove_stale(root: Path, keep: str) -> None:
    """After a commit: older and half-written version folders, and the pre-version files."""
    for p in root.iterdir():
        if p.name != keep and p.is_dir() and _version_number(p.name):
            shutil.rmtree(p, ignore_errors=True)
    for f in FILES:
        (root / f).unlink(missing_ok=True)


_HELD: dict[str, int] = {}                          # (root, thread) pairs holding the lock


@contextlib.contextmanager
def writer_lock(root, wait: bool = True, poll_s: float = 0.5):
    """Exclusive right to change the database at ``root`` (an ``flock`` on ``.write.lock``,
    released by the kernel if the holder dies; re-entrant within a process). A second writer
    waits (``wait``; it says once who holds the lock) or gets a DatabaseError naming the holder."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    key = f"{root.resolve()}|{threading.get_ident()}"   # re-entrant per thread, exclusive across
    if _HELD.get(key):
        _HELD[key] += 1
        try:
            yield
        finally:
            _HELD[key] -= 1
        return
    fh = open(root / ".write.lock", "a+")
    try:
        told = False
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                fh.seek(0)
                holder = fh.read().strip() or "another process"
                if not wait:
                    raise DatabaseError(f"the video database {root.name} is being changed by "
                                        f"{holder}; try again when it has finished") from None
                if not told:
                    print(f"waiting for {holder} to finish changing the video database {root.name}...",
                          file=sys.stderr, flush=True)
                    told = True
                time.sleep(poll_s)
        fh.seek(0)
        fh.truncate()
        fh.write(f"process {os.getpid()} ({' '.join(sys.argv[:3])[:120]})")
        fh.flush()
        _HELD[key] = 1
        try:
            yield
        finally:
            _HELD.pop(key, None)
            fh.seek(0)
            fh.truncate()
    finally:
        fh.close()                                  # releases the lock


def database_dir(name: str) -> Path:
    """Folder of the database called ``name`` (``embedded`` is the shipped one's working copy)."""
    if not name or "/" in name or name.startswith("."):
        raise ValueError(f"bad database name {name!r}: use letters, digits, '-' or '_'")
    return data_home() / "videodb" / name


__all__ = ["DatabaseError", "FILES", "RowArray", "VideoDatabase", "atomic_save_npy", "atomic_write_bytes",
           "atomic_write_jsonl", "database_dir", "live_folder", "read_jsonl", "remove_stale",
           "writer_lock"]
