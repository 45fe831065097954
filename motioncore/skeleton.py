"""The 22-joint SMPL body skeleton used by HumanML3D (joints 0..21 of SMPL, y up, z forward).

Coordinates: y is up, a body in its rest pose faces +z, and its left side is +x.
"""
from __future__ import annotations

import numpy as np

from motioncore.quat import qmul, qrot

JOINT_NAMES = (
    "pelvis", "left_hip", "right_hip", "spine1", "left_knee", "right_knee", "spine2",
    "left_ankle", "right_ankle", "spine3", "left_foot", "right_foot", "neck",
    "left_collar", "right_collar", "head", "left_shoulder", "right_shoulder",
    "left_elbow", "right_elbow", "left_wrist", "right_wrist",
)
NUM_JOINTS = 22
PARENTS = (-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19)
KINEMATIC_CHAINS = (
    (0, 2, 5, 8, 11),
    (0, 1, 4, 7, 10),
    (0, 3, 6, 9, 12, 15),
    (9, 14, 17, 19, 21),
    (9, 13, 16, 18, 20),
)
# Unit direction of every bone in the HumanML3D reference pose (used by its inverse kinematics).
RAW_OFFSETS = np.array([
    [0, 0, 0], [1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, -1, 0], [0, 1, 0],
    [0, -1, 0], [0, -1, 0], [0, 1, 0], [0, 0, 1], [0, 0, 1], [0, 1, 0], [1, 0, 0],
    [-1, 0, 0], [0, 0, 1], [0, -1, 0], [0, -1, 0], [0, -1, 0], [0, -1, 0], [0, -1, 0],
    [0, -1, 0],
], dtype=np.float64)
# right hip, left hip, right shoulder, left shoulder: define the facing direction.
FACE_JOINTS = (2, 1, 17, 16)
LEFT_FOOT = (7, 10)   # left ankle, left toe
RIGHT_FOOT = (8, 11)  # right ankle, right toe
FPS = 20
FOOT_CONTACT_THRESHOLD = 0.002  # squared displacement per frame, metres^2 (HumanML3D value)

# Left/right swap used by mirroring.
MIRROR_INDEX = tuple(
    JOINT_NAMES.index(n.replace("left_", "@").replace("right_", "left_").replace("@", "right_"))
    for n in JOINT_NAMES
)


def _adult_offsets_arms_down() -> np.ndarray:
    """Rest offsets (metres, parent-relative) of an adult of about 1.72 m, arms hanging down.

    Left side values; the right side mirrors them in x. Proportions follow SMPL's neutral
    body (hip width, thigh/shin/foot, spine segments, collar and arm lengths).
    """
    o = np.zeros((NUM_JOINTS, 3))
    left = {
        "left_hip": (0.07, -0.09, 0.0),
        "left_knee": (0.0, -0.38, 0.0),
        "left_ankle": (0.0, -0.40, 0.0),
        "left_foot": (0.0, -0.055, 0.13),
        "left_collar": (0.075, 0.12, -0.03),
        "left_shoulder": (0.095, 0.03, -0.01),
        "left_elbow": (0.0, -0.26, 0.0),
        "left_wrist": (0.0, -0.25, 0.0),
    }
    for name, v in left.items():
        o[JOINT_NAMES.index(name)] = v
        o[JOINT_NAMES.index(name.replace("left_", "right_"))] = (-v[0], v[1], v[2])
    o[JOINT_NAMES.index("spine1")] = (0.0, 0.11, -0.02)
    o[JOINT_NAMES.index("spine2")] = (0.0, 0.135, 0.0)
    o[JOINT_NAMES.index("spine3")] = (0.0, 0.055, 0.02)
    o[JOINT_NAMES.index("neck")] = (0.0, 0.21, -0.04)
    o[JOINT_NAMES.index("head")] = (0.0, 0.09, 0.05)
    return o


ADULT_OFFSETS = _adult_offsets_arms_down()


def forward_kinematics(root_pos: np.ndarray, local_quats: np.ndarray,
                       offsets: np.ndarray = ADULT_OFFSETS) -> np.ndarray:
    """Joint positions (T, 22, 3) from root positions (T, 3) and local rotations (T, 22, 4).

    ``local_quats[:, j]`` rotates the bones *below* joint ``j`` (standard FK convention);
    joint 0's rotation is the global orientation of the body.
    """
    T = len(root_pos)
    pos = np.zeros((T, NUM_JOINTS, 3))
    glob = np.zeros((T, NUM_JOINTS, 4))
    pos[:, 0] = root_pos
    glob[:, 0] = local_quats[:, 0]
    for j in range(1, NUM_JOINTS):
        p = PARENTS[j]
        pos[:, j] = pos[:, p] + qrot(glob[:, p], np.broadcast_to(offsets[j], (T, 3)))
        glob[:, j] = qmul(glob[:, p], local_quats[:, j])
    return pos

# Approximate half-thickness of the body around each joint (metres): the body's surface lies
# about this far below a joint when that part rests on the floor (a back lying down, a sole
# under the toe joint). ``lowest_point`` uses it to find the lowest body part, not joint.
BODY_RADIUS = np.array([
    0.10, 0.08, 0.08, 0.10, 0.05, 0.05, 0.10, 0.05, 0.05, 0.10, 0.02, 0.02, 0.05,
    0.06, 0.06, 0.09, 0.05, 0.05, 0.04, 0.04, 0.03, 0.03,
])


def lowest_point(joints: np.ndarray) -> np.ndarray:
    """(T,) height of the lowest body part per frame: min over joints of y - BODY_RADIUS."""
    return (np.asarray(joints)[..., 1] - BODY_RADIUS).min(axis=-1)
