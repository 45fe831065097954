"""The retriever's per-video embeddings of one database, stored append-only beside it.

Layout (``<db>/index/``)::

    CURRENT                 the name of the live cache folder ("e3f9a1c2b7d0")
    e3f9a1c2b7d0/           manifest.json     {"format": "embeddings-1", "fingerprint": <model>,
                                               "shapes": {...}, "shard_rows": 4096, "count": N,
                                               "commit": ..., "shards": [...]}
                            a-000000.npy      (4096, D) float32 action embeddings
                            o-000000.npy      (4096, D) float32 object embeddings
                            w-000000.npy      (4096, 2) float32 router weights
                            frames-000000.npy (4096, T, D) float16 per-frame action features
                            rows-000000.npy   (4096, 2) uint64: the key / id hashes of the database
                                              row each embedding was computed from
                            faiss/            an HNSW / IVF index over the first rows (a snapshot;
                                              never for a flat index, see ``VideoRetriever``)

Row ``i`` of the cache is row ``i`` of the database, in the same fixed-size shards as the
database itself (``store.Appender`` writes both; ``manifest.json`` replaced atomically is the
commit). The cache is valid for a database when its model fingerprint is the retriever's and
its ``rows`` hashes equal the database's first ``count`` rows' (a pure extension of the rows it
was computed from); then only rows past ``count`` need the model, and appending them writes
O(new rows). Anything else (another model, a database rewritten, reordered or shrunk) starts a
new cache folder, switched to by replacing ``CURRENT``; the old folder is removed after.
"""
from __future__ import annotations

import json
import re
import shutil
import uuid
from pathlib import Path

import numpy as np

from backend.retrieval.videos.store import SHARD_ROWS, Appender, RowArray, StoreError
from motioncore.io import atomic_write_bytes

FORMAT = "embeddings-1"
MANIFEST = "manifest.json"
FIELDS = {"a": np.float32, "o": np.float32, "w": np.float32, "frames": np.float16}
HASHES = "rows"
_CACHE_DIR = re.compile(r"^e[0-9a-f]{12}$")
LEGACY = ("embeddings.npz", "state.json", "faiss")   # the whole-file cache of earlier versions


class EmbeddingCache:
    """One cache folder: committed (``live``) or being written for the first time."""

    def __init__(self, index_dir: Path, folder: Path, manifest: dict, live: bool):
        self.index_dir, self.folder, self.manifest, self.live = Path(index_dir), folder, manifest, live

    @property
    def count(self) -> int:
        return int(self.manifest["count"])

    @property
    def fingerprint(self) -> str:
        return self.manifest["fingerprint"]

    @property
    def snapshot_dir(self) -> Path:
        return self.folder / "faiss"

    # ------------------------------------------------------------------------------ opening
    @classmethod
    def open(cls, index_dir) -> "EmbeddingCache | None":
        """The live cache, or None (none yet, or unreadable: the database is the truth)."""
        index_dir = Path(index_dir)
        try:
            name = (index_dir / "CURRENT").read_text().strip()
            folder = index_dir / name
            m = json.loads((folder / MANIFEST).read_text())
            if not name or m.get("format") != FORMAT or \
                    sum(s["rows"] for s in m["shards"]) != m["count"]:
                return None
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return cls(index_dir, folder, m, live=True)

    @classmethod
    def create(cls, index_dir, fingerprint: str, shapes: dict, shard_rows: int = SHARD_ROWS) -> "EmbeddingCache":
        """An empty cache in a new folder (live once ``commit`` switches ``CURRENT`` to it)."""
        index_dir = Path(index_dir)
        folder = index_dir / f"e{uuid.uuid4().hex[:12]}"
        folder.mkdir(parents=True)
        m = {"format": FORMAT, "fingerprint": fingerprint,
             "shapes": {k: list(map(int, v)) for k, v in shapes.items()},
             "shard_rows": int(shard_rows), "count": 0, "commit": "", "shards": []}
        return cls(index_dir, folder, m, live=False)

    # ------------------------------------------------------------------------------ reading
    def _column(self, prefix: str, row_shape: tuple) -> list[np.ndarray]:
        parts = []
        for s in self.manifest["shards"]:
            arr = np.load(self.folder / f"{prefix}-{s['name']}.npy", mmap_mode="r", allow_pickle=False)
            if len(arr) < s["rows"] or tuple(arr.shape[1:]) != tuple(row_shape):
                raise StoreError(f"{self.folder.name}/{prefix}-{s['name']}.npy: {arr.shape}, expected "
                                 f"{s['rows']}+ rows of {tuple(row_shape)}")
            parts.append(arr[:s["rows"]])
        return parts

    def arrays(self) -> dict[str, RowArray]:
        """{"a", "o", "w", "frames"}: float32 rows over the memory-mapped shards."""
        shapes = self.manifest["shapes"]
        return {k: RowArray(self._column(k, tuple(shapes[k])), tuple(shapes[k])) for k in FIELDS}

    def row_hashes(self) -> np.ndarray:
        parts = self._column(HASHES, (2,))
        return np.concatenate(parts) if parts else np.zeros((0, 2), np.uint64)

    def covers(self, db) -> bool:
        """Whether the database's first ``count`` rows are the ones these embeddings were
        computed from (reads the two 64-bit hash columns, 16 bytes a row; no model work)."""
        if self.count > len(db):
            return False
        try:
            return bool(np.array_equal(self.row_hashes(), db.row_hashes(0, self.count)))
        except (OSError, ValueError, StoreError):
            return False

    # ------------------------------------------------------------------------------ writing
    def appender(self) -> Appender:
        return Appender(self.folder, self.manifest)

    @staticmethod
    def write(app: Appender, emb: dict, hashes: np.ndarray, offset: int) -> None:
        """Rows base+offset.. : the model's outputs ``emb`` and the database rows' hashes."""
        n = len(hashes)
        for k, dtype in FIELDS.items():
            if len(emb[k]) != n:
                raise ValueError(f"{len(emb[k])} rows of {k} for {n} database rows")
            app.write_array(k, np.asarray(emb[k]), offset=offset, dtype=dtype)
        app.write_array(HASHES, np.asarray(hashes, np.uint64), offset=offset, dtype=np.uint64)
        app.advance(n, offset=offset)

    def commit(self, app: Appender | None = None) -> None:
        """Replace ``manifest.json`` (the commit of an append); a new cache then becomes the live
        one (``CURRENT``) and what it replaces (older folders, the whole-file cache of earlier
        versions) is removed. Call it holding ``writer_lock(index_dir)``."""
        if app is not None:
            self.manifest = app.new
        atomic_write_bytes(self.folder / MANIFEST, json.dumps(self.manifest, indent=1).encode())
        if self.live:
            return
        atomic_write_bytes(self.index_dir / "CURRENT", (self.folder.name + "\n").encode())
        self.live = True
        for p in self.index_dir.iterdir():        # replaced or half-written (a crash) caches
            if p.name != self.folder.name and p.is_dir() and _CACHE_DIR.match(p.name):
                shutil.rmtree(p, ignore_errors=True)
        for name in LEGACY:
            p = self.index_dir / name
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)

    def is_current(self) -> bool:
        try:
            return (self.index_dir / "CURRENT").read_text().strip() == self.folder.name
        except OSError:
            return False


__all__ = ["EmbeddingCache", "FIELDS", "FORMAT"]
