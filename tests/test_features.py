"""The HumanML3D motion representation on real mocap clips and on hand-made cases."""
import os

import numpy as np
import pytest

from backend.data.mocap import load_base_clips
from motioncore.features import (CONTACT_SLICE, FEATURE_DIM, MotionFormatError, Normalizer,
                                 canonicalize, features_to_joints, foot_contacts,
                                 joints_to_features, mean_std, resample)
from motioncore.quat import qrot, qyaw
from motioncore.skeleton import ADULT_OFFSETS, NUM_JOINTS, forward_kinematics


@pytest.fixture(scope="module")
def real_clips():
    clips = {b.name: b.clip.joints() for b in load_base_clips()}
    assert len(clips) == 20
    return clips


def test_round_trip_on_every_real_clip(real_clips):
    for name, joints in real_clips.items():
        feats = joints_to_features(joints)
        assert feats.shape == (len(joints) - 1, FEATURE_DIM)
        back = features_to_joints(feats)
        err = np.linalg.norm(back - canonicalize(joints)[:-1], axis=-1)
        assert err.max() < 1e-4, f"{name}: max joint error {err.max():.2e} m"


def test_round_trip_keeps_spin_direction():
    # Three full turns counter-clockwise in 3 s: the +-180 degree crossings must not flip sign.
    T = 61
    quats = np.zeros((T, NUM_JOINTS, 4))
    quats[..., 0] = 1.0
    quats[:, 0] = qyaw(np.linspace(0, 6 * np.pi, T))
    root = np.stack([np.zeros(T), np.full(T, 0.93), np.linspace(0, 1, T)], axis=1)
    joints = forward_kinematics(root, quats)
    back = features_to_joints(joints_to_features(joints))
    assert np.abs(back - canonicalize(joints)[:-1]).max() < 1e-4
    assert joints_to_features(joints)[:, 0].mean() > 0  # counter-clockwise = positive


@pytest.mark.parametrize("name", ["humanoid3d_walk.txt", "humanoid3d_cartwheel.txt"])
def test_features_invariant_to_heading_and_position(real_clips, name):
    joints = real_clips[name]
    base = joints_to_features(joints)
    for yaw, shift in [(0.7, (3.0, 0.0, -2.0)), (np.pi, (-10.0, 0.0, 5.0)), (-2.5, (0.2, 0.0, 0.1))]:
        moved = qrot(np.broadcast_to(qyaw(yaw), joints.shape[:-1] + (4,)), joints) + np.array(shift)
        assert np.abs(joints_to_features(moved) - base).max() < 1e-4


def test_floor_height_does_not_matter(real_clips):
    joints = real_clips["humanoid3d_jump.txt"]
    lifted = joints + np.array([0.0, 0.5, 0.0])
    assert np.abs(joints_to_features(lifted) - joints_to_features(joints)).max() < 1e-5


def test_foot_contacts_on_when_still_off_when_moving():
    T = 20
    rest = forward_kinematics(np.array([[0.0, 0.93, 0.0]]), np.tile([1.0, 0, 0, 0], (1, NUM_JOINTS, 1)))
    joints = np.repeat(rest, T, axis=0)
    # Right foot (ankle 8, toe 11) slides forward at 1.5 m/s; the left foot stays put.
    joints[:, [8, 11], 2] += np.linspace(0, 1.5 * (T - 1) / 20, T)[:, None]
    contacts = joints_to_features(joints)[:, CONTACT_SLICE]
    assert np.all(contacts[:, :2] == 1), "left foot is still: contact on"
    assert np.all(contacts[:, 2:] == 0), "right foot slides: contact off"


def test_walking_feet_alternate(real_clips):
    c = foot_contacts(real_clips["humanoid3d_walk.txt"])
    left, right = c[:, 0], c[:, 2]
    assert 0.2 < left.mean() < 0.95 and 0.2 < right.mean() < 0.95
    assert np.any((left == 1) & (right == 0)) and np.any((left == 0) & (right == 1))


@pytest.mark.parametrize("bad, message", [
    (np.full((10, 22, 3), np.nan), "NaN"),
    (np.zeros((1, 22, 3)), "at least 2 frames"),
    (np.zeros((10, 21, 3)), "22 joints"),
    (np.zeros((10, 22)), "shape"),
])
def test_bad_input_raises_clear_error(bad, message):
    with pytest.raises(MotionFormatError, match=message):
        joints_to_features(bad)


def test_bad_features_raise():
    with pytest.raises(MotionFormatError, match="263"):
        features_to_joints(np.zeros((10, 251)))
    with pytest.raises(MotionFormatError, match="NaN"):
        features_to_joints(np.full((10, 263), np.inf))


def test_normalizer_round_trip_and_grouped_std(real_clips):
    feats = [joints_to_features(j) for j in real_clips.values()]
    mean, std = mean_std(feats)
    assert mean.shape == std.shape == (FEATURE_DIM,)
    assert np.all(std[4:67] == std[4]), "positions share one std, as in HumanML3D"
    norm = Normalizer(mean, std)
    x = feats[0]
    assert np.allclose(norm.denormalize(norm.normalize(x)), x, atol=1e-5)
    with pytest.raises(MotionFormatError):
        Normalizer(mean[:10], std[:10])


def test_resample_between_frame_rates():
    t = np.arange(61) / 30.0  # 2 s at 30 fps of a linear motion
    x = np.stack([t, 2 * t, -t], axis=1)
    y = resample(x, 30, 20)
    assert len(y) == 41
    assert np.allclose(y[:, 0], np.arange(41) / 20.0)
    assert np.allclose(resample(y, 20, 20), y)


def test_adult_skeleton_proportions():
    rest = forward_kinematics(np.zeros((1, 3)), np.tile([1.0, 0, 0, 0], (1, NUM_JOINTS, 1)), ADULT_OFFSETS)[0]
    height = rest[:, 1].max() - rest[:, 1].min()
    assert 1.5 < height < 1.8  # head joint to toes; the top of the skull is ~0.1 m higher
    assert rest[1, 0] > 0 > rest[2, 0], "left is +x"


def test_parents_agree_with_the_kinematic_chains():
    from motioncore.skeleton import JOINT_NAMES, KINEMATIC_CHAINS, PARENTS

    for chain in KINEMATIC_CHAINS:
        for parent, child in zip(chain[:-1], chain[1:]):
            assert PARENTS[child] == parent, (JOINT_NAMES[child], JOINT_NAMES[parent])
    assert JOINT_NAMES[PARENTS[JOINT_NAMES.index("left_elbow")]] == "left_shoulder"
    assert JOINT_NAMES[PARENTS[JOINT_NAMES.index("right_wrist")]] == "right_elbow"


# ------------------------------------------------------------- HumanML3D's heading, by hand
def _twisted_pose(shoulder_turn_deg: float) -> np.ndarray:
    """Rest pose, hips along x, shoulders turned by ``shoulder_turn_deg`` about +y."""
    from motioncore.quat import qyaw as _qyaw

    rest = forward_kinematics(np.array([[0.0, 0.93, 0.0]]), np.tile([1.0, 0, 0, 0], (1, NUM_JOINTS, 1)))[0]
    pose = rest.copy()
    chest = pose[9].copy()
    q = _qyaw(np.radians(shoulder_turn_deg))
    for j in (13, 14, 16, 17, 18, 19, 20, 21):
        pose[j] = chest + qrot(q, pose[j] - chest)
    return pose


def test_ik_forward_is_humanml3d_shoulders_minus_hips_by_hand():
    from motioncore.features import facing_direction, ik_forward

    p = np.zeros((1, NUM_JOINTS, 3))
    p[0, 1], p[0, 2] = (0.1, 0.9, 0.0), (-0.1, 0.9, 0.0)      # left hip, right hip
    p[0, 16], p[0, 17] = (0.0, 1.4, -0.2), (0.0, 1.4, 0.2)    # shoulders turned 90 degrees
    # HumanML3D's IK: across = (l_hip - r_hip) + (r_sh - l_sh) = (0.2, 0, 0.4), normalised
    # (0.4472, 0, 0.8944); forward = (0, 1, 0) x across = (across_z, 0, -across_x).
    np.testing.assert_allclose(ik_forward(p)[0], [0.8944272, 0.0, -0.4472136], atol=1e-6)
    # process_file's frame-0 facing uses the sum of both lines: (-0.2, 0, 0.4) -> (0.4, 0, 0.2).
    np.testing.assert_allclose(facing_direction(p)[0], [0.8944272, 0.0, 0.4472136], atol=1e-6)


def test_features_use_the_ik_heading_after_frame_zero():
    # Frame 0 is the canonical (identity) heading; from frame 1 on, positions are expressed in
    # the smoothed IK heading. With a constant twisted pose the smoothing changes nothing, so
    # frame 1's root-relative positions are the pose turned by exactly that heading.
    from motioncore.features import RIC_SLICE, heading_rotations, ik_forward

    pose = _twisted_pose(40.0)
    joints = np.repeat(pose[None], 6, axis=0) + np.linspace(0, 0.1, 6)[:, None, None] * np.array([0, 0, 1.0])
    p = canonicalize(joints)
    rot = heading_rotations(p)
    np.testing.assert_allclose(rot[0], [1, 0, 0, 0])
    fwd = ik_forward(p[1:2])[0]
    fwd /= np.linalg.norm(fwd)
    np.testing.assert_allclose(qrot(rot[1], fwd), [0, 0, 1], atol=1e-9)
    feats = joints_to_features(joints)
    local = p[1] - p[1, 0] * np.array([1, 0, 1])
    want = qrot(np.broadcast_to(rot[1], (NUM_JOINTS, 4)), local)[1:]
    np.testing.assert_allclose(feats[1, RIC_SLICE].reshape(21, 3), want, atol=1e-6)


@pytest.mark.skipif(not os.environ.get("VIMORAG_HUMANML3D"),
                    reason="set VIMORAG_HUMANML3D to a HumanML3D folder (new_joints/, new_joint_vecs/)")
def test_matches_published_humanml3d_features():
    # new_joints/X.npy is HumanML3D's recovery of new_joint_vecs/X.npy; our features of it must
    # equal the published ones (all but the last rows, whose smoothing saw one more frame).
    from pathlib import Path

    root = Path(os.environ["VIMORAG_HUMANML3D"])
    for path in sorted((root / "new_joints").glob("*.npy"))[:20]:
        joints = np.load(path)
        ours = joints_to_features(joints)
        theirs = np.load(root / "new_joint_vecs" / path.name)[:len(ours)]
        n = max(1, len(ours) - 60)
        assert np.abs(ours[:n] - theirs[:n]).max() < 1e-3, path.name
