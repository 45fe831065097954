"""Video ingestion: a pure per-video map, then one merge into the database.

``ingest_file(path, cfg)`` (or ``ingest_spec`` for a rendered database video) decodes, samples
16 frames, runs MediaPipe Pose (-> normalised COCO-17 keypoints with confidences) and I3D (->
object features) and returns an ``IngestResult``; it never raises for a bad video, it returns
the reason instead. Because it is a plain function of its input, the same map runs in-process,
on a local process pool (``run_ingestion(..., workers=N)``), or, for a database the size of
the paper's (426k videos), on Ray Data (``engine="ray"``: a local Ray instance or an existing
cluster; ``ray_engine.py``) followed by the same ``merge``, without a home-made cluster layer.

Resume: each finished video is written at once as ``shards/<key>.npz`` (atomically). A run
skips every video whose key is already in the database or in a shard, and ends by merging the
shards into the database arrays. Interrupt it at any point and run it again: nothing is lost
or duplicated.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import re
import zipfile
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Callable

import numpy as np
from tqdm import tqdm

from backend.retrieval.videos.database import (VideoDatabase, atomic_write_bytes,
                                               atomic_write_jsonl, live_folder, read_jsonl,
                                               remove_stale, writer_lock)
from backend.retrieval.videos.decode import VideoReadError, read_frames, sample_indices
from backend.retrieval.videos.pose import normalize_keypoints, person_fraction
from backend.retrieval.videos.ray_engine import ray_map
from backend.retrieval.videos.synth import VideoSpec, render_frames
from motioncore.skeleton import FPS

VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".gif", ".wmv"}


@dataclass(frozen=True)
class IngestConfig:
    frames: int = 16                  # frames sampled uniformly over the video
    max_side: int = 320               # decoded frames are downscaled to this long side
    min_person: float = 0.25          # fraction of frames that must show a person
    i3d_size: int = 112               # I3D input crop (224 is the original; 112 is ~4x faster on CPU)


@dataclass
class IngestResult:
    key: str                          # content key: identical videos share it
    source: str
    record: dict | None = None        # None when skipped
    keypoints: np.ndarray | None = None   # (16, 17, 3)
    object: np.ndarray | None = None      # (1024,)
    skipped: str | None = None        # why the video was not used
    order: int = 0                    # position in the input list (keeps the merge deterministic)
    extra: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.skipped is None


# ------------------------------------------------------------------------------- per process
_MODELS: dict = {}


def _models(cfg: IngestConfig):
    """This process's pose estimator and video model (created once per worker)."""
    if "pose" not in _MODELS:
        from backend.retrieval.videos.i3d import I3DEncoder
        from backend.retrieval.videos.pose import PoseEstimator

        _MODELS["pose"] = PoseEstimator(video_mode=False)
        _MODELS["i3d"] = I3DEncoder(size=cfg.i3d_size)
    return _MODELS["pose"], _MODELS["i3d"]


def analyse_frames(frames: np.ndarray, cfg: IngestConfig) -> tuple[np.ndarray, np.ndarray, float]:
    """(normalised keypoints (T,17,3), object features (1024,), person fraction) of frames."""
    pose, i3d = _models(cfg)
    raw = pose.estimate(frames)
    frac = float(person_fraction(raw))
    if frac < cfg.min_person:
        return normalize_keypoints(raw), np.zeros(1024, np.float32), frac
    return normalize_keypoints(raw), np.asarray(i3d.features(frames), np.float32), frac


def file_key(path: Path) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def video_id_for(path: Path, key: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", Path(path).stem)[:48] or "video"
    return f"{stem}-{key[:8]}"


def ingest_file(path: str, cfg: IngestConfig = IngestConfig(), order: int = 0,
                analyse: Callable | None = None) -> IngestResult:
    """The per-video map for a file on disk. Never raises for a bad video."""
    p = Path(path)
    try:
        key = file_key(p)
    except OSError as exc:
        return IngestResult(key=f"unreadable:{p}", source=str(p), skipped=f"cannot read: {exc}", order=order)
    try:
        frames, info = read_frames(p, num=cfg.frames, max_side=cfg.max_side)
        kp, obj, frac = (analyse or analyse_frames)(frames, cfg)
    except VideoReadError as exc:
        return IngestResult(key, str(p), skipped=f"unreadable video: {exc}", order=order)
    if frac < cfg.min_person:
        return IngestResult(key, str(p), skipped=f"no person found (person in {frac:.0%} of the "
                            f"sampled frames, need {cfg.min_person:.0%})", order=order)
    record = {"id": video_id_for(p, key), "key": key, "source": str(p.resolve()), "kind": "file",
              "person_fraction": round(frac, 3), **{k: info[k] for k in
                                                    ("fps", "n_frames", "duration", "width", "height")}}
    return IngestResult(key, str(p), record, kp.astype(np.float32), obj, order=order)


def ingest_spec(spec_json: dict, cfg: IngestConfig = IngestConfig(), order: int = 0,
                analyse: Callable | None = None) -> IngestResult:
    """The per-video map for a synthetic database video: render its sampled frames, analyse."""
    spec = VideoSpec.from_json(spec_json)
    key = spec_key(spec_json)
    try:
        frames = render_frames(spec, sample_indices(spec.frames, cfg.frames))
        kp, obj, frac = (analyse or analyse_frames)(frames, cfg)
    except Exception as exc:  # a render failure of one video must not stop a 1,000-video build
        return IngestResult(key, spec.id, skipped=f"render failed: {exc!r}", order=order)
    if frac < cfg.min_person:
        return IngestResult(key, spec.id, skipped=f"no person found ({frac:.0%} of frames)", order=order)
    record = {"id": spec.id, "key": key, "source": "synthetic", "kind": "synthetic",
              "person_fraction": round(frac, 3), "fps": FPS, "n_frames": spec.frames,
              "duration": spec.frames / FPS, "width": spec.size, "height": spec.size,
              "spec": spec_json}
    return IngestResult(key, spec.id, record, kp.astype(np.float32), obj, order=order)


def spec_key(spec_json: dict) -> str:
    return spec_json["id"] + "-" + hashlib.sha1(json.dumps(spec_json, sort_keys=True).encode()).hexdigest()[:8]


# ------------------------------------------------------------------------------------ shards
def _shard_path(root: Path, key: str) -> Path:
    return root / "shards" / (re.sub(r"[^A-Za-z0-9_.-]+", "_", key) + ".npz")


def shard_bytes(res: IngestResult) -> bytes:
    """A result as the bytes of its shard file (also how a distributed worker returns it)."""
    buf = io.BytesIO()
    meta = {"key": res.key, "source": res.source, "order": res.order, "record": res.record,
            "skipped": res.skipped}
    arrays = {"meta": np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)}
    if res.ok:
        arrays["keypoints"] = res.keypoints.astype(np.float32)
        arrays["object"] = res.object.astype(np.float32)
    np.savez(buf, **arrays)
    return buf.getvalue()


def result_from_bytes(data) -> IngestResult:
    """The inverse of ``shard_bytes`` (ValueError, KeyError, ... on torn bytes)."""
    with np.load(io.BytesIO(bytes(data)), allow_pickle=False) as z:
        meta = json.loads(bytes(z["meta"]).decode())
        kp = z["keypoints"] if "keypoints" in z else None
        ob = z["object"] if "object" in z else None
    return IngestResult(meta["key"], meta["source"], meta["record"], kp, ob, meta["skipped"], meta["order"])


def write_shard(root: Path, res: IngestResult) -> None:
    atomic_write_bytes(_shard_path(root, res.key), shard_bytes(res))


def read_shards(root: Path) -> list[IngestResult]:
    out = []
    for p in sorted((root / "shards").glob("*.npz")):
        try:
            out.append(result_from_bytes(p.read_bytes()))
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
            p.unlink(missing_ok=True)            # a torn shard from a crash: redo that video
    return out


def merge(root: Path) -> tuple[int, list[IngestResult]]:
    """Fold the shards into the database; returns (rows added, skipped results). One commit
    (``VideoDatabase.save``) under the writer lock; shards go only after it."""
    root = Path(root)
    with writer_lock(root):
        return _merge(root)


def _merge(root: Path) -> tuple[int, list[IngestResult]]:
    results = sorted(read_shards(root), key=lambda r: (r.order, r.key))
    db = VideoDatabase.open(root)
    good = [r for r in results if r.ok]
    taken = db.present([r.record["id"] for r in good], "id")   # a look-up, not every record
    ids: set[str] = set()
    for r in good:                                   # two files may share a name prefix
        base, n = r.record["id"], 1
        while r.record["id"] in ids or r.record["id"] in taken:
            n += 1
            r.record["id"] = f"{base}.{n}"
            taken |= db.present([r.record["id"]], "id")
        ids.add(r.record["id"])
    added = 0
    if good:
        added = db.extend([r.record for r in good], np.stack([r.keypoints for r in good]),
                          np.stack([r.object for r in good]))
    skipped = [r for r in results if not r.ok]
    if added or live_folder(root) is None:           # nothing new: no rewrite
        db.save(root)
    if skipped:
        old = {s["key"]: s for s in read_jsonl(root / "skipped.jsonl")}
        old.update({r.key: {"key": r.key, "source": r.source, "reason": r.skipped} for r in skipped})
        atomic_write_jsonl(root / "skipped.jsonl", list(old.values()))
    for r in results:
        _shard_path(root, r.key).unlink(missing_ok=True)
    remove_stale(root)
    return added, skipped


# ------------------------------------------------------------------------------------ driver
@dataclass
class IngestReport:
    added: int
    already: int
    skipped: list[dict]
    total: int

    def summary(self) -> str:
        lines = [f"{self.added} video(s) added, {self.already} already in the database, "
                 f"{len(self.skipped)} skipped, {self.total} in the database now"]
        lines += [f"  skipped {s['source']}: {s['reason']}" for s in self.skipped]
        return "\n".join(lines)


def _init_worker(threads: int) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")
    try:
        import torch

        torch.set_num_threads(threads)
    except ImportError:  # pragma: no cover
        pass


ENGINES = ("pool", "ray")


def run_ingestion(root, items: list, map_fn: Callable, keys: list[str] | None = None,
                  workers: int = 1, progress: bool = True, desc: str = "indexing videos",
                  engine: str = "pool", address: str | None = None) -> IngestReport:
    """Apply ``map_fn(item, order=i)`` to every item not yet in the database (by key, when
    ``keys`` are known in advance), writing a shard per result, then merge.

    ``engine``: "pool" runs the map in this process (``workers`` 1) or on a local process pool;
    "ray" runs it with Ray Data (``ray_engine.ray_map``): on a local Ray instance of
    ``workers`` CPUs, or on the cluster at ``address``. Shards and merge are the same."""
    if engine not in ENGINES:
        raise ValueError(f"unknown ingestion engine {engine!r}; choose from {', '.join(ENGINES)}")
    if address and engine != "ray":
        raise ValueError("--address names a Ray cluster: it needs --engine ray")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    with writer_lock(root):                          # one writer at a time; others wait
        return _run_ingestion(root, items, map_fn, keys, workers, progress, desc, engine, address)


def _run_ingestion(root: Path, items, map_fn, keys, workers, progress, desc, engine="pool",
                   address=None) -> IngestReport:
    _merge(root)                                     # fold in what an interrupted run left
    db = VideoDatabase.open(root)
    done = {s["key"] for s in read_jsonl(root / "skipped.jsonl")}
    if keys is not None:
        done |= db.present(list(keys), "key")
    todo = [(i, it) for i, it in enumerate(items) if keys is None or keys[i] not in done]
    already = len(items) - len(todo)
    bar = tqdm(total=len(todo), desc=desc, unit="video", disable=not progress)
    fresh: list[IngestResult] = []

    def handle(res: IngestResult) -> None:
        if res.key in done or (keys is None and db.present([res.key], "key")):   # found by hashing
            return
        done.add(res.key)
        write_shard(root, res)
        fresh.append(res)
        bar.update(1)

    try:
        if engine == "ray":
            for res in ray_map(map_fn, todo, shard_bytes, result_from_bytes, partial(_init_worker, 1),
                               workers=workers, address=address):
                handle(res)
        elif workers <= 1:
            for i, it in todo:
                handle(map_fn(it, order=i))
        else:
            with ProcessPoolExecutor(workers, initializer=_init_worker, initargs=(1,),
                                     mp_context=__import__("multiprocessing").get_context("spawn")) as pool:
                futures = [pool.submit(map_fn, it, order=i) for i, it in todo]
                for fut in as_completed(futures):
                    handle(fut.result())
    finally:
        bar.close()
    added, skipped = _merge(root)
    already += len(todo) - len(fresh)
    total = len(VideoDatabase.load(root))
    return IngestReport(added, already, [{"source": r.source, "reason": r.skipped} for r in skipped], total)


def find_videos(folder) -> list[Path]:
    folder = Path(folder)
    if folder.is_file():
        return [folder]
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such file or folder")
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)


def index_folder(folder, root, cfg: IngestConfig = IngestConfig(), workers: int = 1,
                 progress: bool = True, analyse: Callable | None = None, engine: str = "pool",
                 address: str | None = None) -> IngestReport:
    """Add every video under ``folder`` to the database at ``root`` (``engine``, ``address``:
    see ``run_ingestion``)."""
    paths = [str(p) for p in find_videos(folder)]
    keys = []
    for p in paths:
        try:
            keys.append(file_key(Path(p)))
        except OSError:
            keys.append(f"unreadable:{p}")
    fn = partial(ingest_file, cfg=cfg, analyse=analyse)
    return run_ingestion(root, paths, fn, keys, workers, progress, engine=engine, address=address)


def build_embedded(root, specs, cfg: IngestConfig = IngestConfig(), workers: int = 1,
                   progress: bool = True) -> IngestReport:
    """Render and analyse the embedded database videos (resumable)."""
    spec_json = [s.to_json() for s in specs]
    keys = [spec_key(s) for s in spec_json]
    fn = partial(ingest_spec, cfg=cfg)
    return run_ingestion(root, spec_json, fn, keys, workers, progress, desc="rendering + analysing videos")


__all__ = ["ENGINES", "IngestConfig", "IngestReport", "IngestResult", "analyse_frames",
           "build_embedded", "find_videos", "index_folder", "ingest_file", "ingest_spec", "merge",
           "result_from_bytes", "run_ingestion", "shard_bytes"]
