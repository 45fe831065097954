"""Real motion capture from pybullet's DeepMimic clips, retargeted onto the 22-joint SMPL body.

A DeepMimic frame is ``[dt, root xyz, root quat, chest, neck, right hip, right knee,
right ankle, right shoulder, right elbow, left hip, left knee, left ankle, left shoulder,
left elbow]`` with quaternions as (w, x, y, z) and knees/elbows as one angle about the
joint's z axis. DeepMimic's frame is x forward, y up, z right; its rest pose stands with
the arms down. We keep the clip's joint *rotations* and replay them on an adult SMPL-
proportioned skeleton (``motioncore.skeleton.ADULT_OFFSETS``, also arms down), which places the
joints the source lacks (three spine joints, collars, toes, head) plausibly: the chest
rotation is shared evenly by the three spine joints, collars follow the upper spine.

A ``Clip`` is a motion in rotation form (root positions + local joint quaternions, SMPL
coordinates) so that tempo changes, mirroring, turns and blends stay on the skeleton
(bone lengths never change); ``Clip.joints()`` runs forward kinematics.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from motioncore.quat import (qaxis_angle, qfix, qmul, qnormalize, qpow, qrot, qslerp, qyaw,
                             qyaw_angle)
from motioncore.skeleton import (ADULT_OFFSETS, FPS, JOINT_NAMES, MIRROR_INDEX, NUM_JOINTS,
                                 forward_kinematics)

# Clips shipped by pybullet, by the motion kind they show.
CLIP_FILES = {
    "walk": ["humanoid3d_walk.txt", "walker/0walk_forward.txt"],
    "turn": ["walker/turn_left0.txt", "walker/turn_left1.txt",
             "walker/turn_right0.txt", "walker/turn_right1.txt"],
    "run": ["humanoid3d_run.txt"],
    "jump": ["humanoid3d_jump.txt"],
    "kick": ["humanoid3d_kick.txt"],
    "punch": ["humanoid3d_punch.txt"],
    "spin": ["humanoid3d_spin.txt"],
    "spinkick": ["humanoid3d_spinkick.txt"],
    "dance_a": ["humanoid3d_dance_a.txt"],
    "dance_b": ["humanoid3d_dance_b.txt"],
    "getup_facedown": ["humanoid3d_getup_facedown.txt"],
    "getup_faceup": ["humanoid3d_getup_faceup.txt"],
    "cartwheel": ["humanoid3d_cartwheel.txt"],
    "backflip": ["humanoid3d_backflip.txt"],
    "crawl": ["humanoid3d_crawl.txt"],
    "roll": ["humanoid3d_roll.txt"],
}

# DeepMimic joint order after the root, with the number of values each takes.
_DM_JOINTS = (("chest", 4), ("neck", 4), ("right_hip", 4), ("right_knee", 1),
              ("right_ankle", 4), ("right_shoulder", 4), ("right_elbow", 1),
              ("left_hip", 4), ("left_knee", 1), ("left_ankle", 4), ("left_shoulder", 4),
              ("left_elbow", 1))
_FRAME_WIDTH = 1 + 3 + 4 + sum(n for _, n in _DM_JOINTS)
# SMPL joint <- DeepMimic joint whose rotation it takes.
_SMPL_FROM_DM = {"pelvis": "root", "left_hip": "left_hip", "right_hip": "right_hip",
                 "left_knee": "left_knee", "right_knee": "right_knee",
                 "left_ankle": "left_ankle", "right_ankle": "right_ankle", "neck": "neck",
                 "left_shoulder": "left_shoulder", "right_shoulder": "right_shoulder",
                 "left_elbow": "left_elbow", "right_elbow": "right_elbow"}
_SPINE = ("spine1", "spine2", "spine3")
# DeepMimic's hip-to-ankle length (URDF at scale 0.25) vs. the adult skeleton's.
_DM_LEG = 0.25 * (1.686184 + 1.639480)
_ADULT_LEG = -(ADULT_OFFSETS[1, 1] + ADULT_OFFSETS[4, 1] + ADULT_OFFSETS[7, 1])
ROOT_SCALE = _ADULT_LEG / _DM_LEG


def _dm_to_smpl_vec(v: np.ndarray) -> np.ndarray:
    """DeepMimic (x fwd, y up, z right) -> SMPL (x left, y up, z fwd); a proper rotation."""
    return np.stack([-v[..., 2], v[..., 1], v[..., 0]], axis=-1)


def _dm_to_smpl_quat(q: np.ndarray) -> np.ndarray:
    return np.concatenate([q[..., :1], _dm_to_smpl_vec(q[..., 1:])], axis=-1)


@dataclass
class Clip:
    """A motion in rotation form at ``fps``: root positions (T, 3), local rotations (T, 22, 4)."""
    root: np.ndarray
    quats: np.ndarray
    fps: float = FPS

    def __len__(self) -> int:
        return len(self.root)

    @property
    def duration(self) -> float:
        return (len(self) - 1) / self.fps

    def joints(self) -> np.ndarray:
        """Joint positions (T, 22, 3), lowest point of the clip on the floor (y = 0)."""
        p = forward_kinematics(self.root, self.quats)
        p[..., 1] -= p[..., 1].min()
        return p

    def sample(self, times: np.ndarray) -> "Clip":
        """The clip at arbitrary times (seconds, inside [0, duration]), interpolated."""
        t = np.clip(np.asarray(times, dtype=np.float64) * self.fps, 0, len(self) - 1)
        i0 = np.minimum(np.floor(t).astype(int), len(self) - 2)
        w = t - i0
        root = (1 - w)[:, None] * self.root[i0] + w[:, None] * self.root[i0 + 1]
        quats = qslerp(self.quats[i0], self.quats[i0 + 1], np.repeat(w[:, None], NUM_JOINTS, 1))
        return Clip(root, quats, self.fps)

    def retime(self, tempo: float = 1.0, fps: float = FPS) -> "Clip":
        """Play ``tempo`` times faster (tempo 1.25 = 25 % faster) and sample at ``fps``."""
        n = int(np.floor(self.duration / tempo * fps + 1e-9)) + 1
        out = self.sample(np.arange(n) / fps * tempo)
        out.fps = fps
        return out

    def window(self, start: int, stop: int) -> "Clip":
        return Clip(self.root[start:stop].copy(), self.quats[start:stop].copy(), self.fps)

    def heading(self, frame: int) -> float:
        return float(qyaw_angle(self.quats[frame, 0]))

    def transformed(self, yaw: float, offset_xz: np.ndarray) -> "Clip":
        """Rotate about the vertical axis through the origin, then shift horizontally."""
        q = qyaw(yaw)
        root = qrot(np.broadcast_to(q, (len(self), 4)), self.root)
        root[:, [0, 2]] += offset_xz
        quats = self.quats.copy()
        quats[:, 0] = qmul(np.broadcast_to(q, (len(self), 4)), quats[:, 0])
        return Clip(root, quats, self.fps)

    def anchored_at(self, frame: int, heading: float, xz: np.ndarray) -> "Clip":
        """Rigidly moved so that ``frame`` has the given heading and horizontal root position."""
        yaw = heading - self.heading(frame)
        moved = self.transformed(yaw, np.zeros(2))
        return moved.transformed(0.0, xz - moved.root[frame, [0, 2]])

    def mirrored(self) -> "Clip":
        """Left/right mirror image (reflection x -> -x, left and right joints swapped)."""
        root = self.root * np.array([-1.0, 1.0, 1.0])
        q = self.quats[:, list(MIRROR_INDEX)] * np.array([1.0, 1.0, -1.0, -1.0])
        return Clip(root, q, self.fps)

    def curved(self, yaw_rate: float) -> "Clip":
        """Add a steady turn of ``yaw_rate`` radians per second to the root heading; the path
        bends with it (the root's horizontal velocity turns by the same angle)."""
        angle = yaw_rate * np.arange(len(self)) / self.fps
        q = qyaw(angle)
        vel = np.diff(self.root, axis=0, prepend=self.root[:1])
        vel[:, 1] = 0.0
        root = np.cumsum(qrot(q, vel), axis=0) + self.root[0] * np.array([1.0, 0.0, 1.0])
        root[:, 1] = self.root[:, 1]
        quats = self.quats.copy()
        quats[:, 0] = qmul(q, quats[:, 0])
        return Clip(root, quats, self.fps)

    def repeated(self, times: int, loops: bool) -> "Clip":
        """``times`` cycles, each continuing from where the previous one ended. A looping clip's
        last pose only nearly matches its first, so cycles meet in a short cross-fade; other
        clips restart from a standing pose and get a longer one."""
        out = self
        for _ in range(times - 1):
            out = blend(out, self, seconds=0.2 if loops else 0.4)
        return out


def blend(a: Clip, b: Clip, seconds: float = 0.4) -> Clip:
    """``a`` then ``b``: ``b`` is moved to continue from ``a``'s heading and place, and the two
    overlap for ``seconds`` with a smooth cross-fade of rotations and root positions, so the
    root never jumps and no foot teleports."""
    n = int(min(round(seconds * a.fps), len(a) - 1, len(b) - 1))
    n = max(n, 1)
    start = len(a) - n
    b = b.anchored_at(0, a.heading(start), a.root[start, [0, 2]])
    s = np.linspace(0.0, 1.0, n + 2)[1:-1]
    w = s * s * (3 - 2 * s)  # smoothstep
    root_mid = (1 - w)[:, None] * a.root[start:] + w[:, None] * b.root[:n]
    # Vertical root: keep b's height continuous too.
    quat_mid = qslerp(a.quats[start:], b.quats[:n], np.repeat(w[:, None], NUM_JOINTS, 1))
    # After the overlap b continues from where the blended root ended up.
    tail = b.window(n, len(b))
    shift = root_mid[-1, [0, 2]] - b.root[n - 1, [0, 2]]
    tail = tail.transformed(0.0, shift)
    root = np.concatenate([a.root[:start], root_mid, tail.root])
    quats = np.concatenate([a.quats[:start], quat_mid, tail.quats])
    return Clip(root, qfix(quats), a.fps)


# ------------------------------------------------------------------------------- loading
def pybullet_motion_dir() -> Path:
    """pybullet's ``data/motions`` folder, or ``$VIMORAG_MOCAP_DIR`` when set (a copy of that
    folder, e.g. on a machine without pybullet)."""
    if os.environ.get("VIMORAG_MOCAP_DIR"):
        d = Path(os.environ["VIMORAG_MOCAP_DIR"])
        if not d.is_dir():
            raise RuntimeError(f"VIMORAG_MOCAP_DIR={d} is not a folder")
        return d
    try:
        import pybullet_data
    except ImportError as exc:  # pragma: no cover - pybullet is a requirement
        raise RuntimeError("pybullet is not installed; run the README's install command") from exc
    return Path(pybullet_data.getDataPath()) / "data" / "motions"


def parse_deepmimic(path: str | Path) -> tuple[np.ndarray, bool]:
    """Frames (N, 44) and whether the clip loops, with a clear error for a malformed file."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
        frames = np.asarray(doc["Frames"], dtype=np.float64)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path}: not a DeepMimic motion file ({exc})") from exc
    if frames.ndim != 2 or frames.shape[1] != _FRAME_WIDTH or len(frames) < 2:
        raise ValueError(f"{path}: expected frames of {_FRAME_WIDTH} values, got {frames.shape}")
    return frames, str(doc.get("Loop", "none")).lower() == "wrap"


def clip_from_deepmimic(frames: np.ndarray) -> Clip:
    """Retarget DeepMimic frames onto the adult SMPL skeleton (rotation form, native frame rate
    resampled to 20 fps)."""
    times = np.concatenate([[0.0], np.cumsum(frames[:-1, 0])])
    col = 8
    dm = {"root": _dm_to_smpl_quat(qnormalize(frames[:, 4:8]))}
    for name, width in _DM_JOINTS:
        v = frames[:, col:col + width]
        col += width
        if width == 4:
            dm[name] = _dm_to_smpl_quat(qnormalize(v))
        else:  # revolute about DeepMimic's z (right) axis
            axis = _dm_to_smpl_vec(np.array([0.0, 0.0, 1.0]))
            dm[name] = qaxis_angle(np.broadcast_to(axis, (len(v), 3)), v[:, 0])
    quats = np.zeros((len(frames), NUM_JOINTS, 4))
    quats[..., 0] = 1.0
    for smpl, src in _SMPL_FROM_DM.items():
        quats[:, JOINT_NAMES.index(smpl)] = dm[src]
    third = qpow(dm["chest"], 1.0 / 3.0)
    for name in _SPINE:
        quats[:, JOINT_NAMES.index(name)] = third
    root = _dm_to_smpl_vec(frames[:, 1:4]) * ROOT_SCALE
    native = Clip(root, qfix(quats), fps=1.0)
    # Resample from the clip's own (possibly uneven) timing onto a 20 fps grid.
    n = int(np.floor(times[-1] * FPS + 1e-9)) + 1
    grid = np.arange(n) / FPS
    idx = np.interp(grid, times, np.arange(len(times)))
    return Clip(*_at_fractional(native, idx), fps=FPS)


def _at_fractional(clip: Clip, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    i0 = np.minimum(np.floor(idx).astype(int), len(clip) - 2)
    w = idx - i0
    root = (1 - w)[:, None] * clip.root[i0] + w[:, None] * clip.root[i0 + 1]
    quats = qslerp(clip.quats[i0], clip.quats[i0 + 1], np.repeat(w[:, None], NUM_JOINTS, 1))
    return root, quats


@dataclass
class BaseClip:
    """One retargeted source clip with what the corpus builder needs to know about it."""
    kind: str
    name: str
    clip: Clip
    loops: bool
    side: str | None   # limb used (kick, punch, spinkick)
    turn: str | None   # direction the body turns or travels sideways


def _infer_side(kind: str, joints: np.ndarray) -> str | None:
    idx = {n: i for i, n in enumerate(JOINT_NAMES)}
    if kind in ("kick", "spinkick"):
        lf = joints[:, idx["left_ankle"], 1].max()
        rf = joints[:, idx["right_ankle"], 1].max()
        return "left" if lf > rf else "right"
    if kind == "punch":
        # The punching hand is the one that moves fastest.
        speed = {side: np.linalg.norm(np.diff(joints[:, idx[f"{side}_wrist"]], axis=0), axis=-1).max()
                 for side in ("left", "right")}
        return max(speed, key=speed.get)
    return None


def _infer_turn(kind: str, clip: Clip) -> str | None:
    if kind in ("turn", "spin", "spinkick"):
        yaw = np.unwrap(qyaw_angle(clip.quats[:, 0]))
        total = yaw[-1] - yaw[0]
        if abs(total) < np.radians(20):
            return None
        return "left" if total > 0 else "right"  # +yaw = counter-clockwise from above = left
    if kind == "cartwheel":
        # Travel direction relative to the initial facing: +x is the body's left at frame 0.
        fwd0 = qrot(clip.quats[0, 0], np.array([0.0, 0.0, 1.0]))
        left0 = np.cross(np.array([0.0, 1.0, 0.0]), fwd0)
        travel = clip.root[-1] - clip.root[0]
        return "left" if np.dot(travel, left0) > 0 else "right"
    return None


def load_base_clips(kinds: list[str] | None = None) -> list[BaseClip]:
    """All pybullet clips of the given kinds (default: all), retargeted."""
    root = pybullet_motion_dir()
    out = []
    for kind, files in CLIP_FILES.items():
        if kinds is not None and kind not in kinds:
            continue
        for name in files:
            frames, loops = parse_deepmimic(root / name)
            clip = clip_from_deepmimic(frames)
            out.append(BaseClip(kind, name, clip, loops, _infer_side(kind, clip.joints()),
                                _infer_turn(kind, clip)))
    return out


def mirror_label(label: str | None) -> str | None:
    return {"left": "right", "right": "left"}.get(label, label)
