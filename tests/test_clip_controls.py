"""Controls for clip makers: length, in place, foot locking, BVH units (pipeline, CLI, export)."""
import numpy as np
import pytest

from app.service import ClipOptions, UserError
from backend.cli import main
from backend.data.mocap import load_base_clips
from backend.pipeline import check_length
from motioncore.clean import clean_motion, in_place
from motioncore.features import joints_to_features


@pytest.fixture(scope="module")
def walk_joints():
    clip = next(b for b in load_base_clips(["walk"]))
    return clip.clip.repeated(2, True).joints()


def test_in_place_removes_travel_and_keeps_the_pose(walk_joints):
    assert np.ptp(walk_joints[:, 0, 2]) > 0.5, "the walk travels"
    still = in_place(walk_joints)
    np.testing.assert_allclose(still[:, 0, [0, 2]], np.repeat(walk_joints[:1, 0, [0, 2]], len(still), 0),
                               atol=1e-6)
    np.testing.assert_allclose(still[..., 1], walk_joints[..., 1], atol=1e-6)     # heights kept
    np.testing.assert_allclose(still - still[:, :1], walk_joints - walk_joints[:, :1], atol=1e-5)
    with pytest.raises(ValueError, match="T, 22, 3"):
        in_place(walk_joints[0])


def _toe_slide(res, side: int, toe: int) -> float:
    """Largest horizontal toe drift (m) within one of the foot's predicted contacts."""
    from motioncore.clean import _foot_contacts

    c = _foot_contacts(res.joints, None)[:, side]
    worst = 0.0
    edges = np.flatnonzero(np.diff(np.concatenate([[0], c.astype(int), [0]])))
    for s0, s1 in zip(edges[::2], edges[1::2]):
        if s1 - s0 >= 4:
            xz = res.joints[s0 + 1:s1 - 1, toe][:, [0, 2]]
            worst = max(worst, float(np.abs(xz - xz.mean(0)).max()))
    return worst


def test_foot_locking_can_be_turned_off(walk_joints):
    f = joints_to_features(walk_joints)
    # a skating walk: the whole body drifts sideways 1 cm per frame, feet included
    drift = np.zeros_like(walk_joints)
    drift[:, :, 0] = 0.01 * np.arange(len(walk_joints))[:, None]
    f_skate = joints_to_features(walk_joints + drift)
    f_skate[:, -4:] = f[:, -4:]                           # contacts of the clean walk
    locked, free = clean_motion(f_skate), clean_motion(f_skate, plant_feet=False)
    assert locked.contacts.any() and not free.contacts.any()
    slide = [max(_toe_slide(r, 0, 10), _toe_slide(r, 1, 11)) for r in (locked, free)]
    assert slide[1] > 3 * slide[0] and slide[1] > 0.03, slide


def test_length_and_units_are_checked():
    assert check_length(None) is None and check_length(0) is None and check_length(4) == 4.0
    for bad in (0.5, 9.9, -1):
        with pytest.raises(ValueError, match="between 1 and 9.8 seconds"):
            check_length(bad)
    opts = ClipOptions.parse(3.0, True, False, "m")
    assert (opts.length_s, opts.in_place, opts.foot_lock, opts.bvh_units) == (3.0, True, False, "m")
    assert opts.stem_suffix() == "_3.0s_inplace" and ClipOptions.parse().stem_suffix() == ""
    with pytest.raises(UserError, match="between 1 and 9.8"):
        ClipOptions.parse(30)
    with pytest.raises(UserError, match="number of seconds"):
        ClipOptions.parse("long")
    with pytest.raises(UserError, match="BVH units"):
        ClipOptions.parse(0, False, True, "inch")


def test_cli_refuses_a_bad_length_before_loading(tmp_path, capsys, monkeypatch):
    from backend.pipeline import VimoRAGPipeline

    monkeypatch.setattr(VimoRAGPipeline, "load", classmethod(lambda cls, *a, **k: 1 / 0))
    assert main(["generate", "a person walks", "--length", "12", "--out", str(tmp_path)]) == 2
    assert "clip length must be between" in capsys.readouterr().err


def test_bvh_in_metres_is_centimetres_over_100(walk_joints, tmp_path):
    from bvh import Bvh

    from viewer.export import export_motion

    files = {u: export_motion(walk_joints[:30], tmp_path / u, ["bvh"], stem="w", bvh_units=u)["bvh"]
             for u in ("cm", "m")}
    cm, m = (Bvh(files[u].read_text()) for u in ("cm", "m"))
    joint = "LeftKnee" if "LeftKnee" in cm.get_joints_names() else cm.get_joints_names()[2]
    off_cm, off_m = np.array(cm.joint_offset(joint)), np.array(m.joint_offset(joint))
    np.testing.assert_allclose(off_m * 100, off_cm, atol=1e-4)
    assert 0.2 < np.linalg.norm(off_m) < 0.6, "a thigh in metres"
    root_cm = np.array(cm.frame_joint_channels(5, cm.get_joints_names()[0],
                                               ["Xposition", "Yposition", "Zposition"]))
    root_m = np.array(m.frame_joint_channels(5, m.get_joints_names()[0],
                                             ["Xposition", "Yposition", "Zposition"]))
    np.testing.assert_allclose(root_m * 100, root_cm, atol=1e-3)
    with pytest.raises(ValueError, match="BVH units"):
        export_motion(walk_joints[:30], tmp_path / "x", ["bvh"], bvh_units="ft")
    assert not (tmp_path / "x").exists() or not any((tmp_path / "x").iterdir())
