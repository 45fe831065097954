"""FBX (binary, read back with ufbx via pufbx) and GLB (pygltflib, trimesh) export of a skeleton motion."""
from __future__ import annotations

import os
import struct
from dataclasses import dataclass

import numpy as np
import pytest

from motioncore.quat import qaxis_angle, qmul, qrot, qto_matrix
from motioncore.skeleton import ADULT_OFFSETS, JOINT_NAMES, NUM_JOINTS, PARENTS, forward_kinematics
from viewer.fbx import FBX_VERSION, KTIME_PER_SECOND, euler_xyz_continuous, write_fbx
from viewer.gltf import write_glb


@dataclass
class Pose:
    root: np.ndarray
    quats: np.ndarray
    offsets: np.ndarray
    fps: float = 20.0


def _motion(T: int = 40, fps: float = 20.0, seed: int = 0) -> Pose:
    """Smooth random joint rotations, a turning and translating root that goes upside down
    (a half turn about x) part-way, and a joint passing exactly through gimbal lock."""
    rng = np.random.default_rng(seed)
    t = np.arange(T) / fps
    axes = rng.normal(size=(NUM_JOINTS, 3))
    axes /= np.linalg.norm(axes, axis=-1, keepdims=True)
    amp = rng.uniform(0.3, 1.5, NUM_JOINTS)
    freq = rng.uniform(0.3, 1.5, NUM_JOINTS)
    phase = rng.uniform(0.0, 6.0, NUM_JOINTS)
    angle = amp * np.sin(2 * np.pi * freq * t[:, None] + phase)
    q = qaxis_angle(np.broadcast_to(axes, (T, NUM_JOINTS, 3)), angle)
    yaw = qaxis_angle(np.array([0.0, 1.0, 0.0]), 2.5 * t)
    flip = qaxis_angle(np.array([1.0, 0.0, 0.0]), np.clip((t - 0.4) * 5.0, 0.0, np.pi))
    q[:, 0] = qmul(yaw, qmul(flip, q[:, 0]))
    # spine1 turns about y through exactly +90 degrees (Euler XYZ gimbal lock) and beyond
    spine_angle = np.linspace(0.0, np.pi, T)
    spine_angle[T // 2] = np.pi / 2
    q[:, 3] = qaxis_angle(np.array([0.0, 1.0, 0.0]), spine_angle)
    root = np.stack([np.sin(t), 0.9 + 0.1 * np.cos(3 * t), 0.5 * t], axis=-1)
    return Pose(root, q, ADULT_OFFSETS.copy(), fps)


def _rot_err_deg(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    dot = np.abs(np.sum(a * b, axis=-1)) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))
    return np.degrees(2 * np.arccos(np.clip(dot, -1.0, 1.0)))


def _quat_from_euler_xyz_deg(e: np.ndarray) -> np.ndarray:
    r = np.radians(e)
    qx = qaxis_angle(np.array([1.0, 0.0, 0.0]), r[..., 0])
    qy = qaxis_angle(np.array([0.0, 1.0, 0.0]), r[..., 1])
    qz = qaxis_angle(np.array([0.0, 0.0, 1.0]), r[..., 2])
    return qmul(qz, qmul(qy, qx))


# ----------------------------------------------------------------------------- FBX

def _read_fbx_tree(data: bytes):
    """Minimal reader of the binary node records (checks every end offset) -> {name: [nodes]}."""
    assert data[:23] == b"Kaydara FBX Binary  \x00\x1a\x00"
    version = struct.unpack_from("<I", data, 23)[0]
    wide = version >= 7500
    meta, msize = ("<3Q", 24) if wide else ("<3I", 12)

    def prop(pos):
        code = chr(data[pos])
        pos += 1
        scalar = {"Y": "<h", "C": "<?", "I": "<i", "F": "<f", "D": "<d", "L": "<q"}
        if code in scalar:
            v = struct.unpack_from(scalar[code], data, pos)[0]
            return v, pos + struct.calcsize(scalar[code])
        if code in "SR":
            n = struct.unpack_from("<I", data, pos)[0]
            raw = data[pos + 4:pos + 4 + n]
            return (raw.decode("utf-8") if code == "S" else raw), pos + 4 + n
        n, enc, clen = struct.unpack_from("<3I", data, pos)
        assert enc == 0
        dt = {"i": "<i4", "l": "<i8", "f": "<f4", "d": "<f8", "b": "?"}[code]
        return np.frombuffer(data, dt, n, pos + 12), pos + 12 + clen

    def node(pos):
        end, nprops, plen = struct.unpack_from(meta, data, pos)
        if end == 0:
            return None, pos + msize + 1
        nlen = data[pos + msize]
        name = data[pos + msize + 1:pos + msize + 1 + nlen].decode()
        pos += msize + 1 + nlen
        props, start = [], pos
        for _ in range(nprops):
            v, pos = prop(pos)
            props.append(v)
        assert pos - start == plen
        children = []
        while pos < end:
            child, pos = node(pos)
            if child is None:
                break
            children.append(child)
        assert pos == end, (name, pos, end)
        return (name, props, children), pos

    top, pos = [], 27
    while True:
        n, pos = node(pos)
        if n is None:
            break
        top.append(n)
    assert data[-16:] == bytes.fromhex("f85a8c6adef5d97eece90ce3758f290b")
    return version, top


def _settings(top) -> dict:
    gs = next(n for n in top if n[0] == "GlobalSettings")
    props = next(c for c in gs[2] if c[0] == "Properties70")
    return {p[1][0]: p[1][4:] for p in props[2]}


def test_fbx_reads_back_with_ufbx(tmp_path):
    pufbx = pytest.importorskip("pufbx")
    pose = _motion(T=40)
    T = len(pose.root)
    path = write_fbx(tmp_path / "motion.fbx", pose)
    scene = pufbx.load_fbx(str(path))
    # 22 bones with the joint names and the skeleton's hierarchy (under one Null root)
    assert scene.num_bones == NUM_JOINTS
    nodes = {n.name: n for n in scene.nodes}
    for j, name in enumerate(JOINT_NAMES):
        assert nodes[name].bone is not None
        parent = nodes[name].parent.name
        assert parent == ("Armature" if j == 0 else JOINT_NAMES[PARENTS[j]])
    # duration and keys: one key a frame at frame / fps
    stack = scene.anim_stacks[0]
    assert stack.time_begin == pytest.approx(0.0)
    assert stack.time_end == pytest.approx((T - 1) / pose.fps)
    assert scene.num_anim_curves == 3 * (NUM_JOINTS + 1)
    for curve in scene.anim_curves:
        keys = curve.get_keyframes()
        assert len(keys) == T
        np.testing.assert_allclose(keys["time"], np.arange(T) / pose.fps, atol=1e-9)
    # evaluated local transforms at every frame (ufbx composes the Euler curves itself)
    baked = pufbx.bake_anim(scene, stack.anim, resample_rate=pose.fps)
    evaluated = {scene.nodes[b.typed_id].name: b for b in baked.modified_nodes}
    rot = np.zeros((T, NUM_JOINTS, 4))
    for j, name in enumerate(JOINT_NAMES):
        keys = evaluated[name].rotation_keys
        assert len(keys) == T
        np.testing.assert_allclose(keys["time"], np.arange(T) / pose.fps, atol=1e-9)
        v = keys["value"]
        rot[:, j] = np.stack([v["w"], v["x"], v["y"], v["z"]], axis=-1)
    assert _rot_err_deg(rot, pose.quats).max() < 0.5
    v = evaluated["pelvis"].translation_keys["value"]
    root_cm = np.stack([v["x"], v["y"], v["z"]], axis=-1)
    # world joint positions from ufbx's hierarchy, rest offsets and evaluated transforms
    pos = np.zeros((T, NUM_JOINTS, 3))
    glob = np.zeros((T, NUM_JOINTS, 4))
    for j, name in enumerate(JOINT_NAMES):
        node = nodes[name]
        if j == 0:
            pos[:, 0], glob[:, 0] = root_cm, rot[:, 0]
            continue
        p = JOINT_NAMES.index(node.parent.name)
        t = node.lcl_translation
        local = np.array([t.x, t.y, t.z])
        pos[:, j] = pos[:, p] + qrot(glob[:, p], np.broadcast_to(local, (T, 3)))
        glob[:, j] = qmul(glob[:, p], rot[:, j])
    expected_cm = forward_kinematics(pose.root, pose.quats, pose.offsets) * 100.0
    assert np.abs(pos - expected_cm).max() < 0.1  # 1 mm


def test_fbx_settings_and_records(tmp_path):
    pose = _motion(T=12)
    version, top = _read_fbx_tree(write_fbx(tmp_path / "a.fbx", pose).read_bytes())
    assert version == FBX_VERSION == 7400
    names = [n[0] for n in top]
    for required in ("FBXHeaderExtension", "GlobalSettings", "Documents", "Definitions", "Objects", "Connections"):
        assert required in names
    s = _settings(top)
    assert (s["UpAxis"][0], s["UpAxisSign"][0], s["FrontAxis"][0], s["CoordAxis"][0]) == (1, 1, 2, 0)
    assert s["UnitScaleFactor"][0] == 1.0  # centimetres
    assert s["TimeMode"][0] == 14 and s["CustomFrameRate"][0] == 20.0  # custom 20 fps
    assert s["TimeSpanStop"][0] == 11 * KTIME_PER_SECOND // 20
    objects = next(n for n in top if n[0] == "Objects")[2]
    models = [o for o in objects if o[0] == "Model"]
    assert sum(m[1][2] == "LimbNode" for m in models) == NUM_JOINTS
    curves = [o for o in objects if o[0] == "AnimationCurve"]
    key_time = next(c for c in curves[0][2] if c[0] == "KeyTime")[1][0]
    assert key_time.dtype == np.int64 and list(key_time) == [i * 2309307900 for i in range(12)]

    # a standard frame rate uses its own time mode; scale 1 means metres (100 cm per unit)
    pose30 = Pose(pose.root, pose.quats, pose.offsets, fps=30.0)
    _, top = _read_fbx_tree(write_fbx(tmp_path / "b.fbx", pose30, scale=1.0).read_bytes())
    s = _settings(top)
    assert s["TimeMode"][0] == 6 and s["UnitScaleFactor"][0] == 100.0


def test_euler_curves_are_continuous_and_exact():
    T = 90
    spin = qaxis_angle(np.array([0.0, 1.0, 0.0]), np.linspace(0.0, 6 * np.pi, T))  # 3 turns about y
    wobble = 0.3 * np.sin(np.linspace(0, 7, T))
    tilt_x = qaxis_angle(np.array([1.0, 0.0, 0.0]), wobble)
    tilt_z = qaxis_angle(np.array([0.0, 0.0, 1.0]), wobble)
    q = np.stack([spin, qmul(spin, tilt_x), qmul(tilt_z, spin)], axis=1)  # x then y, y then z
    e = euler_xyz_continuous(q)
    step = np.degrees(6 * np.pi / (T - 1))
    assert np.abs(np.diff(e, axis=0)).max() < 3 * step  # no 360 (or 180) degree jumps
    assert np.ptp(e[:, 0, 1]) == pytest.approx(1080.0, abs=1e-6)  # unwrapped over 3 turns
    assert _rot_err_deg(_quat_from_euler_xyz_deg(e), q).max() < 1e-4
    # gimbal lock and upside-down rotations still round-trip exactly
    pose = _motion(T=30)
    e = euler_xyz_continuous(pose.quats)
    assert _rot_err_deg(_quat_from_euler_xyz_deg(e), pose.quats).max() < 1e-4


def test_fbx_single_frame_loads(tmp_path):
    pufbx = pytest.importorskip("pufbx")
    pose = _motion(T=1)
    scene = pufbx.load_fbx(str(write_fbx(tmp_path / "one.fbx", pose)))
    assert scene.num_bones == NUM_JOINTS
    assert scene.anim_stacks[0].time_end == pytest.approx(0.0)


# ----------------------------------------------------------------------------- GLB

def _accessor(doc, index: int) -> np.ndarray:
    acc = doc.accessors[index]
    view = doc.bufferViews[acc.bufferView]
    dtype = {5126: "<f4", 5121: "u1", 5123: "<u2", 5125: "<u4"}[acc.componentType]
    n = {"SCALAR": 1, "VEC3": 3, "VEC4": 4, "MAT4": 16}[acc.type]
    arr = np.frombuffer(doc.binary_blob(), dtype, acc.count * n, view.byteOffset + (acc.byteOffset or 0))
    return arr.reshape(acc.count, n) if n > 1 else arr


def _trs_world(doc, frame_values: dict[int, dict[str, np.ndarray]]) -> dict[int, np.ndarray]:
    """World matrices of the glTF nodes, static TRS overridden by animated values."""
    parent = {c: i for i, n in enumerate(doc.nodes) for c in (n.children or [])}
    out: dict[int, np.ndarray] = {}

    def world(i):
        if i in out:
            return out[i]
        n = doc.nodes[i]
        t = frame_values.get(i, {}).get("translation", n.translation or [0, 0, 0])
        r = frame_values.get(i, {}).get("rotation", n.rotation or [0, 0, 0, 1])
        s = n.scale or [1, 1, 1]
        m = np.eye(4)
        m[:3, :3] = qto_matrix(np.array([r[3], r[0], r[1], r[2]], dtype=np.float64)) * np.array(s)
        m[:3, 3] = t
        out[i] = world(parent[i]) @ m if i in parent else m
        return out[i]

    for i in range(len(doc.nodes)):
        world(i)
    return out


def _frame_values(doc, anim, t: int) -> dict[int, dict[str, np.ndarray]]:
    values: dict[int, dict[str, np.ndarray]] = {}
    for ch in anim.channels:
        out = _accessor(doc, anim.samplers[ch.sampler].output)
        values.setdefault(ch.target.node, {})[ch.target.path] = out[t].astype(np.float64)
    return values


def test_glb_structure_and_animation(tmp_path):
    pygltflib = pytest.importorskip("pygltflib")
    trimesh = pytest.importorskip("trimesh")
    pose = _motion(T=25)
    T = len(pose.root)
    path = write_glb(tmp_path / "m.glb", pose)
    doc = pygltflib.GLTF2.load(str(path))
    assert [n.name for n in doc.nodes[:NUM_JOINTS]] == list(JOINT_NAMES)
    for j in range(1, NUM_JOINTS):
        assert j in doc.nodes[PARENTS[j]].children
    assert doc.scenes[doc.scene].nodes[0] == 0
    assert len(doc.animations) == 1
    anim = doc.animations[0]
    rot_targets = sorted(c.target.node for c in anim.channels if c.target.path == "rotation")
    tr_targets = [c.target.node for c in anim.channels if c.target.path == "translation"]
    assert rot_targets == list(range(NUM_JOINTS)) and tr_targets == [0]
    assert len(anim.samplers) == len(anim.channels) == NUM_JOINTS + 1
    for ch in anim.channels:
        sampler = anim.samplers[ch.sampler]
        assert sampler.interpolation == "LINEAR"
        times = _accessor(doc, sampler.input)
        np.testing.assert_allclose(times, np.arange(T) / pose.fps, atol=1e-6)
        acc = doc.accessors[sampler.input]
        assert acc.min == [float(times.min())] and acc.max == [float(times.max())]
        out = _accessor(doc, sampler.output)
        if ch.target.path == "rotation":
            q_xyzw = pose.quats[:, ch.target.node]
            expected = np.concatenate([q_xyzw[:, 1:], q_xyzw[:, :1]], axis=-1)  # glTF order: x, y, z, w
            np.testing.assert_allclose(np.linalg.norm(out, axis=-1), 1.0, atol=1e-6)
            assert np.all(np.abs(np.abs(np.sum(out * expected, axis=-1)) - 1.0) < 1e-6)  # equal up to sign
            assert np.all(np.sum(out[1:] * out[:-1], axis=-1) >= 0)  # continuous signs for slerp
        else:
            np.testing.assert_allclose(out, pose.root, atol=1e-6)
    # POSITION accessors have min/max (required by the spec) that bound the data
    for mesh in doc.meshes:
        for prim in mesh.primitives:
            acc = doc.accessors[prim.attributes.POSITION]
            data = _accessor(doc, prim.attributes.POSITION)
            assert acc.min == [float(x) for x in data.min(0)] and acc.max == [float(x) for x in data.max(0)]
    # joints follow forward kinematics when the animation is applied
    fk = forward_kinematics(pose.root, pose.quats, pose.offsets)
    for t in (0, T // 2, T - 1):
        world = _trs_world(doc, _frame_values(doc, anim, t))
        got = np.array([world[j][:3, 3] for j in range(NUM_JOINTS)])
        assert np.abs(got - fk[t]).max() < 1e-4
    # default geometry: bone meshes hang below the joint nodes; trimesh loads the file
    assert len(doc.meshes) == 1 and len(doc.nodes) > NUM_JOINTS
    scene = trimesh.load(str(path))
    assert len(scene.geometry) >= 1
    lo, hi = scene.bounds
    assert hi[1] - lo[1] > 1.0  # a body-sized figure


def test_glb_skinned_mesh(tmp_path):
    pygltflib = pytest.importorskip("pygltflib")
    trimesh = pytest.importorskip("trimesh")
    pose = _motion(T=10)
    rng = np.random.default_rng(3)
    rest = np.zeros((NUM_JOINTS, 3))
    for j in range(1, NUM_JOINTS):
        rest[j] = rest[PARENTS[j]] + pose.offsets[j]
    # one small triangle rigidly bound to every joint, plus one vertex spread over 6 joints
    verts, faces, weights = [], [], []
    for j in range(NUM_JOINTS):
        base = len(verts)
        for k in range(3):
            verts.append(rest[j] + 0.02 * rng.normal(size=3))
            w = np.zeros(NUM_JOINTS)
            w[j] = 1.0
            weights.append(w)
        faces.append([base, base + 1, base + 2])
    w = np.zeros(NUM_JOINTS)
    w[[1, 4, 7, 2, 5, 8]] = [0.4, 0.2, 0.1, 0.2, 0.05, 0.05]
    verts.append(rest[1] + 0.01)
    weights.append(w)
    faces.append([0, 1, len(verts) - 1])
    verts, faces, weights = np.array(verts), np.array(faces), np.array(weights)

    path = write_glb(tmp_path / "s.glb", pose, mesh=(verts, faces, weights))
    doc = pygltflib.GLTF2.load(str(path))
    assert len(doc.skins) == 1 and doc.skins[0].joints == list(range(NUM_JOINTS))
    body = next(i for i, n in enumerate(doc.nodes) if n.skin == 0)
    prim = doc.meshes[doc.nodes[body].mesh].primitives[0]
    joints = _accessor(doc, prim.attributes.JOINTS_0).astype(int)
    w4 = _accessor(doc, prim.attributes.WEIGHTS_0)
    np.testing.assert_allclose(w4.sum(1), 1.0, atol=1e-6)
    assert sorted(joints[-1]) == [1, 2, 4, 7] and w4[-1].max() == pytest.approx(0.4 / 0.9, abs=1e-6)
    ibm = _accessor(doc, doc.skins[0].inverseBindMatrices).reshape(-1, 4, 4).transpose(0, 2, 1)
    np.testing.assert_allclose(ibm[:, :3, 3], -rest, atol=1e-6)
    # skinned vertices (glTF skinning equation) follow their joints' motion
    fk = forward_kinematics(pose.root, pose.quats, pose.offsets)
    glob = np.zeros((len(pose.root), NUM_JOINTS, 4))
    glob[:, 0] = pose.quats[:, 0]
    for j in range(1, NUM_JOINTS):
        glob[:, j] = qmul(glob[:, PARENTS[j]], pose.quats[:, j])
    anim = doc.animations[0]
    for t in (0, 9):
        world = _trs_world(doc, _frame_values(doc, anim, t))
        for v in range(3 * NUM_JOINTS):
            j = v // 3
            m = sum(w4[v, k] * world[joints[v, k]] @ ibm[joints[v, k]] for k in range(4))
            got = (m @ np.append(verts[v], 1.0))[:3]
            want = fk[t, j] + qrot(glob[t, j], verts[v] - rest[j])
            assert np.abs(got - want).max() < 1e-4
    assert len(trimesh.load(str(path)).geometry) == 1


def test_glb_rest_root_and_single_frame(tmp_path):
    pygltflib = pytest.importorskip("pygltflib")
    pose = _motion(T=1)
    verts = np.array([[0.0, 1.0, 0.0], [0.1, 1.0, 0.0], [0.0, 1.1, 0.0]])
    weights = np.zeros((3, NUM_JOINTS))
    weights[:, 0] = 1.0
    doc = pygltflib.GLTF2.load(str(write_glb(tmp_path / "r.glb", pose, mesh=(verts, [[0, 1, 2]], weights, [0, 1, 0]))))
    ibm = _accessor(doc, doc.skins[0].inverseBindMatrices).reshape(-1, 4, 4).transpose(0, 2, 1)
    np.testing.assert_allclose(ibm[0, :3, 3], [0.0, -1.0, 0.0])
    times = _accessor(doc, doc.animations[0].samplers[0].input)
    assert list(times) == [0.0]


# ----------------------------------------------------------------------------- errors

def _bad_poses():
    good = _motion(T=5)
    nan_root = good.root.copy()
    nan_root[2, 1] = np.nan
    nan_q = good.quats.copy()
    nan_q[1, 5, 0] = np.nan
    zero_q = good.quats.copy()
    zero_q[0, 3] = 0.0
    return {
        "nan root": (Pose(nan_root, good.quats, good.offsets), "non-finite"),
        "nan quat": (Pose(good.root, nan_q, good.offsets), "non-finite"),
        "zero quat": (Pose(good.root, zero_q, good.offsets), "zero quaternion"),
        "no frames": (Pose(np.zeros((0, 3)), np.zeros((0, NUM_JOINTS, 4)), good.offsets), "zero frames"),
        "quats shape": (Pose(good.root, good.quats[:, :21], good.offsets), "quats must have shape"),
        "frames differ": (Pose(good.root[:4], good.quats, good.offsets), "quats must have shape"),
        "offsets shape": (Pose(good.root, good.quats, good.offsets[:, :2]), "offsets must have shape"),
        "bad fps": (Pose(good.root, good.quats, good.offsets, fps=0.0), "fps"),
        "not a pose": (object(), "attributes"),
    }


@pytest.mark.parametrize("case", list(_bad_poses()))
@pytest.mark.parametrize("fmt", ["fbx", "glb"])
def test_bad_pose_raises_and_writes_nothing(tmp_path, case, fmt):
    pose, message = _bad_poses()[case]
    write = write_fbx if fmt == "fbx" else write_glb
    with pytest.raises(ValueError, match=message):
        write(tmp_path / f"x.{fmt}", pose)
    assert os.listdir(tmp_path) == []


def test_bad_names_and_mesh_raise(tmp_path):
    pose = _motion(T=3)
    with pytest.raises(ValueError, match="names"):
        write_fbx(tmp_path / "a.fbx", pose, names=JOINT_NAMES[:21])
    with pytest.raises(ValueError, match="unique"):
        write_glb(tmp_path / "a.glb", pose, names=("j",) * NUM_JOINTS)
    with pytest.raises(ValueError, match="scale"):
        write_fbx(tmp_path / "a.fbx", pose, scale=-1.0)
    v = np.zeros((3, 3))
    w = np.ones((3, NUM_JOINTS))
    with pytest.raises(ValueError, match="faces index"):
        write_glb(tmp_path / "a.glb", pose, mesh=(v, [[0, 1, 3]], w))
    with pytest.raises(ValueError, match="skin_weights must have shape"):
        write_glb(tmp_path / "a.glb", pose, mesh=(v, [[0, 1, 2]], w[:, :5]))
    with pytest.raises(ValueError, match="no skin weight"):
        write_glb(tmp_path / "a.glb", pose, mesh=(v, [[0, 1, 2]], np.zeros((3, NUM_JOINTS))))
    assert os.listdir(tmp_path) == []


def test_failed_write_keeps_existing_file(tmp_path):
    target = tmp_path / "keep.glb"
    target.write_bytes(b"old")
    bad = _motion(T=3)
    bad.root[0, 0] = np.inf
    with pytest.raises(ValueError):
        write_glb(target, bad)
    assert target.read_bytes() == b"old" and os.listdir(tmp_path) == ["keep.glb"]


@pytest.mark.parametrize("write,ext", [(write_fbx, "fbx"), (write_glb, "glb")])
def test_unwritable_destination(tmp_path, monkeypatch, write, ext):
    pose = _motion(T=3)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        write(tmp_path / "missing" / f"a.{ext}", pose)
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError, match="not a folder"):
        write(tmp_path / "file" / f"a.{ext}", pose)
    with pytest.raises(IsADirectoryError, match="is a folder"):
        write(tmp_path, pose)
    ro = tmp_path / "ro"
    ro.mkdir()
    if os.geteuid() == 0:  # root writes read-only folders anyway: refuse the temp file instead
        import motioncore.io

        def refuse(*args, **kwargs):
            raise PermissionError(13, "Permission denied")

        monkeypatch.setattr(motioncore.io.tempfile, "mkstemp", refuse)
    else:
        ro.chmod(0o500)
    try:
        with pytest.raises(PermissionError, match="not writable"):
            write(ro / f"a.{ext}", pose)
        assert os.listdir(ro) == []
    finally:
        ro.chmod(0o700)


def test_error_while_writing_leaves_nothing(tmp_path):
    from motioncore.io import atomic_write

    def half(fh):
        fh.write(b"partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(tmp_path / "x.fbx", half)
    assert os.listdir(tmp_path) == []


def test_glb_floor_covers_the_path_at_ground_level(tmp_path):
    pygltflib = pytest.importorskip("pygltflib")
    pose = _motion(T=25)
    pose.root[:, 0] += np.linspace(0, 6.0, len(pose.root))      # 6 m of travel along x
    doc = pygltflib.GLTF2.load(str(write_glb(tmp_path / "f.glb", pose, floor=True)))
    floor = next(n for n in doc.nodes if n.name == "floor")
    assert doc.nodes.index(floor) in doc.scenes[doc.scene].nodes
    prim = doc.meshes[floor.mesh].primitives[0]
    pos = _accessor(doc, prim.attributes.POSITION)
    assert np.all(pos[:, 1] == 0.0), "the floor is at y = 0"
    for ax in (0, 2):                                            # the path plus a margin
        assert pos[:, ax].min() < pose.root[:, ax].min() - 0.9
        assert pos[:, ax].max() > pose.root[:, ax].max() + 0.9
    colours = _accessor(doc, prim.attributes.COLOR_0)
    assert len(np.unique(colours[:, 0])) == 2, "checkered"
    plain = pygltflib.GLTF2.load(str(write_glb(tmp_path / "p.glb", pose)))
    assert "floor" not in [n.name for n in plain.nodes]
