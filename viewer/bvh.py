"""BVH export of a ``SkeletonPose`` (22-joint SMPL skeleton).

File layout (what Blender, MotionBuilder and Mixamo-style tools read):

* HIERARCHY: ``ROOT pelvis`` and one ``JOINT`` per SMPL joint, nested as in
  ``motioncore.skeleton.PARENTS`` (children in index order); every leaf joint (toes, head, wrists)
  closes with an ``End Site`` that continues its bone by half its length (display only).
* OFFSET = rest offset * ``scale``: with the default ``scale=100`` units are centimetres,
  which is what Blender's BVH importer (scale 0.01 gives metres) and Mixamo expect. The root
  OFFSET is 0 0 0; the root position lives in its channels.
* Channels: root ``Xposition Yposition Zposition Zrotation Yrotation Xrotation``, every other
  joint ``Zrotation Yrotation Xrotation``; angles in degrees. BVH composes rotations in channel
  order, so a joint's local rotation matrix is ``Rz(z) @ Ry(y) @ Rx(x)`` (intrinsic Z, then Y,
  then X) and a vector in the joint's frame maps to its parent's as ``v_parent = offset + R v``.
* Y up, the body faces +z in the rest pose (the project's coordinates, also BVH's usual ones).
* Frame Time = 1 / fps (0.05 at 20 fps).

Euler angles are made continuous over time (of the two equivalent ZYX triples, the one nearest
the previous frame, unwrapped), so interpolating players do not spin through 360 degrees.

Writing is atomic: the text goes to a temporary file in the target folder which then replaces
the target; on any error no partial file is left behind.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from motioncore.features import MotionFormatError
from motioncore.ik import SkeletonPose
from motioncore.io import atomic_write
from motioncore.quat import qto_matrix
from motioncore.skeleton import JOINT_NAMES, NUM_JOINTS, PARENTS

ROOT_CHANNELS = ("Xposition", "Yposition", "Zposition", "Zrotation", "Yrotation", "Xrotation")
JOINT_CHANNELS = ("Zrotation", "Yrotation", "Xrotation")


def quat_to_euler_zyx(q: np.ndarray) -> np.ndarray:
    """Angles (..., 3) in radians, ordered (z, y, x), with ``R(q) = Rz(z) @ Ry(y) @ Rx(x)``."""
    m = qto_matrix(q / np.linalg.norm(q, axis=-1, keepdims=True))
    y = np.arcsin(np.clip(-m[..., 2, 0], -1.0, 1.0))
    gimbal = np.abs(m[..., 2, 0]) > 1.0 - 1e-12  # cos(y) = 0: only z - x (or z + x) is defined
    z = np.where(gimbal, np.arctan2(-m[..., 0, 1], m[..., 1, 1]), np.arctan2(m[..., 1, 0], m[..., 0, 0]))
    x = np.where(gimbal, 0.0, np.arctan2(m[..., 2, 1], m[..., 2, 2]))
    return np.stack([z, y, x], axis=-1)


def euler_filter(angles: np.ndarray) -> np.ndarray:
    """Continuous ZYX Euler angles over time (axis 0): per frame the one of the two equivalent
    triples (z, y, x) and (z + pi, pi - y, x + pi), shifted by whole turns, nearest the last."""
    out = angles.copy()
    turn = 2.0 * np.pi
    for t in range(1, len(out)):
        prev = out[t - 1]
        a = angles[t]
        b = a + np.array([np.pi, 0.0, np.pi])
        b[..., 1] = np.pi - a[..., 1]
        best, best_cost = None, None
        for cand in (a, b):
            cand = cand + turn * np.round((prev - cand) / turn)
            cost = np.abs(cand - prev).sum(axis=-1, keepdims=True)
            best = cand if best is None else np.where(cost < best_cost, cand, best)
            best_cost = cost if best_cost is None else np.minimum(cost, best_cost)
        out[t] = best
    return out


def _check(pose: SkeletonPose, names, scale: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    root = np.asarray(pose.root, dtype=np.float64)
    quats = np.asarray(pose.quats, dtype=np.float64)
    offsets = np.asarray(pose.offsets, dtype=np.float64)
    T = len(root)
    if root.ndim != 2 or root.shape[1] != 3 or T < 1:
        raise MotionFormatError(f"pose.root must have shape (frames >= 1, 3), got {root.shape}")
    if quats.shape != (T, NUM_JOINTS, 4):
        raise MotionFormatError(f"pose.quats must have shape ({T}, {NUM_JOINTS}, 4), got {quats.shape}")
    if offsets.shape != (NUM_JOINTS, 3):
        raise MotionFormatError(f"pose.offsets must have shape ({NUM_JOINTS}, 3), got {offsets.shape}")
    if not all(np.all(np.isfinite(a)) for a in (root, quats, offsets)):
        raise MotionFormatError("pose contains NaN or infinite values")
    if np.any(np.linalg.norm(quats, axis=-1) < 1e-6):
        raise MotionFormatError("pose.quats contains zero quaternions")
    if not (np.isfinite(pose.fps) and pose.fps > 0):
        raise MotionFormatError(f"pose.fps must be positive, got {pose.fps}")
    if not (np.isfinite(scale) and scale > 0):
        raise ValueError(f"scale must be a positive number, got {scale}")
    names = list(names)
    if len(names) != NUM_JOINTS or len(set(names)) != NUM_JOINTS:
        raise ValueError(f"need {NUM_JOINTS} distinct joint names, got {len(names)} "
                         f"({len(set(names))} distinct)")
    bad = [n for n in names if not isinstance(n, str) or not n or any(ch.isspace() for ch in n)
           or not n.isascii() or any(ch in n for ch in "{}")]
    if bad:
        raise ValueError(f"BVH joint names must be non-empty ASCII without spaces or braces: {bad}")
    return root, quats, offsets


def bvh_text(pose: SkeletonPose, names=JOINT_NAMES, scale: float = 100.0) -> str:
    """The BVH file contents for ``pose`` (see the module docstring for the conventions)."""
    root, quats, offsets = _check(pose, names, scale)
    names = list(names)
    children = [[c for c in range(NUM_JOINTS) if PARENTS[c] == j] for j in range(NUM_JOINTS)]
    lines, order = ["HIERARCHY"], []
    offsets = np.round(offsets * scale, 6) + 0.0  # + 0.0: no "-0.000000" in the file

    def emit(j: int, depth: int) -> None:
        pad = "\t" * depth
        head = "ROOT" if PARENTS[j] < 0 else "JOINT"
        off = np.zeros(3) if PARENTS[j] < 0 else offsets[j]
        channels = ROOT_CHANNELS if PARENTS[j] < 0 else JOINT_CHANNELS
        order.append(j)
        lines.extend([f"{pad}{head} {names[j]}", f"{pad}{{",
                      f"{pad}\tOFFSET {off[0]:.6f} {off[1]:.6f} {off[2]:.6f}",
                      f"{pad}\tCHANNELS {len(channels)} {' '.join(channels)}"])
        for c in children[j]:
            emit(c, depth + 1)
        if not children[j]:
            end = 0.5 * offsets[j] + 0.0
            lines.extend([f"{pad}\tEnd Site", f"{pad}\t{{",
                          f"{pad}\t\tOFFSET {end[0]:.6f} {end[1]:.6f} {end[2]:.6f}", f"{pad}\t}}"])
        lines.append(f"{pad}}}")

    roots = [j for j in range(NUM_JOINTS) if PARENTS[j] < 0]
    if len(roots) != 1:
        raise ValueError(f"the skeleton must have exactly one root joint, found {len(roots)}")
    emit(roots[0], 0)

    euler = np.degrees(euler_filter(quat_to_euler_zyx(quats[:, order])))  # (T, 22, 3)
    motion = np.round(np.concatenate([root * scale, euler.reshape(len(root), -1)], axis=1), 6) + 0.0
    lines += ["MOTION", f"Frames: {len(root)}", f"Frame Time: {1.0 / pose.fps:.8g}"]
    lines += [" ".join(f"{v:.6f}" for v in row) for row in motion]
    return "\n".join(lines) + "\n"


def write_bvh(path, pose: SkeletonPose, names=JOINT_NAMES, scale: float = 100.0) -> Path:
    """Write ``pose`` as a BVH file at ``path`` (atomically) and return the path.

    ``scale`` multiplies every length (offsets, root positions): 100 = centimetres.
    Raises MotionFormatError/ValueError for a malformed pose or names (nothing written) and
    OSError (PermissionError, FileNotFoundError, ...) naming ``path`` if it cannot be written.
    """
    path = Path(path)
    text = bvh_text(pose, names, scale)  # everything that can fail on the data fails here
    return atomic_write(path, lambda fh: fh.write(text.encode("ascii")), "BVH file")
