"""Inverse kinematics: joint positions (T, 22, 3) -> rotations on the 22-joint SMPL skeleton.

``solve_ik`` gives every joint a full 3D orientation (not just the swing of its bone), built
from two non-parallel directions seen in the data and the same two directions in a rest pose:

    joint               primary direction            secondary direction
    pelvis              right hip -> left hip        pelvis -> spine1
    spine1 / spine2     bone to the next spine joint left-right axis, 2/3 hips + 1/3 collars
                                                     (spine1) and 1/3 + 2/3 (spine2)
    spine3              spine3 -> neck               right collar -> left collar
    hip, knee           thigh / shin                 knee bend-plane normal (thigh x shin)
    shoulder, elbow     upper arm / forearm          elbow bend-plane normal (upper arm x forearm)
    ankle               ankle -> toe                 ankle bend-plane normal (shin x foot)
    collars, neck       their bone                   none: smallest swing from the parent
    toes, head, wrists  leaves: identity local rotation (their twist is not observable)

The global rotation of a joint takes the rest pair onto the observed pair (the primary exactly,
the secondary projected); local rotation = inverse(parent global) * global, i.e. the convention
of ``motioncore.skeleton.forward_kinematics``. Nothing refers to the heading or to 'up' in the data,
so upside-down and back-facing poses (cartwheel, backflip, roll) are handled like any other.

Where the secondary direction is undefined (a straight limb has no bend plane) the twist is
interpolated in time between the nearest frames where it is defined, measured relative to the
smallest swing from the parent; a limb that is never bent simply follows its parent's twist.
A limb bent by more than 30 degrees is read as bending forward (the anatomical way); a slight
bend may be read as a slight hyperextension instead when that keeps the twist continuous (the
reference mocap has knees hyperextending by up to ~8 degrees).
The table assumes SMPL's tree (``motioncore.skeleton.PARENTS``); a joint where it does not fit falls
back to the frame of its first two child bones, or the smallest swing for one child, so the
positions are reproduced for any tree.

Rest pose. Bone lengths are the per-bone median over the frames of the data; bone directions
come from the rest template (default ``tpose_offsets()``, any template is accepted). One
rotation cannot place three children whose layout differs from the template's, so the
children of the two branching joints (pelvis: hips + spine1; spine3: neck + collars) get the
data's average direction expressed in the template-aligned frame of their parent. For the
clips of this project that differs from the template by a few degrees at most; everywhere
else the returned offsets are the template's directions scaled to the data's lengths.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from motioncore.features import MotionFormatError, validate_joints
from motioncore.quat import qaxis_angle, qbetween, qfix, qinv, qmul, qnormalize, qrot
from motioncore.skeleton import ADULT_OFFSETS, JOINT_NAMES, NUM_JOINTS, PARENTS, forward_kinematics

# The child each table joint's primary direction points to (pelvis: the hip axis, see below).
PRIMARY_CHILD = {1: 4, 2: 5, 3: 6, 4: 7, 5: 8, 6: 9, 7: 10, 8: 11, 9: 12,
                 16: 18, 17: 19, 18: 20, 19: 21}
LIMBS = ((1, 4, 7, -1), (2, 5, 8, -1),           # (upper joint, middle, end, hint sign)
         (16, 18, 20, 1), (17, 19, 21, 1))       # legs bend backwards, arms forwards
ANKLES = ((7, 4, 10), (8, 5, 11))                # (ankle, knee, toe)
STRAIGHT_SIN = np.sin(np.radians(8.0))           # below this the secondary direction is unreliable
BENT_SIN = np.sin(np.radians(30.0))              # a limb bent more than this bends forward
CHILDREN = tuple(tuple(c for c in range(NUM_JOINTS) if PARENTS[c] == j) for j in range(NUM_JOINTS))


@dataclass
class SkeletonPose:
    root: np.ndarray     # (T, 3) position of joint 0 (pelvis), metres
    quats: np.ndarray    # (T, 22, 4) local rotations wxyz; quats[:, 0] = global orientation
    offsets: np.ndarray  # (22, 3) parent-relative rest offsets, metres
    fps: float = 20.0

    def __len__(self) -> int:
        return len(self.root)


def tpose_offsets() -> np.ndarray:
    """Canonical T-pose: ``ADULT_OFFSETS`` with the arms straight out (left arm along +x)."""
    o = ADULT_OFFSETS.copy()
    for j, side in ((18, 1.0), (19, -1.0), (20, 1.0), (21, -1.0)):  # upper arms, forearms
        o[j] = (side * np.linalg.norm(o[j]), 0.0, 0.0)
    return o


def forward(pose: SkeletonPose) -> np.ndarray:
    """Joint positions (T, 22, 3) of ``pose``."""
    return forward_kinematics(pose.root, pose.quats, pose.offsets)


# ------------------------------------------------------------------------------ vector helpers
def _unit(v: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(v, axis=-1, keepdims=True)
    return v / np.maximum(n, 1e-12)


def _perp(v: np.ndarray, axis: np.ndarray) -> np.ndarray:
    """Component of ``v`` perpendicular to the unit ``axis``."""
    return v - np.sum(v * axis, axis=-1, keepdims=True) * axis


def _signed_angle(u: np.ndarray, v: np.ndarray, axis: np.ndarray) -> np.ndarray:
    """Angle about ``axis`` from ``u`` to ``v`` (both perpendicular to it)."""
    return np.arctan2(np.sum(axis * np.cross(u, v), axis=-1), np.sum(u * v, axis=-1))


def _bone(P: np.ndarray, a: int, b: int) -> np.ndarray:
    return P[..., b, :] - P[..., a, :]


def _directions(P: np.ndarray, fwd_hint: np.ndarray | None = None) -> dict:
    """(primary, secondary) direction pairs per joint. Secondaries are unit vectors, except bend
    normals: cross products of unit bones, whose length (sin of the bend) says how reliable they are.

    With ``fwd_hint`` (the rest pose) the bend normals of knees/elbows come from the hint
    instead: in a rest pose the limbs are (nearly) straight and their bend plane undefined.
    """
    hips, collars = _unit(_bone(P, 2, 1)), _unit(_bone(P, 14, 13))
    d = {0: (hips, _unit(_bone(P, 0, 3))),
         3: (_bone(P, 3, 6), _unit(2 * hips + collars)),
         6: (_bone(P, 6, 9), _unit(hips + 2 * collars)),
         9: (_bone(P, 9, 12), collars)}
    for upper, mid, end, sign in LIMBS:
        a, b = _bone(P, upper, mid), _bone(P, mid, end)
        normal = np.cross(_unit(a), _unit(b) if fwd_hint is None else sign * fwd_hint)
        d[upper], d[mid] = (a, normal), (b, normal)
    for ankle, knee, toe in ANKLES:
        shin, foot = _bone(P, knee, ankle), _bone(P, ankle, toe)
        normal = np.cross(_unit(shin), _unit(foot))
        if fwd_hint is not None and np.linalg.norm(normal) < STRAIGHT_SIN:
            normal = np.cross(_unit(shin), fwd_hint)
        d[ankle] = (foot, normal)
    return d


def _neutral_axes(rest_pos: np.ndarray, fwd: np.ndarray) -> dict:
    """Per limb joint, a direction (rest-pose coordinates of its parent) the limb can point to
    whose opposite it never reaches: arms sideways, legs down, feet forward. The twist
    reference swings from there, so it stays well defined even for an arms-down template with
    the arms overhead."""
    left = _unit(rest_pos[1] - rest_pos[2])
    down = -_unit(np.cross(fwd, left))
    return {16: left, 17: -left, 1: down, 2: down, 7: fwd, 8: fwd}


def _table_applies(j: int, kids: tuple) -> bool:
    """Whether the direction table of ``_directions`` fits joint ``j`` in ``PARENTS``."""
    if j == 0:
        return {1, 2, 3} <= set(kids)
    return PRIMARY_CHILD.get(j) in kids


def _frame_rotation(a0, n0, a, n) -> np.ndarray:
    """Rotation taking the unit rest pair (a0, n0 perpendicular) onto (a, n perpendicular)."""
    q1 = qbetween(np.broadcast_to(a0, a.shape), a)
    m = qrot(q1, np.broadcast_to(n0, n.shape))
    return qmul(qaxis_angle(a, _signed_angle(m, n, a)), q1)


def _continuous_secondary(a: np.ndarray, s: np.ndarray, ref: np.ndarray, bend: bool) -> np.ndarray:
    """Unit secondary directions perpendicular to ``a`` (T, 3), continuous over time.

    ``s``: raw secondary (T, 3), a unit vector or a bend normal (see ``_directions``); ``ref``:
    a twist reference perpendicular to ``a`` (the rest secondary carried by the smallest swing
    from the parent). The twist is the angle about ``a`` from ``ref`` to ``s``:

    * frames where ``s`` is nearly parallel to ``a`` or zero (a straight limb) take a twist
      interpolated in time from the other frames (held at the ends; none at all -> ``ref``);
    * for a bend normal (``bend``) only clearly bent frames (> 30 degrees) are taken as they
      are (a forward bend); a slight bend could as well be a slight hyperextension, so its
      normal may be flipped, whichever keeps the twist closest to the clearly bent frames.
    """
    sin = np.linalg.norm(np.cross(a, s), axis=-1)
    raw = _signed_angle(ref, _unit(_perp(s, a)), a)
    t = np.arange(len(a))
    usable = sin >= STRAIGHT_SIN
    sure = sin >= BENT_SIN if bend else usable
    if not sure.any():
        sure = usable
    if not usable.any():
        return ref
    twist = np.full(len(a), np.nan)
    twist[sure] = np.unwrap(raw[sure])
    unsure = usable & ~sure
    if unsure.any():  # flip by half a turn when that is nearer the interpolated twist
        pred = np.interp(t[unsure], t[sure], twist[sure])
        twist[unsure] = pred + (raw[unsure] - pred + np.pi / 2) % np.pi - np.pi / 2
    twist = np.interp(t, t[usable], twist[usable])
    return _unit(qrot(qaxis_angle(a, twist), ref))


# ------------------------------------------------------------------------------------- solver
def _check_rest(rest_offsets) -> np.ndarray:
    rest = np.asarray(rest_offsets, dtype=np.float64)
    if rest.shape != (NUM_JOINTS, 3) or not np.all(np.isfinite(rest)):
        raise MotionFormatError(f"rest offsets must be a finite ({NUM_JOINTS}, 3) array, "
                                f"got shape {rest.shape}")
    short = [JOINT_NAMES[j] for j in range(1, NUM_JOINTS) if np.linalg.norm(rest[j]) < 1e-6]
    if short:
        raise MotionFormatError(f"rest template has zero-length bones ending at {', '.join(short)}")
    return rest


def _rest_positions(offsets: np.ndarray) -> np.ndarray:
    pos = np.zeros((NUM_JOINTS, 3))
    for j in range(1, NUM_JOINTS):
        pos[j] = pos[PARENTS[j]] + offsets[j]
    return pos


def solve_ik(joints: np.ndarray, rest_offsets: np.ndarray | None = None,
             foot_skate_cleanup: bool = False, fps: float = 20.0) -> SkeletonPose:
    """Local rotations, root path and rest offsets reproducing ``joints`` (T, 22, 3), T >= 1.

    ``rest_offsets``: the rest template (22, 3) the rotations are relative to (default: the
    T-pose of ``tpose_offsets()``); only its bone directions are used. ``foot_skate_cleanup``:
    pin feet that are in contact with the floor first (see ``pin_feet``).
    """
    P = validate_joints(joints, min_frames=1)
    rest = _check_rest(tpose_offsets() if rest_offsets is None else rest_offsets)
    if fps <= 0:
        raise MotionFormatError(f"fps must be positive, got {fps}")
    lengths = np.linalg.norm(P[:, 1:] - P[:, list(PARENTS[1:])], axis=-1)  # (T, 21)
    if lengths.min() < 1e-6:
        t, b = np.unravel_index(np.argmin(lengths), lengths.shape)
        raise MotionFormatError(f"zero-length bone {JOINT_NAMES[PARENTS[b + 1]]} -> "
                                f"{JOINT_NAMES[b + 1]} at frame {t}: joints coincide")
    if foot_skate_cleanup:
        P = pin_feet(P, fps)

    T = len(P)
    rest_pos = _rest_positions(rest)
    fwd = _unit(np.cross(rest_pos[1] - rest_pos[2], rest_pos[3]))
    rest_dirs, data_dirs = _directions(rest_pos, fwd), _directions(P)
    neutral = _neutral_axes(rest_pos, fwd)
    glob = np.zeros((T, NUM_JOINTS, 4))
    shared = {}  # knee/elbow reuse the bend normal of their thigh/upper arm
    for j in range(NUM_JOINTS):
        p, kids = PARENTS[j], CHILDREN[j]
        parent = glob[:, p] if p >= 0 else np.tile([1.0, 0.0, 0.0, 0.0], (T, 1))
        if not kids:  # leaf: no observable rotation
            glob[:, j] = parent
            continue
        if _table_applies(j, kids):
            (a0, s0), (a, s) = rest_dirs[j], data_dirs[j]
            bend = j not in (0, 3, 6, 9)
        elif len(kids) > 1:  # a hierarchy other than SMPL's: frame from the first two bones
            a0, s0, a, s = rest[kids[0]], _unit(rest[kids[1]]), _bone(P, j, kids[0]), \
                _unit(_bone(P, j, kids[1]))
            bend = False
        else:  # neck, collars: smallest swing from the parent
            a = _bone(P, j, kids[0])
            glob[:, j] = qmul(qbetween(qrot(parent, np.broadcast_to(rest[kids[0]], (T, 3))), a),
                              parent)
            continue
        a0, s0, a = _unit(a0), _unit(s0), _unit(a)
        if np.linalg.norm(np.cross(a0, s0)) < STRAIGHT_SIN:
            raise MotionFormatError(f"rest template: the two directions defining the rotation "
                                    f"of {JOINT_NAMES[j]} are (nearly) parallel")
        n0 = _unit(_perp(s0, a0))
        if j in shared:
            n = shared.pop(j)
        else:
            # twist reference: n0 carried by the smallest swing from the limb's neutral axis
            # (singular only where a limb would point into the body, see _neutral_axes)
            c = neutral.get(j, a0)
            pre = np.broadcast_to(qrot(qbetween(a0, c), n0), (T, 3))
            ref_local = qrot(qbetween(np.broadcast_to(c, (T, 3)), qrot(qinv(parent), a)), pre)
            ref = _unit(_perp(qrot(parent, ref_local), a))
            n = _continuous_secondary(a, s, ref, bend)
            shared.update({mid: n for upper, mid, _, _ in LIMBS
                           if j == upper and _table_applies(mid, CHILDREN[mid])})
        glob[:, j] = _frame_rotation(a0, n0, a, n)
    glob = qnormalize(glob)

    offsets = np.zeros((NUM_JOINTS, 3))
    offsets[1:] = _unit(rest[1:])
    for j in range(NUM_JOINTS):  # branching joints: children in the data's average layout
        if len(CHILDREN[j]) > 1:
            for c in CHILDREN[j]:
                offsets[c] = _unit(np.mean(_unit(qrot(qinv(glob[:, j]), P[:, c] - P[:, j])), axis=0))
    offsets[1:] *= np.median(lengths, axis=0)[:, None]

    local = np.empty_like(glob)
    local[:, 0] = glob[:, 0]
    local[:, 1:] = qmul(qinv(glob[:, list(PARENTS[1:])]), glob[:, 1:])
    return SkeletonPose(P[:, 0].copy(), qfix(qnormalize(local)), offsets, float(fps))


# ------------------------------------------------------------------------- foot skate cleanup
CONTACT_SPEED = 0.2     # m/s: a toe slower than this (1 cm per frame at 20 fps) ...
CONTACT_HEIGHT = 0.05   # m: ... and within 5 cm of the lowest foot point is in contact
RAMP_FRAMES = 3         # frames over which the pinning fades in and out around a contact


def contact_mask(P: np.ndarray, fps: float = 20.0) -> np.ndarray:
    """(T, 2) bool: left / right toe in contact with the floor (y up)."""
    toes = P[:, [10, 11]]
    floor = P[:, [7, 8, 10, 11], 1].min()
    step = np.linalg.norm(np.diff(toes, axis=0), axis=-1)
    speed = np.concatenate([step[:1], step], axis=0) if len(P) > 1 else np.zeros((1, 2))
    return (speed < CONTACT_SPEED / fps) & (toes[..., 1] < floor + CONTACT_HEIGHT)


def _two_bone(hip, knee, ankle, target, toe_dir):
    """Knee position putting the ankle at ``target`` (reach-clamped) with the same thigh/shin
    lengths, the knee staying on the side it was on. Returns (knee, reached ankle)."""
    l1 = np.linalg.norm(knee - hip, axis=-1, keepdims=True)
    l2 = np.linalg.norm(ankle - knee, axis=-1, keepdims=True)
    d = target - hip
    dist = np.clip(np.linalg.norm(d, axis=-1, keepdims=True),
                   np.abs(l1 - l2) + 1e-4, (l1 + l2) * 0.9999)
    axis = _unit(d)
    target = hip + axis * dist
    bend = _perp(knee - hip, axis)
    bend = np.where(np.linalg.norm(bend, axis=-1, keepdims=True) > 1e-4, bend, _perp(toe_dir, axis))
    along = (l1 ** 2 - l2 ** 2 + dist ** 2) / (2 * dist)
    height = np.sqrt(np.maximum(l1 ** 2 - along ** 2, 0.0))
    return hip + axis * along + _unit(bend) * height, target


def pin_feet(P: np.ndarray, fps: float = 20.0, contact: np.ndarray | None = None) -> np.ndarray:
    """Joint positions with feet held still (horizontally) while in contact.

    Each run of contact frames (``contact_mask``) pins the toe at its mean horizontal position
    over the run; the whole foot (ankle + toe) is shifted by the same amount, fading in/out
    linearly over ``RAMP_FRAMES`` frames around the run, and the knee is re-placed by two-bone
    IK from the unchanged hip (thigh and shin lengths kept; an out-of-reach target is only
    partially reached). The pelvis and the upper body are untouched. ``contact`` (T, 2) bool,
    left / right foot, replaces ``contact_mask`` (e.g. a model's predicted contacts).
    """
    P = P.copy()
    contact = contact_mask(P, fps) if contact is None else np.asarray(contact, dtype=bool)
    if contact.shape != (len(P), 2):
        raise MotionFormatError(f"contact mask must have shape ({len(P)}, 2), got {contact.shape}")
    T = len(P)
    for side, (hip, knee, ankle, toe) in enumerate(((1, 4, 7, 10), (2, 5, 8, 11))):
        shift, weight = np.zeros((T, 3)), np.zeros(T)
        c = np.concatenate([[False], contact[:, side], [False]])
        starts, stops = np.flatnonzero(~c[:-1] & c[1:]), np.flatnonzero(c[:-1] & ~c[1:])
        for s0, s1 in zip(starts, stops):  # contact frames s0 .. s1-1
            if s1 - s0 < 2:
                continue
            target = P[s0:s1, toe].mean(axis=0)
            delta = target - P[s0:s1, toe]
            delta[:, 1] = 0.0
            shift[s0:s1], weight[s0:s1] = delta, 1.0
            for k in range(1, RAMP_FRAMES + 1):
                w = 1.0 - k / (RAMP_FRAMES + 1)
                for t, edge in ((s0 - k, s0), (s1 - 1 + k, s1 - 1)):
                    if 0 <= t < T and weight[t] < w:
                        shift[t], weight[t] = w * shift[edge], w
        moving = weight > 0
        if not moving.any():
            continue
        new_knee, new_ankle = _two_bone(P[moving, hip], P[moving, knee], P[moving, ankle],
                                        P[moving, ankle] + shift[moving],
                                        P[moving, toe] - P[moving, ankle])
        P[moving, toe] += new_ankle - P[moving, ankle]
        P[moving, knee], P[moving, ankle] = new_knee, new_ankle
    return P
