"""The clean-skeleton step: rigid bones, on the floor, planted feet, and every export file
describing the same motion as the NPY download."""
import numpy as np
import pytest

from backend.data.mocap import load_base_clips
from motioncore.clean import clean_motion
from motioncore.features import CONTACT_SLICE, features_to_joints, joints_to_features
from motioncore.plausibility import bone_lengths, penetration_pct
from motioncore.skeleton import lowest_point


@pytest.fixture(scope="module")
def walk_features():
    clip = next(b for b in load_base_clips(["walk"]))
    return joints_to_features(clip.clip.repeated(2, True).joints())


def decoded_like(features: np.ndarray, seed: int = 0) -> np.ndarray:
    """What a tokenizer gives back: the same features with smooth errors on the joint positions
    (about 1.5 cm: bones stretch and shrink) and the whole body hovering 12 cm up."""
    from scipy.ndimage import gaussian_filter1d

    rng = np.random.default_rng(seed)
    f = features.copy()
    noise = gaussian_filter1d(rng.normal(0, 1.0, size=(len(f), 63)), 3.0, axis=0)
    f[:, 4:67] += (0.015 * noise / noise.std()).astype(np.float32)
    f[:, 3] += 0.12
    f[:, 5:67:3] += 0.12                            # y of joints 1..21 (root height is f[:, 3])
    return f


def test_bones_become_rigid(walk_features):
    noisy = decoded_like(walk_features)
    raw = bone_lengths(features_to_joints(noisy))
    assert ((raw.max(0) - raw.min(0)) / np.median(raw, 0)).mean() > 0.05   # the input really stretches
    lengths = bone_lengths(clean_motion(noisy).joints)
    assert np.abs(lengths - lengths[0]).max() < 1e-5


def test_grounded_without_floating_or_penetration(walk_features):
    cleaned = clean_motion(decoded_like(walk_features)).joints
    low = lowest_point(cleaned)
    assert np.abs(low).max() < 0.03, "a walk stays on the floor at every frame"
    assert penetration_pct(cleaned) == 0.0


def test_planted_feet_do_not_slide(walk_features):
    noisy = decoded_like(walk_features)
    res = clean_motion(noisy)
    planted = res.contacts
    assert planted.any(axis=0).all(), "both feet are planted at some point of a walk"
    for side, toe in ((0, 10), (1, 11)):
        c = np.concatenate([[False], planted[:, side], [False]])
        starts, stops = np.flatnonzero(~c[:-1] & c[1:]), np.flatnonzero(c[:-1] & ~c[1:])
        for s0, s1 in zip(starts, stops):
            if s1 - s0 >= 3:
                xz = res.joints[s0 + 1:s1 - 1, toe][:, [0, 2]]
                assert np.abs(xz - xz.mean(0)).max() < 0.01, "a planted toe stays within 1 cm"


def test_contacts_come_from_the_features(walk_features):
    f = decoded_like(walk_features)
    f[:, CONTACT_SLICE] = 0.0
    assert not clean_motion(f).contacts.any(), "no predicted contact, nothing is pinned"


def test_npy_equals_bvh_within_a_millimetre(walk_features, tmp_path):
    from bvh import Bvh
    from test_ik_bvh import _bvh_fk

    from motioncore.skeleton import JOINT_NAMES
    from viewer.export import export_motion

    written = export_motion(decoded_like(walk_features), tmp_path, formats=["bvh", "npy"], stem="m")
    npy = np.load(written["npy"])
    names, pos = _bvh_fk(Bvh(written["bvh"].read_text()))
    bvh = pos[:, [names.index(n) for n in JOINT_NAMES]] / 100.0
    assert npy.shape == bvh.shape
    assert np.abs(npy - bvh).max() < 1e-3
    assert np.abs(npy - clean_motion(decoded_like(walk_features)).joints).max() < 1e-3


def test_one_frame_and_plain_joints():
    clip = next(b for b in load_base_clips(["jump"]))
    joints = clip.clip.joints()
    res = clean_motion(joints)                      # joints: contacts measured from foot speed
    assert res.joints.shape == joints.shape
    assert np.abs(lowest_point(res.joints)).min() < 0.02
    # a real jump keeps its flight: the highest frame stays well above the floor
    assert lowest_point(res.joints).max() > 0.15
