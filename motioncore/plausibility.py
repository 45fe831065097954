"""Physical plausibility of a motion, measured on its joint positions (y up, metres, floor y=0).

What a user sees as wrong in a generated motion, per motion:

- ``floating_pct``: % of frames whose lowest body part is more than 5 cm above the floor;
- ``penetration_pct``: % of frames whose lowest body part is more than 3 cm below the floor;
- ``skate_mps``: horizontal speed (m/s) of the toes near the floor, each frame weighted by
  ``2 - 2**(h / 5 cm)`` for a toe at height h below 5 cm (1 on the floor, 0 at 5 cm), so a
  planted toe that slides counts fully and a toe swinging low counts little; 0 when no toe
  ever comes near the floor;
- ``bone_var_pct``: how much bone lengths change over time: per bone (max - min) / median,
  averaged over the 21 bones, in %;
- ``jerk``: mean norm of the third time derivative of the joint positions (m/s^3);
- ``max_jump_m``: the largest displacement of any joint between two frames (metres).

The lowest body part of a frame is ``motioncore.skeleton.lowest_point``: the lowest joint less the
body's approximate thickness there (a person lying on the back rests on it, not on the spine
joints). A real walk: no floating or penetration, bones rigid (0 %), toes nearly still in contact.
Jumps and flips float for real while airborne, so a generator's row is read against the
real-motion row of the same split, never against zero.
"""
from __future__ import annotations

import numpy as np

from motioncore.skeleton import FPS, NUM_JOINTS, PARENTS, lowest_point

FLOAT_M = 0.05
PENETRATE_M = 0.03
CONTACT_M = 0.05
TOES = (10, 11)
METRICS = ("floating_pct", "penetration_pct", "skate_mps", "bone_var_pct", "jerk", "max_jump_m")


def _joints(joints: np.ndarray) -> np.ndarray:
    p = np.asarray(joints, dtype=np.float64)
    if p.ndim != 3 or p.shape[1:] != (NUM_JOINTS, 3) or len(p) < 1:
        raise ValueError(f"expected joint positions (frames, {NUM_JOINTS}, 3), got {p.shape}")
    return p


def floating_pct(joints: np.ndarray, height: float = FLOAT_M) -> float:
    low = lowest_point(_joints(joints))
    return float(100.0 * np.mean(low > height))


def penetration_pct(joints: np.ndarray, depth: float = PENETRATE_M) -> float:
    low = lowest_point(_joints(joints))
    return float(100.0 * np.mean(low < -depth))


def skate_mps(joints: np.ndarray, fps: float = FPS, height: float = CONTACT_M) -> float:
    p = _joints(joints)
    if len(p) < 2:
        return 0.0
    toes = p[:, list(TOES)]
    speed = np.linalg.norm(np.diff(toes[..., [0, 2]], axis=0), axis=-1) * fps   # (T-1, 2)
    h = np.maximum(0.5 * (toes[1:, :, 1] + toes[:-1, :, 1]), 0.0)
    weight = np.where(h < height, 2.0 - 2.0 ** (h / height), 0.0)
    return float((speed * weight).sum() / weight.sum()) if weight.sum() > 0 else 0.0


def bone_lengths(joints: np.ndarray) -> np.ndarray:
    p = _joints(joints)
    return np.linalg.norm(p[:, 1:] - p[:, list(PARENTS[1:])], axis=-1)   # (T, 21)


def bone_var_pct(joints: np.ndarray) -> float:
    lengths = bone_lengths(joints)
    med = np.maximum(np.median(lengths, axis=0), 1e-9)
    return float(100.0 * np.mean((lengths.max(axis=0) - lengths.min(axis=0)) / med))


def jerk(joints: np.ndarray, fps: float = FPS) -> float:
    p = _joints(joints)
    if len(p) < 4:
        return 0.0
    j = np.diff(p, n=3, axis=0) * fps ** 3
    return float(np.linalg.norm(j, axis=-1).mean())


def max_jump_m(joints: np.ndarray) -> float:
    p = _joints(joints)
    if len(p) < 2:
        return 0.0
    return float(np.linalg.norm(np.diff(p, axis=0), axis=-1).max())


def plausibility(joints: np.ndarray, fps: float = FPS) -> dict[str, float]:
    """Every metric of this module for one motion."""
    return {"floating_pct": floating_pct(joints), "penetration_pct": penetration_pct(joints),
            "skate_mps": skate_mps(joints, fps), "bone_var_pct": bone_var_pct(joints),
            "jerk": jerk(joints, fps), "max_jump_m": max_jump_m(joints)}


def mean_plausibility(motions, fps: float = FPS) -> dict[str, float]:
    """Per-metric mean over motions (each motion weighs the same)."""
    rows = [plausibility(m, fps) for m in motions]
    if not rows:
        raise ValueError("no motions to measure")
    return {k: float(np.mean([r[k] for r in rows])) for k in METRICS}
