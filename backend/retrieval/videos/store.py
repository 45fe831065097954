"""Row storage of a video database that grows by appending.

A sharded version folder holds fixed-size shards of ``shard_rows`` rows each::

    manifest.json           {"format": "sharded-1", "shard_rows": 4096, "count": N, "commit": "...",
                             "shards": [{"name": "000000", "rows": 4096, "records_bytes": 812345}, ...]}
    keypoints-000000.npy    (shard_rows, 16, 17, 3) float16, rows past ``rows`` unused
    object-000000.npy       (shard_rows, 1024) float16
    videos-000000.jsonl     one JSON record per row; only the first ``records_bytes`` bytes count
    hashes-000000.npy       (shard_rows, 2) uint64: 64-bit hashes of each row's key and id
    ids-000000.npy          (shard_rows,) fixed-width UTF-8 bytes (``S64`` or wider): each row's id,
                            so ids and row look-ups read this column, never the records; the
                            shard's manifest entry names the file (``"ids"``), which changes only
                            when a longer id forces a wider copy of that one shard's column

The manifest is the truth: a reader sees exactly the rows it lists. Appending writes only rows
past the committed ones (the tail shard's free rows, then new shards) and then replaces
``manifest.json`` atomically; a crash before that replace leaves bytes no manifest points at,
which the next append overwrites. Reading memory-maps the arrays (``np.load(mmap_mode='r')``),
so opening a database of a million videos reads its manifest, not its arrays.

``RowArray`` is the read side: one (N, ...) float32 array over several float16 parts (the
memory-mapped shards, plus rows added in memory and not saved yet), indexed like an ndarray by
row (int, slice, list or array of ints, boolean mask).
"""
from __future__ import annotations

import hashlib
import json
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

FORMAT = "sharded-1"
MANIFEST = "manifest.json"
SHARD_ROWS = 4096
DISK_DTYPE = np.float16
ID_WIDTH = 64                # bytes per id in a new ids column (wider when an id needs it)


class StoreError(RuntimeError):
    """A sharded version folder is incomplete or inconsistent."""


def text_hash(texts) -> np.ndarray:
    """64-bit hashes (uint64) of strings: the compact key / id column used for look-ups."""
    return np.array([int.from_bytes(hashlib.blake2b(t.encode(), digest_size=8).digest(), "little")
                     for t in texts], dtype=np.uint64)


# --------------------------------------------------------------------------------- reading
class RowArray:
    """Read-only (N, *row_shape) float32 rows stored in parts (memory maps or arrays)."""

    dtype = np.dtype(np.float32)

    def __init__(self, parts: list[np.ndarray], row_shape: tuple[int, ...]):
        self.parts = [p for p in parts if len(p)]
        self.row_shape = tuple(row_shape)
        for p in self.parts:
            if tuple(p.shape[1:]) != self.row_shape:
                raise ValueError(f"a part of shape {p.shape} in rows of shape {self.row_shape}")
        self._starts = np.cumsum([0] + [len(p) for p in self.parts])

    @property
    def shape(self) -> tuple[int, ...]:
        return (int(self._starts[-1]), *self.row_shape)

    @property
    def ndim(self) -> int:
        return 1 + len(self.row_shape)

    def __len__(self) -> int:
        return int(self._starts[-1])

    def __repr__(self) -> str:
        return f"RowArray(shape={self.shape}, parts={len(self.parts)})"

    def __array__(self, dtype=None, copy=None):
        out = self[:]
        return out if dtype is None else out.astype(dtype)

    def astype(self, dtype) -> np.ndarray:
        return np.asarray(self[:], dtype=dtype)

    def __getitem__(self, key):
        if isinstance(key, tuple):
            if not key:
                return self[:]
            rows = self[key[0]]
            rest = key[1:]
            return rows[rest] if np.ndim(rows) == len(self.row_shape) else rows[(slice(None), *rest)]
        n = len(self)
        if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
            i = int(key) + n if key < 0 else int(key)
            if not 0 <= i < n:
                raise IndexError(f"row {key} out of range for {n} rows")
            j = int(np.searchsorted(self._starts, i, side="right")) - 1
            return np.asarray(self.parts[j][i - self._starts[j]], dtype=np.float32)
        if isinstance(key, slice):
            start, stop, step = key.indices(n)
            if step == 1:
                return self._range(start, max(start, stop))
            return self._gather(np.arange(start, stop, step))
        idx = np.asarray(key)
        if idx.dtype == bool:
            if idx.shape != (n,):
                raise IndexError(f"boolean index of shape {idx.shape} for {n} rows")
            idx = np.flatnonzero(idx)
        if idx.size == 0:
            idx = idx.astype(np.int64)
        if not np.issubdtype(idx.dtype, np.integer):
            raise IndexError(f"rows must be integers, slices or a boolean mask, got {idx.dtype}")
        return self._gather(idx)

    def _range(self, start: int, stop: int) -> np.ndarray:
        out = np.empty((stop - start, *self.row_shape), np.float32)
        for j, p in enumerate(self.parts):
            lo, hi = max(start, self._starts[j]), min(stop, self._starts[j + 1])
            if lo < hi:
                out[lo - start:hi - start] = p[lo - self._starts[j]:hi - self._starts[j]]
        return out

    def _gather(self, idx: np.ndarray) -> np.ndarray:
        n = len(self)
        flat = idx.reshape(-1).astype(np.int64)
        flat = np.where(flat < 0, flat + n, flat)
        if flat.size and (flat.min() < 0 or flat.max() >= n):
            raise IndexError(f"row index out of range for {n} rows")
        out = np.empty((flat.size, *self.row_shape), np.float32)
        part = np.searchsorted(self._starts, flat, side="right") - 1
        for j in np.unique(part):
            sel = part == j
            out[sel] = self.parts[j][flat[sel] - self._starts[j]]
        return out.reshape(*idx.shape, *self.row_shape)


@dataclass
class ShardedStore:
    """A committed sharded version folder, opened for reading (arrays memory-mapped)."""
    folder: Path
    manifest: dict
    keypoints: list[np.ndarray] = field(repr=False)   # per shard, sliced to its rows
    object: list[np.ndarray] = field(repr=False)
    _records: list[dict] | None = field(default=None, repr=False)
    _ids: list[str] | None = field(default=None, repr=False)

    @property
    def count(self) -> int:
        return int(self.manifest["count"])

    @classmethod
    def open(cls, folder: Path) -> "ShardedStore":
        folder = Path(folder)
        m = read_manifest(folder)
        kps, obs = [], []
        for s in m["shards"]:
            kp = np.load(folder / f"keypoints-{s['name']}.npy", mmap_mode="r", allow_pickle=False)
            ob = np.load(folder / f"object-{s['name']}.npy", mmap_mode="r", allow_pickle=False)
            if len(kp) < s["rows"] or len(ob) < s["rows"]:
                raise StoreError(f"{folder.name}: shard {s['name']} holds fewer rows than its manifest's "
                                 f"{s['rows']}")
            kps.append(kp[:s["rows"]])
            obs.append(ob[:s["rows"]])
        return cls(folder, m, kps, obs)

    @property
    def records(self) -> list[dict]:
        """Every record, read on first use (the arrays never are)."""
        if self._records is None:
            recs = []
            for s in self.manifest["shards"]:
                recs += self.shard_records(s)
            self._records = recs
        return self._records

    def shard_records(self, s: dict) -> list[dict]:
        return read_shard_records(self.folder, s)

    def ids(self) -> list[str]:
        """Every row's id, from the ids column (memory-mapped; the records are not read). A shard
        written before the column existed falls back to its records."""
        if self._ids is None:
            out: list[str] = []
            for s in self.manifest["shards"]:
                out += self.shard_ids(s)
            self._ids = out
        return self._ids

    def shard_ids(self, s: dict) -> list[str]:
        if not s.get("ids"):
            return [r["id"] for r in self.shard_records(s)]
        try:
            col = np.load(self.folder / s["ids"], mmap_mode="r", allow_pickle=False)
        except FileNotFoundError:
            raise StoreError(f"{self.folder.name}: the ids of shard {s['name']} are gone (the database "
                             "was replaced while open; load it again)") from None
        if col.dtype.kind != "S" or len(col) < s["rows"]:
            raise StoreError(f"{self.folder.name}/{s['ids']}: {col.dtype} x {len(col)}, expected "
                             f"bytes x {s['rows']}")
        return [b.decode() for b in col[:s["rows"]].tolist()]

    def hashes(self, column: int) -> np.ndarray:
        """The key (0) or id (1) hash of every row."""
        parts = [np.load(self.folder / f"hashes-{s['name']}.npy", mmap_mode="r")[:s["rows"], column]
                 for s in self.manifest["shards"]]
        return np.concatenate(parts) if parts else np.zeros(0, np.uint64)

    def hash_rows(self, start: int, stop: int) -> np.ndarray:
        """(stop - start, 2) uint64 key / id hashes of rows start..stop (only their shards read)."""
        rows, out = self.manifest["shard_rows"], []
        for j in range(start // rows, -(-stop // rows)):
            s = self.manifest["shards"][j]
            lo, hi = max(start - j * rows, 0), min(stop - j * rows, s["rows"])
            out.append(np.load(self.folder / f"hashes-{s['name']}.npy", mmap_mode="r")[lo:hi])
        return np.concatenate(out) if out else np.zeros((0, 2), np.uint64)

    def present(self, texts: list[str], column: int) -> set[str]:
        """Which of ``texts`` are a stored key (column 0) or id (1): hashes first, then the
        records of the matching shards to rule out a hash collision."""
        if not texts or not self.count:
            return set()
        wanted = text_hash(texts)
        hit = np.flatnonzero(np.isin(self.hashes(column), wanted))
        if not len(hit):
            return set()
        field_name = ("key", "id")[column]
        rows = self.manifest["shard_rows"]
        found = set()
        for j in np.unique(hit // rows):
            s = self.manifest["shards"][int(j)]
            found |= set(self.shard_ids(s)) if column == 1 else \
                {r[field_name] for r in self.shard_records(s)}
        return found & set(texts)


def read_shard_records(folder: Path, s: dict) -> list[dict]:
    """The committed records of shard ``s`` (its manifest entry) in ``folder``."""
    try:
        with open(Path(folder) / f"videos-{s['name']}.jsonl", "rb") as fh:
            text = fh.read(s["records_bytes"]).decode()
    except FileNotFoundError:
        raise StoreError(f"{Path(folder).name}: the records of shard {s['name']} are gone (the database "
                         "was replaced while open; load it again)") from None
    rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    if len(rows) != s["rows"]:
        raise StoreError(f"{Path(folder).name}: shard {s['name']} lists {s['rows']} rows but "
                         f"{len(rows)} records")
    return rows


def read_manifest(folder: Path) -> dict:
    try:
        m = json.loads((Path(folder) / MANIFEST).read_text())
    except FileNotFoundError:
        raise
    except ValueError as exc:
        raise StoreError(f"{Path(folder).name}/{MANIFEST} is not JSON ({exc})") from exc
    if not isinstance(m, dict) or m.get("format") != FORMAT:
        raise StoreError(f"{Path(folder).name}/{MANIFEST}: unknown format {m.get('format')!r}")
    if sum(s["rows"] for s in m["shards"]) != m["count"]:
        raise StoreError(f"{Path(folder).name}/{MANIFEST}: shard rows do not add up to {m['count']}")
    return m


# --------------------------------------------------------------------------------- writing
def empty_manifest(shard_rows: int = SHARD_ROWS) -> dict:
    if shard_rows < 1:
        raise ValueError(f"shard_rows must be >= 1, got {shard_rows}")
    return {"format": FORMAT, "shard_rows": int(shard_rows), "count": 0, "commit": "", "shards": []}


class Appender:
    """Writes rows after the last committed one into a version folder; the caller commits with
    the manifest ``new`` (or drops it: nothing committed changes). Every shard but the last is
    full, so row ``g`` lives in shard ``g // shard_rows`` at ``g % shard_rows``; a long append
    may come in several calls, ``offset`` rows after the committed ones each."""

    def __init__(self, folder: Path, manifest: dict):
        self.folder = Path(folder)
        self.new = json.loads(json.dumps(manifest))
        self.rows = int(manifest["shard_rows"])
        self.base = int(manifest["count"])

    def _spans(self, offset: int, n: int):
        """(shard, first row in it, rows) covering rows base+offset .. base+offset+n."""
        g, end = self.base + offset, self.base + offset + n
        while g < end:
            j, at = divmod(g, self.rows)
            take = min(end - g, self.rows - at)
            yield self._shard(j), at, take
            g += take

    def _shard(self, j: int) -> dict:
        shards = self.new["shards"]
        while len(shards) <= j:
            shards.append({"name": f"{len(shards):06d}", "rows": 0, "records_bytes": 0})
        return shards[j]

    def _open(self, path: Path, at: int, dtype, row_shape: tuple) -> np.ndarray:
        """The shard's memory map: created (sparse) for its first row, else opened for writing."""
        shape = (self.rows, *row_shape)
        if at == 0:
            return np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)
        mm = np.lib.format.open_memmap(path, mode="r+")
        if mm.shape != shape or mm.dtype != np.dtype(dtype):
            raise StoreError(f"{path.name}: {mm.shape} {mm.dtype}, expected {shape} {np.dtype(dtype)}")
        return mm

    def write_array(self, prefix: str, rows: np.ndarray, offset: int = 0, dtype=DISK_DTYPE) -> None:
        """``rows`` (n, ...) as rows base+offset.. of the ``prefix`` shards (float16 on disk
        unless ``dtype`` says otherwise)."""
        done = 0
        for s, at, take in self._spans(offset, len(rows)):
            path = self.folder / f"{prefix}-{s['name']}.npy"
            mm = self._open(path, at, dtype, rows.shape[1:])
            mm[at:at + take] = rows[done:done + take]
            mm.flush()
            del mm
            _fsync_file(path)
            done += take

    def write_records(self, records: list[dict], offset: int = 0) -> None:
        """Records (and their key / id hashes) as rows base+offset..; call it after the arrays
        of the same rows: it moves the manifest's row counts."""
        done = 0
        for s, at, take in self._spans(offset, len(records)):
            if s["rows"] != at:
                raise StoreError(f"shard {s['name']}: records must come in row order")
            chunk = records[done:done + take]
            data = "".join(json.dumps(r, sort_keys=True) + "\n" for r in chunk).encode()
            path = self.folder / f"videos-{s['name']}.jsonl"
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                os.ftruncate(fd, s["records_bytes"])    # drop what a crashed append left
                os.lseek(fd, s["records_bytes"], os.SEEK_SET)
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            finally:
                os.close(fd)
            hpath = self.folder / f"hashes-{s['name']}.npy"
            mm = self._open(hpath, at, np.uint64, (2,))
            mm[at:at + take, 0] = text_hash([r["key"] for r in chunk])
            mm[at:at + take, 1] = text_hash([r["id"] for r in chunk])
            mm.flush()
            del mm
            _fsync_file(hpath)
            self._write_ids(s, at, [r["id"] for r in chunk])
            s["rows"], s["records_bytes"] = at + take, s["records_bytes"] + len(data)
            done += take
        self.new["count"] = sum(s["rows"] for s in self.new["shards"])
        self.new["commit"] = uuid.uuid4().hex[:12]


    def _write_ids(self, s: dict, at: int, ids: list[str]) -> None:
        """Rows at.. of shard ``s``'s ids column. A shard that has no column yet (written before
        it existed) or whose width is too small for a new id gets a new, wider file holding its
        committed ids too (at most one shard's worth); ``s["ids"]`` names the file either way."""
        enc = [i.encode() for i in ids]
        need = max([len(b) for b in enc] + [1])
        old = None
        if at:
            if s.get("ids"):
                old = np.load(self.folder / s["ids"], mmap_mode="r", allow_pickle=False)[:at]
            else:
                old = np.array([r["id"].encode() for r in read_shard_records(self.folder, s)], dtype=bytes)
            width = max(ID_WIDTH, need, old.dtype.itemsize)
        else:
            width = max(ID_WIDTH, need)
        if at and s.get("ids") and old.dtype.itemsize >= need:
            del old
            path = self.folder / s["ids"]
            mm = np.lib.format.open_memmap(path, mode="r+")
        else:
            name = f"ids-{s['name']}.npy" if not at else f"ids-{s['name']}-w{width}.npy"
            if at and name == s.get("ids"):
                raise AssertionError(name)
            path = self.folder / name
            mm = np.lib.format.open_memmap(path, mode="w+", dtype=f"S{width}", shape=(self.rows,))
            if at:
                mm[:at] = old
            s["ids"] = name
        mm[at:at + len(enc)] = enc
        mm.flush()
        del mm
        _fsync_file(path)

    def advance(self, n: int, offset: int = 0) -> None:
        """Count rows base+offset.. as written (for stores without records, whose arrays the
        caller wrote with ``write_array``)."""
        for s, at, take in self._spans(offset, n):
            if s["rows"] != at:
                raise StoreError(f"shard {s['name']}: rows must come in order")
            s["rows"] = at + take
        self.new["count"] = sum(s["rows"] for s in self.new["shards"])
        self.new["commit"] = uuid.uuid4().hex[:12]


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


__all__ = ["Appender", "FORMAT", "ID_WIDTH", "MANIFEST", "RowArray", "SHARD_ROWS", "ShardedStore",
           "StoreError", "empty_manifest", "read_manifest", "read_shard_records", "text_hash"]
