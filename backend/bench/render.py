"""Speed benchmarks. They print figures; tests never time anything.

``bench_eval``: one full generation evaluation (``repeats`` repeats, default 20) of the
VQ-VAE reconstruction row on the test split, as ``eval generation`` runs it.

``bench_render``: a real walking motion (the pybullet walk clip, repeated) of ``seconds`` at
20 fps rendered with the default body at ``size`` x ``size`` to MP4, by the current path (one
mesh updated in place, skinned normals, encoding on a writer thread) and by the previous one (a
new pyrender mesh per frame, normals recomputed from the triangles, frames written on the
rendering thread), interleaved run by run so both see the same machine load; the ratio is what
to read. The renderer is warmed up once (EGL start-up and shader compilation happen once per
process and are reported apart), then each figure is the median over ``repeats`` runs. Per-frame
parts are timed separately (posing, normals, drawing + readback, floor + compositing, encoding).
"""
from __future__ import annotations

import os
import statistics
import tempfile
import time
from dataclasses import replace
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
from viewer.render import (NormalSolver, RenderConfig, facing_yaw_of, pose_body, render_motion_mp4,
                           shared_renderer, write_mp4)


def _walk(seconds: float) -> np.ndarray:
    walk = load_base_clips(["walk"])[0]
    frames = int(round(seconds * FPS))
    reps = int(np.ceil(seconds / walk.clip.duration)) + 1
    return walk.clip.repeated(reps, walk.loops).joints()[:frames]


def _old_path(joints, out, cfg, body, renderer) -> None:
    """The previous MP4 path, kept for the ratio: normals recomputed from the triangles, a new
    pyrender mesh per frame, frames written to ffmpeg on the rendering thread."""
    pose = solve_ik(joints, rest_offsets=body.rest_offsets(), fps=cfg.fps)
    verts = body.vertices(pose)
    frames = renderer.iter_mesh(verts, body.faces, cfg, facing_yaw_of(joints), in_place=False)
    write_mp4(frames, out, cfg.fps, crf=cfg.crf, preset=cfg.preset, overlap=False)


def _frame_parts(joints, cfg, body, renderer) -> dict:
    """Milliseconds per frame of each part of the current path, timed one by one."""
    T = len(joints)
    ms = {}
    t = time.perf_counter()
    pose = solve_ik(joints, rest_offsets=body.rest_offsets(), fps=cfg.fps)
    ms["ik"] = time.perf_counter() - t
    t = time.perf_counter()
    verts = body.vertices(pose)
    ms["posing"] = time.perf_counter() - t
    t = time.perf_counter()
    verts, normals = pose_body(body, pose)
    ms["skinned_normals"] = time.perf_counter() - t - ms["posing"]
    t = time.perf_counter()
    NormalSolver(body.faces, verts.shape[1])(verts)
    ms["recomputed_normals_previous"] = time.perf_counter() - t
    yaw = facing_yaw_of(joints)
    nofloor = replace(cfg, floor=False)
    t = time.perf_counter()
    frames = list(renderer.iter_mesh(verts, body.faces, nofloor, yaw, normals=normals))
    ms["draw_in_place"] = time.perf_counter() - t
    t = time.perf_counter()
    list(renderer.iter_mesh(verts, body.faces, nofloor, yaw, normals=normals, in_place=False))
    ms["draw_new_mesh_previous"] = time.perf_counter() - t
    t = time.perf_counter()
    list(renderer.iter_mesh(verts, body.faces, cfg, yaw, normals=normals))
    ms["floor_and_composite"] = time.perf_counter() - t - ms["draw_in_place"]
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        write_mp4(np.stack(frames), Path(tmp) / "enc.mp4", cfg.fps, crf=cfg.crf, preset=cfg.preset)
        ms["encoding"] = time.perf_counter() - t
    return {k: 1000.0 * v / T for k, v in ms.items()}


def bench_render(seconds: float = 4.0, size: int = 512, repeats: int = 3) -> dict:
    torch.set_num_threads(2)
    joints = _walk(seconds)
    cfg = RenderConfig(size=size)
    t = time.perf_counter()
    body = default_body()
    body_load = time.perf_counter() - t
    renderer = shared_renderer()
    runs = {"total_s": [], "previous_total_s": [], "skeleton_only_total_s": []}
    parts = []
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "bench.mp4"
        t = time.perf_counter()
        render_motion_mp4(joints[:8], out, cfg, body=body, renderer=renderer)
        warmup = time.perf_counter() - t
        _old_path(joints[:8], out, cfg, body, renderer)
        for i in range(repeats):
            order = ("new", "old") if i % 2 == 0 else ("old", "new")   # interleaved, alternating
            for which in order:
                t = time.perf_counter()
                if which == "new":
                    render_motion_mp4(joints, out, cfg, body=body, renderer=renderer)
                    runs["total_s"].append(time.perf_counter() - t)
                else:
                    _old_path(joints, out, cfg, body, renderer)
                    runs["previous_total_s"].append(time.perf_counter() - t)
            t = time.perf_counter()
            render_motion_mp4(joints, out, cfg, skeleton_only=True)
            runs["skeleton_only_total_s"].append(time.perf_counter() - t)
            parts.append(_frame_parts(joints, cfg, body, renderer))
    fig = {k: statistics.median(v) for k, v in runs.items()}
    fig["per_frame_ms"] = {k: statistics.median(p[k] for p in parts) for k in parts[0]}
    fig.update({"frames": len(joints), "size": size, "seconds_of_motion": seconds,
                "ms_per_frame": 1000 * fig["total_s"] / len(joints),
                "speedup_vs_previous": fig["previous_total_s"] / fig["total_s"],
                "realtime_factor": seconds / fig["total_s"], "target_s": 1.5,
                "body": getattr(body, "name", type(body).__name__),
                "body_load_s": body_load, "first_render_warmup_s": warmup,
                "repeats": repeats, "cpus": os.cpu_count(),
                "load_avg_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None})
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
