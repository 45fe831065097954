"""A video database on disk: what ingestion measured from each video, nothing model-specific.

Folder layout (one database = one folder)::

    CURRENT          the name of the live version folder ("v000003"): replacing this one small
                     file is the commit of a change
    v000003/         videos.jsonl   one JSON record per video, in row order (id, source, key, ...)
                     keypoints.npy  (N, 16, 17, 3) float16: normalised COCO-17 keypoints + confidence
                     object.npy     (N, 1024) float16: I3D (Kinetics-400) pooled video features
    skipped.jsonl    videos that could not be used, with the reason (latest attempt)
    shards/          per-video results of an ingestion run not merged yet (resume state)
    .write.lock      held (flock) by the one process allowed to change the database

A change writes a whole new version folder, then switches ``CURRENT``; a crash at any point
leaves either the old or the new database, never a mix (``save``). Older version folders are
removed after the switch. A folder without ``CURRENT`` holding the three files directly (the
shipped ``checkpoints/videodb``, databases of earlier versions) is read as is and moves to the
versioned layout on its next change. Writers take ``writer_lock`` first: a second writer waits,
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


@dataclass
class VideoDatabase:
    """The arrays and records of one database folder (loaded into memory: ~2 KB per video)."""
    root: Path
    records: list[dict]
    keypoints: np.ndarray      # (N, 16, 17, 3) float32
    object: np.ndarray         # (N, 1024) float32

    @property
    def ids(self) -> list[str]:
        return [r["id"] for r in self.records]

    def __len__(self) -> int:
        return len(self.records)

    def row(self, video_id: str) -> int:
        try:
            return self._rows[video_id]
        except AttributeError:
            self._rows = {r["id"]: i for i, r in enumerate(self.records)}
            return self.row(video_id)
        except KeyError:
            raise KeyError(f"no video {video_id!r} in the database {self.root}") from None

    def record(self, video_id: str) -> dict:
        return self.records[self.row(video_id)]

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
        records = read_jsonl(folder / "videos.jsonl", missing_ok=False)
        try:
            kp = np.load(folder / "keypoints.npy", allow_pickle=False).astype(np.float32)
            ob = np.load(folder / "object.npy", allow_pickle=False).astype(np.float32)
        except FileNotFoundError:
            raise
        except (OSError, ValueError) as exc:
            raise DatabaseError(f"{root.name}: cannot read the feature arrays ({exc})") from exc
        if not (len(records) == len(kp) == len(ob)) or kp.shape[1:] != (NUM_FRAMES, NUM_JOINTS, 3) \
                or ob.shape[1:] != (OBJECT_DIM,):
            raise DatabaseError(f"{root.name}: inconsistent database ({len(records)} records, keypoints "
                                f"{kp.shape}, object {ob.shape})")
        return cls(root, records, kp, ob)

    @classmethod
    def open(cls, root) -> "VideoDatabase":
        """Load, or an empty database if the folder holds none yet."""
        root = Path(root)
        return cls.load(root) if live_folder(root) is not None else cls.empty(root)

    def save(self, root=None) -> Path:
        """Commit this database to ``root`` (default: where it was loaded from) as one change:
        write a new version folder, switch ``CURRENT`` to it (the commit), remove what it
        replaces. Call it while holding ``writer_lock(root)``."""
        root = Path(root or self.root)
        root.mkdir(parents=True, exist_ok=True)
        _crash_point("start")
        number = max([_version_number(p.name) for p in root.iterdir()] + [0]) + 1
        name = f"v{number:06d}"
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=root))
        try:
            np.save(tmp / "keypoints.npy", self.keypoints.astype(np.float16))
            _crash_point("keypoints written")
            np.save(tmp / "object.npy", self.object.astype(np.float16))
            _crash_point("object written")
            (tmp / "videos.jsonl").write_text("".join(json.dumps(r, sort_keys=True) + "\n"
                                                      for r in self.records))
            _crash_point("records written")
            os.replace(tmp, root / name)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        _crash_point("version folder in place")
        atomic_write_bytes(root / "CURRENT", (name + "\n").encode())
        _crash_point("committed")
        _remove_stale(root, keep=name)
        return root
    def extend(self, records: list[dict], keypoints: np.ndarray, object_feats: np.ndarray) -> int:
        """Append rows whose ``key`` is not present yet; returns how many were added."""
        have = {r["key"] for r in self.records}
        keep = []
        for i, r in enumerate(records):
            if r["key"] not in have:
                have.add(r["key"])
                keep.append(i)
        if not keep:
            return 0
        self.records = self.records + [records[i] for i in keep]
        self.keypoints = np.concatenate([self.keypoints, np.asarray(keypoints, np.float32)[keep]])
        self.object = np.concatenate([self.object, np.asarray(object_feats, np.float32)[keep]])
        if hasattr(self, "_rows"):
            del self._rows
        return len(keep)


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


__all__ = ["DatabaseError", "FILES", "VideoDatabase", "atomic_save_npy", "atomic_write_bytes",
           "atomic_write_jsonl", "database_dir", "live_folder", "read_jsonl", "remove_stale",
           "writer_lock"]
