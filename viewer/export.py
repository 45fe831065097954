"""Export a motion to BVH, FBX, GLB, MP4 and NPY: the one path the CLI, the generator and the app use.

A motion is either HumanML3D features ``(T, 263)`` or joint positions ``(T, 22, 3)`` /
``(T, 66)``; ``load_motion`` tells them apart by shape. ``export_motion`` first cleans the motion
(``motioncore.clean.clean_motion``: rigid skeleton, on the floor, planted feet; the contact
channels of features are used), solves the IK once on the body model's rest pose (so the mesh
and the skeleton files agree) and writes every requested format as ``<stem>.<ext>`` in the
output folder. The NPY joints are the forward kinematics of the very rotations written to
BVH/FBX/GLB, so every file describes the same motion. Files are written into a hidden
temporary folder inside the output folder and moved into place only once all of them exist: a
failure (or a killed process) never leaves a half-written file under its final name. Motions of
more than ``MAX_FRAMES`` frames (10 minutes at 20 fps) are refused.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from motioncore.features import (FEATURE_DIM, MotionFormatError, features_to_joints,
                                 joints_to_features, validate_joints)
from motioncore.ik import forward, solve_ik
from motioncore.io import atomic_write
from motioncore.skeleton import FPS, NUM_JOINTS

FORMATS = ("bvh", "fbx", "glb", "mp4", "npy")
BVH_UNITS = {"cm": 100.0, "m": 1.0}   # BVH length unit -> metres-to-unit scale (Blender/Mixamo: cm)
MAX_FRAMES = 12_000          # 10 minutes at 20 fps: longer motions are refused (memory, render time)


def as_joints(motion: np.ndarray) -> np.ndarray:
    """Joint positions (T, 22, 3) from features (T, 263) or joints (T, 22, 3) / (T, 66)."""
    arr = np.asarray(motion)
    if arr.ndim == 2 and arr.shape[1] == FEATURE_DIM:
        return features_to_joints(arr)
    if arr.ndim == 2 and arr.shape[1] == NUM_JOINTS * 3:
        arr = arr.reshape(len(arr), NUM_JOINTS, 3)
    if arr.ndim == 3 and arr.shape[1:] == (NUM_JOINTS, 3):
        return validate_joints(arr, min_frames=1).astype(np.float32)
    raise MotionFormatError(f"a motion is (frames, {FEATURE_DIM}) features or (frames, {NUM_JOINTS}, 3) "
                            f"joint positions; got an array of shape {arr.shape}")


def load_motion(path: str | Path, keep_features: bool = False) -> np.ndarray:
    """Joint positions from a ``.npy`` file (no pickles are ever loaded); with
    ``keep_features``, a features file comes back as its (validated) features."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"motion file {path} does not exist")
    try:
        arr = np.load(path, allow_pickle=False)
    except ValueError as exc:
        raise MotionFormatError(f"{path}: not a plain numeric .npy array ({exc})") from exc
    try:
        joints = as_joints(arr)
        return np.asarray(arr, dtype=np.float32) if keep_features and arr.ndim == 2 and \
            arr.shape[1] == FEATURE_DIM else joints
    except MotionFormatError as exc:
        raise MotionFormatError(f"{path}: {exc}") from exc


def parse_formats(text: str | list[str]) -> list[str]:
    names = [f.strip().lower().lstrip(".") for f in (text.split(",") if isinstance(text, str) else text)]
    names = [n for n in names if n]
    unknown = [n for n in names if n not in FORMATS]
    if unknown or not names:
        raise ValueError(f"unknown export format {', '.join(unknown) or '(none given)'}; "
                         f"choose from {', '.join(FORMATS)}")
    return list(dict.fromkeys(names))


def _save_npy(path: Path, array: np.ndarray) -> Path:
    return atomic_write(path, lambda fh: np.save(fh, array), "NPY file")


def export_motion(motion: np.ndarray, out_dir: str | Path, formats=FORMATS, stem: str = "motion",
                  body=None, render_cfg=None, skeleton_only: bool = False,
                  foot_skate_cleanup: bool = False, fps: float = FPS, clean: bool = True,
                  bvh_units: str = "cm", glb_preview: bool = False) -> dict[str, Path]:
    """Write ``stem.<format>`` files to ``out_dir``; returns {format: path} (npy gives two files:
    ``stem_joints.npy`` and ``stem_features.npy``). ``motion``: features (T, 263) or joints.
    ``clean=False`` exports the joints as given (still fitted to one rigid skeleton).
    ``bvh_units``: "cm" (Blender's and Mixamo's default) or "m" for the BVH file's lengths.
    ``glb_preview``: with "glb", also ``stem_preview.glb`` (key "glb_preview"): the same motion
    on a checkered floor, for a 3D viewer (the download stays floor-free)."""
    formats = parse_formats(list(formats))
    if bvh_units not in BVH_UNITS:
        raise ValueError(f"unknown BVH units {bvh_units!r}; choose from {', '.join(BVH_UNITS)}")
    if np.asarray(motion).shape[:1] and len(motion) > MAX_FRAMES:
        raise MotionFormatError(f"the motion has {len(motion):,} frames; exports are limited to "
                                f"{MAX_FRAMES:,} ({MAX_FRAMES / fps / 60:.0f} minutes at {fps:g} fps)")
    joints = as_joints(motion)
    if len(joints) < 2:
        raise MotionFormatError("a motion needs at least 2 frames to export")
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise NotADirectoryError(f"output folder {out_dir} is a file")
    out_dir.mkdir(parents=True, exist_ok=True)
    _remove_abandoned(out_dir)
    needs_body = bool({"mp4", "glb"} & set(formats)) and not skeleton_only
    if body is None and needs_body:
        from viewer.body import default_body

        body = default_body()
    if clean and len(joints) >= 2:
        from motioncore.clean import clean_motion

        arr = np.asarray(motion)
        joints = clean_motion(arr if arr.ndim == 2 and arr.shape[1] == FEATURE_DIM else joints, fps).joints
    rest = body.rest_offsets() if body is not None else None
    pose = solve_ik(joints, rest_offsets=rest, foot_skate_cleanup=foot_skate_cleanup and not clean, fps=fps)
    joints = forward(pose).astype(np.float32)   # exactly what BVH / FBX / GLB describe

    work = Path(tempfile.mkdtemp(prefix=".export-", dir=out_dir))
    try:
        staged = _write_all(work, formats, stem, pose, joints, body, render_cfg, skeleton_only, fps,
                            BVH_UNITS[bvh_units], glb_preview)
        written = {}
        for fmt, p in staged.items():             # every file complete: move them into place
            os.replace(p, out_dir / p.name)
            written[fmt] = out_dir / p.name
        return written
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _remove_abandoned(out_dir: Path, older_than_s: float = 3600.0) -> None:
    """Temporary folders an export killed more than an hour ago left behind."""
    for p in out_dir.glob(".export-*"):
        try:
            if p.is_dir() and time.time() - p.stat().st_mtime > older_than_s:
                shutil.rmtree(p, ignore_errors=True)
        except OSError:
            pass


def _write_all(out_dir: Path, formats, stem, pose, joints, body, render_cfg, skeleton_only, fps,
               bvh_scale: float = 100.0, glb_preview: bool = False) -> dict:
    written: dict[str, Path] = {}
    for fmt in formats:
        path = out_dir / f"{stem}.{fmt}"
        if fmt == "bvh":
            from viewer.bvh import write_bvh

            written[fmt] = write_bvh(path, pose, scale=bvh_scale)
        elif fmt == "fbx":
            from viewer.fbx import write_fbx

            written[fmt] = write_fbx(path, pose)
        elif fmt == "glb":
            from viewer.gltf import write_glb

            mesh = body.skinned_mesh() if body is not None and hasattr(body, "skinned_mesh") else None
            written[fmt] = write_glb(path, pose, mesh=mesh)
            if glb_preview:
                written["glb_preview"] = write_glb(out_dir / f"{stem}_preview.glb", pose, mesh=mesh,
                                                   floor=True)
        elif fmt == "mp4":
            from viewer.render import RenderConfig, render_motion_mp4

            cfg = render_cfg or RenderConfig(fps=fps)
            written[fmt] = render_motion_mp4(joints, path, cfg, body=body, skeleton_only=skeleton_only)
        elif fmt == "npy":
            written["npy"] = _save_npy(out_dir / f"{stem}_joints.npy", joints.astype(np.float32))
            written["npy_features"] = _save_npy(out_dir / f"{stem}_features.npy",
                                                joints_to_features(joints))
    return {k: Path(v) for k, v in written.items()}
