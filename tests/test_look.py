"""`eval look`'s measured facts on hand-made motions (the directions a prompt names, read in the
body's own frame) and its contact sheet."""
import numpy as np
import pytest

from backend.evaluation.look import format_rows, motion_facts
from motioncore.quat import qrot
from motioncore.skeleton import forward_kinematics
from viewer.sheet import contact_sheet


def _standing(frames: int) -> np.ndarray:
    """The rest pose (facing +z, left hip at +x) standing on the floor, ``frames`` times."""
    q = np.zeros((frames, 22, 4))
    q[..., 0] = 1.0
    p = forward_kinematics(np.zeros((frames, 3)), q)
    p[..., 1] -= p[..., 1].min()
    return p


def _turned(p: np.ndarray, degrees: float) -> np.ndarray:
    """The motion turned about the vertical axis (positive: from +z towards +x)."""
    a = np.radians(degrees) / 2
    q = np.broadcast_to(np.array([np.cos(a), 0.0, np.sin(a), 0.0]), p.shape[:-1] + (4,))
    return qrot(q, p)


def test_rest_pose_faces_plus_z_with_its_left_at_plus_x():
    p = _standing(1)[0]
    assert p[1, 0] > 0 > p[2, 0], "joint 1 is the left hip"


def test_walking_backwards_is_negative_forward_travel():
    p = _standing(41)
    p[:, :, 2] -= np.linspace(0, 1.0, 41)[:, None]         # 1 m towards -z in 2 s, facing +z
    f = motion_facts(p)
    assert f["forward_m"] == pytest.approx(-1.0, abs=0.01)
    assert f["left_m"] == pytest.approx(0.0, abs=0.01)
    assert f["speed_mps"] == pytest.approx(1.0 / 2.05, abs=0.01)   # 41 frames = 2.05 s
    assert f["upside_down_pct"] == 0.0
    assert f["lowest_m"] == pytest.approx(0.0, abs=0.03)


def test_sideways_travel_is_read_in_the_body_frame():
    # facing +x (turned 90 degrees), moving towards +z: that is to the body's right
    p = _turned(_standing(21), 90.0)
    p[:, :, 2] += np.linspace(0, 0.8, 21)[:, None]
    f = motion_facts(p)
    assert f["forward_m"] == pytest.approx(0.0, abs=0.01)
    assert f["left_m"] == pytest.approx(-0.8, abs=0.01)


def test_turning_is_the_facing_s_net_change_left_positive():
    p = _standing(37)
    spun = np.stack([_turned(p[i:i + 1], 20.0 * i)[0] for i in range(37)])   # 720 degrees to the left
    assert motion_facts(spun)["turned_deg"] == pytest.approx(720.0, abs=0.5)
    right = np.stack([_turned(p[i:i + 1], -5.0 * i)[0] for i in range(37)])   # a right turn of 180
    assert motion_facts(right)["turned_deg"] == pytest.approx(-180.0, abs=0.5)
    assert motion_facts(p)["turned_deg"] == 0.0


def test_upside_down_share_and_foot_heights():
    p = _standing(20)
    flipped = p.copy()
    flipped[10:, :, 1] = 1.8 - flipped[10:, :, 1]          # a handstand for the second half
    f = motion_facts(flipped)
    assert f["upside_down_pct"] == pytest.approx(50.0)
    assert f["left_foot_top_m"] > 1.5 and f["right_foot_top_m"] > 1.5
    assert motion_facts(p)["left_foot_top_m"] < 0.15


def test_facts_reject_what_is_not_a_motion():
    with pytest.raises(ValueError, match="expected joint positions"):
        motion_facts(np.zeros((1, 22, 3)))
    with pytest.raises(ValueError, match="expected joint positions"):
        motion_facts(np.zeros((10, 24, 3)))


def test_contact_sheet_has_a_row_per_motion(tmp_path):
    from PIL import Image

    p = _standing(30)
    path = contact_sheet([("stand", p), ("walk", p + np.array([0.0, 0.0, 0.01]) * np.arange(30)[:, None, None])],
                         tmp_path / "sheet.png", frames=4, dpi=50)
    w, h = Image.open(path).size
    assert (w, h) == (4 * 2 * 50, 2 * 2.4 * 50)
    with pytest.raises(ValueError):
        contact_sheet([], tmp_path / "empty.png")
    assert not (tmp_path / "empty.png").exists()


def test_rows_table_has_one_line_per_prompt():
    f = motion_facts(_standing(10))
    text = format_rows([{"prompt": "stand", "video": "v1", "video_lead": 0.0, **f}])
    lines = text.splitlines()
    assert len(lines) == 3 and lines[2].startswith("| stand |")
    assert lines[1].count("|") == lines[0].count("|")
