"""Fused Gemini-MVR retrieval index.

Gemini-MVR scores a text t against a video v as

    s(t, v) = w0(v) * <p, a> + w1(v) * <g, o>

with L2-normalised action / object video embeddings a (Da) and o (Do), the
matching L2-normalised text embeddings p (Da) and g (Do), and router weights
w0, w1 >= 0, w0 + w1 = 1 that depend only on the video. The weights can
therefore be folded into the stored vector: with

    q = [p ; g]            (query, Da + Do)
    x = [w0 * a ; w1 * o]  (database, Da + Do)

s(t, v) = <q, x> exactly, and one inner-product FAISS index over x retrieves
by the fused score.

Public API:
    fuse_videos(a, o, w) -> (N, Da+Do) float32
    fuse_queries(p, g) -> (M, Da+Do) float32
    brute_force_fused(p, g, a, o, w) -> (M, N) float64 scores straight from the formula
    FusedIndex(dim, kind="auto", gpu="auto", hnsw_m=32, ef_construction=128, ef_search=1024,
               nlist=None, nprobe=None)
        .add(ids, vectors)           incremental; duplicate ids raise ValueError, nothing added
        .retrain(nlist=None)         IVF only: new centroids from every stored vector (on request)
        .search(queries, k) -> (scores (M, k') float32, ids list[list[str]]), k' = min(k, len)
        .save(folder)                atomic (temporary sibling folder, then os.replace)
        FusedIndex.load(folder, gpu="auto")
        len(index), .ids, .contains(id), id in index, .kind, .on_gpu
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile
import threading
import uuid
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

KINDS = ("auto", "flat", "hnsw", "ivf")
AUTO_HNSW_THRESHOLD = 200_000  # kind="auto": exact flat below this many vectors, HNSW from here on
IVF_MIN_POINTS_PER_LIST = 40   # IVF needs about this many training vectors per inverted list
# HNSW defaults, chosen with backend.bench.index on a 2-core CPU (1 FAISS thread): on 1M fused
# 512-d vectors of the benchmark's clustered distribution they gave recall@1 0.995 at 2.9 ms median /
# 3.7 ms p90 per query (build 11 min). On that graph efSearch 768 gave 0.98 and 512 only 0.77; with
# efConstruction 80 even efSearch 1024 stayed near 0.93.
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 128
HNSW_EF_SEARCH = 1024
FORMAT_VERSION = 1
INDEX_FILE, IDS_FILE, CONFIG_FILE = "index.faiss", "ids.json", "config.json"


def _faiss():
    try:
        import faiss
    except ImportError as exc:  # pragma: no cover - environment problem
        raise ImportError("the retrieval index needs FAISS: install 'faiss-cpu' (or 'faiss-gpu-cu12' "
                          "on a CUDA machine, never both)") from exc
    return faiss


# ----------------------------------------------------------------------------- fusion

def _matrix(x, name: str, dim: int | None = None) -> np.ndarray:
    """x as a finite 2-D float array (a 1-D array is one row); ValueError otherwise."""
    arr = np.asarray(x)
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise ValueError(f"{name} must be a numeric array, got dtype {arr.dtype}")
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-D (rows, dim), got shape {np.shape(x)}")
    if dim is not None and arr.shape[1] != dim:
        raise ValueError(f"{name} has dimension {arr.shape[1]}, expected {dim}")
    if arr.size and not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr


def _check_weights(w, n: int) -> np.ndarray:
    w = _matrix(w, "router weights w").astype(np.float64)
    if w.shape != (n, 2):
        raise ValueError(f"router weights w must have shape ({n}, 2), got {w.shape}")
    if (w < 0).any():
        raise ValueError("router weights must be non-negative")
    bad = np.abs(w.sum(axis=1) - 1.0) > 1e-5
    if bad.any():
        raise ValueError(f"router weights must sum to 1 per video (within 1e-5); {int(bad.sum())} rows do not, "
                         f"first is row {int(np.argmax(bad))}")
    return w


def fuse_videos(a, o, w) -> np.ndarray:
    """Stored vectors x = [w0 * a ; w1 * o] (N, Da+Do) float32.

    a (N, Da) and o (N, Do) are the L2-normalised action / object video embeddings,
    w (N, 2) the router weights (non-negative, rows summing to 1).
    """
    a = _matrix(a, "action embeddings a")
    o = _matrix(o, "object embeddings o")
    if a.shape[0] != o.shape[0]:
        raise ValueError(f"a and o must have the same number of videos, got {a.shape[0]} and {o.shape[0]}")
    w = _check_weights(w, a.shape[0])
    x = np.concatenate([w[:, :1] * a, w[:, 1:] * o], axis=1)
    return np.ascontiguousarray(x, dtype=np.float32)


def fuse_queries(p, g) -> np.ndarray:
    """Queries q = [p ; g] (M, Da+Do) float32 from L2-normalised text embeddings p (M, Da), g (M, Do)."""
    p = _matrix(p, "predicate text embeddings p")
    g = _matrix(g, "object text embeddings g")
    if p.shape[0] != g.shape[0]:
        raise ValueError(f"p and g must have the same number of texts, got {p.shape[0]} and {g.shape[0]}")
    return np.ascontiguousarray(np.concatenate([p, g], axis=1), dtype=np.float32)


def brute_force_fused(p, g, a, o, w) -> np.ndarray:
    """(M, N) scores w0 * <p, a> + w1 * <g, o> computed directly (float64), the reference for tests."""
    p = _matrix(p, "p").astype(np.float64)
    g = _matrix(g, "g").astype(np.float64)
    a = _matrix(a, "a", p.shape[1]).astype(np.float64)
    o = _matrix(o, "o", g.shape[1]).astype(np.float64)
    if a.shape[0] != o.shape[0] or p.shape[0] != g.shape[0]:
        raise ValueError("row counts of p/g or a/o differ")
    w = _check_weights(w, a.shape[0])
    return w[None, :, 0] * (p @ a.T) + w[None, :, 1] * (g @ o.T)


# ----------------------------------------------------------------------------- index

class FusedIndex:
    """Inner-product FAISS index over fused video vectors, addressed by string ids.

    kind: "flat" (exact), "hnsw" (graph, approximate, CPU only), "ivf" (inverted lists,
    trained on the first add; falls back to flat with a logged warning when that add has
    fewer than 40 * nlist vectors) or "auto" (flat below 200k vectors, converted to HNSW
    once the index grows past that; on a GPU it stays flat, which is exact and fast there).
    gpu: "auto" uses a GPU when FAISS sees one (faiss-gpu installed), True requires one,
    False never uses one. Only flat and IVF indexes go to the GPU; files are always CPU indexes.
    """

    def __init__(self, dim: int, kind: str = "auto", gpu="auto", hnsw_m: int = HNSW_M,
                 ef_construction: int = HNSW_EF_CONSTRUCTION, ef_search: int = HNSW_EF_SEARCH,
                 nlist: int | None = None,
                 nprobe: int | None = None):
        faiss = _faiss()
        if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 1:
            raise ValueError(f"dim must be a positive integer, got {dim!r}")
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        if gpu not in ("auto", True, False):
            raise ValueError(f"gpu must be 'auto', True or False, got {gpu!r}")
        for name, val in (("hnsw_m", hnsw_m), ("ef_construction", ef_construction), ("ef_search", ef_search)):
            if int(val) < 1:
                raise ValueError(f"{name} must be >= 1, got {val}")
        if nlist is not None and int(nlist) < 1:
            raise ValueError(f"nlist must be >= 1, got {nlist}")
        if nprobe is not None and int(nprobe) < 1:
            raise ValueError(f"nprobe must be >= 1, got {nprobe}")
        n_gpus = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
        if gpu is True and n_gpus < 1:
            raise RuntimeError("FusedIndex(gpu=True) but FAISS sees no GPU: install 'faiss-gpu-cu12' instead of "
                               "'faiss-cpu' on a machine with a CUDA GPU, or pass gpu='auto' / gpu=False")
        if gpu is True and kind == "hnsw":
            log.warning("FusedIndex: FAISS has no GPU HNSW; this HNSW index stays on the CPU")
        self.dim = int(dim)
        self.requested_kind = kind
        self.gpu = gpu
        self._use_gpu = n_gpus > 0 and gpu is not False
        self.hnsw_m = int(hnsw_m)
        self.ef_construction = int(ef_construction)
        self.ef_search = int(ef_search)
        self.nlist = None if nlist is None else int(nlist)
        self._auto_nlist = nlist is None       # IVF: sqrt-rule list count, again on retrain
        self.nprobe = None if nprobe is None else int(nprobe)
        self._ids: list[str] = []
        self._pos: dict[str, int] = {}
        self._lock = threading.RLock()
        self._trained = kind != "ivf"  # IVF is built on the first add
        self.kind = "flat" if kind in ("auto", "ivf") else kind
        self._index = self._place(self._new_cpu_index(self.kind))
        if kind == "ivf":
            self.kind = "ivf"  # resolved (or fallen back to flat) on the first add

    # -- construction helpers
    def _new_cpu_index(self, kind: str, nlist: int | None = None):
        faiss = _faiss()
        if kind == "flat":
            return faiss.IndexFlatIP(self.dim)
        if kind == "hnsw":
            index = faiss.IndexHNSWFlat(self.dim, self.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = self.ef_construction
            index.hnsw.efSearch = self.ef_search
            return index
        if kind == "ivf":
            quantizer = faiss.IndexFlatIP(self.dim)
            index = faiss.IndexIVFFlat(quantizer, self.dim, int(nlist), faiss.METRIC_INNER_PRODUCT)
            index.nprobe = self._nprobe_for(int(nlist))
            return index
        raise AssertionError(kind)

    def _nprobe_for(self, nlist: int) -> int:
        if self.nprobe is not None:
            return min(self.nprobe, nlist)
        return min(nlist, max(8, nlist // 16))

    def _place(self, cpu_index):
        """Move a flat / IVF CPU index to the GPU(s) when this index uses them."""
        if self._use_gpu and self.kind in ("flat", "ivf"):
            return _faiss().index_cpu_to_all_gpus(cpu_index)
        return cpu_index

    @property
    def on_gpu(self) -> bool:
        return self._use_gpu and self.kind in ("flat", "ivf")

    def _cpu_index(self):
        return _faiss().index_gpu_to_cpu(self._index) if self.on_gpu else self._index

    # -- read access
    def __len__(self) -> int:
        return len(self._ids)

    @property
    def ids(self) -> list[str]:
        """Stored ids in insertion order (a copy)."""
        return list(self._ids)

    def contains(self, id: str) -> bool:
        return id in self._pos

    __contains__ = contains

    def __repr__(self) -> str:
        return (f"FusedIndex(dim={self.dim}, kind={self.kind!r}, requested={self.requested_kind!r}, "
                f"n={len(self)}, gpu={self.on_gpu})")

    # -- writing
    def _check_new(self, ids, vectors) -> tuple[list[str], np.ndarray]:
        if isinstance(ids, str) or not hasattr(ids, "__len__"):
            raise ValueError("ids must be a list of strings")
        ids = list(ids)
        bad = [i for i in ids if not isinstance(i, str)]
        if bad:
            raise ValueError(f"ids must be strings, got {type(bad[0]).__name__} ({bad[0]!r})")
        x = _matrix(vectors, "vectors", self.dim)
        if x.shape[0] != len(ids):
            raise ValueError(f"{len(ids)} ids but {x.shape[0]} vectors")
        if len(set(ids)) != len(ids):
            seen: set[str] = set()
            dup = next(i for i in ids if i in seen or seen.add(i))
            raise ValueError(f"id {dup!r} appears twice in this add")
        present = [i for i in ids if i in self._pos]
        if present:
            raise ValueError(f"{len(present)} id(s) already in the index, e.g. {present[0]!r}; nothing was added")
        return ids, np.ascontiguousarray(x, dtype=np.float32)

    def add(self, ids, vectors) -> None:
        """Append vectors (N, dim) under new string ids. All checks run before anything is added."""
        with self._lock:
            ids, x = self._check_new(ids, vectors)
            if not ids:
                return
            if not self._trained:
                self._build_ivf(x)
            elif self.requested_kind == "auto" and self.kind == "flat" and not self._use_gpu \
                    and len(self) + len(ids) >= AUTO_HNSW_THRESHOLD:
                self._convert_to_hnsw()
            self._index.add(x)
            self._ids.extend(ids)
            for j, i in enumerate(ids, start=len(self._pos)):
                self._pos[i] = j
            assert self._index.ntotal == len(self._ids)

    def _build_ivf(self, x: np.ndarray) -> None:
        n = x.shape[0]
        nlist = self.nlist if self.nlist is not None else max(1, int(round(4 * math.sqrt(n))))
        if n < IVF_MIN_POINTS_PER_LIST * nlist:
            log.warning("IVF index: training on %d vectors, fewer than %d * nlist (%d) needed to train "
                        "%d lists; using an exact flat index instead", n, IVF_MIN_POINTS_PER_LIST,
                        IVF_MIN_POINTS_PER_LIST * nlist, nlist)
            self.kind = "flat"
        else:
            self.kind = "ivf"
            self.nlist = nlist
            cpu = self._new_cpu_index("ivf", nlist)
            index = self._place(cpu)
            index.train(x)
            self._index = index
        if self.kind == "flat":
            self._index = self._place(self._new_cpu_index("flat"))
        self._trained = True

    def retrain(self, nlist: int | None = None) -> None:
        """Train an IVF index again on everything it holds (new centroids for a database that
        has grown or drifted since the first add), keeping ids and order. Adding never retrains:
        this is the one way, on request. Other kinds have nothing to train (no-op)."""
        with self._lock:
            if self.requested_kind != "ivf" or not len(self):
                return
            cpu = self._cpu_index()
            if self.kind == "ivf":
                cpu.make_direct_map()
            x = cpu.reconstruct_n(0, cpu.ntotal)
            if nlist is not None:                # asked for: kept for later retrains
                self._auto_nlist = False
            self.nlist = nlist if nlist is not None else (None if self._auto_nlist else self.nlist)
            self._trained = False
            self._build_ivf(x)
            self._index.add(x)
            assert self._index.ntotal == len(self._ids)

    def _convert_to_hnsw(self) -> None:
        log.info("FusedIndex(kind='auto'): %d+ vectors, converting the exact flat index to HNSW (M=%d)",
                 AUTO_HNSW_THRESHOLD, self.hnsw_m)
        old = self._cpu_index()
        hnsw = self._new_cpu_index("hnsw")
        chunk = 65536
        for start in range(0, old.ntotal, chunk):
            hnsw.add(old.reconstruct_n(start, min(chunk, old.ntotal - start)))
        self._index = hnsw
        self.kind = "hnsw"

    # -- search
    def search(self, queries, k: int):
        """Top-k by inner product. Returns (scores (M, k') float32, ids list of M lists), k' = min(k, len).

        Approximate kinds can in rare cases find fewer than k' hits for a query: those
        slots never appear in the id lists and their scores are -inf.
        """
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        q = np.ascontiguousarray(_matrix(queries, "queries", self.dim), dtype=np.float32)
        with self._lock:
            kk = min(int(k), len(self))
            if kk == 0 or q.shape[0] == 0:
                return np.zeros((q.shape[0], kk), np.float32), [[] for _ in range(q.shape[0])]
            if self.kind == "hnsw":  # the current ef_search (at least k), without touching shared state
                params = _faiss().SearchParametersHNSW()
                params.efSearch = max(int(self.ef_search), kk)
                scores, labels = self._index.search(q, kk, params=params)
            else:
                scores, labels = self._index.search(q, kk)
            out_ids = [[self._ids[j] for j in row if j >= 0] for row in labels]
        scores = np.asarray(scores, dtype=np.float32)
        scores[labels < 0] = -np.inf
        return scores, out_ids

    # -- persistence
    def _config(self) -> dict:
        return {"format": FORMAT_VERSION, "dim": self.dim, "kind": self.kind, "requested_kind": self.requested_kind,
                "count": len(self), "hnsw_m": self.hnsw_m, "ef_construction": self.ef_construction,
                "ef_search": self.ef_search, "nlist": self.nlist, "nprobe": self.nprobe,
                "trained": self._trained, "metric": "inner_product"}

    def save(self, folder) -> Path:
        """Write index.faiss + ids.json + config.json into `folder`, atomically.

        Everything goes into a temporary sibling folder first; only when it is complete
        does it take the place of `folder` (os.replace), so a failed or interrupted save
        leaves a previous save intact. An existing folder that is not a saved FusedIndex
        (non-empty, without config.json) is never replaced.
        """
        faiss = _faiss()
        folder = Path(folder)
        parent = folder.parent
        parent.mkdir(parents=True, exist_ok=True)
        if folder.exists():
            if not folder.is_dir():
                raise FileExistsError(f"{folder} exists and is not a folder")
            if any(folder.iterdir()) and not (folder / CONFIG_FILE).is_file():
                raise FileExistsError(f"{folder} is a non-empty folder that is not a saved FusedIndex; "
                                      "refusing to replace it")
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".saving", dir=parent))
        try:
            with self._lock:
                faiss.write_index(self._cpu_index(), str(tmp / INDEX_FILE))
                _write_json(tmp / IDS_FILE, self._ids)
                _write_json(tmp / CONFIG_FILE, self._config())
            _fsync_path(tmp)
            if folder.exists():
                old = parent / f".{folder.name}.old-{uuid.uuid4().hex[:8]}"
                os.replace(folder, old)
                try:
                    os.replace(tmp, folder)
                except BaseException:
                    os.replace(old, folder)
                    raise
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, folder)
            _fsync_path(parent)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return folder

    @classmethod
    def load(cls, folder, gpu="auto") -> "FusedIndex":
        """Read a folder written by `save`. FileNotFoundError if it is missing, ValueError if corrupt."""
        faiss = _faiss()
        folder = Path(folder)
        if not folder.is_dir():
            raise FileNotFoundError(f"no saved FusedIndex at {folder}")
        missing = [f for f in (INDEX_FILE, IDS_FILE, CONFIG_FILE) if not (folder / f).is_file()]
        if missing:
            raise FileNotFoundError(f"{folder} is not a complete saved FusedIndex: missing {', '.join(missing)}")
        try:
            cfg = json.loads((folder / CONFIG_FILE).read_text())
            ids = json.loads((folder / IDS_FILE).read_text())
        except (ValueError, UnicodeDecodeError) as exc:
            raise ValueError(f"corrupt FusedIndex at {folder}: unreadable JSON ({exc})") from exc
        if not isinstance(cfg, dict) or cfg.get("format") != FORMAT_VERSION:
            raise ValueError(f"corrupt FusedIndex at {folder}: config.json has no supported 'format' "
                             f"(expected {FORMAT_VERSION})")
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids) or len(set(ids)) != len(ids):
            raise ValueError(f"corrupt FusedIndex at {folder}: ids.json is not a list of distinct strings")
        try:
            cpu = faiss.read_index(str(folder / INDEX_FILE))
        except Exception as exc:  # FAISS raises RuntimeError with its C++ message
            raise ValueError(f"corrupt FusedIndex at {folder}: cannot read {INDEX_FILE} ({exc})") from exc
        try:
            dim, kind = int(cfg["dim"]), cfg["kind"]
            self = cls(dim, kind=cfg.get("requested_kind", kind), gpu=gpu, hnsw_m=cfg["hnsw_m"],
                       ef_construction=cfg["ef_construction"], ef_search=cfg["ef_search"],
                       nlist=cfg.get("nlist"), nprobe=cfg.get("nprobe"))
        except (KeyError, TypeError) as exc:
            raise ValueError(f"corrupt FusedIndex at {folder}: config.json lacks {exc}") from exc
        if cpu.d != dim or cpu.ntotal != len(ids) or cfg.get("count", len(ids)) != len(ids) \
                or kind not in ("flat", "hnsw", "ivf"):
            raise ValueError(f"corrupt FusedIndex at {folder}: index holds {cpu.ntotal} x {cpu.d}, "
                             f"config says {cfg.get('count')} x {dim} ({kind}), ids.json has {len(ids)}")
        self.kind = kind
        self._trained = bool(cfg.get("trained", True))
        if kind == "hnsw":
            cpu.hnsw.efSearch = self.ef_search
        self._index = self._place(cpu)
        self._ids = ids
        self._pos = {i: j for j, i in enumerate(ids)}
        return self


def _write_json(path: Path, obj) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f)
        f.flush()
        os.fsync(f.fileno())


def _fsync_path(path: Path) -> None:
    """fsync a file or folder where the platform allows it (folders cannot be opened on Windows)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
