"""Body meshes (mannequin, SMPL via smplx), the safe SMPL .pkl converter, offscreen rendering
and MP4 writing. Small sizes and few frames: the whole file runs in a few seconds."""
from __future__ import annotations

import os
import pickle
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from motioncore.ik import SkeletonPose
from motioncore.quat import qaxis_angle, qmul, qnormalize
from motioncore.skeleton import ADULT_OFFSETS, JOINT_NAMES, NUM_JOINTS, PARENTS, forward_kinematics
from viewer.body import (SMPL_PARENTS, BodyModelError, MannequinBody, SMPLBody, convert_smpl_pkl,
                         default_body, load_smpl_npz, quat_to_axis_angle, smpl_model_file,
                         to_smpl_tree)
from viewer.render import (SHADER_DIR, RenderConfig, Renderer, RenderError, camera_path,
                           render_motion_mp4, write_mp4)

IDX = {n: i for i, n in enumerate(JOINT_NAMES)}


@pytest.fixture(scope="module")
def body():
    return MannequinBody()


@pytest.fixture(scope="module")
def renderer():
    r = Renderer()
    yield r
    r.close()


def _identity_quats(T: int) -> np.ndarray:
    q = np.zeros((T, NUM_JOINTS, 4))
    q[..., 0] = 1.0
    return q


def _pose(T: int, root, offsets, quats=None) -> SkeletonPose:
    root = np.broadcast_to(np.asarray(root, dtype=float), (T, 3)).copy()
    return SkeletonPose(root=root, quats=_identity_quats(T) if quats is None else quats, offsets=offsets)


def _bone_length(off, name):
    return float(np.linalg.norm(off[IDX[name]]))


# ------------------------------------------------------------------------------ mannequin
def test_mannequin_rest_offsets_are_an_adult_tpose(body):
    off = body.rest_offsets()
    assert off.shape == (22, 3) and np.allclose(off[0], 0.0)
    for side in ("left", "right"):
        assert 0.33 < _bone_length(off, f"{side}_knee") < 0.45      # thigh
        assert 0.35 < _bone_length(off, f"{side}_ankle") < 0.45     # shin
        assert 0.22 < _bone_length(off, f"{side}_elbow") < 0.32     # upper arm
        assert 0.20 < _bone_length(off, f"{side}_wrist") < 0.30     # forearm
        # T-pose: the arms point sideways
        e = off[IDX[f"{side}_elbow"]]
        assert abs(e[0]) > 3 * abs(e[1]) and np.sign(e[0]) == (1 if side == "left" else -1)
    for a, b in (("left_knee", "right_knee"), ("left_elbow", "right_elbow"), ("left_wrist", "right_wrist")):
        assert abs(_bone_length(off, a) - _bone_length(off, b)) < 0.03
    rest = forward_kinematics(np.zeros((1, 3)), _identity_quats(1), off)[0]
    head_to_ankle = rest[IDX["head"], 1] - rest[[IDX["left_ankle"], IDX["right_ankle"]], 1].min()
    assert 1.35 < head_to_ankle < 1.65
    verts = body.rest_vertices()
    assert 1.6 < np.ptp(verts[:, 1]) < 1.9  # standing height of the mesh
    assert body.faces.shape[1] == 3 and body.faces.max() < len(verts)


def test_mannequin_joint_order_matches_smpl(body):
    names = body._m.joint_names[:22]
    assert names[IDX["left_elbow"]] == "L_Elbow" and names[IDX["spine3"]] == "Spine3"
    assert tuple(body._m.parents[:22]) == SMPL_PARENTS


def test_identity_pose_gives_rest_mesh_at_root(body):
    root = np.array([[1.0, 0.9, -2.0], [-0.5, 1.1, 3.0]])
    v = body.vertices(SkeletonPose(root=root, quats=_identity_quats(2), offsets=body.rest_offsets()))
    rest = body.rest_vertices()
    assert v.shape == (2, len(rest), 3) and v.dtype == np.float32
    np.testing.assert_allclose(v, rest[None] + root[:, None], atol=2e-5)
    # ... which is the package's own rest mesh, pelvis moved to the origin
    m = body._m
    p = m.rest_pose(dtype=np.float64)
    ref = np.asarray(m.vertices(p)) - m.joint_transforms(p)[0, :3, 3]
    np.testing.assert_allclose(rest, ref, atol=2e-5)


def test_mesh_joints_follow_forward_kinematics(body):
    rng = np.random.default_rng(1)
    q = _identity_quats(3)
    q[:, :, 1:] += rng.normal(scale=0.3, size=(3, 22, 3))
    q = qnormalize(q)
    root = rng.normal(size=(3, 3))
    off = body.rest_offsets()
    pose = SkeletonPose(root=root, quats=q, offsets=off)
    mesh_joints = body.joint_transforms(pose)[:, :22, :3, 3]
    np.testing.assert_allclose(mesh_joints, forward_kinematics(root, q, off), atol=1e-5)


def test_rotating_the_elbow_moves_the_hand_not_the_feet(body):
    rest = body.rest_vertices()
    joints = forward_kinematics(np.zeros((1, 3)), _identity_quats(1), body.rest_offsets())[0]
    hand = rest[:, 0] > joints[IDX["left_wrist"], 0] + 0.03
    feet = rest[:, 1] < joints[IDX["left_ankle"], 1] - 0.02
    assert hand.sum() > 50 and feet.sum() > 50
    q = _identity_quats(1)
    q[0, IDX["left_elbow"]] = qaxis_angle(np.array([0.0, 1.0, 0.0]), np.radians(90.0))
    v0 = body.vertices(_pose(1, 0.0, body.rest_offsets()))[0]
    v1 = body.vertices(_pose(1, 0.0, body.rest_offsets(), q))[0]
    moved = np.linalg.norm(v1 - v0, axis=1)
    assert moved[hand].mean() > 0.15
    assert moved[feet].max() < 1e-5


def test_fast_skinning_matches_the_package(body):
    rng = np.random.default_rng(2)
    q = _identity_quats(1)
    q[:, 1:, 1:] += rng.normal(scale=0.25, size=(1, 21, 3))
    q = qnormalize(q)
    pose = _pose(1, [0.3, 0.9, 0.1], body.rest_offsets(), q)
    ours = body.vertices(pose)
    aa = quat_to_axis_angle(q)
    p = body._m.rest_pose(batch_dims=(1,), dtype=np.float64)
    p["body_pose"], p["global_rotation"] = aa[:, 1:], aa[:, 0]
    ref = np.asarray(body._m.vertices(p))
    ref = ref + (pose.root - body._m.joint_transforms(p)[:, 0, :3, 3])[:, None]
    np.testing.assert_allclose(ours, ref, atol=1e-4)
    # the fallback through the package's API (if its internals change) gives the same mesh
    fallback = MannequinBody()
    fallback._skin = None
    np.testing.assert_allclose(fallback.vertices(pose), ours, atol=1e-4)


def test_quat_to_axis_angle_round_trip():
    rng = np.random.default_rng(3)
    axis = rng.normal(size=(50, 3))
    axis /= np.linalg.norm(axis, axis=1, keepdims=True)
    angle = rng.uniform(0, np.pi - 1e-3, size=50)
    angle[:3] = [0.0, 1e-9, 1e-5]
    q = qaxis_angle(axis, angle) * np.where(rng.random(50) < 0.5, -1, 1)[:, None]  # both signs
    np.testing.assert_allclose(quat_to_axis_angle(q), axis * angle[:, None], atol=1e-7)


def test_to_smpl_tree_keeps_global_orientations():
    rng = np.random.default_rng(4)
    q = qnormalize(rng.normal(size=(2, 22, 4)))
    assert to_smpl_tree(q, SMPL_PARENTS) is q
    other = list(SMPL_PARENTS)
    other[IDX["left_wrist"]] = IDX["left_shoulder"]  # a different tree
    out = to_smpl_tree(q, tuple(other))

    def globals_(quats, parents):
        g = quats.copy()
        for j in range(1, 22):  # parents precede children in both trees
            g[:, j] = qmul(g[:, parents[j]], quats[:, j])
        return g
    g_in, g_out = globals_(q, other), globals_(out, SMPL_PARENTS)
    assert np.allclose(np.abs(np.sum(g_in * g_out, axis=-1)), 1.0, atol=1e-9)


def test_bad_pose_is_refused(body):
    off = body.rest_offsets()
    with pytest.raises(ValueError, match="quats"):
        body.vertices(SkeletonPose(root=np.zeros((2, 3)), quats=_identity_quats(3), offsets=off))
    bad = _identity_quats(1)
    bad[0, 3, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        body.vertices(_pose(1, 0.0, off, bad))


def test_core_parents_are_smpls():
    assert tuple(PARENTS) == SMPL_PARENTS


# ---------------------------------------------------------------------------------- SMPL
SMPL24_PARENTS = SMPL_PARENTS + (20, 21)


def _tiny_smpl_arrays() -> dict:
    """A fabricated SMPL-format model: 24 joints (T-pose), 2 vertices per joint."""
    off = ADULT_OFFSETS.copy()
    for j, side in ((18, 1.0), (19, -1.0), (20, 1.0), (21, -1.0)):
        off[j] = (side * np.linalg.norm(off[j]), 0.0, 0.0)
    joints = np.zeros((24, 3))
    joints[0] = (0.0, 0.9, 0.0)
    for j in range(1, 22):
        joints[j] = joints[SMPL24_PARENTS[j]] + off[j]
    joints[22] = joints[20] + (0.08, 0.0, 0.0)
    joints[23] = joints[21] + (-0.08, 0.0, 0.0)
    v = np.concatenate([joints + (0.0, 0.0, 0.02), joints - (0.0, 0.0, 0.02)])  # V = 48
    V = len(v)
    Jreg = np.zeros((24, V))
    Jreg[np.arange(24), np.arange(24)] = 0.5
    Jreg[np.arange(24), 24 + np.arange(24)] = 0.5
    weights = np.zeros((V, 24))
    weights[np.arange(V), np.arange(V) % 24] = 1.0
    kintree = np.array([[4294967295] + list(SMPL24_PARENTS[1:]), list(range(24))], dtype=np.int64)
    f = np.array([[i, i + 24, (i + 1) % 24] for i in range(24)], dtype=np.int64)
    rng = np.random.default_rng(5)
    return {"v_template": v, "shapedirs": rng.normal(scale=1e-3, size=(V, 3, 10)),
            "posedirs": np.zeros((V, 3, 207)), "J_regressor": Jreg, "weights": weights,
            "kintree_table": kintree, "f": f}


@pytest.fixture()
def tiny_smpl_file(tmp_path):
    d = tmp_path / "smpl"
    d.mkdir()
    np.savez(d / "SMPL_NEUTRAL.npz", **_tiny_smpl_arrays())
    return d / "SMPL_NEUTRAL.npz"


def test_smpl_body_on_a_fabricated_model(tiny_smpl_file):
    assert smpl_model_file(tiny_smpl_file.parent) == tiny_smpl_file
    b = default_body(tiny_smpl_file.parent)
    assert isinstance(b, SMPLBody) and b.name == "smpl-neutral" and b.faces.shape == (24, 3)
    data = _tiny_smpl_arrays()
    J = data["J_regressor"] @ data["v_template"]
    off = b.rest_offsets()
    for j in range(1, 22):
        np.testing.assert_allclose(off[j], J[j] - J[PARENTS[j]], atol=1e-5)
    root = np.array([[0.5, 1.0, -1.0]])
    v = b.vertices(_pose(1, root, off))
    np.testing.assert_allclose(v[0], data["v_template"] - J[0] + root, atol=1e-5)
    # the left elbow moves the left wrist's vertices, not the feet's
    q = _identity_quats(1)
    q[0, IDX["left_elbow"]] = qaxis_angle(np.array([0.0, 1.0, 0.0]), np.radians(90.0))
    moved = np.linalg.norm(b.vertices(_pose(1, root, off, q))[0] - v[0], axis=1)
    wrist = np.arange(48) % 24 == IDX["left_wrist"]
    foot = np.isin(np.arange(48) % 24, [IDX["left_foot"], IDX["right_foot"]])
    assert moved[wrist].min() > 0.2 and moved[foot].max() < 1e-6
    # joints placed by SMPL agree with our forward kinematics on its rest offsets
    rng = np.random.default_rng(6)
    q = qnormalize(_identity_quats(2) + np.concatenate(
        [np.zeros((2, 22, 1)), rng.normal(scale=0.3, size=(2, 22, 3))], axis=-1))
    pose = _pose(2, root, off, q)
    wrist_vertex = b.vertices(pose)[:, [IDX["left_wrist"], 24 + IDX["left_wrist"]]].mean(axis=1)
    np.testing.assert_allclose(wrist_vertex, forward_kinematics(pose.root, q, off)[:, IDX["left_wrist"]],
                               atol=1e-4)


def test_default_body_without_smpl_files_is_the_mannequin(tmp_path):
    assert smpl_model_file(tmp_path) is None
    assert isinstance(default_body(tmp_path), MannequinBody)


def test_bad_smpl_npz_is_refused(tmp_path):
    bad = _tiny_smpl_arrays()
    del bad["weights"]
    np.savez(tmp_path / "SMPL_NEUTRAL.npz", **bad)
    with pytest.raises(BodyModelError, match="weights"):
        SMPLBody(tmp_path / "SMPL_NEUTRAL.npz")
    (tmp_path / "x.npz").write_bytes(b"not a zip")
    with pytest.raises(BodyModelError):
        load_smpl_npz(tmp_path / "x.npz")
    with pytest.raises(BodyModelError, match="not found"):
        SMPLBody(tmp_path / "missing.npz")


# --------------------------------------------------------------- official .pkl conversion
@pytest.fixture()
def fake_chumpy(monkeypatch):
    """A module ``chumpy.ch`` with a class ``Ch`` that pickles like chumpy's (state dict with 'x')."""
    chumpy = types.ModuleType("chumpy")
    ch = types.ModuleType("chumpy.ch")

    class Ch:
        def __init__(self, x):
            self.x = np.asarray(x)
            self._dirty_vars = set()
            self._itr = None

        def __getstate__(self):
            return dict(self.__dict__)

    Ch.__module__ = "chumpy.ch"
    Ch.__qualname__ = "Ch"
    ch.Ch = Ch
    chumpy.ch = ch
    monkeypatch.setitem(sys.modules, "chumpy", chumpy)
    monkeypatch.setitem(sys.modules, "chumpy.ch", ch)
    return Ch


@pytest.mark.parametrize("protocol", [0, 2])
def test_convert_smpl_pkl_on_a_fabricated_file(tmp_path, fake_chumpy, protocol):
    from scipy.sparse import csc_matrix

    arrays = _tiny_smpl_arrays()
    obj = dict(arrays)
    obj["shapedirs"] = fake_chumpy(arrays["shapedirs"])
    obj["J_regressor"] = csc_matrix(arrays["J_regressor"])
    obj["J_regressor_prior"] = csc_matrix(arrays["J_regressor"])
    obj["bs_style"], obj["bs_type"] = "lbs", "lrotmin"
    obj["J"] = fake_chumpy(arrays["J_regressor"] @ arrays["v_template"])
    src = tmp_path / "basicmodel_neutral_lbs_10_207_0_v1.1.0.pkl"
    src.write_bytes(pickle.dumps(obj, protocol=protocol))
    dst = convert_smpl_pkl(src, tmp_path / "out" / "SMPL_NEUTRAL.npz")
    assert dst.is_file() and not list(dst.parent.glob(".*partial*"))
    with np.load(dst, allow_pickle=False) as z:
        assert sorted(z.files) == sorted(arrays)
        for k, v in arrays.items():
            np.testing.assert_allclose(z[k], v, err_msg=k)
    assert isinstance(SMPLBody(dst), SMPLBody)


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _EvalEvil:
    def __reduce__(self):
        return (eval, ("__import__('os').getcwd()",))


@pytest.mark.parametrize("payload", ["system", "eval"])
def test_convert_smpl_pkl_refuses_malicious_pickles(tmp_path, payload):
    marker = tmp_path / "pwned"
    evil = _Evil(marker) if payload == "system" else _EvalEvil()
    data = _tiny_smpl_arrays()
    data["weights"] = evil
    src = tmp_path / "evil.pkl"
    src.write_bytes(pickle.dumps(data, protocol=2))
    dst = tmp_path / "out.npz"
    with pytest.raises(BodyModelError, match="refusing"):
        convert_smpl_pkl(src, dst)
    assert not marker.exists() and not dst.exists()


def test_convert_smpl_pkl_refuses_non_models(tmp_path, fake_chumpy):
    src = tmp_path / "a.pkl"
    src.write_bytes(pickle.dumps([1, 2, 3], protocol=2))
    with pytest.raises(BodyModelError, match="dict"):
        convert_smpl_pkl(src, tmp_path / "a.npz")
    data = _tiny_smpl_arrays()
    del data["f"]
    src.write_bytes(pickle.dumps(data, protocol=2))
    with pytest.raises(BodyModelError, match="missing"):
        convert_smpl_pkl(src, tmp_path / "a.npz")
    data = _tiny_smpl_arrays()
    expr = fake_chumpy(data["shapedirs"])
    del expr.x  # a chumpy expression (no stored value)
    data["shapedirs"] = expr
    src.write_bytes(pickle.dumps(data, protocol=2))
    with pytest.raises(BodyModelError, match="expression"):
        convert_smpl_pkl(src, tmp_path / "a.npz")
    src.write_bytes(b"garbage")
    with pytest.raises(BodyModelError):
        convert_smpl_pkl(src, tmp_path / "a.npz")
    with pytest.raises(FileNotFoundError):
        convert_smpl_pkl(tmp_path / "none.pkl", tmp_path / "a.npz")
    assert not (tmp_path / "a.npz").exists()


# ------------------------------------------------------------------------------ rendering
def _travelling_pose(body, T=10, distance=3.0) -> SkeletonPose:
    root = np.zeros((T, 3))
    root[:, 0] = np.linspace(0.0, distance, T)
    root[:, 1] = 0.95
    return _pose(T, root, body.rest_offsets())


def _body_mask(frame, background=(255, 255, 255)):
    return np.any(np.abs(frame.astype(int) - np.asarray(background)) > 12, axis=-1)


def test_rendered_mesh_is_a_centred_figure(body, renderer):
    pose = _travelling_pose(body)
    verts = body.vertices(pose)
    cfg = RenderConfig(size=96, floor=False, azimuth=0.0)
    frames = renderer.render_mesh(verts[[0, -1]], body.faces, cfg)
    assert frames.shape == (2, 96, 96, 3) and frames.dtype == np.uint8
    for fr in frames:
        assert fr.std() > 20
        mask = _body_mask(fr)
        assert 0.04 < mask.mean() < 0.6
        ys, xs = np.nonzero(mask)
        assert abs(xs.mean() - 48) < 0.15 * 96 and abs(ys.mean() - 48) < 0.2 * 96
        assert np.ptp(ys) > 0.6 * 96  # a standing body fills most of the height
    # with the floor: still a lit figure on a visible floor, not blank
    with_floor = renderer.render_mesh(verts[:1], body.faces, RenderConfig(size=96))[0]
    assert with_floor.std() > 20
    assert len(np.unique(with_floor.reshape(-1, 3), axis=0)) > 50


def test_follow_camera_keeps_a_travelling_body_centred(body, renderer):
    pose = _travelling_pose(body, T=6, distance=4.0)
    verts = body.vertices(pose)
    centres = {}
    for follow in (True, False):
        cfg = RenderConfig(size=64, floor=False, follow=follow, follow_smoothing=0.0, azimuth=0.0)
        frames = renderer.render_mesh(verts, body.faces, cfg)
        centres[follow] = np.array([np.nonzero(_body_mask(f))[1].mean() for f in frames])
    assert np.abs(centres[True] - 32).max() < 6
    assert np.ptp(centres[False]) > 20  # a fixed camera sees the body cross the image


def test_follow_camera_is_smooth():
    rng = np.random.default_rng(7)
    T = 60
    pts = np.zeros((T, 4, 3))
    pts[:, :, 2] = np.linspace(0, 6, T)[:, None] + rng.normal(scale=0.05, size=(T, 1))  # jittery walk
    pts[:, :, 1] = np.array([0.0, 0.5, 1.0, 1.7])
    cam = camera_path(pts, RenderConfig(follow=True))
    eye = cam.poses[:, :3, 3]
    accel = np.abs(np.diff(eye, n=2, axis=0)).max()
    assert accel < 0.01  # metres / frame^2 (raw jitter has ~0.1)
    assert np.allclose(cam.poses[:, :3, :3], cam.poses[:1, :3, :3])  # no rotation, no zoom
    assert np.allclose(eye[:, 1], eye[0, 1])


def _bent_pose(body, T=4) -> SkeletonPose:
    """A walk-like pose with bent elbows, knees and spine (joints where skinning blends)."""
    q = _identity_quats(T)
    for t in range(T):
        a = 0.3 + 0.25 * t
        for name, axis, ang in (("left_elbow", (0, 1, 0), 1.2 * a), ("right_knee", (1, 0, 0), a),
                                ("left_hip", (1, 0, 0), -a), ("spine2", (0, 0, 1), 0.3 * a),
                                ("left_shoulder", (0, 0, 1), -0.8)):
            q[t, IDX[name]] = qaxis_angle(np.asarray(axis, float), np.float64(ang))
    root = np.zeros((T, 3))
    root[:, 1] = 0.95
    root[:, 2] = np.linspace(0, 0.4, T)
    return _pose(T, root, body.rest_offsets(), q)


def test_skinned_normals_match_recomputed_ones(body):
    from viewer.render import vertex_normals

    pose = _bent_pose(body)
    verts, normals = body.vertices_and_normals(pose)
    np.testing.assert_array_equal(verts, body.vertices(pose))      # the same skinned positions
    assert normals.shape == verts.shape and normals.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(normals, axis=-1), 1.0, atol=1e-5)
    for t in range(len(verts)):
        ref = vertex_normals(verts[t], body.faces)
        ang = np.degrees(np.arccos(np.clip(np.sum(normals[t] * ref, -1), -1, 1)))
        assert np.median(ang) < 1.0 and np.percentile(ang, 95) < 8.0, (np.median(ang), np.percentile(ang, 95))


def test_in_place_mesh_renders_like_a_new_mesh_per_frame(body, renderer):
    """One mesh whose vertex buffer is overwritten each frame, drawn by our lean shaders, draws
    what the previous path (a new pyrender mesh every frame, pyrender's own shader, normals
    from the triangles) drew."""
    pose = _bent_pose(body)
    verts, normals = body.vertices_and_normals(pose)
    cfg = RenderConfig(size=96)
    old = renderer.render_mesh(verts, body.faces, cfg, in_place=False)
    same_normals = renderer.render_mesh(verts, body.faces, cfg, normals=normals, in_place=False)
    new = renderer.render_mesh(verts, body.faces, cfg, normals=normals)
    assert Path(renderer._r._renderer._program_cache.shader_dir) == SHADER_DIR   # lean shaders drew it
    # in-place update + lean shaders: the same pixels within one level (float rounding)
    assert np.abs(new.astype(int) - same_normals.astype(int)).max() <= 1
    assert np.abs(new.astype(int) - same_normals.astype(int)).mean() < 0.01
    diff = np.abs(new.astype(int) - old.astype(int))
    assert diff.mean() < 0.5 and np.percentile(diff, 99.5) < 40, (diff.mean(), np.percentile(diff, 99.5))
    # frames differ from each other (the buffer really changes), and a second clip still works
    assert np.abs(new[0].astype(int) - new[-1].astype(int)).mean() > 0.5
    again = renderer.render_mesh(verts[::-1], body.faces, cfg, normals=normals[::-1])
    np.testing.assert_array_equal(again, new[::-1])
    with pytest.raises(ValueError, match="normals"):
        renderer.render_mesh(verts, body.faces, cfg, normals=normals[:, :10])


def test_render_skeleton(renderer):
    T = 3
    q = _identity_quats(T)
    root = np.zeros((T, 3))
    root[:, 1] = 0.95
    joints = forward_kinematics(root, q, ADULT_OFFSETS)
    frames = renderer.render_skeleton(joints, RenderConfig(size=80, floor=False))
    assert frames.shape == (T, 80, 80, 3) and frames.dtype == np.uint8
    mask = _body_mask(frames[0])
    assert 0.02 < mask.mean() < 0.5 and frames[0].std() > 15
    assert renderer.render_skeleton(joints, RenderConfig(size=80))[0].std() > 15


def test_bad_render_input(body, renderer):
    with pytest.raises(ValueError):
        renderer.render_mesh(np.zeros((2, 10, 2)), body.faces)
    with pytest.raises(ValueError, match="range"):
        renderer.render_mesh(np.zeros((1, 3, 3)), np.array([[0, 1, 5]]))
    with pytest.raises(ValueError, match="size"):
        RenderConfig(size=7).validate()
    with pytest.raises(ValueError):
        renderer.render_skeleton(np.zeros((3, 21, 3)))


# ---------------------------------------------------------------------------------- MP4
def _read_mp4(path):
    import imageio.v2 as iio2
    with iio2.get_reader(str(path), format="FFMPEG") as r:
        return np.stack([f for f in r.iter_data()])


def test_write_mp4_round_trip(tmp_path):
    rng = np.random.default_rng(8)
    frames = np.repeat(np.linspace(0, 255, 5).astype(np.uint8)[:, None, None, None], 3, axis=-1)
    frames = np.broadcast_to(frames, (5, 48, 64, 3)).copy()
    frames[:, 10:20, 10:30] = rng.integers(0, 255, 3, dtype=np.uint8)
    out = write_mp4(frames, tmp_path / "a.mp4", fps=20)
    assert out == tmp_path / "a.mp4" and out.stat().st_size > 0
    back = _read_mp4(out)
    assert back.shape == (5, 48, 64, 3)
    assert np.abs(back.astype(int) - frames.astype(int)).mean() < 6
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.mp4"]
    # odd sizes are padded to even ones; iterables stream
    odd = write_mp4((np.full((33, 45, 3), 100, np.uint8) for _ in range(3)), tmp_path / "b.mp4", fps=10)
    assert _read_mp4(odd).shape == (3, 34, 46, 3)


def test_write_mp4_errors_leave_no_file(tmp_path):
    ok = np.zeros((2, 16, 16, 3), np.uint8)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        write_mp4(ok, tmp_path / "missing" / "a.mp4")
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError):
        write_mp4(ok, tmp_path / "file" / "a.mp4")
    with pytest.raises(ValueError, match="uint8"):
        write_mp4(ok.astype(np.float32), tmp_path / "a.mp4")
    with pytest.raises(ValueError, match="shape"):
        write_mp4(np.zeros((2, 16, 16), np.uint8), tmp_path / "a.mp4")
    with pytest.raises(ValueError, match="no frames|T >= 1"):
        write_mp4(np.zeros((0, 16, 16, 3), np.uint8), tmp_path / "a.mp4")
    with pytest.raises(ValueError, match=".mp4"):
        write_mp4(ok, tmp_path / "a.gif")

    def failing():
        yield np.zeros((16, 16, 3), np.uint8)
        yield np.zeros((16, 16, 3), np.uint8)
        raise RuntimeError("renderer broke")
    with pytest.raises(RuntimeError, match="renderer broke"):
        write_mp4(failing(), tmp_path / "a.mp4")
    with pytest.raises(ValueError, match="differs"):
        write_mp4([np.zeros((16, 16, 3), np.uint8), np.zeros((18, 16, 3), np.uint8)], tmp_path / "a.mp4")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]
    # an existing file survives a failed overwrite
    good = write_mp4(ok, tmp_path / "keep.mp4")
    size = good.stat().st_size
    with pytest.raises(RuntimeError):
        write_mp4(failing(), good)
    assert good.stat().st_size == size and len(_read_mp4(good)) == 2


def test_write_mp4_writer_thread_gives_the_same_video(tmp_path):
    rng = np.random.default_rng(3)
    frames = rng.integers(0, 255, (6, 32, 48, 3), dtype=np.uint8)
    a = write_mp4(iter(frames), tmp_path / "a.mp4", overlap=True)
    b = write_mp4(iter(frames), tmp_path / "b.mp4", overlap=False)
    np.testing.assert_array_equal(_read_mp4(a), _read_mp4(b))


def test_render_motion_mp4_end_to_end(tmp_path, body, renderer):
    from backend.data.mocap import load_base_clips

    joints = load_base_clips(["walk"])[0].clip.joints()[:4]
    out = render_motion_mp4(joints, tmp_path / "walk.mp4", RenderConfig(size=64), body=body,
                            renderer=renderer)
    back = _read_mp4(out)
    assert back.shape == (4, 64, 64, 3) and back.std() > 10
    sk = render_motion_mp4(joints, tmp_path / "skel.mp4", RenderConfig(size=48), skeleton_only=True)
    assert _read_mp4(sk).shape == (4, 48, 48, 3)


def test_render_motion_mp4_bad_input(tmp_path, body):
    from motioncore.features import MotionFormatError

    with pytest.raises(MotionFormatError):
        render_motion_mp4(np.zeros((4, 21, 3)), tmp_path / "a.mp4", body=body)
    bad = np.zeros((4, 22, 3))
    bad[2, 3, 1] = np.inf
    with pytest.raises(MotionFormatError):
        render_motion_mp4(bad, tmp_path / "a.mp4", skeleton_only=True)
    with pytest.raises(FileNotFoundError):
        render_motion_mp4(np.zeros((4, 22, 3)), tmp_path / "no" / "a.mp4", skeleton_only=True)
    assert list(tmp_path.iterdir()) == []


def test_render_error_type():
    assert issubclass(RenderError, RuntimeError)


def test_closing_one_renderer_leaves_the_others_working():
    """pyrender terminates the process-wide EGL display when a context is deleted; ours must
    not, or every other renderer (another thread, another size) fails with EGL_BAD_DISPLAY."""
    import threading

    from viewer.body import MannequinBody
    from viewer.render import RenderConfig, Renderer

    body = MannequinBody()
    V = body.rest_vertices()[None].repeat(2, 0)
    main = Renderer()
    main.render_mesh(V, body.faces, RenderConfig(size=48))
    other = Renderer()
    other.render_mesh(V, body.faces, RenderConfig(size=64))
    other.close()
    main.render_mesh(V, body.faces, RenderConfig(size=56))           # size change: new context

    def in_thread():
        r = Renderer()
        r.render_mesh(V, body.faces, RenderConfig(size=40))
        r.close()

    t = threading.Thread(target=in_thread)
    t.start()
    t.join()
    frames = main.render_mesh(V, body.faces, RenderConfig(size=56))
    assert frames.shape == (2, 56, 56, 3) and frames.std() > 0
    main.close()
