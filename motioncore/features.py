"""HumanML3D's 263-d motion features: joint positions <-> features, normalisation, resampling.

Layout of one frame (22 joints, 20 fps):

    [0]        root angular velocity about y (half-angle per frame, radians)
    [1:3]      root linear velocity in x, z (in the body's heading frame)
    [3]        root height
    [4:67]     positions of joints 1..21 relative to the root, heading-aligned (21 x 3)
    [67:193]   rotations of joints 1..21 in the continuous 6D form (21 x 6)
    [193:259]  velocities of the 22 joints in the heading frame (22 x 3)
    [259:263]  foot contacts: left ankle, left toe, right ankle, right toe (0 or 1)

A clip of T frames gives T-1 feature rows (the last frame only serves the velocities).
``features_to_joints`` recovers the positions from the root terms and [4:67] alone, so
``features_to_joints(joints_to_features(p)) == canonicalize(p)[:-1]`` up to float error.

For the same joints the features equal those of HumanML3D's ``process_file`` (checked on its
published sample clip): the heading is the original's IK heading (``ik_forward``, smoothed),
and the first frame's root rotation is the identity, as in the script that made the published
``new_joint_vecs``; recovery also starts from the identity, so the round trip is exact.
One deliberate difference: the root's per-frame turn is taken on the short arc, so spins
through +-180 degrees keep their sign (the original's ``arcsin`` of the turn quaternion flips
it there); elsewhere the two agree.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy.ndimage import gaussian_filter1d

from motioncore.quat import qbetween, qinv, qmul, qrot, qto_cont6d, qyaw
from motioncore.skeleton import (FACE_JOINTS, FOOT_CONTACT_THRESHOLD, FPS, KINEMATIC_CHAINS,
                                 LEFT_FOOT, MIRROR_INDEX, NUM_JOINTS, RAW_OFFSETS, RIGHT_FOOT)

FEATURE_DIM = 263
ROOT_SLICE = slice(0, 4)
RIC_SLICE = slice(4, 4 + (NUM_JOINTS - 1) * 3)
ROT_SLICE = slice(RIC_SLICE.stop, RIC_SLICE.stop + (NUM_JOINTS - 1) * 6)
VEL_SLICE = slice(ROT_SLICE.stop, ROT_SLICE.stop + NUM_JOINTS * 3)
CONTACT_SLICE = slice(VEL_SLICE.stop, VEL_SLICE.stop + 4)
assert CONTACT_SLICE.stop == FEATURE_DIM
UP = np.array([0.0, 1.0, 0.0])
FORWARD = np.array([0.0, 0.0, 1.0])


class MotionFormatError(ValueError):
    """Input that is not a valid motion (wrong shape, too short, not finite)."""


def validate_joints(positions: np.ndarray, min_frames: int = 2) -> np.ndarray:
    """Return ``positions`` as float64 (T, 22, 3) or raise a MotionFormatError saying why."""
    arr = np.asarray(positions)
    if arr.ndim == 2 and arr.shape[1] == NUM_JOINTS * 3:
        arr = arr.reshape(len(arr), NUM_JOINTS, 3)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise MotionFormatError(f"expected joint positions of shape (frames, {NUM_JOINTS}, 3), "
                                f"got {arr.shape}")
    if arr.shape[1] != NUM_JOINTS:
        raise MotionFormatError(f"expected {NUM_JOINTS} joints (SMPL body joints 0..21), "
                                f"got {arr.shape[1]}")
    if arr.shape[0] < min_frames:
        raise MotionFormatError(f"a motion needs at least {min_frames} frames, got {arr.shape[0]}")
    if not np.all(np.isfinite(arr)):
        raise MotionFormatError("joint positions contain NaN or infinite values")
    return arr.astype(np.float64)


def validate_features(features: np.ndarray, min_frames: int = 1) -> np.ndarray:
    arr = np.asarray(features)
    if arr.ndim != 2 or arr.shape[1] != FEATURE_DIM:
        raise MotionFormatError(f"expected features of shape (frames, {FEATURE_DIM}), got {arr.shape}")
    if arr.shape[0] < min_frames:
        raise MotionFormatError(f"a motion needs at least {min_frames} frames, got {arr.shape[0]}")
    if not np.all(np.isfinite(arr)):
        raise MotionFormatError("motion features contain NaN or infinite values")
    return arr.astype(np.float64)


def facing_direction(positions: np.ndarray) -> np.ndarray:
    """Unit horizontal forward vector per frame (..., 3) from the hips and shoulders."""
    r_hip, l_hip, r_sh, l_sh = FACE_JOINTS
    across = (positions[..., r_hip, :] - positions[..., l_hip, :]) + \
             (positions[..., r_sh, :] - positions[..., l_sh, :])
    fwd = np.cross(UP, across)
    fwd[..., 1] = 0.0
    norm = np.linalg.norm(fwd, axis=-1, keepdims=True)
    return fwd / np.maximum(norm, 1e-9)


def canonicalize(positions: np.ndarray) -> np.ndarray:
    """Floor at y=0, first-frame root at the xz origin, first frame facing +z."""
    p = validate_joints(positions, min_frames=1).copy()
    p[..., 1] -= p[..., 1].min()
    p[..., [0, 2]] -= p[0, 0, [0, 2]]
    q0 = qbetween(facing_direction(p[0]), FORWARD)
    return qrot(np.broadcast_to(q0, p.shape[:-1] + (4,)), p)


def foot_contacts(positions: np.ndarray, threshold: float = FOOT_CONTACT_THRESHOLD) -> np.ndarray:
    """(T-1, 4) contacts: 1 where a foot joint moves less than sqrt(threshold) m in a frame."""
    p = validate_joints(positions)
    idx = list(LEFT_FOOT) + list(RIGHT_FOOT)
    step = np.sum((p[1:, idx] - p[:-1, idx]) ** 2, axis=-1)
    return (step < threshold).astype(np.float64)


def ik_forward(positions: np.ndarray) -> np.ndarray:
    """The forward vector (T, 3) that HumanML3D's inverse kinematics derives, before smoothing.

    HumanML3D's ``Skeleton.inverse_kinematics_np`` unpacks the face joints (right hip, left hip,
    right shoulder, left shoulder) as ``l_hip, r_hip, sdr_r, sdr_l``, so its across vector is
    ``(left hip - right hip) + (right shoulder - left shoulder)``: the shoulder line *minus* the
    hip line, not their sum (``process_file``'s frame-0 canonicalisation uses the sum). The
    across vector is normalised in 3D before the cross product with +y, so frames whose
    shoulders tilt towards the vertical (a cartwheel) get a shorter forward vector and weigh
    less in the smoothing. Every published ``new_joint_vecs`` file was computed this way, so we
    reproduce it exactly (``tests/test_features.py`` works one case out by hand).
    """
    r_hip, l_hip, r_sh, l_sh = FACE_JOINTS
    across = (positions[..., l_hip, :] - positions[..., r_hip, :]) + \
             (positions[..., r_sh, :] - positions[..., l_sh, :])
    across = across / np.maximum(np.linalg.norm(across, axis=-1, keepdims=True), 1e-12)
    return np.cross(UP, across)


def heading_rotations(positions: np.ndarray, smooth_sigma: float = 20.0) -> np.ndarray:
    """Per-frame root quaternion (T, 4) turning the smoothed IK forward vector onto +z.

    As HumanML3D: the unit-less forward vectors of ``ik_forward`` are Gaussian-smoothed over
    time (sigma 20 frames, edges repeated), then normalised. Frame 0's rotation is the
    identity, as in the script that produced the published ``new_joint_vecs`` (their first row
    holds the turn from the identity to frame 1's smoothed heading): the clip is already
    canonicalised to face +z at frame 0, and recovery starts from the identity too.
    """
    fwd = ik_forward(positions)
    if smooth_sigma > 0 and len(fwd) > 1:
        fwd = gaussian_filter1d(fwd, smooth_sigma, axis=0, mode="nearest")
    fwd = fwd / np.maximum(np.linalg.norm(fwd, axis=-1, keepdims=True), 1e-12)
    rot = qbetween(fwd, np.broadcast_to(FORWARD, fwd.shape))
    rot[0] = (1.0, 0.0, 0.0, 0.0)
    return rot


def bone_rotations(positions: np.ndarray, root_rot: np.ndarray) -> np.ndarray:
    """HumanML3D's inverse kinematics: the local rotation (T, 22, 4) that turns each bone's
    reference direction onto its observed direction, stored at the bone's child joint."""
    T = len(positions)
    quats = np.zeros((T, NUM_JOINTS, 4))
    quats[..., 0] = 1.0
    quats[:, 0] = root_rot
    for chain in KINEMATIC_CHAINS:
        acc = root_rot
        for parent, child in zip(chain[:-1], chain[1:]):
            bone = positions[:, child] - positions[:, parent]
            world = qbetween(np.broadcast_to(RAW_OFFSETS[child], bone.shape), bone)
            local = qmul(qinv(acc), world)
            quats[:, child] = local
            acc = qmul(acc, local)
    return quats


def joints_to_features(positions: np.ndarray) -> np.ndarray:
    """(T, 22, 3) joint positions in metres (y up) -> (T-1, 263) HumanML3D features."""
    p = canonicalize(validate_joints(positions))
    T = len(p)
    root_rot = heading_rotations(p)

    root_vel = qrot(root_rot[1:], p[1:, 0] - p[:-1, 0])
    turn = qmul(root_rot[1:], qinv(root_rot[:-1]))
    turn = np.where(turn[:, :1] < 0, -turn, turn)  # short arc: keeps spins' sign
    r_velocity = np.arcsin(np.clip(turn[:, 2:3], -1.0, 1.0))

    local = p.copy()
    local[..., [0, 2]] -= p[:, :1, [0, 2]]
    local = qrot(np.repeat(root_rot[:, None], NUM_JOINTS, axis=1), local)

    rot6d = qto_cont6d(bone_rotations(p, root_rot))[:, 1:].reshape(T, -1)
    joint_vel = qrot(np.repeat(root_rot[:-1, None], NUM_JOINTS, axis=1), p[1:] - p[:-1])

    feats = np.concatenate([
        r_velocity, root_vel[:, [0, 2]], local[:-1, 0, 1:2],
        local[:-1, 1:].reshape(T - 1, -1),
        rot6d[:-1],
        joint_vel.reshape(T - 1, -1),
        foot_contacts(p),
    ], axis=-1)
    return feats.astype(np.float32)


def recover_root(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Root heading quaternions (T, 4) and root positions (T, 3) from the root terms."""
    f = np.asarray(features, dtype=np.float64)
    angle = np.zeros(len(f))
    angle[1:] = np.cumsum(f[:-1, 0])
    rot = qyaw(2.0 * angle)  # the feature stores half-angles
    vel = np.zeros((len(f), 3))
    vel[1:, [0, 2]] = f[:-1, 1:3]
    pos = np.cumsum(qrot(qinv(rot), vel), axis=0)
    pos[:, 1] = f[:, 3]
    return rot, pos


def features_to_joints(features: np.ndarray) -> np.ndarray:
    """(T, 263) features (not normalised) -> (T, 22, 3) joint positions."""
    f = validate_features(features)
    rot, root = recover_root(f)
    local = f[:, RIC_SLICE].reshape(len(f), NUM_JOINTS - 1, 3)
    world = qrot(np.repeat(qinv(rot)[:, None], NUM_JOINTS - 1, axis=1), local)
    world[..., 0] += root[:, None, 0]
    world[..., 2] += root[:, None, 2]
    return np.concatenate([root[:, None], world], axis=1).astype(np.float32)


def mirror_features(features: np.ndarray) -> np.ndarray:
    """(T, 263) features of the mirror image of a motion (one frame shorter): joints recovered,
    left and right swapped, x negated, features recomputed."""
    return joints_to_features(mirror_joints(features_to_joints(np.asarray(features, np.float32))))


def mirror_joints(joints: np.ndarray) -> np.ndarray:
    """(T, 22, 3) joints of the mirror image (x negated, left and right joints swapped): a left
    turn becomes a right turn, a left kick a right kick."""
    out = np.array(joints, copy=True)[:, list(MIRROR_INDEX)]
    out[..., 0] *= -1
    return out


def resample(positions: np.ndarray, src_fps: float, dst_fps: float = FPS) -> np.ndarray:
    """Linear resampling along time of any (T, ...) array from ``src_fps`` to ``dst_fps``."""
    x = np.asarray(positions, dtype=np.float64)
    if src_fps <= 0 or dst_fps <= 0:
        raise ValueError(f"frame rates must be positive, got {src_fps} -> {dst_fps}")
    if len(x) < 2:
        raise MotionFormatError("resampling needs at least 2 frames")
    duration = (len(x) - 1) / src_fps
    n = int(np.floor(duration * dst_fps + 1e-9)) + 1
    t = np.arange(n) / dst_fps * src_fps
    i0 = np.clip(np.floor(t).astype(int), 0, len(x) - 2)
    w = (t - i0).reshape((-1,) + (1,) * (x.ndim - 1))
    return (1 - w) * x[i0] + w * x[i0 + 1]


# ---------------------------------------------------------------------------- normalisation
_GROUPS = (slice(0, 1), slice(1, 3), slice(3, 4), RIC_SLICE, ROT_SLICE, VEL_SLICE, CONTACT_SLICE)


def mean_std(features: list[np.ndarray], eps: float = 1e-4) -> tuple[np.ndarray, np.ndarray]:
    """Dataset Mean/Std as HumanML3D computes them: per-dimension mean; std averaged within
    each feature group (root turn, root velocity, height, positions, rotations, velocities,
    contacts) so no single dimension is blown up by normalisation."""
    allf = np.concatenate([np.asarray(f, dtype=np.float64) for f in features], axis=0)
    mean = allf.mean(axis=0)
    std = allf.std(axis=0)
    for g in _GROUPS:
        std[g] = std[g].mean()
    return mean.astype(np.float32), np.maximum(std, eps).astype(np.float32)


class Normalizer:
    """z-normalisation with a dataset's Mean.npy / Std.npy."""

    def __init__(self, mean: np.ndarray, std: np.ndarray):
        mean, std = np.asarray(mean, np.float32), np.asarray(std, np.float32)
        if mean.shape != (FEATURE_DIM,) or std.shape != (FEATURE_DIM,):
            raise MotionFormatError(f"Mean/Std must have shape ({FEATURE_DIM},), "
                                    f"got {mean.shape} and {std.shape}")
        if np.any(std <= 0) or not np.all(np.isfinite(std)):
            raise MotionFormatError("Std must be positive and finite")
        self.mean, self.std = mean, std

    @classmethod
    def load(cls, folder: str | Path) -> "Normalizer":
        folder = Path(folder)
        for name in ("Mean.npy", "Std.npy"):
            if not (folder / name).is_file():
                raise FileNotFoundError(f"{folder / name} is missing (dataset statistics)")
        return cls(np.load(folder / "Mean.npy"), np.load(folder / "Std.npy"))

    def normalize(self, x):
        return (x - self.mean) / self.std

    def denormalize(self, x):
        return x * self.std + self.mean
