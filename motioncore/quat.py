"""Quaternion helpers (numpy, scalar-first ``(w, x, y, z)``, broadcasting over leading axes).

Everything the motion core needs and nothing more: product, inverse, rotating vectors,
the shortest rotation between two vectors, rotation about the vertical axis, conversion to
matrices / the continuous 6D representation, sign continuity over time and slerp.
"""
from __future__ import annotations

import numpy as np


def qnormalize(q: np.ndarray) -> np.ndarray:
    return q / np.linalg.norm(q, axis=-1, keepdims=True)


def qmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamilton product ``a * b`` (apply ``b`` first, then ``a``)."""
    aw, ax, ay, az = np.moveaxis(a, -1, 0)
    bw, bx, by, bz = np.moveaxis(b, -1, 0)
    return np.stack([
        aw * bw - ax * bx - ay * by - az * bz,
        aw * bx + ax * bw + ay * bz - az * by,
        aw * by - ax * bz + ay * bw + az * bx,
        aw * bz + ax * by - ay * bx + az * bw,
    ], axis=-1)


def qinv(q: np.ndarray) -> np.ndarray:
    """Inverse of a unit quaternion (its conjugate)."""
    return q * np.array([1.0, -1.0, -1.0, -1.0], dtype=q.dtype)


def qrot(q: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Rotate vectors ``v`` (..., 3) by unit quaternions ``q`` (..., 4)."""
    w = q[..., :1]
    u = q[..., 1:]
    t = 2.0 * np.cross(u, v)
    return v + w * t + np.cross(u, t)


def qbetween(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Shortest rotation taking direction ``u`` onto direction ``v`` (w >= 0).

    Antiparallel inputs get a half turn about an axis perpendicular to ``u``.
    """
    u = u / np.linalg.norm(u, axis=-1, keepdims=True)
    v = v / np.linalg.norm(v, axis=-1, keepdims=True)
    axis = np.cross(u, v)
    w = 1.0 + np.sum(u * v, axis=-1, keepdims=True)
    q = np.concatenate([w, axis], axis=-1)
    opposite = w[..., 0] < 1e-8
    if np.any(opposite):
        uu = np.broadcast_to(u, q.shape[:-1] + (3,))[opposite]
        helper = np.where(np.abs(uu[:, :1]) < 0.9, [[1.0, 0.0, 0.0]], [[0.0, 1.0, 0.0]])
        perp = np.cross(uu, helper)
        q[opposite] = np.concatenate([np.zeros((len(perp), 1)), perp], axis=-1)
    return qnormalize(q)


def qyaw(angle: np.ndarray | float) -> np.ndarray:
    """Rotation by ``angle`` radians about +y (counter-clockwise seen from above)."""
    angle = np.asarray(angle, dtype=np.float64)
    half = angle / 2.0
    zero = np.zeros_like(half)
    return np.stack([np.cos(half), zero, np.sin(half), zero], axis=-1)


def qaxis_angle(axis: np.ndarray, angle: np.ndarray) -> np.ndarray:
    """Rotation by ``angle`` (...,) about unit ``axis`` (..., 3)."""
    half = np.asarray(angle, dtype=np.float64)[..., None] / 2.0
    return np.concatenate([np.cos(half), np.sin(half) * axis], axis=-1)


def qto_matrix(q: np.ndarray) -> np.ndarray:
    """Rotation matrices (..., 3, 3) of unit quaternions (..., 4)."""
    w, x, y, z = np.moveaxis(q, -1, 0)
    return np.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ], axis=-1).reshape(q.shape[:-1] + (3, 3))


def qto_cont6d(q: np.ndarray) -> np.ndarray:
    """Continuous 6D rotation (Zhou et al.): the first two columns of the matrix, concatenated."""
    m = qto_matrix(q)
    return np.concatenate([m[..., :, 0], m[..., :, 1]], axis=-1)


def qfix(q: np.ndarray) -> np.ndarray:
    """Flip signs along axis 0 (time) so consecutive quaternions lie in the same hemisphere."""
    out = q.copy()
    for t in range(1, len(out)):
        flip = np.sum(out[t] * out[t - 1], axis=-1) < 0
        out[t][flip] *= -1.0
    return out


def qslerp(a: np.ndarray, b: np.ndarray, t: np.ndarray | float) -> np.ndarray:
    """Spherical interpolation from ``a`` (t=0) to ``b`` (t=1) along the short arc."""
    t = np.asarray(t, dtype=np.float64)
    dot = np.sum(a * b, axis=-1, keepdims=True)
    b = np.where(dot < 0, -b, b)
    dot = np.abs(dot)
    theta = np.arccos(np.clip(dot, -1.0, 1.0))
    sin_t = np.sin(theta)
    small = sin_t < 1e-6
    t = t[..., None] if t.ndim == a.ndim - 1 or (t.ndim > 0 and t.shape[-1] != 1) else t
    wa = np.where(small, 1.0 - t, np.sin((1.0 - t) * theta) / np.where(small, 1.0, sin_t))
    wb = np.where(small, t, np.sin(t * theta) / np.where(small, 1.0, sin_t))
    return qnormalize(wa * a + wb * b)


def qpow(q: np.ndarray, fraction: float) -> np.ndarray:
    """``q`` raised to a real power: the same axis, ``fraction`` of the angle."""
    identity = np.zeros_like(q)
    identity[..., 0] = 1.0
    return qslerp(identity, q, fraction)


def qyaw_angle(q: np.ndarray) -> np.ndarray:
    """Heading (rotation about +y) of the forward axis +z after rotating by ``q``."""
    fwd = qrot(q, np.broadcast_to(np.array([0.0, 0.0, 1.0]), q.shape[:-1] + (3,)))
    return np.arctan2(fwd[..., 0], fwd[..., 2])
