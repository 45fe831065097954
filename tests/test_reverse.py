"""Backward travel (backend/generation/reverse.py): which parts ask it, what reversing a motion
does to its travel and turn, and the pipeline's use of it."""
import numpy as np
import pytest

from backend.generation.reverse import (backward_request, names_turn, reverse_segment,
                                        travel_along_facing)
from motioncore.quat import qrot
from motioncore.skeleton import forward_kinematics

def _walk(frames: int = 41, turn_deg: float = 0.0) -> np.ndarray:
    """The rest pose (facing +z) gliding 1 m along its facing in ``frames`` frames while it
    turns ``turn_deg`` in all (positive: towards its left, +x)."""
    q = np.zeros((frames, 22, 4))
    q[..., 0] = 1.0
    p = forward_kinematics(np.zeros((frames, 3)), q)
    p[..., 1] -= p[..., 1].min()
    yaw = np.radians(np.linspace(0.0, turn_deg, frames))
    out = np.empty_like(p)
    pos = np.zeros(3)
    for t in range(frames):
        a = yaw[t] / 2
        out[t] = qrot(np.broadcast_to(np.array([np.cos(a), 0.0, np.sin(a), 0.0]), (22, 4)), p[t]) + pos
        pos = pos + np.array([np.sin(yaw[t]), 0.0, np.cos(yaw[t])]) / (frames - 1)
    return out


def _yaw_change(joints: np.ndarray) -> float:
    from motioncore.features import facing_direction

    f = facing_direction(joints)
    a = np.unwrap(np.arctan2(f[:, 0], f[:, 2]))
    return float(np.degrees(a[-1] - a[0]))


def test_which_words_ask_to_travel_backwards():
    assert backward_request("a person walks backwards") == "a person walks forward"
    assert backward_request("Someone crawls slowly backward.") == "Someone crawls slowly forward."
    assert backward_request("a man is running backwards in a circle to the left") == \
        "a man is running forward in a circle to the left"
    assert backward_request("a person walks forward") is None
    assert backward_request("a gymnast flips backward") is None          # a backflip's own word
    assert backward_request("someone does a backward somersault") is None
    assert names_turn("walks in a circle to the left") and names_turn("turning right while walking")
    assert not names_turn("walks, then kicks with the left leg") and not names_turn("walks in a circle")


def test_a_forward_walk_played_in_reverse_travels_backwards_facing_the_same_way():
    walk = _walk()
    assert travel_along_facing(walk) == pytest.approx(1.0, abs=0.02)
    back = reverse_segment(walk, 0, len(walk))
    assert travel_along_facing(back) == pytest.approx(-1.0, abs=0.02)
    np.testing.assert_allclose(back[0, 0], walk[0, 0], atol=1e-9)        # starts where it started
    assert _yaw_change(back) == pytest.approx(0.0, abs=0.5)
    np.testing.assert_allclose(back[-1, 0, [0, 2]], [0.0, -1.0], atol=0.03)   # 1 m behind


def test_reversing_turns_the_other_way_and_the_mirror_turns_it_back():
    left = _walk(turn_deg=60.0)
    assert _yaw_change(left) == pytest.approx(60.0, abs=1.0)
    assert _yaw_change(reverse_segment(left, 0, len(left))) == pytest.approx(-60.0, abs=1.0)
    both = reverse_segment(left, 0, len(left), mirror=True)
    assert _yaw_change(both) == pytest.approx(60.0, abs=1.0)
    assert travel_along_facing(both) < -0.9


def test_a_reversed_middle_stretch_joins_what_comes_before_and_after():
    walk = _walk(61)
    out = reverse_segment(walk, 20, 40)
    np.testing.assert_allclose(out[:20], walk[:20])                       # before: untouched
    np.testing.assert_allclose(out[20, 0], walk[20, 0], atol=1e-9)        # begins where it began
    # each frame moves about as far as before: no jump at either seam
    steps = np.linalg.norm(np.diff(out[:, 0, [0, 2]], axis=0), axis=1)
    assert steps.max() < 2.5 * np.linalg.norm(np.diff(walk[:, 0, [0, 2]], axis=0), axis=1).max()
    assert travel_along_facing(out[20:40]) < 0 < travel_along_facing(out[40:])
    assert reverse_segment(walk, 5, 6) is not walk and np.allclose(reverse_segment(walk, 5, 6), walk)


def test_the_pipeline_writes_a_backwards_walk_forwards_then_reverses_it(monkeypatch):
    import backend.pipeline as pl
    from test_tempo import _Paced, stub_picking_pipeline    # pytest puts tests/ on sys.path

    seen, spans = [], []
    monkeypatch.setattr(pl, "reverse_segment",
                        lambda j, a, b, mirror=False: spans.append((a, b, mirror)) or j)
    monkeypatch.setattr(pl, "joints_to_features", lambda j: np.zeros((len(j) - 1, 263), np.float32))
    reading = {"action": "walk", "reps": 1, "speed": None, "side": None, "turn": None}
    pipe = stub_picking_pipeline(monkeypatch, _Paced(), reading)
    real_retrieve = pipe.retrieve
    pipe.retrieve = lambda part, *a, **k: seen.append(part) or real_retrieve(part, *a, **k)
    res = pipe.generate("a person walks backwards")
    assert res.backwards == [True] and seen == ["a person walks forward"]    # written forwards
    assert spans == [(0, len(res.joints), False)]
    spans.clear()
    res = pipe.generate("a person walks forward")
    assert res.backwards == [False] and spans == []
    # a chained prompt too short to split is one part, reversed whole
    res = pipe.generate("a person walks backwards, then jumps", length_s=1.0)   # 5 codes < 2 x 4
    assert res.backwards == [True] and spans == [(0, len(res.joints), False)]
