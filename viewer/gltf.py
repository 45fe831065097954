"""Animated binary glTF 2.0 (GLB) of a skeleton motion, for Gradio's ``Model3D`` and any glTF viewer.

``write_glb(path, pose, names=JOINT_NAMES, mesh=None)`` writes

* one node per joint (node ``j`` is joint ``j``), parented as ``motioncore.skeleton.PARENTS``; a joint's
  ``translation`` is its rest offset (metres), the root's the pelvis position of frame 0, and
  every ``rotation`` the frame-0 rotation, so a static viewer shows the first frame;
* one animation "motion" with, per joint, a ``rotation`` channel (sampler output: unit
  quaternions in glTF's **xyzw** order, signs made continuous over time so LINEAR slerp takes
  the short way) and a ``translation`` channel on the root joint; every sampler is LINEAR and
  shares one input accessor of times ``frame / fps`` seconds;
* geometry:
  - ``mesh=None``: one tapered "bone" (an octahedral spindle, the shape skeleton editors draw)
    per parent->child pair, in a node below the parent joint, pointing along the rest offset, so
    the joint animation moves it; plus one for the head; a neutral grey material. All bones
    share one unit mesh, scaled by their node.
  - ``mesh=(vertices (V,3), faces (F,3), skin_weights (V,22)[, rest_root (3,)])``: a skinned
    mesh. ``vertices`` are in the skeleton's rest pose (every local rotation identity, joints
    at the cumulative rest offsets) with the pelvis at ``rest_root`` (default the origin).
    Each vertex keeps its 4 largest weights (renormalised); ``inverseBindMatrices`` undo the rest
    joint positions. Smooth vertex normals are included.

With ``floor=True`` a checkered floor (node "floor", y = 0, 0.5 m tiles, vertex colours) covers the
pelvis path plus a 1 m margin: viewers that frame a scene's bounding box then show the whole
motion on a visible ground (the app's 3D view); downloads leave it out.

Accessors carry ``min``/``max`` where the glTF spec requires them (``POSITION``, animation sampler
inputs). The file is written atomically; bad input raises ``ValueError`` before anything is
written.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pygltflib as gl

from motioncore.io import atomic_write
from motioncore.quat import qbetween, qfix
from motioncore.skeleton import JOINT_NAMES, NUM_JOINTS, PARENTS
from viewer.fbx import validate_pose

_FLOAT = gl.FLOAT                    # 5126
_UBYTE = gl.UNSIGNED_BYTE            # 5121
_USHORT = gl.UNSIGNED_SHORT          # 5123
_UINT = gl.UNSIGNED_INT              # 5125
_ARRAY_BUFFER = gl.ARRAY_BUFFER      # 34962
_ELEMENT_ARRAY_BUFFER = gl.ELEMENT_ARRAY_BUFFER  # 34963
_NUM_COMPONENTS = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4, "MAT4": 16}
_HEAD_JOINT = JOINT_NAMES.index("head")


class _Binary:
    """Accumulates the binary chunk: one bufferView (4-byte aligned) per accessor."""

    def __init__(self, doc: gl.GLTF2):
        self.doc = doc
        self.data = bytearray()

    def add(self, array: np.ndarray, kind: str, component: int, *, target: int | None = None,
            minmax: bool = False, name: str | None = None) -> int:
        dtype = {_FLOAT: "<f4", _UBYTE: "u1", _USHORT: "<u2", _UINT: "<u4"}[component]
        arr = np.ascontiguousarray(np.asarray(array).astype(dtype))
        n = _NUM_COMPONENTS[kind]
        arr2 = arr.reshape(-1, n)
        self.data += bytes(-len(self.data) % 4)
        offset = len(self.data)
        self.data += arr2.tobytes()
        self.doc.bufferViews.append(gl.BufferView(buffer=0, byteOffset=offset, byteLength=arr2.nbytes,
                                                  target=target))
        acc = gl.Accessor(bufferView=len(self.doc.bufferViews) - 1, byteOffset=0, componentType=component,
                          count=arr2.shape[0], type=kind, name=name)
        if minmax:
            cast = float if component == _FLOAT else int
            acc.min = [cast(v) for v in arr2.min(axis=0)]
            acc.max = [cast(v) for v in arr2.max(axis=0)]
        self.doc.accessors.append(acc)
        return len(self.doc.accessors) - 1

    def finish(self) -> None:
        self.data += bytes(-len(self.data) % 4)
        self.doc.buffers = [gl.Buffer(byteLength=len(self.data))]
        self.doc.set_binary_blob(bytes(self.data))


def _wxyz_to_xyzw(q: np.ndarray) -> np.ndarray:
    return np.concatenate([q[..., 1:], q[..., :1]], axis=-1)


def _bone_mesh() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unit octahedral bone along +y: base at 0, widest (radius 1) at 0.15, tip at 1.

    Flat shaded: 8 triangles, 24 vertices with per-face normals.
    """
    ring = np.array([[1.0, 0.15, 0.0], [0.0, 0.15, -1.0], [-1.0, 0.15, 0.0], [0.0, 0.15, 1.0]])
    base, tip = np.array([0.0, 0.0, 0.0]), np.array([0.0, 1.0, 0.0])
    tris = []
    for k in range(4):
        a, b = ring[k], ring[(k + 1) % 4]
        tris.append((base, a, b))   # faces the base side
        tris.append((tip, b, a))    # faces the tip side
    pos = np.array([v for t in tris for v in t], dtype=np.float64)
    normals = []
    for t in tris:
        n = np.cross(t[1] - t[0], t[2] - t[0])
        n /= np.linalg.norm(n)
        center = (t[0] + t[1] + t[2]) / 3.0
        if np.dot(n, center - np.array([0.0, 0.3, 0.0])) < 0:  # point outwards
            n = -n
        normals += [n, n, n]
    idx = np.arange(len(pos)).reshape(-1, 3)
    # make the winding counter-clockwise seen from outside (glTF front faces)
    for f in range(len(idx)):
        a, b, c = pos[idx[f]]
        if np.dot(np.cross(b - a, c - a), normals[3 * f]) < 0:
            idx[f] = idx[f][[0, 2, 1]]
    return pos, np.array(normals), idx


def _vertex_normals(v: np.ndarray, f: np.ndarray) -> np.ndarray:
    fn = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
    vn = np.zeros_like(v)
    for k in range(3):
        np.add.at(vn, f[:, k], fn)
    norm = np.linalg.norm(vn, axis=-1, keepdims=True)
    vn = np.where(norm > 1e-12, vn / np.maximum(norm, 1e-12), np.array([0.0, 1.0, 0.0]))
    return vn


def _validate_mesh(mesh):
    if not isinstance(mesh, (tuple, list)) or len(mesh) not in (3, 4):
        raise ValueError("mesh must be (vertices (V,3), faces (F,3), skin_weights (V,22)[, rest_root (3,)])")
    try:
        v = np.asarray(mesh[0], dtype=np.float64)
        f = np.asarray(mesh[1])
        w = np.asarray(mesh[2], dtype=np.float64)
        rest_root = np.zeros(3) if len(mesh) == 3 else np.asarray(mesh[3], dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"mesh arrays must be numeric: {exc}") from None
    if v.ndim != 2 or v.shape[1] != 3 or len(v) == 0:
        raise ValueError(f"mesh vertices must have shape (V, 3) with V > 0, got {v.shape}")
    if f.ndim != 2 or f.shape[1] != 3 or len(f) == 0:
        raise ValueError(f"mesh faces must have shape (F, 3) with F > 0, got {f.shape}")
    if not np.issubdtype(f.dtype, np.integer):
        if not (np.issubdtype(f.dtype, np.floating) and np.all(np.isfinite(f)) and np.all(f == np.round(f))):
            raise ValueError("mesh faces must be integer vertex indices")
    f = f.astype(np.int64)
    if f.min() < 0 or f.max() >= len(v):
        raise ValueError(f"mesh faces index vertices outside 0..{len(v) - 1}")
    if w.shape != (len(v), NUM_JOINTS):
        raise ValueError(f"mesh skin_weights must have shape ({len(v)}, {NUM_JOINTS}), got {w.shape}")
    if rest_root.shape != (3,):
        raise ValueError(f"mesh rest_root must have shape (3,), got {rest_root.shape}")
    for label, arr in (("vertices", v), ("skin_weights", w), ("rest_root", rest_root)):
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"mesh {label} has a non-finite value (NaN or inf)")
    if np.any(w < 0):
        raise ValueError("mesh skin_weights must be >= 0")
    if np.any(w.sum(axis=1) <= 0):
        raise ValueError(f"mesh vertex {int(np.argmin(w.sum(axis=1)))} has no skin weight")
    return v, f, w, rest_root


def _top4(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(-w, axis=1, kind="stable")[:, :4]
    weights = np.take_along_axis(w, order, axis=1)
    weights = weights / weights.sum(axis=1, keepdims=True)
    joints = np.where(weights > 0, order, 0)
    weights = weights.astype(np.float32)
    weights /= weights.sum(axis=1, keepdims=True)
    return joints.astype(np.uint8), weights


def floor_tiles(root: np.ndarray, margin: float = 1.0, tile: float = 0.5, max_tiles: int = 40):
    """A checkered floor under the pelvis path: (positions (V,3), colours (V,4), indices (F,3)).
    Tiles grow beyond ``tile`` metres when the path is long (at most ``max_tiles`` a side)."""
    lo = root[:, [0, 2]].min(0) - margin
    hi = root[:, [0, 2]].max(0) + margin
    size = float(max(tile, (hi - lo).max() / max_tiles))
    n = np.maximum(1, np.ceil((hi - lo) / size).astype(int))
    lo = (lo + hi) / 2 - n * size / 2                  # centred on the path
    pos, col, idx = [], [], []
    light, dark = [0.86, 0.87, 0.89, 1.0], [0.68, 0.70, 0.73, 1.0]
    for i in range(n[0]):
        for k in range(n[1]):
            x0, z0 = lo[0] + i * size, lo[1] + k * size
            base = len(pos)
            pos += [[x0, 0.0, z0], [x0 + size, 0.0, z0], [x0 + size, 0.0, z0 + size], [x0, 0.0, z0 + size]]
            col += [light if (i + k) % 2 == 0 else dark] * 4
            idx += [[base, base + 2, base + 1], [base, base + 3, base + 2]]   # facing +y
    return np.array(pos, np.float32), np.array(col, np.float32), np.array(idx, np.uint32)


def _add_floor(doc: gl.GLTF2, blob: "_Binary", root: np.ndarray, scene_nodes: list) -> None:
    pos, col, idx = floor_tiles(root)
    nrm = np.tile(np.array([[0.0, 1.0, 0.0]], np.float32), (len(pos), 1))
    doc.materials.append(gl.Material(name="floor", doubleSided=True, pbrMetallicRoughness=gl.PbrMetallicRoughness(
        baseColorFactor=[1.0, 1.0, 1.0, 1.0], metallicFactor=0.0, roughnessFactor=1.0)))
    prim = gl.Primitive(
        attributes=gl.Attributes(
            POSITION=blob.add(pos, "VEC3", _FLOAT, target=_ARRAY_BUFFER, minmax=True),
            NORMAL=blob.add(nrm, "VEC3", _FLOAT, target=_ARRAY_BUFFER),
            COLOR_0=blob.add(col, "VEC4", _FLOAT, target=_ARRAY_BUFFER)),
        indices=blob.add(idx.ravel(), "SCALAR", _UINT, target=_ELEMENT_ARRAY_BUFFER),
        material=len(doc.materials) - 1, mode=gl.TRIANGLES)
    doc.meshes.append(gl.Mesh(name="floor", primitives=[prim]))
    doc.nodes.append(gl.Node(name="floor", mesh=len(doc.meshes) - 1))
    scene_nodes.append(len(doc.nodes) - 1)


def build_gltf(root: np.ndarray, quats: np.ndarray, offsets: np.ndarray, fps: float,
               names: Sequence[str], mesh=None, floor: bool = False) -> gl.GLTF2:
    """The glTF document (with its binary blob) of a validated pose."""
    T = root.shape[0]
    doc = gl.GLTF2(asset=gl.Asset(generator="VimoRAG viewer.gltf", version="2.0"))
    blob = _Binary(doc)
    quats_xyzw = _wxyz_to_xyzw(qfix(quats))  # continuous signs for LINEAR (slerp) sampling

    children: list[list[int]] = [[] for _ in range(NUM_JOINTS)]
    for j in range(1, NUM_JOINTS):
        children[PARENTS[j]].append(j)
    for j in range(NUM_JOINTS):
        t = root[0] if j == 0 else offsets[j]
        doc.nodes.append(gl.Node(name=names[j], translation=[float(x) for x in t],
                                 rotation=[float(x) for x in quats_xyzw[0, j]], children=list(children[j])))
    scene_nodes = [0]

    material = gl.Material(name="neutral", pbrMetallicRoughness=gl.PbrMetallicRoughness(
        baseColorFactor=[0.72, 0.74, 0.78, 1.0], metallicFactor=0.0, roughnessFactor=0.8), doubleSided=False)
    doc.materials.append(material)

    if mesh is None:
        pos, nrm, idx = _bone_mesh()
        prim = gl.Primitive(
            attributes=gl.Attributes(
                POSITION=blob.add(pos, "VEC3", _FLOAT, target=_ARRAY_BUFFER, minmax=True),
                NORMAL=blob.add(nrm, "VEC3", _FLOAT, target=_ARRAY_BUFFER)),
            indices=blob.add(idx.ravel(), "SCALAR", _USHORT, target=_ELEMENT_ARRAY_BUFFER),
            material=0, mode=gl.TRIANGLES)
        doc.meshes.append(gl.Mesh(name="bone", primitives=[prim]))
        up = np.array([0.0, 1.0, 0.0])
        bones = [(PARENTS[j], offsets[j], f"bone_{names[j]}") for j in range(1, NUM_JOINTS)]
        bones.append((_HEAD_JOINT, np.array([0.0, 0.2, 0.0]), f"bone_{names[_HEAD_JOINT]}_end"))
        for parent, vec, label in bones:
            length = float(np.linalg.norm(vec))
            if length < 1e-6:
                continue
            radius = float(np.clip(0.22 * length, 0.015, 0.05))
            rot = _wxyz_to_xyzw(qbetween(up, vec))
            doc.nodes.append(gl.Node(name=label, mesh=0, rotation=[float(x) for x in rot],
                                     scale=[radius, length, radius]))
            doc.nodes[parent].children.append(len(doc.nodes) - 1)
    else:
        v, f, w, rest_root = _validate_mesh(mesh)
        rest = np.zeros((NUM_JOINTS, 3))
        rest[0] = rest_root
        for j in range(1, NUM_JOINTS):
            rest[j] = rest[PARENTS[j]] + offsets[j]
        joints4, weights4 = _top4(w)
        index_type = _USHORT if len(v) < 65535 else _UINT
        prim = gl.Primitive(
            attributes=gl.Attributes(
                POSITION=blob.add(v, "VEC3", _FLOAT, target=_ARRAY_BUFFER, minmax=True),
                NORMAL=blob.add(_vertex_normals(v, f), "VEC3", _FLOAT, target=_ARRAY_BUFFER),
                JOINTS_0=blob.add(joints4, "VEC4", _UBYTE, target=_ARRAY_BUFFER),
                WEIGHTS_0=blob.add(weights4, "VEC4", _FLOAT, target=_ARRAY_BUFFER)),
            indices=blob.add(f.ravel(), "SCALAR", index_type, target=_ELEMENT_ARRAY_BUFFER),
            material=0, mode=gl.TRIANGLES)
        doc.meshes.append(gl.Mesh(name="body", primitives=[prim]))
        ibm = np.tile(np.eye(4), (NUM_JOINTS, 1, 1))
        ibm[:, :3, 3] = -rest
        ibm_col_major = np.transpose(ibm, (0, 2, 1))  # glTF matrices are column-major
        doc.skins.append(gl.Skin(name="skeleton", joints=list(range(NUM_JOINTS)), skeleton=0,
                                 inverseBindMatrices=blob.add(ibm_col_major, "MAT4", _FLOAT)))
        doc.nodes.append(gl.Node(name="body", mesh=0, skin=0))
        scene_nodes.append(len(doc.nodes) - 1)

    if floor:
        _add_floor(doc, blob, root, scene_nodes)
    times = np.arange(T, dtype=np.float64) / fps
    t_acc = blob.add(times, "SCALAR", _FLOAT, minmax=True, name="time")
    anim = gl.Animation(name="motion")
    tr_acc = blob.add(root, "VEC3", _FLOAT, name="root_translation")
    anim.samplers.append(gl.AnimationSampler(input=t_acc, output=tr_acc, interpolation="LINEAR"))
    anim.channels.append(gl.AnimationChannel(sampler=0, target=gl.AnimationChannelTarget(node=0, path="translation")))
    for j in range(NUM_JOINTS):
        q_acc = blob.add(quats_xyzw[:, j], "VEC4", _FLOAT, name=f"{names[j]}_rotation")
        anim.samplers.append(gl.AnimationSampler(input=t_acc, output=q_acc, interpolation="LINEAR"))
        anim.channels.append(gl.AnimationChannel(sampler=len(anim.samplers) - 1,
                                                 target=gl.AnimationChannelTarget(node=j, path="rotation")))
    doc.animations.append(anim)
    doc.scenes.append(gl.Scene(name="motion", nodes=scene_nodes))
    doc.scene = 0
    blob.finish()
    return doc


def write_glb(path, pose, names: Sequence[str] = JOINT_NAMES, mesh=None, floor: bool = False) -> Path:
    """Write ``pose`` (a SkeletonPose-like object) as an animated GLB; returns the path.

    Raises ``ValueError`` for a bad pose or mesh and ``OSError`` when the folder can't be
    written; nothing is left at ``path`` on error.
    """
    root, quats, offsets, fps, names = validate_pose(pose, names)
    doc = build_gltf(root, quats, offsets, fps, names, mesh, floor)
    data = b"".join(bytes(part) for part in doc.save_to_bytes())
    return atomic_write(path, lambda fh: fh.write(data), what="GLB")
