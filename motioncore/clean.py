"""Decoded motion -> a clean, grounded, rigid skeleton: the one post-processing step.

``generate``, the app, the evaluation rows and ``export`` all call ``clean_motion``, so what a
user downloads as NPY, sees in the MP4 and imports as BVH/FBX/GLB is one and the same motion.

A motion decoded by the VQ-VAE is a set of joint positions whose bones stretch and shrink
from frame to frame, that may hover above the floor or sink into it, and whose feet slide
while they should be planted. The steps:

1. **Rigid skeleton.** ``motioncore.ik.solve_ik`` fits joint rotations to the decoded positions on
   one skeleton (per-bone median lengths; the pelvis's and chest's children in their average
   layout); forward kinematics of that fit is the rigid motion. Every bone keeps the decoded
   direction, so the pose is the decoded one with constant bone lengths.
2. **Grounded.** On *support* frames (a foot predicted in contact by the decoder's 4 contact
   features, or, for plain joints, a foot moving less than HumanML3D's contact threshold) the
   lowest body part (`motioncore.skeleton.lowest_point`) is put on the floor; in between (airborne frames of a jump) the vertical
   correction is interpolated, so a jump keeps its flight. The correction is smoothed over a
   few frames (no one-frame jumps), then any frame still below the floor is lifted.
3. **Planted feet.** A foot predicted in contact and within 5 cm of the floor is pinned
   horizontally for the whole contact (``motioncore.ik.pin_feet``: the knee follows by two-bone
   IK, so thigh and shin keep their lengths).
4. The result is fitted once more (``solve_ik``); its forward kinematics is the returned
   motion, so the rotations returned reproduce the joints exactly (BVH/FBX = NPY).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter1d

from motioncore.features import CONTACT_SLICE, FEATURE_DIM, features_to_joints, validate_joints
from motioncore.ik import forward, pin_feet, solve_ik
from motioncore.skeleton import FOOT_CONTACT_THRESHOLD, FPS, LEFT_FOOT, RIGHT_FOOT, lowest_point

PLANT_HEIGHT = 0.05   # m: a contact foot is pinned only this close to the floor
SMOOTH_SIGMA = 1.5    # frames: smoothing of the vertical correction


@dataclass
class CleanMotion:
    joints: np.ndarray   # (T, 22, 3) float32, rigid, grounded
    pose: object         # motioncore.ik.SkeletonPose reproducing ``joints``
    contacts: np.ndarray  # (T, 2) bool, left / right foot planted


def _foot_contacts(joints: np.ndarray, features: np.ndarray | None) -> np.ndarray:
    """(T, 2) bool per foot: predicted (features) or measured (foot speed) contact."""
    T = len(joints)
    if features is not None:
        c = np.asarray(features)[:, CONTACT_SLICE] > 0.5            # l ankle, l toe, r ankle, r toe
        feet = np.stack([c[:, 0] | c[:, 1], c[:, 2] | c[:, 3]], axis=1)
        return feet[:T] if len(feet) >= T else np.concatenate([feet, feet[-1:].repeat(T - len(feet), 0)])
    out = np.zeros((T, 2), bool)
    if T < 2:
        return out
    for side, idx in enumerate((LEFT_FOOT, RIGHT_FOOT)):
        step = np.sum((joints[1:, list(idx)] - joints[:-1, list(idx)]) ** 2, axis=-1)  # (T-1, 2)
        still = (step < FOOT_CONTACT_THRESHOLD).any(axis=1)
        out[:, side] = np.concatenate([still, still[-1:]])
    return out


def ground(joints: np.ndarray, support: np.ndarray) -> np.ndarray:
    """Shift every frame vertically: lowest body part on the floor on ``support`` frames (T,) bool,
    interpolated in between, smoothed, and never below the floor."""
    P = np.array(joints, dtype=np.float64)
    low = lowest_point(P)
    t = np.arange(len(P))
    if support.any():
        corr = np.interp(t, t[support], -low[support])
    else:
        corr = np.full(len(P), -low.min())
    if len(P) > 2:
        corr = gaussian_filter1d(corr, SMOOTH_SIGMA, mode="nearest")
    deficit = np.maximum(0.0, -(low + corr))
    if deficit.any() and len(P) > 2:
        lift = gaussian_filter1d(deficit, SMOOTH_SIGMA, mode="nearest") * 2.0
        corr = corr + np.maximum(lift, deficit)
    else:
        corr = corr + deficit
    P[..., 1] += corr[:, None]
    return P


def clean_motion(motion: np.ndarray, fps: float = FPS, plant_feet: bool = True) -> CleanMotion:
    """Clean a decoded motion: features (T, 263) (their contact channels are used) or joints
    (T, 22, 3). Returns the rigid, grounded joints and the rotations that reproduce them.
    ``plant_feet=False`` skips step 3 (foot locking): feet keep their decoded horizontal path."""
    arr = np.asarray(motion)
    features = arr if arr.ndim == 2 and arr.shape[1] == FEATURE_DIM else None
    joints = validate_joints(features_to_joints(features) if features is not None else arr)
    contacts = _foot_contacts(joints, features)
    rigid = forward(solve_ik(joints, fps=fps))
    grounded = ground(rigid, contacts.any(axis=1))
    toes_low = grounded[:, [10, 11], 1] < PLANT_HEIGHT
    planted = contacts & toes_low if plant_feet else np.zeros_like(contacts)
    pinned = pin_feet(grounded, fps, contact=planted) if len(grounded) > 1 and planted.any() else grounded
    pose = solve_ik(pinned, fps=fps)
    return CleanMotion(forward(pose).astype(np.float32), pose, planted)


def in_place(joints: np.ndarray) -> np.ndarray:
    """The motion without horizontal travel (a treadmill clip for game engines): every frame is
    shifted so the pelvis stays over its first-frame floor position. Heights, facing and the pose
    are unchanged."""
    j = np.array(joints, dtype=np.float32, copy=True)
    if j.ndim != 3 or len(j) == 0:
        raise ValueError(f"in_place needs joints (T, 22, 3), got shape {j.shape}")
    drift = j[:, 0, [0, 2]] - j[0, 0, [0, 2]]          # (T, 2) pelvis travel on the floor
    j[:, :, 0] -= drift[:, None, 0]
    j[:, :, 2] -= drift[:, None, 1]
    return j
