"""Speed benchmarks. They print figures; tests never time anything.

``bench_eval``: one full generation evaluation (``repeats`` repeats, default 20) of the
VQ-VAE reconstruction row on the test split, as ``eval generation`` runs it.

``bench_render``: a real walking motion (the pybullet walk clip, repeated) of ``seconds`` at
20 fps rendered with the default body at ``size`` x ``size`` to MP4. The renderer is warmed
up once (EGL start-up and shader compilation happen once per process and are reported apart),
then each stage is timed over ``repeats`` runs and the median is reported.
"""
from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from backend.checkpoints import checkpoints_dir
from backend.data.dataset import open_corpus
from backend.data.mocap import load_base_clips
from backend.evaluation.evaluator import TextMotionEvaluator
from backend.evaluation.generation import evaluate
from backend.evaluation.rows import GENERATORS
from motioncore.ik import solve_ik
from motioncore.skeleton import FPS
from viewer.body import default_body
from viewer.render import RenderConfig, render_motion_mp4, shared_renderer


def _walk(seconds: float) -> np.ndarray:
    walk = load_base_clips(["walk"])[0]
    frames = int(round(seconds * FPS))
    reps = int(np.ceil(seconds / walk.clip.duration)) + 1
    return walk.clip.repeated(reps, walk.loops).joints()[:frames]


def bench_render(seconds: float = 4.0, size: int = 512, repeats: int = 3) -> dict:
    torch.set_num_threads(2)
    joints = _walk(seconds)
    cfg = RenderConfig(size=size)
    t = time.perf_counter()
    body = default_body()
    body_load = time.perf_counter() - t
    runs = {"ik_s": [], "posing_s": [], "total_s": [], "skeleton_only_total_s": []}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "bench.mp4"
        t = time.perf_counter()
        render_motion_mp4(joints[:8], out, cfg, body=body, renderer=shared_renderer())
        warmup = time.perf_counter() - t
        for _ in range(repeats):
            t = time.perf_counter()
            pose = solve_ik(joints, rest_offsets=body.rest_offsets())
            t1 = time.perf_counter()
            body.vertices(pose)
            t2 = time.perf_counter()
            runs["ik_s"].append(t1 - t)
            runs["posing_s"].append(t2 - t1)
            t = time.perf_counter()
            render_motion_mp4(joints, out, cfg, body=body)
            runs["total_s"].append(time.perf_counter() - t)
            t = time.perf_counter()
            render_motion_mp4(joints, out, cfg, skeleton_only=True)
            runs["skeleton_only_total_s"].append(time.perf_counter() - t)
    fig = {k: statistics.median(v) for k, v in runs.items()}
    # Rendering and encoding overlap (frames stream into ffmpeg): reported together.
    fig["render_s"] = fig["total_s"] - fig["ik_s"] - fig["posing_s"]
    fig.update({"frames": len(joints), "size": size, "seconds_of_motion": seconds,
                "ms_per_frame": 1000 * fig["total_s"] / len(joints),
                "realtime_factor": seconds / fig["total_s"], "target_s": 3.0,
                "body": getattr(body, "name", type(body).__name__),
                "body_load_s": body_load, "first_render_warmup_s": warmup,
                "repeats": repeats})
    return fig


def bench_eval(repeats: int = 20, split: str = "test") -> dict:
    torch.set_num_threads(2)
    corpus = open_corpus()
    t = time.perf_counter()
    evaluator = TextMotionEvaluator.from_pretrained(checkpoints_dir() / "evaluator")
    generator = GENERATORS["vqvae"](corpus)
    load = time.perf_counter() - t
    t = time.perf_counter()
    evaluate(evaluator, corpus, split, [generator], repeats=repeats, progress=False)
    total = time.perf_counter() - t
    motions = len(corpus.split_ids(split))
    return {"split": split, "repeats": repeats, "motions": motions, "load_s": load,
            "evaluation_s": total, "per_repeat_s": total / repeats,
            "motions_per_s": motions * repeats / total}
