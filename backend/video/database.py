"""A video database on disk: what ingestion measured from each video, nothing model-specific.

Folder layout (one database = one folder)::

    videos.jsonl     one JSON record per video, in row order (id, source, key, fps, ...)
    keypoints.npy    (N, 16, 17, 3) float16: normalised COCO-17 keypoints + confidence
    object.npy       (N, 1024) float16: I3D (Kinetics-400) pooled video features
    skipped.jsonl    videos that could not be used, with the reason (latest attempt)
    shards/          per-video results of an ingestion run not merged yet (resume state)

Model outputs (retriever embeddings, the FAISS index) live beside it, under ``index/``, and
are rebuilt from these arrays whenever the retriever changes. Every file is replaced
atomically (written to a temporary name, then ``os.replace``).
"""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

NUM_FRAMES, NUM_JOINTS = 16, 17
OBJECT_DIM = 1024


class DatabaseError(RuntimeError):
    """A database folder is missing, incomplete or inconsistent."""


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_save_npy(path: Path, arr: np.ndarray) -> None:
    import io

    buf = io.BytesIO()
    np.save(buf, arr)
    atomic_write_bytes(path, buf.getvalue())


def atomic_write_jsonl(path: Path, rows: list[dict]) -> None:
    atomic_write_bytes(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows).encode())


def read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
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
        if not (root / "videos.jsonl").is_file():
            raise DatabaseError(f"{root} is not a video database (no videos.jsonl); "
                                "create one with `python -m backend index DIR`")
        records = read_jsonl(root / "videos.jsonl")
        try:
            kp = np.load(root / "keypoints.npy", allow_pickle=False).astype(np.float32)
            ob = np.load(root / "object.npy", allow_pickle=False).astype(np.float32)
        except (OSError, ValueError) as exc:
            raise DatabaseError(f"{root}: cannot read the feature arrays ({exc})") from exc
        if not (len(records) == len(kp) == len(ob)) or kp.shape[1:] != (NUM_FRAMES, NUM_JOINTS, 3) \
                or ob.shape[1:] != (OBJECT_DIM,):
            raise DatabaseError(f"{root}: inconsistent database ({len(records)} records, keypoints "
                                f"{kp.shape}, object {ob.shape})")
        return cls(root, records, kp, ob)

    @classmethod
    def open(cls, root) -> "VideoDatabase":
        """Load, or an empty database if the folder holds none yet."""
        root = Path(root)
        return cls.load(root) if (root / "videos.jsonl").is_file() else cls.empty(root)

    def save(self, root=None) -> Path:
        """Write arrays first, records last: readers see either the old or the new database
        (the record file is what makes new rows visible; a crash in between leaves arrays
        that are longer than the records, which ``merge`` rewrites on the next run)."""
        root = Path(root or self.root)
        root.mkdir(parents=True, exist_ok=True)
        atomic_save_npy(root / "keypoints.npy", self.keypoints.astype(np.float16))
        atomic_save_npy(root / "object.npy", self.object.astype(np.float16))
        atomic_write_jsonl(root / "videos.jsonl", self.records)
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


def database_dir(name: str) -> Path:
    """Folder of the database called ``name`` (``embedded`` is the shipped one's working copy)."""
    from backend.paths import data_home

    if not name or "/" in name or name.startswith("."):
        raise ValueError(f"bad database name {name!r}: use letters, digits, '-' or '_'")
    return data_home() / "videodb" / name


__all__ = ["DatabaseError", "VideoDatabase", "atomic_save_npy", "atomic_write_bytes",
           "atomic_write_jsonl", "database_dir", "read_jsonl"]
