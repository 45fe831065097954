"""Mirror variants (backend/generation/mirror.py, Picker.with_mirror): a part that asks a left or
right turn or side also gets each sample's mirror image, and the picker chooses among all."""
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from backend.evaluation.checker import KINDS, TURNS, InstructionChecker
from backend.evaluation.pick import Picker
from backend.generation.mirror import asks_left_or_right, mirror_codes
from motioncore.features import features_to_joints, joints_to_features, mirror_features, mirror_joints
from motioncore.skeleton import JOINT_NAMES
from test_tempo import IDENTITY, _tiny_vqvae, stub_picking_pipeline, stub_row  # tests/ is on sys.path


def _turning_walk(rate_deg: float, n: int = 40) -> np.ndarray:
    """(n, 22, 3) joints of a rigid T-pose-ish body walking forward while its heading turns by
    ``rate_deg`` degrees per frame (positive: to its left seen from above, y up)."""
    rest = np.random.default_rng(0).normal(0, 0.2, (22, 3))
    rest[:, 1] = np.abs(rest[:, 1]) + 0.1
    out, pos, yaw = [], np.zeros(3), 0.0
    for _ in range(n):
        c, s = np.cos(yaw), np.sin(yaw)
        rot = np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])
        out.append(rest @ rot.T + pos)
        pos = pos + rot @ np.array([0, 0, 0.05])
        yaw += np.radians(rate_deg)
    return np.array(out)


def test_mirror_joints_swaps_sides_and_turns_and_is_its_own_inverse():
    j = _turning_walk(2.0)
    m = mirror_joints(j)
    assert m.shape == j.shape and m is not j
    np.testing.assert_allclose(mirror_joints(m), j)
    li, ri = JOINT_NAMES.index("left_hip"), JOINT_NAMES.index("right_hip")
    np.testing.assert_allclose(m[:, li, 0], -j[:, ri, 0])
    np.testing.assert_allclose(m[:, li, 1:], j[:, ri, 1:])
    # the heading's turn (root angular velocity, feature 0) changes sign, its size kept
    f, g = joints_to_features(j.astype(np.float32)), joints_to_features(m.astype(np.float32))
    assert f[:, 0].sum() == pytest.approx(-g[:, 0].sum(), abs=1e-3) and abs(f[:, 0].sum()) > 0.5
    np.testing.assert_allclose(mirror_features(f), joints_to_features(mirror_joints(features_to_joints(f))),
                               atol=1e-5)


def test_mirror_codes_keeps_the_length_and_stays_in_the_codebook():
    vq = _tiny_vqvae()
    codes = np.arange(10) % 16
    out = mirror_codes(codes, vq, IDENTITY)
    assert out.dtype == np.int64 and len(out) == len(codes) and out.min() >= 0 and out.max() < 16
    assert len(mirror_codes(codes, vq, IDENTITY, max_tokens=6)) == 6
    assert mirror_codes(codes[:0], vq, IDENTITY) is None


def test_only_left_or_right_asks_are_mirrored():
    assert asks_left_or_right([("kind", "crawl", True), ("direction", "crawl", "left")])
    assert asks_left_or_right([("side", "kick", "right")])
    assert not asks_left_or_right([("kind", "crawl", True), ("direction", "crawl", "none")])
    assert not asks_left_or_right([("count", "jump", 2)]) and not asks_left_or_right([])


class _Turned(InstructionChecker):
    """Motion i (features filled with i) is a walk for sure that turns right when i >= 100,
    else left."""

    def probabilities(self, features, batch=64):
        out = []
        for f in features:
            i = float(np.asarray(f)[0, 0])
            p = {"presence": np.zeros(len(KINDS)), "reps": np.full((len(KINDS), 5), 0.2),
                 "speed": np.full((len(KINDS), 3), 1 / 3), "side": np.full((len(KINDS), 2), 0.5),
                 "turn": np.zeros((len(KINDS), 3))}
            p["presence"][KINDS.index("walk")] = 1.0
            p["turn"][:, TURNS.index("right" if i >= 100 else "left")] = 1.0
            out.append(p)
        return out


def _reading(turn):
    return {"action": "walk", "reps": 1, "speed": "normal", "side": None, "turn": turn}


def test_parts_asking_left_or_right_get_each_sample_mirrored_and_the_picker_chooses():
    picker = Picker(_Turned(), sees="decoded", samples=2)
    asked = picker.asked([_reading("right"), _reading(None), _reading("left"), None])
    owners = picker.rows(asked)
    assert owners == [0, 0, 1, 1, 2, 2, 3]
    codes = [np.array([r]) for r in range(len(owners))]
    out, own, before = picker.with_mirror(codes, owners, asked, lambda c: c + 100)   # mirrored: turns right
    assert before == {0: 2, 2: 2}                   # right and left asked; not "none", not one row
    assert own == owners + [0, 0, 2, 2]
    assert [int(c[0]) for c in out[len(codes):]] == [100, 101, 104, 105]
    chosen, info = picker.choose(out, own, asked, lambda c: np.full((4, 263), float(c[0]), np.float32))
    assert int(chosen[0][0]) == 100 and info[0]["chosen"] == 2      # the right turn: a mirror image
    assert int(chosen[2][0]) == 4                                   # the left turn: an original
    out, own, before = picker.with_mirror(codes, owners, asked, lambda c: None if c[0] == 5 else c)
    assert before == {0: 2} and own == owners + [0, 0]              # all of a part's rows or none


def test_eval_rows_offer_mirror_images_as_the_pipeline_does():
    row = stub_row(Picker(_Turned(), sees="decoded", samples=2), _reading("right"))
    row._mirror = lambda c: c + 100
    items = [SimpleNamespace(caption=SimpleNamespace(text="a person walks in an arc to the right"))]
    for mirror, first in ((False, 0.0), (True, 100.0)):
        row.mirror = mirror
        assert row.generate(items, np.random.default_rng(0))[0][0, 0] == first


def test_the_pipeline_keeps_a_mirror_image_when_it_turns_the_asked_way(monkeypatch):
    import backend.pipeline as pl

    monkeypatch.setattr(pl, "mirror_codes", lambda c, vq, norm, max_tokens=None: np.asarray(c) + 1000)
    pipe = stub_picking_pipeline(monkeypatch, _Turned(), _reading("right"))
    res = pipe.generate("a person walks in an arc to the right", mirror=True)
    assert res.picks[0]["samples"] == 4 and res.picks[0]["mirror"] is True and int(res.codes[0]) >= 1000
    res = pipe.generate("a person walks in an arc to the right", mirror=False)
    assert res.picks[0]["samples"] == 2 and "mirror" not in res.picks[0] and int(res.codes[0]) < 1000
