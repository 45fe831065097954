"""The embedded video database: short videos rendered from *video-only* motions.

The paper retrieves from internet videos that never appear in the generator's text-motion
pairs. Here the database is made of its own motions, drawn by the corpus's program generator
with another seed (``VIDEO_SEED``), so a video never shows a motion of the text-motion corpus;
the kinds are the same, OOD kinds (cartwheel, backflip, crawl, roll) included. Each video is a
2-6 s motion rendered with the mannequin body under a random camera (azimuth, elevation,
distance, field of view), background, floor, body colour and body proportions.

A video is fully described by its ``VideoSpec`` (seed + index + render settings), so the
database ships as specs plus the features computed from the rendered pixels; any video can be
rendered again, byte-identical, when someone wants to watch it (``render_video``).
Captions are kept only to train and evaluate the retriever (as in the paper).
"""
from __future__ import annotations

import colorsys
import random
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from backend.data.captions import caption_set
from backend.data.video_motions import N_IN_DIST, N_OOD, VIDEO_SEED, video_motion
from motioncore.ik import solve_ik
from motioncore.skeleton import FPS
from viewer.body import MannequinBody
from viewer.render import RenderConfig, facing_yaw_of, shared_renderer, write_mp4

TEST_EVERY = 5                       # every 5th video is held out for retrieval evaluation
SIZES = (224, 256, 288, 320)


@dataclass
class VideoSpec:
    """Everything needed to render one database video again."""
    id: str
    index: int
    ood: bool
    split: str                       # "train" (retriever training) or "test" (held out)
    seed: int
    start: int                       # frame window of the motion (20 fps)
    end: int
    size: int
    azimuth: float
    elevation: float
    yfov: float
    margin: float
    body_color: tuple
    background: tuple
    floor: bool
    floor_colors: tuple
    body_shape: list = field(default_factory=list)
    captions: list = field(default_factory=list)
    kinds: list = field(default_factory=list)
    motion_file: str = ""            # a (T, 22, 3) joints .npy to show instead of motion ``index``

    @property
    def frames(self) -> int:
        return self.end - self.start

    def to_json(self) -> dict:
        d = asdict(self)
        if not d["motion_file"]:      # database specs keep their original form (and content key)
            del d["motion_file"]
        return d

    @classmethod
    def from_json(cls, d: dict) -> "VideoSpec":
        d = dict(d)
        for k in ("body_color", "background"):
            d[k] = tuple(d[k])
        d["floor_colors"] = tuple(tuple(c) for c in d["floor_colors"])
        return cls(**d)


def _colour(rng: np.random.Generator, light: tuple[float, float], sat: tuple[float, float]) -> tuple:
    h = float(rng.uniform(0, 1))
    r, g, b = colorsys.hls_to_rgb(h, float(rng.uniform(*light)), float(rng.uniform(*sat)))
    return (round(r, 3), round(g, 3), round(b, 3))


def make_spec(index: int, seed: int = VIDEO_SEED, n_in_dist: int = N_IN_DIST) -> VideoSpec:
    """The spec of database video ``index`` (deterministic)."""
    ood = index >= n_in_dist
    joints, segments = video_motion(index, ood, seed)
    rng = np.random.default_rng([seed, index, 1])
    start, end = 0, len(joints)        # the whole motion: its caption describes all of it
    split = "test" if index % TEST_EVERY == TEST_EVERY - 1 else "train"
    caps = caption_set(segments, random.Random(seed * 7919 + index), n=3, held_out=split == "test")
    return VideoSpec(
        id=f"emb{index:05d}" if seed == VIDEO_SEED else f"s{seed}-{index:05d}",   # unique across seeds
        index=index, ood=ood, split=split, seed=seed,
        start=start, end=end, **_render_settings(rng),
        captions=[text for text, _ in caps],
        kinds=[s["action"] for s in segments],
    )


def _render_settings(rng: np.random.Generator) -> dict:
    """A random camera, background, floor, body colour and body shape."""
    dark = rng.random() < 0.3
    return dict(
        size=int(rng.choice(SIZES)),
        azimuth=round(float(rng.uniform(-180, 180)), 1),
        elevation=round(float(rng.uniform(0, 35)), 1),
        yfov=round(float(rng.uniform(30, 55)), 1),
        margin=round(float(rng.uniform(0.05, 0.35)), 3),
        body_color=_colour(rng, (0.35, 0.7), (0.2, 0.8)),
        background=_colour(rng, (0.08, 0.3) if dark else (0.6, 0.95), (0.0, 0.5)),
        floor=bool(rng.random() < 0.8),
        floor_colors=(_colour(rng, (0.5, 0.9), (0.0, 0.4)), _colour(rng, (0.3, 0.7), (0.0, 0.4))),
        body_shape=[round(float(x), 3) for x in rng.normal(0, 1.0, size=4)],
    )


def motion_video_spec(motion_id: str, joints_file: str | Path, n_frames: int, index: int = 0,
                      seed: int = VIDEO_SEED, max_frames: int = 196) -> VideoSpec:
    """A video of a corpus motion itself (its first ``max_frames`` frames) under random render
    settings: the generator's "self-video" training pairs, where the video shows the target."""
    rng = np.random.default_rng([seed, 7, index])
    return VideoSpec(id=f"self-{motion_id}", index=index, ood=False, split="train", seed=seed,
                     start=0, end=int(min(n_frames, max_frames)), motion_file=str(joints_file),
                     **_render_settings(rng))


def spec_joints(spec: VideoSpec) -> np.ndarray:
    """(T, 22, 3) joints the video shows (its window of the motion)."""
    if spec.motion_file:
        joints = np.load(spec.motion_file, allow_pickle=False).astype(np.float64)
    else:
        joints, _ = video_motion(spec.index, spec.ood, spec.seed)
    return joints[spec.start:spec.end]


def render_config(spec: VideoSpec, fps: float = FPS):
    return RenderConfig(size=spec.size, fps=fps, body_color=spec.body_color,
                        background=spec.background, azimuth=spec.azimuth,
                        elevation=spec.elevation, yfov=spec.yfov, margin=spec.margin,
                        floor=spec.floor, floor_colors=spec.floor_colors, crf=26)


@lru_cache(maxsize=8)
def _body(shape: tuple):
    betas = np.zeros(10, np.float32)           # mannequin-x takes 10 SMPL-X-style shape coefficients
    betas[:len(shape)] = shape
    return MannequinBody(shape=betas)


def render_frames(spec: VideoSpec, frame_indices: np.ndarray | None = None, renderer=None) -> np.ndarray:
    """(T, H, W, 3) uint8 frames of the video (all frames, or only ``frame_indices`` of the
    window: the camera then follows those frames only, which is what a sampler sees)."""
    window = spec_joints(spec)
    body = _body(tuple(spec.body_shape))
    pose = solve_ik(window, rest_offsets=body.rest_offsets(), fps=FPS)
    verts = body.vertices(pose)
    fps = FPS
    if frame_indices is not None:
        verts = verts[np.asarray(frame_indices)]
        fps = FPS * len(frame_indices) / max(len(window), 1)
    r = renderer or shared_renderer()
    return r.render_mesh(verts, body.faces, render_config(spec, fps=fps), facing_yaw_of(window))


def render_video(spec: VideoSpec, path: str | Path) -> Path:
    """Write the whole video as an MP4 (about 2-5 s of CPU for a 4-s video)."""
    frames = render_frames(spec)
    return write_mp4(frames, path, FPS, crf=26, preset="veryfast")


def embedded_specs(n_in_dist: int = N_IN_DIST, n_ood: int = N_OOD, seed: int = VIDEO_SEED) -> list[VideoSpec]:
    return [make_spec(i, seed, n_in_dist) for i in range(n_in_dist + n_ood)]


__all__ = ["VideoSpec", "embedded_specs", "make_spec", "motion_video_spec", "spec_joints", "render_frames", "render_video", "video_motion"]
