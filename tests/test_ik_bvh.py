"""Inverse kinematics (motioncore.ik) and BVH export (viewer.bvh), checked against real clips and an
independent BVH parser (the ``bvh`` package) with a forward kinematics written here."""
from __future__ import annotations

import os

import numpy as np
import pytest

from motioncore.features import MotionFormatError, features_to_joints, joints_to_features
from motioncore.ik import SkeletonPose, contact_mask, forward, solve_ik, tpose_offsets
from motioncore.quat import qaxis_angle, qmul, qrot, qto_matrix
from motioncore.skeleton import ADULT_OFFSETS, JOINT_NAMES, KINEMATIC_CHAINS, NUM_JOINTS, PARENTS
from viewer.bvh import quat_to_euler_zyx, write_bvh

HARD_KINDS = ("cartwheel", "backflip", "roll")
LEAVES = [j for j in range(NUM_JOINTS) if j not in PARENTS]


def _chain_parents() -> list[int]:
    expected = [-1] * NUM_JOINTS
    for chain in KINEMATIC_CHAINS:
        for parent, child in zip(chain[:-1], chain[1:]):
            expected[child] = parent
    return expected


SMPL_TREE = list(PARENTS) == _chain_parents()


@pytest.fixture(scope="module")
def clips():
    from backend.data.mocap import load_base_clips

    return {f"{b.kind}:{b.name}": b.clip for b in load_base_clips()}


def _clip(clips, kind):
    return next(c for name, c in clips.items() if name.startswith(kind + ":"))


def _errors(pose, joints):
    return np.linalg.norm(forward(pose) - joints, axis=-1)


def _step_degrees(q):
    """(T-1, 22) angle between consecutive rotations of every joint."""
    dot = np.abs(np.sum(q[1:] * q[:-1], axis=-1)).clip(0.0, 1.0)
    return np.degrees(2.0 * np.arccos(dot))


def _random_rotations(rng, n, max_deg):
    axis = rng.normal(size=(n, 3))
    axis /= np.linalg.norm(axis, axis=-1, keepdims=True)
    return qaxis_angle(axis, np.radians(rng.uniform(0, max_deg, n)))


# ----------------------------------------------------------------------------------- skeleton
def test_core_skeleton_parents_match_kinematic_chains():
    """PARENTS must be SMPL's tree: each joint's parent is its predecessor in its chain.

    (The IK's rotations are anatomical only on that tree; on another tree it still reproduces
    the positions, which the other tests check, but arm twists are then meaningless.)"""
    expected = _chain_parents()
    wrong = [f"{JOINT_NAMES[j]} <- {JOINT_NAMES[PARENTS[j]]} (should be {JOINT_NAMES[expected[j]]})"
             for j in range(NUM_JOINTS) if PARENTS[j] != expected[j]]
    assert not wrong, "motioncore.skeleton.PARENTS disagrees with KINEMATIC_CHAINS: " + "; ".join(wrong)


def test_tpose_template():
    t = tpose_offsets()
    assert t.shape == (NUM_JOINTS, 3)
    np.testing.assert_allclose(np.linalg.norm(t, axis=-1), np.linalg.norm(ADULT_OFFSETS, axis=-1))
    for j, sign in ((18, 1), (20, 1), (19, -1), (21, -1)):  # arms straight out, left = +x
        np.testing.assert_allclose(t[j] / np.linalg.norm(t[j]), [sign, 0, 0])
    assert np.all(t[[4, 5, 7, 8], 1] < 0) and np.all(t[[10, 11], 2] > 0)  # legs down, feet fwd


# ------------------------------------------------------------------------------- IK round trip
@pytest.mark.parametrize("kind", HARD_KINDS + ("walk", "spinkick", "getup_facedown"))
def test_ik_round_trip_real_clips(clips, kind):
    joints = _clip(clips, kind).joints()
    pose = solve_ik(joints)
    err = _errors(pose, joints)
    print(f"{kind}: mean {err.mean() * 1000:.4f} mm, max {err.max() * 1000:.4f} mm")
    assert err.mean() < 0.01 and err.max() < 0.01
    assert pose.quats.shape == (len(joints), NUM_JOINTS, 4) and pose.offsets.shape == (NUM_JOINTS, 3)
    np.testing.assert_allclose(np.linalg.norm(pose.quats, axis=-1), 1.0, atol=1e-9)
    np.testing.assert_allclose(pose.root, joints[:, 0])
    for j in LEAVES:  # toes, head, wrists carry no rotation of their own
        np.testing.assert_allclose(np.abs(pose.quats[:, j, 0]), 1.0, atol=1e-9)


@pytest.mark.skipif(not SMPL_TREE, reason="motioncore.skeleton.PARENTS is not SMPL's tree "
                    "(test_core_skeleton_parents_match_kinematic_chains)")
@pytest.mark.parametrize("kind", HARD_KINDS + ("walk", "spin", "spinkick", "dance_b", "kick"))
def test_ik_continuity(clips, kind):
    """No sign flips or half-turn twist jumps: frame-to-frame changes stay within 60 degrees
    (or within 10 degrees of what the source rotations of the clip itself do: backflip's
    shoulder turns 87 degrees in one frame), with the T-pose, the arms-down and a random
    rest template."""
    clip = _clip(clips, kind)
    assert clip.fps == 20
    src_steps = _step_degrees(clip.quats)
    bound = max(60.0, src_steps.max() + 10.0)
    for label, rest in (("T-pose", None), ("arms-down", ADULT_OFFSETS), ("random", _random_template())):
        pose = solve_ik(clip.joints(), rest_offsets=rest)
        ik_steps = _step_degrees(pose.quats)
        print(f"{kind} ({label} rest): max local step {ik_steps.max():.1f} deg "
              f"(source {src_steps.max():.1f})")
        assert ik_steps.max() < bound, (label, np.unravel_index(ik_steps.argmax(), ik_steps.shape))
        assert np.all(np.sum(pose.quats[1:] * pose.quats[:-1], axis=-1) > 0)  # qfix'ed


def test_ik_is_equivariant_to_global_rotation(clips):
    """Nothing depends on the heading or on 'up': rotating the whole motion (here upside down
    and turned) leaves every local rotation below the root unchanged."""
    joints = _clip(clips, "cartwheel").joints()
    rot = qmul(qaxis_angle(np.array([0.0, 0.0, 1.0]), np.radians(180.0)),
               qaxis_angle(np.array([0.6, 0.0, 0.8]), np.radians(70.0)))
    turned = qrot(np.broadcast_to(rot, joints.shape[:-1] + (4,)), joints) + [1.0, 2.0, -3.0]
    a, b = solve_ik(joints), solve_ik(turned)
    assert _errors(b, turned).max() < 1e-6
    np.testing.assert_allclose(np.abs(np.sum(a.quats[:, 1:] * b.quats[:, 1:], axis=-1)), 1.0,
                               atol=1e-6)


def _random_template(seed: int = 7) -> np.ndarray:
    """The T-pose with every bone turned by up to 30 degrees and scaled by 0.7 .. 1.4."""
    rng = np.random.default_rng(seed)
    rest = tpose_offsets()
    rest[1:] = qrot(_random_rotations(rng, NUM_JOINTS - 1, 30.0), rest[1:])
    rest[1:] *= rng.uniform(0.7, 1.4, size=(NUM_JOINTS - 1, 1))
    return rest


@pytest.mark.parametrize("kind", ("cartwheel", "walk"))
def test_ik_with_random_rest_template(clips, kind):
    """Any rest template (bones not axis aligned, other proportions) still round-trips; the
    rest bone directions are the template's except at the two branching joints."""
    rest = _random_template()
    joints = _clip(clips, kind).joints()
    pose = solve_ik(joints, rest_offsets=rest)
    err = _errors(pose, joints)
    print(f"{kind} random template: mean {err.mean() * 1000:.4f} mm, max {err.max() * 1000:.4f} mm")
    assert err.mean() < 0.01 and err.max() < 0.01
    branching = {c for j in range(NUM_JOINTS) for c in range(NUM_JOINTS)
                 if PARENTS[c] == j and sum(p == j for p in PARENTS) > 1}
    unit = lambda v: v / np.linalg.norm(v, axis=-1, keepdims=True)  # noqa: E731
    for j in set(range(1, NUM_JOINTS)) - branching:
        np.testing.assert_allclose(unit(pose.offsets[j]), unit(rest[j]), atol=1e-9)
    # bone lengths are the data's, whatever the template's
    data_len = np.median(np.linalg.norm(joints[:, 1:] - joints[:, list(PARENTS[1:])], axis=-1), 0)
    np.testing.assert_allclose(np.linalg.norm(pose.offsets[1:], axis=-1), data_len, rtol=1e-9)
    # the arms-down adult rest pose works as well
    assert _errors(solve_ik(joints, rest_offsets=ADULT_OFFSETS), joints).max() < 0.01


def test_ik_round_trip_corpus_features(embedded_corpus):
    """Joints recovered from the corpus' 263-d features (float32) stay within 1 cm."""
    for mid in embedded_corpus.split_ids("test")[:4]:
        joints = features_to_joints(embedded_corpus.features(mid))
        lengths = np.linalg.norm(joints[:, 1:] - joints[:, list(PARENTS[1:])], axis=-1)
        spread = (lengths.std(0) / lengths.mean(0)).max()
        assert spread < 0.05, (f"corpus motion {mid}: a bone length varies by {spread:.0%} over "
                               "time; was the corpus built with another skeleton? rebuild it")
        err = _errors(solve_ik(joints), joints)
        print(f"corpus {mid} ({len(joints)} frames): mean {err.mean() * 1000:.3f} mm, "
              f"max {err.max() * 1000:.3f} mm")
        assert err.mean() < 0.01


@pytest.mark.parametrize("kind", ("walk", "cartwheel"))
def test_ik_round_trip_features_with_noise(clips, kind):
    """Clip -> features -> joints, plus 1 mm of noise per coordinate (bone lengths then vary
    from frame to frame): the fit stays within 1 cm on average."""
    joints = features_to_joints(joints_to_features(_clip(clips, kind).joints()))
    noisy = joints + np.random.default_rng(1).normal(0.0, 0.001, joints.shape)
    err = _errors(solve_ik(noisy), noisy)
    print(f"{kind} features + 1 mm noise: mean {err.mean() * 1000:.3f} mm, max {err.max() * 1000:.3f} mm")
    assert err.mean() < 0.01 and err.max() < 0.03


def test_ik_single_frame_and_tpose_identity():
    rest_joints = np.zeros((1, NUM_JOINTS, 3))
    t = tpose_offsets()
    for j in range(1, NUM_JOINTS):
        rest_joints[0, j] = rest_joints[0, PARENTS[j]] + t[j]
    pose = solve_ik(rest_joints)
    assert len(pose.root) == 1 and _errors(pose, rest_joints).max() < 1e-9
    np.testing.assert_allclose(np.abs(pose.quats[0, :, 0]), 1.0, atol=1e-9)  # rest = identity


def test_foot_skate_cleanup_reduces_sliding(clips):
    joints = _clip(clips, "walk").joints()
    contact = contact_mask(joints)
    both = contact[1:] & contact[:-1]
    assert both.sum() >= 10

    def sliding(x):  # mean horizontal toe motion per frame while in contact, metres
        step = np.linalg.norm(np.diff(x[:, [10, 11]][..., [0, 2]], axis=0), axis=-1)
        return step[both].mean()

    slid = joints.copy()
    slid[..., 0] += 0.005 * np.arange(len(joints))[:, None]  # the whole body drifts 5 mm/frame
    pose = solve_ik(slid, foot_skate_cleanup=True)
    cleaned = forward(pose)
    print(f"toe sliding in contact: {sliding(slid) * 1000:.2f} -> {sliding(cleaned) * 1000:.2f} mm/frame")
    assert sliding(cleaned) < 0.5 * sliding(slid)
    np.testing.assert_allclose(pose.root, slid[:, 0])            # pelvis untouched
    assert np.abs(cleaned - slid).max() < 0.1                    # gentle
    np.testing.assert_allclose(cleaned[:, [0, 3, 6, 9, 12, 15]], slid[:, [0, 3, 6, 9, 12, 15]],
                               atol=1e-9)                        # upper body untouched
    assert _errors(solve_ik(slid), slid).max() < 1e-6            # off by default


@pytest.mark.parametrize("bad, match", [
    (np.full((5, NUM_JOINTS, 3), np.nan), "NaN"),
    (np.zeros((5, 24, 3)), "22 joints"),
    (np.zeros((0, NUM_JOINTS, 3)), "at least 1 frames"),
    (np.zeros((5, NUM_JOINTS)), "shape"),
])
def test_ik_bad_input(bad, match):
    with pytest.raises(MotionFormatError, match=match):
        solve_ik(bad)


def test_ik_zero_length_bone_and_bad_template(clips):
    joints = _clip(clips, "walk").joints()
    broken = joints.copy()
    broken[3, 4] = broken[3, 1]  # left knee on the left hip
    with pytest.raises(MotionFormatError, match="zero-length bone left_hip -> left_knee at frame 3"):
        solve_ik(broken)
    rest = tpose_offsets()
    rest[7] = 0.0
    with pytest.raises(MotionFormatError, match="rest template"):
        solve_ik(joints, rest_offsets=rest)
    with pytest.raises(MotionFormatError, match="rest offsets"):
        solve_ik(joints, rest_offsets=np.zeros((21, 3)))


# ---------------------------------------------------------------------------------------- BVH
def _axis_matrix(axis: str, deg: np.ndarray) -> np.ndarray:
    a = np.radians(deg)
    c, s, o, z = np.cos(a), np.sin(a), np.ones_like(a), np.zeros_like(a)
    m = {"X": [[o, z, z], [z, c, -s], [z, s, c]],
         "Y": [[c, z, s], [z, o, z], [-s, z, c]],
         "Z": [[c, -s, z], [s, c, z], [z, z, o]]}[axis]
    return np.moveaxis(np.array(m), (0, 1), (-2, -1))


def _bvh_fk(mocap) -> tuple[list[str], np.ndarray]:
    """Joint names and positions (T, J, 3) from a parsed BVH: offsets + channels, rotations
    composed in channel order (R = R_first @ R_second @ R_third)."""
    names = mocap.get_joints_names()
    T = mocap.nframes
    glob, pos = {}, {}
    for name in names:
        channels = mocap.joint_channels(name)
        values = np.array(mocap.frames_joint_channels(name, channels), dtype=np.float64).reshape(T, -1)
        rot = np.broadcast_to(np.eye(3), (T, 3, 3))
        trans = np.zeros((T, 3))
        for k, ch in enumerate(channels):
            if ch.endswith("rotation"):
                rot = rot @ _axis_matrix(ch[0], values[:, k])
            else:
                trans[:, "XYZ".index(ch[0])] = values[:, k]
        offset = np.array(mocap.joint_offset(name))
        parent = mocap.joint_parent(name)
        if parent is None:
            pos[name], glob[name] = offset + trans, rot
        else:
            pname = parent.name
            pos[name] = pos[pname] + np.einsum("tij,j->ti", glob[pname], offset)
            glob[name] = glob[pname] @ rot
    return names, np.stack([pos[n] for n in names], axis=1)


@pytest.mark.parametrize("kind", ("cartwheel", "backflip", "walk"))
def test_bvh_parsed_independently_reproduces_motion(clips, kind, tmp_path):
    from bvh import Bvh

    joints = _clip(clips, kind).joints()
    pose = solve_ik(joints)
    path = write_bvh(tmp_path / f"{kind}.bvh", pose)
    assert path == tmp_path / f"{kind}.bvh" and path.is_file()
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temp file left
    mocap = Bvh(path.read_text())
    names = mocap.get_joints_names()
    assert sorted(names) == sorted(JOINT_NAMES) and len(names) == NUM_JOINTS
    for j, name in enumerate(JOINT_NAMES):
        parent = mocap.joint_parent(name)
        assert (parent.name if parent is not None else None) == \
            (JOINT_NAMES[PARENTS[j]] if PARENTS[j] >= 0 else None)
        expected = (["Xposition", "Yposition", "Zposition"] if PARENTS[j] < 0 else []) + \
            ["Zrotation", "Yrotation", "Xrotation"]
        assert mocap.joint_channels(name) == expected
    assert mocap.nframes == len(joints)
    assert mocap.frame_time == pytest.approx(0.05)
    assert "End Site" in path.read_text()
    _, pos = _bvh_fk(mocap)
    order = [names.index(n) for n in JOINT_NAMES]
    err = np.abs(pos[:, order] / 100.0 - forward(pose))
    assert err.max() < 1e-3
    assert np.abs(pos[:, order] / 100.0 - joints).max() < 1e-3
    np.testing.assert_allclose(np.array(mocap.joint_offset("left_knee")) / 100.0, pose.offsets[4],
                               atol=1e-6)


def test_bvh_scale_and_fps(clips, tmp_path):
    from bvh import Bvh

    joints = _clip(clips, "roll").joints()
    pose = solve_ik(joints)
    pose30 = SkeletonPose(pose.root, pose.quats, pose.offsets, fps=30.0)
    mocap = Bvh(write_bvh(tmp_path / "m.bvh", pose30, scale=1.0).read_text())
    assert mocap.frame_time == pytest.approx(1 / 30)
    names, pos = _bvh_fk(mocap)
    assert np.abs(pos[:, [names.index(n) for n in JOINT_NAMES]] - joints).max() < 1e-5


def test_euler_conversion_matches_matrix():
    rng = np.random.default_rng(3)
    q = rng.normal(size=(500, 4))
    q /= np.linalg.norm(q, axis=-1, keepdims=True)
    q[:3] = [[np.cos(np.pi / 4), 0, np.sin(np.pi / 4), 0], [np.cos(np.pi / 4), 0, -np.sin(np.pi / 4), 0],
             [1, 0, 0, 0]]  # gimbal lock (y = +-90 degrees) and identity
    z, y, x = np.moveaxis(np.degrees(quat_to_euler_zyx(q)), -1, 0)
    m = _axis_matrix("Z", z) @ _axis_matrix("Y", y) @ _axis_matrix("X", x)
    np.testing.assert_allclose(m, qto_matrix(q), atol=1e-9)


def test_bvh_bad_pose_writes_nothing(clips, tmp_path):
    pose = solve_ik(_clip(clips, "walk").joints())
    bad = SkeletonPose(pose.root, pose.quats.copy(), pose.offsets, pose.fps)
    bad.quats[2, 5] = np.nan
    with pytest.raises(MotionFormatError, match="NaN"):
        write_bvh(tmp_path / "bad.bvh", bad)
    with pytest.raises(MotionFormatError, match="quats"):
        write_bvh(tmp_path / "bad.bvh", SkeletonPose(pose.root, pose.quats[:, :20], pose.offsets))
    with pytest.raises(ValueError, match="names"):
        write_bvh(tmp_path / "bad.bvh", pose, names=["a b"] * NUM_JOINTS)
    with pytest.raises(ValueError, match="scale"):
        write_bvh(tmp_path / "bad.bvh", pose, scale=0.0)
    assert list(tmp_path.iterdir()) == []


def test_bvh_unwritable_destination_leaves_nothing(clips, tmp_path, monkeypatch):
    pose = solve_ik(_clip(clips, "walk").joints()[:3])
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    with pytest.raises(OSError, match="cannot write BVH file .*file/out.bvh"):
        write_bvh(not_a_dir / "out.bvh", pose)
    with pytest.raises(FileNotFoundError, match="missing/out.bvh"):
        write_bvh(tmp_path / "missing" / "out.bvh", pose)
    if os.geteuid() != 0:  # root ignores permissions
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        with pytest.raises(PermissionError, match="locked/out.bvh"):
            write_bvh(locked / "out.bvh", pose)
        assert list(locked.iterdir()) == []
    # a failure at the last step (replacing the target) keeps the old file and no temp file
    target = tmp_path / "keep.bvh"
    target.write_text("old")

    def boom(src, dst):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(PermissionError, match="keep.bvh"):
        write_bvh(target, pose)
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "keep.bvh"]
