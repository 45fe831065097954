"""The motions behind the embedded video database (no rendering here).

The video database shows *video-only* motions: drawn by the corpus's program generator with
another seed (``VIDEO_SEED``), so no video shows a motion of the text-motion corpus; the kinds
are the same, OOD kinds (cartwheel, backflip, crawl, roll) included. Indices
``0 .. N_IN_DIST-1`` are in-distribution programs, ``N_IN_DIST ..`` contain an OOD kind.

Besides being rendered (``backend.retrieval.videos.synth``), their features are the tokenizer's
extra, caption-free training data. Kept free of any rendering import so that training the
tokenizer needs only numpy, scipy and torch (e.g. on a bare GPU machine).
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
from tqdm import tqdm

from backend.data.corpus import OOD_KINDS, draw_kinds, realise_program
from backend.data.mocap import load_base_clips
from motioncore.features import features_to_joints, joints_to_features

VIDEO_SEED = 4242
N_IN_DIST, N_OOD = 800, 250          # embedded database: 1,050 videos
PROGRAM_SEED, PROGRAM_VAL_SEED = 6161, 6162   # caption-free program motions (tokenizer only)
JUDGE_SEED, JUDGE_VAL_SEED = 6163, 6164       # labelled program motions (the checker only)
MIN_SECONDS, MAX_SECONDS = 2.0, 6.0


@lru_cache(maxsize=1)
def base_clips_by_kind() -> dict:
    clips: dict = {}
    for b in load_base_clips():
        clips.setdefault(b.kind, []).append(b)
    return clips


def video_motion(index: int, ood: bool, seed: int = VIDEO_SEED):
    """(joints (T, 22, 3), segments) of database motion ``index``: 1-2 segments, 2-6 s."""
    rng = np.random.default_rng([seed, index])
    kinds = draw_kinds(rng, ood)[:2]
    if ood and not any(k in OOD_KINDS for k in kinds):
        kinds = kinds[:1]
    clip, segments = realise_program(kinds, base_clips_by_kind(), rng, MIN_SECONDS, MAX_SECONDS)
    joints = features_to_joints(joints_to_features(clip.joints()))   # canonical, as in the corpus
    return joints, segments


def video_motion_features(n_in_dist: int = N_IN_DIST, n_ood: int = N_OOD, seed: int = VIDEO_SEED,
                          progress: bool = False) -> list[np.ndarray]:
    """263-d features of every video-only motion, in index order (the first ``n_in_dist`` are
    in-distribution, the rest contain an OOD kind)."""
    return [joints_to_features(video_motion(i, i >= n_in_dist, seed)[0])
            for i in tqdm(range(n_in_dist + n_ood), desc="video-only motions", disable=not progress)]


def record_motion(record: dict) -> tuple[np.ndarray, list[dict]] | None:
    """(joints (T, 22, 3), segments) of the motion a synthetic database video shows (its
    window; the segments only when the window is the whole motion, else []), or None for a video
    without a known motion (a user's own footage)."""
    spec = record.get("spec") or {}
    if record.get("source") != "synthetic" or "index" not in spec or spec.get("motion_file"):
        return None
    joints, segments = video_motion(int(spec["index"]), bool(spec.get("ood")), int(spec.get("seed", VIDEO_SEED)))
    start, end = int(spec.get("start", 0)), int(spec.get("end", len(joints)))
    whole = start == 0 and end >= len(joints)
    joints = joints[start:end]
    return (joints, segments if whole else []) if len(joints) > 1 else None


def database_motions(records: list[dict], split: str = "train", progress: bool = False
                     ) -> list[tuple[np.ndarray, list[dict]]]:
    """(263-d features, segments) of every synthetic database video of the database's own
    ``split`` whose whole motion it shows (what the generator's video-only pairs learn from)."""
    out = []
    for r in tqdm(records, desc=f"database motions ({split})", disable=not progress):
        if (r.get("spec") or {}).get("split") != split:
            continue
        motion = record_motion(r)
        if motion is not None and motion[1]:
            out.append((joints_to_features(motion[0]), motion[1]))
    return out


def program_motion(index: int, seed: int = PROGRAM_SEED) -> dict:
    """Caption-free motion ``index`` that contains an OOD kind, drawn as the corpus draws its OOD
    motions (1-3 segments, 2-10 s) but with another seed: no captions, no video, never a motion
    of the corpus or of the database. ``{"segments", "features", "joints"}``."""
    from backend.data.corpus import CorpusConfig, make_motion

    return make_motion(index, True, CorpusConfig(seed=seed), base_clips_by_kind())


def judge_motions(n: int, seed: int = JUDGE_SEED, progress: bool = False
                  ) -> list[tuple[np.ndarray, list[dict]]]:
    """(263-d features, segments) of ``n`` more motions for the instruction checker (a judge,
    never the generator): the first half drawn as the corpus draws its in-distribution motions,
    the second half with an OOD kind, all with their own seed, so none is a motion of the corpus
    (its test split and OOD evaluation half included), of the database or of the tokenizer's."""
    from backend.data.corpus import CorpusConfig, make_motion

    cfg, clips, n_in = CorpusConfig(seed=seed), base_clips_by_kind(), n // 2
    out = []
    for i in tqdm(range(n), desc="labelled judge motions", disable=not progress):
        m = make_motion(i, i >= n_in, cfg, clips)
        out.append((m["features"], m["segments"]))
    return out


def program_motion_features(n: int, seed: int = PROGRAM_SEED, progress: bool = False) -> list[np.ndarray]:
    """263-d features of ``program_motion(0 .. n-1, seed)``. Only the tokenizer trains on them
    (it never sees text), so more of the rare kinds' motion reaches it than the 250 videos hold."""
    return [program_motion(i, seed)["features"]
            for i in tqdm(range(n), desc="caption-free OOD-kind motions", disable=not progress)]
