"""``python -m backend bench ingest``: the process pool against Ray Data on the same videos.

``videos`` rendered database videos (MP4 files) are indexed into a fresh database by each
engine: the process pool (in-process for 1 worker) and Ray Data on a local instance, with 1 and
2 workers each. Every run loads the models once per worker, as a real run does. Reported per
run: seconds, videos per minute, the ratio to the pool with as many workers, and Ray's overhead
per video ((Ray seconds - pool seconds) / videos), with and without Ray's start-up (timed on
its own: ``ray.init`` + ``ray.shutdown`` with nothing to run).

``stand_in`` replaces pose estimation and the video model by a cheap pixel statistic
(``stand_in_analyse``), leaving decoding, hashing, shards, the engine and the merge: the
figures are then the engines' own cost.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from backend.retrieval.videos import ray_engine
from backend.retrieval.videos.ingest import IngestConfig, index_folder
from backend.retrieval.videos.synth import embedded_specs, render_video


def stand_in_analyse(frames: np.ndarray, cfg: IngestConfig):
    """Keypoints and features from pixel means (no models): the engines' cost alone."""
    m = frames.reshape(len(frames), -1).mean(1) / 255.0
    kp = np.repeat(m[:, None, None], 17, 1).repeat(3, 2).astype(np.float32)
    return kp, np.full(1024, m.mean(), np.float32), 1.0


def ray_startup_s(workers: int) -> float:
    import ray                                       # only when Ray is benchmarked

    t0 = time.perf_counter()
    if ray_engine.start(workers):
        ray.shutdown()
    return time.perf_counter() - t0


def bench_ingest(videos: int = 40, workers=(1, 2), engines=("pool", "ray"), stand_in: bool = False,
                 workdir=None, progress: bool = True) -> dict:
    cfg = IngestConfig()
    analyse = stand_in_analyse if stand_in else None
    runs = []
    with tempfile.TemporaryDirectory(dir=workdir, prefix="bench-ingest-") as tmp:
        folder = Path(tmp) / "videos"
        folder.mkdir()
        for s in embedded_specs(videos, 0, seed=4242)[:videos]:
            render_video(s, folder / f"{s.id}.mp4")
        for engine in engines:
            for w in workers:
                db = Path(tmp) / f"db-{engine}-{w}"
                t0 = time.perf_counter()
                rep = index_folder(folder, db, cfg, workers=w, progress=progress, analyse=analyse,
                                   engine=engine)
                sec = time.perf_counter() - t0
                runs.append({"engine": engine, "workers": w, "seconds": round(sec, 2), "added": rep.added,
                             "videos_per_minute": round(60 * videos / sec, 1)})
    out = {"videos": videos, "stand_in": stand_in, "runs": runs}
    pool = {r["workers"]: r["seconds"] for r in runs if r["engine"] == "pool"}
    if "ray" in engines:
        out["ray_startup_s"] = {w: round(ray_startup_s(w), 2) for w in workers}
        for r in runs:
            if r["engine"] == "ray" and r["workers"] in pool:
                base = pool[r["workers"]]
                r["ratio_to_pool"] = round(r["seconds"] / base, 3)
                r["overhead_per_video_s"] = round((r["seconds"] - base) / videos, 3)
                r["overhead_per_video_after_startup_s"] = round(
                    (r["seconds"] - out["ray_startup_s"][r["workers"]] - base) / videos, 3)
    if 1 in pool and 2 in pool:
        out["pool_speedup_2_workers"] = round(pool[1] / pool[2], 3)
    return out


def format_bench_ingest(res: dict) -> str:
    lines = [f"ingestion of {res['videos']} rendered MP4s"
             + (" (stand-in models: engine cost only)" if res["stand_in"] else " (MediaPipe Pose + I3D)"),
             f"{'engine':<8}{'workers':>8}{'seconds':>10}{'videos/min':>12}{'x pool':>9}"
             f"{'overhead/video':>16}{'  (after start-up)':>18}"]
    for r in res["runs"]:
        extra = ""
        if "ratio_to_pool" in r:
            extra = (f"{r['ratio_to_pool']:>9.2f}{r['overhead_per_video_s']:>14.3f} s"
                     f"{r['overhead_per_video_after_startup_s']:>16.3f} s")
        lines.append(f"{r['engine']:<8}{r['workers']:>8}{r['seconds']:>10.2f}{r['videos_per_minute']:>12.1f}{extra}")
    if "ray_startup_s" in res:
        lines.append("Ray start-up + shutdown alone: " + ", ".join(
            f"{s:.1f} s ({w} CPU{'s' if w > 1 else ''})" for w, s in res["ray_startup_s"].items()))
    if "pool_speedup_2_workers" in res:
        lines.append(f"process pool, 2 workers vs 1: speed-up {res['pool_speedup_2_workers']:.2f}x")
    return "\n".join(lines)


__all__ = ["bench_ingest", "format_bench_ingest", "ray_startup_s", "stand_in_analyse"]
