"""Each plausibility metric on hand-made motions whose answer is known."""
import numpy as np
import pytest

from motioncore.plausibility import (bone_var_pct, floating_pct, jerk, max_jump_m,
                                     mean_plausibility, penetration_pct, plausibility, skate_mps)
from motioncore.skeleton import BODY_RADIUS, NUM_JOINTS, forward_kinematics, lowest_point


def standing(T: int = 20) -> np.ndarray:
    """Rest pose, lowest body part exactly on the floor, for T frames."""
    rest = forward_kinematics(np.array([[0.0, 0.93, 0.0]]), np.tile([1.0, 0, 0, 0], (1, NUM_JOINTS, 1)))
    rest[..., 1] -= lowest_point(rest).min()
    return np.repeat(rest, T, axis=0)


def test_a_still_standing_body_is_plausible():
    m = plausibility(standing())
    assert m == {"floating_pct": 0.0, "penetration_pct": 0.0, "skate_mps": 0.0, "bone_var_pct": 0.0,
                 "jerk": 0.0, "max_jump_m": 0.0}


def test_lowest_point_counts_body_thickness():
    p = np.zeros((1, NUM_JOINTS, 3))
    p[..., 1] = 1.0
    p[0, 0, 1] = 0.10                               # pelvis joint 10 cm up: the back rests on the floor
    assert lowest_point(p)[0] == pytest.approx(0.10 - BODY_RADIUS[0])


def test_floating_and_penetration_count_frames():
    p = standing(20)
    p[:5, :, 1] += 0.10                             # 5 of 20 frames 10 cm up
    p[5:7, :, 1] -= 0.05                            # 2 frames 5 cm into the floor
    p[7:8, :, 1] += 0.04                            # 4 cm up: not floating
    assert floating_pct(p) == pytest.approx(25.0)
    assert penetration_pct(p) == pytest.approx(10.0)


def test_skate_is_the_speed_of_a_sliding_planted_toe():
    p = standing(21)
    toe_h = p[0, 10, 1]
    p[..., 1] -= toe_h                              # toes exactly on the floor
    slide = np.linspace(0.0, 1.0, 21)               # 1 m in 1 s at 20 fps
    p[:, 10, 0] += slide                            # left toe slides along x at 1 m/s
    assert skate_mps(p) == pytest.approx(0.5)       # mean over both toes: 1 m/s and 0 m/s
    p[:, 10, 1] += 0.2                              # the same slide 20 cm up is a swing, not skating
    assert skate_mps(p) == pytest.approx(0.0)


def test_bone_variation_is_range_over_median_averaged_over_bones():
    p = standing(10)
    p[3:6, 4] += (p[3:6, 4] - p[3:6, 1]) * 0.1      # left thigh 10 % longer in 3 frames
    p[3:6, 7] += (p[3:6, 4] - p[3:6, 1]) / 1.1 * 0.1  # keep the shin rigid: move the ankle along
    p[3:6, 10] += (p[3:6, 4] - p[3:6, 1]) / 1.1 * 0.1
    assert bone_var_pct(p) == pytest.approx(10.0 / 21, rel=1e-6)


def test_jerk_is_zero_for_constant_velocity_and_known_for_a_cubic():
    T = 30
    p = standing(T)
    t = np.arange(T) / 20.0
    moving = p.copy()
    moving[..., 2] += 1.5 * t[:, None]
    assert jerk(moving) == pytest.approx(0.0, abs=1e-6)
    cubic = p.copy()
    cubic[..., 2] += (t ** 3)[:, None]              # third derivative 6 m/s^3 everywhere
    assert jerk(cubic) == pytest.approx(6.0, rel=1e-6)


def test_max_jump_and_bad_input():
    p = standing(5)
    p[3, 20, 0] += 0.3
    assert max_jump_m(p) == pytest.approx(0.3)
    with pytest.raises(ValueError, match="joint positions"):
        plausibility(np.zeros((5, 21, 3)))
    with pytest.raises(ValueError, match="no motions"):
        mean_plausibility([])
