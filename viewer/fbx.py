"""Binary FBX export of a skeleton animation, written from scratch (no Blender, no Autodesk SDK).

``write_fbx(path, pose)`` writes a binary FBX 7400 file (the version Blender's exporter and
most tools read) holding

* ``GlobalSettings``: Y up, Z front, X coordinate axis (the skeleton's own axes: y up, a body
  faces +z, its left is +x), ``UnitScaleFactor`` = centimetres per file unit (1.0 for the
  default ``scale=100``: file units are centimetres), ``TimeMode`` = the standard FBX mode of
  the frame rate when there is one, else custom (14) with ``CustomFrameRate`` = fps, and the
  ``TimeSpanStart``/``TimeSpanStop`` of the animation;
* one ``Null`` model "Armature" at the origin (Blender turns it into the armature object) and
  below it one ``LimbNode`` model per joint, named after the joint, parented as the skeleton
  (``motioncore.skeleton.PARENTS``), each with a ``NodeAttribute`` LimbNode (TypeFlags Skeleton);
  ``Lcl Translation`` = rest offset * scale, ``Lcl Rotation`` = 0 at rest, rotation order XYZ,
  no pre/post rotation;
* one ``AnimationStack`` + ``AnimationLayer``; an ``AnimationCurveNode`` on ``Lcl Rotation``
  of every joint (Euler XYZ in degrees, unwrapped so the curves are continuous over time) and on
  ``Lcl Translation`` of the root joint, each driving three ``AnimationCurve`` (one key a frame,
  times in FBX ticks, 46186158000 a second, linear interpolation);
* ``Connections`` (object-object and object-property) tying all of it together.

The binary layout (header, node records, typed properties, null records, footer) follows the
publicly documented FBX binary format. Arrays are stored uncompressed (encoding 0).

``validate_pose`` and ``atomic_write`` are shared with :mod:`viewer.gltf`.
"""
from __future__ import annotations

import math
import struct
from pathlib import Path
from typing import Sequence

import numpy as np

from motioncore.io import atomic_write
from motioncore.quat import qto_matrix
from motioncore.skeleton import FPS, JOINT_NAMES, NUM_JOINTS, PARENTS

FBX_VERSION = 7400
KTIME_PER_SECOND = 46186158000  # FBX time unit ("ticks") per second

# Standard FBX time modes (FbxTime::EMode) for the frame rates that have one; anything else is
# written as custom (14) with GlobalSettings.CustomFrameRate.
_TIME_MODES = (
    (120.0, 1), (100.0, 2), (60.0, 3), (50.0, 4), (48.0, 5), (30.0, 6), (30.0 / 1.001, 9),
    (25.0, 10), (24.0, 11), (24.0 / 1.001, 13), (96.0, 15), (72.0, 16), (60.0 / 1.001, 17),
    (120.0 / 1.001, 18),
)
_TIME_MODE_CUSTOM = 14

# KeyAttrFlags bits (FbxAnimCurveDef): interpolation constant = 0x2, linear = 0x4, cubic = 0x8.
_KEY_INTERPOLATION_LINEAR = 0x4
_KEY_VERSION = 4008

_HEADER_MAGIC = b"Kaydara FBX Binary  \x00\x1a\x00"
# Footer constants of the binary format (the same in every file written by the common tools).
_FOOTER_ID = bytes.fromhex("fabcab09d0c8d466b176fb831cf7267e")
_FOOTER_MAGIC = bytes.fromhex("f85a8c6adef5d97eece90ce3758f290b")
_FILE_ID = bytes.fromhex("28b32aebb624ccc2bfc8b02aa92bfcf1")
_CREATION_TIME = "1970-01-01 10:00:00:000"
_NAME_CLASS_SEP = "\x00\x01"  # binary FBX object names are "name\x00\x01Class"


# --------------------------------------------------------------------------- pose validation

def validate_pose(pose, names: Sequence[str] = JOINT_NAMES):
    """Check and convert a SkeletonPose-like object.

    Returns ``(root (T,3), quats (T,22,4) unit wxyz, offsets (22,3), fps, names tuple)`` as
    float64 arrays, or raises ``ValueError`` saying what is wrong.
    """
    missing = [a for a in ("root", "quats", "offsets") if not hasattr(pose, a)]
    if missing:
        raise ValueError(f"pose must have attributes root, quats and offsets; missing: {', '.join(missing)}")
    try:
        root = np.asarray(pose.root, dtype=np.float64)
        quats = np.asarray(pose.quats, dtype=np.float64)
        offsets = np.asarray(pose.offsets, dtype=np.float64)
        fps = float(getattr(pose, "fps", FPS))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"pose arrays must be numeric: {exc}") from None
    if root.ndim != 2 or root.shape[1] != 3:
        raise ValueError(f"pose.root must have shape (T, 3), got {root.shape}")
    T = root.shape[0]
    if T == 0:
        raise ValueError("pose has zero frames")
    if quats.shape != (T, NUM_JOINTS, 4):
        raise ValueError(f"pose.quats must have shape ({T}, {NUM_JOINTS}, 4) to match root, got {quats.shape}")
    if offsets.shape != (NUM_JOINTS, 3):
        raise ValueError(f"pose.offsets must have shape ({NUM_JOINTS}, 3), got {offsets.shape}")
    for label, arr in (("root", root), ("quats", quats), ("offsets", offsets)):
        if not np.all(np.isfinite(arr)):
            bad = np.argwhere(~np.isfinite(arr))[0]
            raise ValueError(f"pose.{label} has a non-finite value (NaN or inf) at index {tuple(int(i) for i in bad)}")
    if not (math.isfinite(fps) and fps > 0):
        raise ValueError(f"pose.fps must be a positive finite number, got {fps}")
    norms = np.linalg.norm(quats, axis=-1)
    if np.any(norms < 1e-8):
        t, j = np.argwhere(norms < 1e-8)[0]
        raise ValueError(f"pose.quats has a zero quaternion at frame {t}, joint {j}")
    quats = quats / norms[..., None]
    names = tuple(names)
    if len(names) != NUM_JOINTS:
        raise ValueError(f"names must have {NUM_JOINTS} entries, got {len(names)}")
    for n in names:
        if not isinstance(n, str) or not n or "\x00" in n:
            raise ValueError(f"joint names must be non-empty strings without NUL characters, got {n!r}")
    if len(set(names)) != len(names):
        raise ValueError("joint names must be unique")
    return root, quats, offsets, fps, names


# --------------------------------------------------------------------------- rotations

def _euler_xyz(m: np.ndarray, prefer_x: np.ndarray | None = None) -> np.ndarray:
    """Euler angles (..., 3) in radians with ``m == Rz(c) @ Ry(b) @ Rx(a)`` (FBX order XYZ).

    At gimbal lock (|b| = 90 deg) only ``a -/+ c`` is defined: ``a`` is then taken from
    ``prefer_x`` (the previous frame) when given, else 0.
    """
    cb = np.hypot(m[..., 0, 0], m[..., 1, 0])
    b = np.arctan2(-m[..., 2, 0], cb)
    a = np.arctan2(m[..., 2, 1], m[..., 2, 2])
    c = np.arctan2(m[..., 1, 0], m[..., 0, 0])
    lock = cb < 1e-6
    if np.any(lock):
        a_l = np.zeros_like(a) if prefer_x is None else np.broadcast_to(prefer_x, a.shape).copy()
        up = -m[..., 2, 0] > 0  # b = +90: m01 = sin(a - c), m11 = cos(a - c)
        c_up = a_l - np.arctan2(m[..., 0, 1], m[..., 1, 1])
        c_dn = np.arctan2(-m[..., 0, 1], m[..., 1, 1]) - a_l  # b = -90: angle is a + c
        a = np.where(lock, a_l, a)
        c = np.where(lock, np.where(up, c_up, c_dn), c)
    return np.stack([a, b, c], axis=-1)


def _wrap_near(e: np.ndarray, ref: np.ndarray) -> np.ndarray:
    return e + 2.0 * np.pi * np.round((ref - e) / (2.0 * np.pi))


def euler_xyz_continuous(quats: np.ndarray) -> np.ndarray:
    """Per-frame Euler XYZ angles (T, J, 3) in degrees, continuous over time.

    Each frame picks, of the two equivalent Euler triples (a, b, c) and (a+180, 180-b, c+180)
    shifted by whole turns, the one closest to the previous frame.
    """
    mats = qto_matrix(quats)
    T = quats.shape[0]
    out = np.empty(quats.shape[:-1] + (3,))
    out[0] = _euler_xyz(mats[0])
    for t in range(1, T):
        prev = out[t - 1]
        e1 = _euler_xyz(mats[t], prefer_x=prev[..., 0])
        e2 = e1 * np.array([1.0, -1.0, 1.0]) + np.array([np.pi, np.pi, np.pi])
        e1 = _wrap_near(e1, prev)
        e2 = _wrap_near(e2, prev)
        d1 = np.abs(e1 - prev).sum(-1, keepdims=True)
        d2 = np.abs(e2 - prev).sum(-1, keepdims=True)
        out[t] = np.where(d1 <= d2, e1, e2)
    return np.degrees(out)


# --------------------------------------------------------------------------- binary node records

class _Node:
    __slots__ = ("name", "props", "children")

    def __init__(self, name: str, *props, children: Sequence["_Node"] | None = None):
        self.name = name
        self.props = list(props)
        self.children = list(children or ())

    def add(self, child: "_Node") -> "_Node":
        self.children.append(child)
        return child


# Typed scalar properties: (type code, value).
def _I(v): return ("I", int(v))          # int32
def _L(v): return ("L", int(v))          # int64
def _D(v): return ("D", float(v))        # float64
def _F(v): return ("F", float(v))        # float32
def _C(v): return ("C", bool(v))         # bool
def _S(v): return ("S", v)               # string
def _R(v): return ("R", bytes(v))        # raw bytes


_ARRAY_CODES = {("i", 4): "i", ("i", 8): "l", ("f", 4): "f", ("f", 8): "d", ("b", 1): "b"}


def _encode_prop(prop) -> bytes:
    if isinstance(prop, np.ndarray):
        arr = np.ascontiguousarray(prop.ravel())
        code = _ARRAY_CODES.get((arr.dtype.kind, arr.dtype.itemsize))
        if code is None:
            raise TypeError(f"unsupported FBX array dtype {arr.dtype}")
        data = arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()
        return code.encode() + struct.pack("<3I", arr.size, 0, len(data)) + data
    code, value = prop
    if code == "I":
        return b"I" + struct.pack("<i", value)
    if code == "L":
        return b"L" + struct.pack("<q", value)
    if code == "D":
        return b"D" + struct.pack("<d", value)
    if code == "F":
        return b"F" + struct.pack("<f", value)
    if code == "C":
        return b"C" + struct.pack("<?", value)
    if code == "Y":
        return b"Y" + struct.pack("<h", value)
    if code == "S":
        data = value.encode("utf-8") if isinstance(value, str) else bytes(value)
        return b"S" + struct.pack("<I", len(data)) + data
    if code == "R":
        return b"R" + struct.pack("<I", len(value)) + value
    raise TypeError(f"unknown FBX property type {code!r}")


# Nodes that conventionally end with a null record even without children.
_ALWAYS_NULL_RECORD = {"AnimationStack", "AnimationLayer"}


def _encode_node(buf: bytearray, node: _Node, wide: bool) -> None:
    """Append one node record (with its children) to ``buf``; offsets are absolute in the file."""
    meta = "<3Q" if wide else "<3I"
    meta_size = struct.calcsize(meta)
    start = len(buf)
    buf += bytes(meta_size)
    name = node.name.encode("ascii")
    if len(name) > 255:
        raise ValueError(f"FBX node name too long: {node.name}")
    buf.append(len(name))
    buf += name
    props_start = len(buf)
    for prop in node.props:
        buf += _encode_prop(prop)
    props_len = len(buf) - props_start
    for child in node.children:
        _encode_node(buf, child, wide)
    if node.children or not node.props or node.name in _ALWAYS_NULL_RECORD:
        buf += bytes(meta_size + 1)  # null record closing the nested list
    struct.pack_into(meta, buf, start, len(buf), len(node.props), props_len)


def encode_fbx(top_nodes: Sequence[_Node], version: int = FBX_VERSION) -> bytes:
    """The bytes of a binary FBX file holding ``top_nodes``."""
    wide = version >= 7500
    buf = bytearray(_HEADER_MAGIC)
    buf += struct.pack("<I", version)
    for node in top_nodes:
        _encode_node(buf, node, wide)
    buf += bytes((25 if wide else 13))  # null record ending the top-level list
    buf += _FOOTER_ID
    buf += bytes(4)
    pad = (16 - len(buf) % 16) % 16 or 16
    buf += bytes(pad)
    buf += struct.pack("<I", version)
    buf += bytes(120)
    buf += _FOOTER_MAGIC
    return bytes(buf)


# --------------------------------------------------------------------------- FBX content helpers

def _obj_name(name: str, cls: str) -> tuple:
    return _S(name + _NAME_CLASS_SEP + cls)


def _P(name: str, ptype: str, label: str, flags: str, *values) -> _Node:
    return _Node("P", _S(name), _S(ptype), _S(label), _S(flags), *values)


def _p_int(name, v): return _P(name, "int", "Integer", "", _I(v))
def _p_bool(name, v): return _P(name, "bool", "", "", _I(1 if v else 0))
def _p_enum(name, v): return _P(name, "enum", "", "", _I(v))
def _p_double(name, v): return _P(name, "double", "Number", "", _D(v))
def _p_time(name, v): return _P(name, "KTime", "Time", "", _L(v))
def _p_string(name, v): return _P(name, "KString", "", "", _S(v))
def _p_vec(name, kind, v, flags="A"): return _P(name, kind, "", flags, *(_D(x) for x in v))


def _props70(*ps: _Node) -> _Node:
    return _Node("Properties70", children=list(ps))


def _time_mode(fps: float) -> tuple[int, float]:
    for ref, mode in _TIME_MODES:
        if abs(fps - ref) < 1e-6 * ref:
            return mode, ref
    return _TIME_MODE_CUSTOM, fps


def _header_nodes(creator: str) -> list[_Node]:
    stamp = _Node("CreationTimeStamp", children=[
        _Node("Version", _I(1000)), _Node("Year", _I(1970)), _Node("Month", _I(1)), _Node("Day", _I(1)),
        _Node("Hour", _I(10)), _Node("Minute", _I(0)), _Node("Second", _I(0)), _Node("Millisecond", _I(0)),
    ])
    meta = _Node("MetaData", children=[
        _Node("Version", _I(100)), _Node("Title", _S("")), _Node("Subject", _S("")),
        _Node("Author", _S("")), _Node("Keywords", _S("")), _Node("Revision", _S("")), _Node("Comment", _S("")),
    ])
    scene_info = _Node("SceneInfo", _obj_name("GlobalInfo", "SceneInfo"), _S("UserData"), children=[
        _Node("Type", _S("UserData")), _Node("Version", _I(100)), meta,
        _props70(_p_string("Original|ApplicationVendor", "VimoRAG"),
                 _p_string("Original|ApplicationName", creator),
                 _p_string("LastSaved|ApplicationVendor", "VimoRAG"),
                 _p_string("LastSaved|ApplicationName", creator)),
    ])
    ext = _Node("FBXHeaderExtension", children=[
        _Node("FBXHeaderVersion", _I(1003)), _Node("FBXVersion", _I(FBX_VERSION)),
        _Node("EncryptionType", _I(0)), stamp, _Node("Creator", _S(creator)), scene_info,
    ])
    return [ext, _Node("FileId", _R(_FILE_ID)), _Node("CreationTime", _S(_CREATION_TIME)),
            _Node("Creator", _S(creator))]


def build_fbx_nodes(root: np.ndarray, quats: np.ndarray, offsets: np.ndarray, fps: float,
                    names: Sequence[str], scale: float) -> list[_Node]:
    """The top-level FBX nodes of a skeleton animation (inputs already validated)."""
    T = root.shape[0]
    creator = "VimoRAG viewer.fbx"
    ktime = np.array([round(i * KTIME_PER_SECOND / fps) for i in range(T)], dtype=np.int64)
    t_end = int(ktime[-1])
    mode, fbx_fps = _time_mode(fps)
    euler = euler_xyz_continuous(quats)  # (T, 22, 3) degrees
    trans = root * scale

    nodes = _header_nodes(creator)
    nodes.append(_Node("GlobalSettings", children=[
        _Node("Version", _I(1000)),
        _props70(
            _p_int("UpAxis", 1), _p_int("UpAxisSign", 1),
            _p_int("FrontAxis", 2), _p_int("FrontAxisSign", 1),
            _p_int("CoordAxis", 0), _p_int("CoordAxisSign", 1),
            _p_int("OriginalUpAxis", 1), _p_int("OriginalUpAxisSign", 1),
            _p_double("UnitScaleFactor", 100.0 / scale), _p_double("OriginalUnitScaleFactor", 100.0 / scale),
            _P("AmbientColor", "ColorRGB", "Color", "", _D(0), _D(0), _D(0)),
            _p_string("DefaultCamera", "Producer Perspective"),
            _p_enum("TimeMode", mode),
            _p_enum("TimeProtocol", 2),
            _p_enum("SnapOnFrameMode", 0),
            _p_time("TimeSpanStart", 0), _p_time("TimeSpanStop", t_end),
            _p_double("CustomFrameRate", fbx_fps),
        ),
    ]))

    uid = iter(range(1_000_000, 10_000_000))
    doc_id = next(uid)
    nodes.append(_Node("Documents", children=[
        _Node("Count", _I(1)),
        _Node("Document", _L(doc_id), _S("Scene"), _S("Scene"), children=[
            _props70(_P("SourceObject", "object", "", ""), _p_string("ActiveAnimStackName", "motion")),
            _Node("RootNode", _L(0)),
        ]),
    ]))
    nodes.append(_Node("References"))

    objects = _Node("Objects")
    connections = _Node("Connections")

    def oo(child: int, parent: int) -> None:
        connections.add(_Node("C", _S("OO"), _L(child), _L(parent)))

    def op(child: int, parent: int, prop: str) -> None:
        connections.add(_Node("C", _S("OP"), _L(child), _L(parent), _S(prop)))

    def model(uid_: int, name: str, kind: str, translation, animated_t: bool, animated_r: bool) -> _Node:
        return _Node("Model", _L(uid_), _obj_name(name, "Model"), _S(kind), children=[
            _Node("Version", _I(232)),
            _props70(
                _p_enum("RotationOrder", 0),  # eEulerXYZ
                _p_bool("RotationActive", True),
                _p_enum("InheritType", 1),
                _p_int("DefaultAttributeIndex", 0),
                _p_vec("Lcl Translation", "Lcl Translation", translation, "A+" if animated_t else "A"),
                _p_vec("Lcl Rotation", "Lcl Rotation", (0.0, 0.0, 0.0), "A+" if animated_r else "A"),
                _p_vec("Lcl Scaling", "Lcl Scaling", (1.0, 1.0, 1.0)),
            ),
            _Node("MultiLayer", _I(0)), _Node("MultiTake", _I(0)),
            _Node("Shading", _C(True)), _Node("Culling", _S("CullingOff")),
        ])

    armature_id = next(uid)
    objects.add(model(armature_id, "Armature", "Null", (0.0, 0.0, 0.0), False, False))
    oo(armature_id, 0)

    model_ids = []
    bone_size = 0.05 * scale
    for j in range(NUM_JOINTS):
        attr_id, model_id = next(uid), next(uid)
        model_ids.append(model_id)
        objects.add(_Node("NodeAttribute", _L(attr_id), _obj_name(names[j], "NodeAttribute"), _S("LimbNode"),
                          children=[_props70(_p_double("Size", bone_size)), _Node("TypeFlags", _S("Skeleton"))]))
        rest_t = trans[0] if j == 0 else offsets[j] * scale
        objects.add(model(model_id, names[j], "LimbNode", rest_t, j == 0, True))
        oo(attr_id, model_id)
        oo(model_id, armature_id if PARENTS[j] < 0 else model_ids[PARENTS[j]])

    stack_id, layer_id = next(uid), next(uid)
    objects.add(_Node("AnimationStack", _L(stack_id), _obj_name("motion", "AnimStack"), _S(""), children=[
        _props70(_p_time("LocalStart", 0), _p_time("LocalStop", t_end),
                 _p_time("ReferenceStart", 0), _p_time("ReferenceStop", t_end)),
    ]))
    objects.add(_Node("AnimationLayer", _L(layer_id), _obj_name("BaseLayer", "AnimLayer"), _S("")))
    oo(layer_id, stack_id)

    flags = np.array([_KEY_INTERPOLATION_LINEAR], dtype=np.int32)
    data_float = np.zeros(4, dtype=np.float32)
    refcount = np.array([T], dtype=np.int32)
    n_curve_nodes = 0
    n_curves = 0

    def curve_node(target: int, prop: str, short: str, values: np.ndarray) -> None:
        nonlocal n_curve_nodes, n_curves
        cn_id = next(uid)
        n_curve_nodes += 1
        objects.add(_Node("AnimationCurveNode", _L(cn_id), _obj_name(short, "AnimCurveNode"), _S(""), children=[
            _props70(*(_P(f"d|{ax}", "Number", "", "A", _D(values[0, k])) for k, ax in enumerate("XYZ"))),
        ]))
        oo(cn_id, layer_id)
        op(cn_id, target, prop)
        for k, ax in enumerate("XYZ"):
            c_id = next(uid)
            n_curves += 1
            objects.add(_Node("AnimationCurve", _L(c_id), _obj_name("", "AnimCurve"), _S(""), children=[
                _Node("Default", _D(values[0, k])),
                _Node("KeyVer", _I(_KEY_VERSION)),
                _Node("KeyTime", ktime),
                _Node("KeyValueFloat", values[:, k].astype(np.float32)),
                _Node("KeyAttrFlags", flags),
                _Node("KeyAttrDataFloat", data_float),
                _Node("KeyAttrRefCount", refcount),
            ]))
            op(c_id, cn_id, f"d|{ax}")

    curve_node(model_ids[0], "Lcl Translation", "T", trans)
    for j in range(NUM_JOINTS):
        curve_node(model_ids[j], "Lcl Rotation", "R", euler[:, j])

    def object_type(name: str, count: int, template: _Node | None = None) -> _Node:
        node = _Node("ObjectType", _S(name), children=[_Node("Count", _I(count))])
        if template is not None:
            node.add(template)
        return node

    node_template = _Node("PropertyTemplate", _S("FbxNode"), children=[_props70(
        _p_enum("RotationOrder", 0), _p_bool("RotationActive", False), _p_enum("InheritType", 0),
        _p_vec("Lcl Translation", "Lcl Translation", (0.0, 0.0, 0.0)),
        _p_vec("Lcl Rotation", "Lcl Rotation", (0.0, 0.0, 0.0)),
        _p_vec("Lcl Scaling", "Lcl Scaling", (1.0, 1.0, 1.0)),
        _P("Visibility", "Visibility", "", "A", _D(1.0)),
    )])
    types = [
        object_type("GlobalSettings", 1),
        object_type("Model", NUM_JOINTS + 1, node_template),
        object_type("NodeAttribute", NUM_JOINTS),
        object_type("AnimationStack", 1),
        object_type("AnimationLayer", 1),
        object_type("AnimationCurveNode", n_curve_nodes),
        object_type("AnimationCurve", n_curves),
    ]
    total = sum(t.children[0].props[0][1] for t in types)
    nodes.append(_Node("Definitions", children=[_Node("Version", _I(100)), _Node("Count", _I(total)), *types]))
    nodes.append(objects)
    nodes.append(connections)
    nodes.append(_Node("Takes", children=[
        _Node("Current", _S("motion")),
        _Node("Take", _S("motion"), children=[
            _Node("FileName", _S("motion.tak")),
            _Node("LocalTime", _L(0), _L(t_end)),
            _Node("ReferenceTime", _L(0), _L(t_end)),
        ]),
    ]))
    return nodes


def write_fbx(path, pose, names: Sequence[str] = JOINT_NAMES, scale: float = 100.0) -> Path:
    """Write ``pose`` (a SkeletonPose-like object) as a binary FBX 7400 skeleton animation.

    ``scale`` converts metres to file units (100: centimetres, the FBX convention; the file's
    UnitScaleFactor says so). Returns the path written. Raises ``ValueError`` for a bad pose and
    ``OSError`` when the folder can't be written; nothing is left at ``path`` on error.
    """
    root, quats, offsets, fps, names = validate_pose(pose, names)
    scale = float(scale)
    if not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"scale must be a positive finite number, got {scale}")
    data = encode_fbx(build_fbx_nodes(root, quats, offsets, fps, names, scale))
    return atomic_write(path, lambda fh: fh.write(data), what="FBX")
