"""``python -m backend bench retrieval``: query latency at scale and ingestion throughput.

Query latency: the Gemini-MVR text side (two MiniLM passes + projections) plus a FAISS search
over synthetic fused vectors of the real dimension at each size, exact (flat) vs approximate
(HNSW) with the approximate index's recall@1 against exact (``backend.bench.index``).

Ingestion: real MP4 files (rendered database videos) through ``index_folder``, with the time
of each stage measured on the same videos: decoding, pose estimation, the video model, and
everything else (our code: hashing, shards, merge, atomic writes).
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch

from backend.bench.index import bench_retrieval, format_bench
from backend.checkpoints import checkpoints_dir
from backend.retrieval.model import GeminiMVR, encode_captions
from backend.retrieval.videos.decode import read_frames
from backend.retrieval.videos.ingest import IngestConfig, _models, index_folder
from backend.retrieval.videos.synth import embedded_specs, render_video


def _query_encoder():
    d = checkpoints_dir() / "retriever"
    model = GeminiMVR.from_pretrained(d) if (d / "model.safetensors").is_file() else GeminiMVR().eval()

    @torch.no_grad()
    def encode(texts):
        pred, whole = encode_captions(list(texts))
        t = model.encode_text(pred, whole)
        return torch.cat([t["p"], t["g"]], 1).numpy()

    return encode, 2 * model.config.embed_dim


def bench_ingestion(n_videos: int = 8, workers: int = 1, progress: bool = True) -> dict:
    cfg = IngestConfig()
    specs = embedded_specs(n_videos, 0, seed=777)[:n_videos]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "videos"
        folder.mkdir()
        for s in specs:
            render_video(s, folder / f"{s.id}.mp4")
        pose, i3d = _models(cfg)                     # load once, outside the timings
        stages = {"decode": 0.0, "pose": 0.0, "video_model": 0.0}
        for p in sorted(folder.glob("*.mp4")):
            t0 = time.perf_counter()
            frames, _ = read_frames(p, cfg.frames, cfg.max_side)
            t1 = time.perf_counter()
            pose.estimate(frames)
            t2 = time.perf_counter()
            i3d.features(frames)
            t3 = time.perf_counter()
            stages["decode"] += t1 - t0
            stages["pose"] += t2 - t1
            stages["video_model"] += t3 - t2
        t0 = time.perf_counter()
        report = index_folder(folder, Path(tmp) / "db", cfg, workers=workers, progress=progress)
        total = time.perf_counter() - t0
    per = {k: v / n_videos for k, v in stages.items()}
    per_total = total / n_videos if workers <= 1 else None
    out = {"videos": n_videos, "workers": workers, "added": report.added,
           "seconds": round(total, 2), "videos_per_minute": round(60 * n_videos / total, 1),
           "per_video_s": {k: round(v, 3) for k, v in per.items()}}
    if per_total is not None:
        out["per_video_s"]["our_code"] = round(max(per_total - sum(per.values()), 0.0), 3)
        out["per_video_s"]["total"] = round(per_total, 3)
    return out


def run_bench_retrieval(sizes=(1_000, 100_000, 1_000_000), queries: int = 200, ingest_videos: int = 8,
                        workers: int = 1, progress: bool = True) -> tuple[dict, str]:
    encode, dim = _query_encoder()
    res = bench_retrieval(sizes=sizes, dim=dim, queries=queries, encode_text=encode, progress=progress,
                          threads=None)
    text = format_bench(res)
    if ingest_videos:
        ing = bench_ingestion(ingest_videos, workers, progress)
        res["ingestion"] = ing
        per = ing["per_video_s"]
        text += (f"\n\ningestion of {ing['videos']} rendered MP4s ({workers} worker(s)): "
                 f"{ing['videos_per_minute']:.1f} videos/minute\n  per video: " +
                 ", ".join(f"{k} {v:.3f} s" for k, v in per.items()))
    return res, text


__all__ = ["bench_ingestion", "run_bench_retrieval"]
