"""Body meshes posed by the 22-joint SMPL skeleton (``motioncore.ik.SkeletonPose``).

Two body models share one small interface (``BodyModel``):

* ``MannequinBody`` (default, always available): the skinned "wooden" mannequin of the
  ``mannequin-x`` package (Apache-2.0), 24,256 vertices / 48,396 triangles. Its 54-joint
  skeleton is SMPL-X's; joints 0..21 are SMPL joints 0..21 in the same order with the same
  parents (Pelvis, L_Hip, R_Hip, Spine1, ... L_Wrist, R_Wrist) and its rest pose is SMPL-X's
  neutral T-pose (y up, facing +z, left = +x), so our local rotations apply to it directly.
* ``SMPLBody``: the real SMPL body (6,890 vertices, pose blend shapes) through the ``smplx``
  package, used when the user has placed SMPL model files (which cannot ship with the project:
  their licence forbids redistribution).

Using real SMPL
---------------
1. Download "SMPL for Python" (version 1.0.0 or 1.1.0) from https://smpl.is.tue.mpg.de
   (registration required). The archive holds chumpy-pickled models such as
   ``basicmodel_neutral_lbs_10_207_0_v1.1.0.pkl`` (neutral, v1.1.0 only),
   ``basicModel_f_lbs_10_207_0_v1.0.0.pkl`` (female) and
   ``basicmodel_m_lbs_10_207_0_v1.0.0.pkl`` (male).
2. Convert each one you want to a plain ``.npz`` (chumpy cannot be imported on Python 3.11;
   the converter never executes code from the file, see ``convert_smpl_pkl``)::

       python -m backend body convert-pkl basicmodel_neutral_lbs_10_207_0_v1.1.0.pkl \\
           checkpoints/body_models/smpl/SMPL_NEUTRAL.npz

   (in Python: ``viewer.body.convert_smpl_pkl(src, dst)``). The file names that are looked
   for are ``checkpoints/body_models/smpl/SMPL_NEUTRAL.npz``, ``SMPL_MALE.npz`` and
   ``SMPL_FEMALE.npz``, in that order of preference.
3. ``default_body()`` then returns an ``SMPLBody``; without those files it returns the
   ``MannequinBody``.

The ``.npz`` holds plain arrays only (``v_template`` (V,3), ``shapedirs`` (V,3,B),
``posedirs`` (V,3,207), ``J_regressor`` (24,V) dense, ``weights`` (V,24),
``kintree_table`` (2,24), ``f`` (F,3)) and is read with ``allow_pickle=False``.
"""
from __future__ import annotations

import io
import pickle
import zipfile
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from motioncore.ik import SkeletonPose
from motioncore.io import atomic_output
from motioncore.quat import qinv, qmul, qnormalize
from motioncore.skeleton import JOINT_NAMES, NUM_JOINTS, PARENTS

REPO_ROOT = Path(__file__).resolve().parent.parent
SMPL_DIR = REPO_ROOT / "checkpoints" / "body_models" / "smpl"
SMPL_FILES = ("SMPL_NEUTRAL.npz", "SMPL_MALE.npz", "SMPL_FEMALE.npz")
# SMPL's kinematic tree for joints 0..21 (elbows hang from the shoulders, wrists from the
# elbows). Both body models use it; poses given relative to ``motioncore.skeleton.PARENTS`` are
# re-expressed in it when the two differ (see ``to_smpl_tree``).
SMPL_PARENTS = (-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19)
SMPL_KEYS = ("v_template", "shapedirs", "posedirs", "J_regressor", "weights", "kintree_table", "f")


class BodyModelError(RuntimeError):
    """A body model that cannot be built or used (missing package, bad model file)."""


@runtime_checkable
class BodyModel(Protocol):
    name: str
    faces: np.ndarray  # (F, 3) int

    def rest_offsets(self) -> np.ndarray:
        """(22, 3) parent-relative offsets of the model's rest pose for SMPL joints 0..21."""
        ...

    def vertices(self, pose: "SkeletonPose") -> np.ndarray:
        """(T, V, 3) float32: the mesh posed with ``pose.quats``, pelvis at ``pose.root``."""
        ...


# ------------------------------------------------------------------------------------ helpers
def quat_to_axis_angle(q: np.ndarray) -> np.ndarray:
    """Axis-angle vectors (..., 3) of unit quaternions (..., 4) wxyz, angle in [0, pi]."""
    q = qnormalize(np.asarray(q, dtype=np.float64))
    q = np.where(q[..., :1] < 0, -q, q)  # w >= 0: the short way round
    v = q[..., 1:]
    s = np.linalg.norm(v, axis=-1, keepdims=True)
    angle = 2.0 * np.arctan2(s, q[..., :1])
    small = s < 1e-8
    scale = np.where(small, 2.0 / np.maximum(q[..., :1], 1e-12), angle / np.where(small, 1.0, s))
    return v * scale


def _check_pose(pose: "SkeletonPose") -> tuple[np.ndarray, np.ndarray]:
    root = np.asarray(pose.root, dtype=np.float64)
    quats = np.asarray(pose.quats, dtype=np.float64)
    if root.ndim != 2 or root.shape[1] != 3:
        raise ValueError(f"pose.root must have shape (T, 3), got {root.shape}")
    if quats.shape != (len(root), NUM_JOINTS, 4):
        raise ValueError(f"pose.quats must have shape ({len(root)}, {NUM_JOINTS}, 4), got {quats.shape}")
    if len(root) == 0:
        raise ValueError("pose has no frames")
    if not (np.all(np.isfinite(root)) and np.all(np.isfinite(quats))):
        raise ValueError("pose contains NaN or infinite values")
    norms = np.linalg.norm(quats, axis=-1)
    if np.any(norms < 1e-6):
        raise ValueError("pose.quats contains zero quaternions")
    return root, to_smpl_tree(quats / norms[..., None])


def to_smpl_tree(quats: np.ndarray, parents=PARENTS) -> np.ndarray:
    """Local rotations (T, 22, 4) relative to ``parents`` -> the same global joint
    orientations as local rotations in SMPL's tree (identity when the trees agree)."""
    if tuple(parents) == SMPL_PARENTS:
        return quats
    glob = np.empty_like(quats)
    done = [False] * NUM_JOINTS
    glob[:, 0], done[0] = quats[:, 0], True
    while not all(done):
        for j in range(1, NUM_JOINTS):
            if not done[j] and done[parents[j]]:
                glob[:, j] = qmul(glob[:, parents[j]], quats[:, j])
                done[j] = True
    out = quats.copy()
    out[:, 1:] = qmul(qinv(glob[:, list(SMPL_PARENTS[1:])]), glob[:, 1:])
    return out


def _offsets_from_positions(pos: np.ndarray) -> np.ndarray:
    off = np.zeros((NUM_JOINTS, 3))
    for j in range(1, NUM_JOINTS):
        off[j] = pos[j] - pos[PARENTS[j]]
    return off


def _smplx_name(name: str) -> str:
    """Our joint name -> SMPL-X / mannequin name ('left_hip' -> 'L_Hip', 'spine1' -> 'Spine1')."""
    for ours, side in (("left_", "L_"), ("right_", "R_")):
        if name.startswith(ours):
            return side + name[len(ours):].capitalize()
    return name.capitalize()


def rest_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Area-weighted unit vertex normals (V, 3) of one mesh (computed once per body)."""
    v = np.asarray(vertices, dtype=np.float64)
    f = np.asarray(faces, dtype=np.int64)
    fn = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
    n = np.zeros_like(v)
    for k in range(3):
        for c in range(3):
            n[:, c] += np.bincount(f[:, k], weights=fn[:, c], minlength=len(v))
    return n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)


# -------------------------------------------------------------------------------- mannequin
class MannequinBody:
    """The skinned wooden mannequin of ``mannequin-x`` (SMPL-X skeleton, neutral shape).

    Posing: ``body_pose[i]`` (axis-angle) rotates SMPL-X joint ``i + 1`` for i = 0..20, which
    is SMPL joint ``i + 1`` (checked by name at construction); ``global_rotation`` is joint 0.
    Hands keep SMPL-X's relaxed mean pose. Skinning is a vectorised linear blend over all
    frames (the package's own ``Mannequin.vertices`` gives the same result but is ~30x slower
    because it materialises a (T, V, 4, 4, 4) array); it falls back to the package's
    function if the package internals it reads are missing.
    """

    name = "mannequin"

    def __init__(self, kind: str = "wooden", shape: np.ndarray | None = None, chunk: int = 32) -> None:
        try:
            import mannequin
        except ImportError as exc:  # pragma: no cover - environment problem
            raise BodyModelError("the mannequin body needs the 'mannequin-x' package "
                                 "(pip install mannequin-x)") from exc
        self._m = mannequin.Mannequin(kind, shape=shape)
        self.kind = kind
        self.chunk = max(1, int(chunk))
        names = self._m.joint_names
        expected = tuple(_smplx_name(n) for n in JOINT_NAMES)
        if tuple(names[:NUM_JOINTS]) != expected or tuple(self._m.parents[:NUM_JOINTS]) != SMPL_PARENTS:
            raise BodyModelError(f"unexpected mannequin skeleton: {names[:NUM_JOINTS]}")
        self.faces = np.asarray(self._m.faces, dtype=np.int64)
        rest = self._m.joint_transforms(self._m.rest_pose(dtype=np.float64))
        self._rest_joints = np.asarray(rest[:, :3, 3], dtype=np.float64)  # (54, 3)
        self._skin = self._skin_tables()

    @property
    def num_vertices(self) -> int:
        return self._m.num_vertices

    def rest_offsets(self) -> np.ndarray:
        return _offsets_from_positions(self._rest_joints[:NUM_JOINTS])

    def rest_vertices(self) -> np.ndarray:
        """(V, 3) rest mesh (T-pose, relaxed hands) with the pelvis at the origin."""
        q = np.zeros((1, NUM_JOINTS, 4))
        q[..., 0] = 1.0
        return self.vertices(SkeletonPose(root=np.zeros((1, 3)), quats=q, offsets=self.rest_offsets()))[0]

    def skinned_mesh(self) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """(rest vertices (V,3) with the pelvis at the origin, faces, skin weights (V,22)) for a
        skinned GLB: weights of the mannequin's hand, jaw and eye joints are folded onto their
        nearest ancestor among the 22 body joints. None if the package internals are missing."""
        m = self._m
        try:
            idx = np.asarray(m._skin_joint_indices)
            w = np.asarray(m._skin_weights, dtype=np.float64)
        except AttributeError:
            return None
        body_joint = np.arange(len(m.parents))
        for j in range(NUM_JOINTS, len(body_joint)):
            a = j
            while a >= NUM_JOINTS:
                a = m.parents[a]
            body_joint[j] = a
        dense = np.zeros((len(idx), NUM_JOINTS))
        np.add.at(dense, (np.repeat(np.arange(len(idx)), idx.shape[1]), body_joint[idx].ravel()), w.ravel())
        return self.rest_vertices(), self.faces, dense

    def _skin_tables(self):
        """(H (V, 4J) = skin weights x homogeneous rest vertex, bind positions (J, 3)) or None."""
        m = self._m
        try:
            verts = np.asarray(m._identity["skin_vertices"], dtype=np.float64)
            bind = np.asarray(m._identity["skin_bind_positions"], dtype=np.float64)
            idx = np.asarray(m._skin_joint_indices)
            w = np.asarray(m._skin_weights, dtype=np.float64)
        except (AttributeError, KeyError, TypeError):
            return None
        if verts.shape != (m.num_vertices, 3) or idx.shape != w.shape or len(idx) != len(verts):
            return None
        dense = np.zeros((len(verts), len(bind)))
        np.add.at(dense, (np.repeat(np.arange(len(verts)), idx.shape[1]), idx.ravel()), w.ravel())
        homo = np.concatenate([verts, np.ones((len(verts), 1))], axis=1)
        H = (dense[:, :, None] * homo[:, None, :]).reshape(len(verts), -1).astype(np.float32)
        # normals are skinned like directions: n' = sum_j w_vj R_j n, from the bind-pose normals
        rest_n = rest_normals(verts, np.asarray(m.faces, dtype=np.int64))
        Hn = (dense[:, :, None] * rest_n[:, None, :]).reshape(len(verts), -1).astype(np.float32)
        return H, bind, Hn

    def joint_transforms(self, pose: "SkeletonPose") -> np.ndarray:
        """(T, 54, 4, 4) world transforms of the mannequin's joints, pelvis at ``pose.root``."""
        root, quats = _check_pose(pose)
        T = len(root)
        aa = quat_to_axis_angle(quats)
        G = np.asarray(self._m.forward_skeleton(
            body_pose=aa[:, 1:NUM_JOINTS], head_pose=np.zeros((T, 3, 3)),
            hand_pose=np.zeros((T, 30, 3)), global_rotation=aa[:, 0],
            global_translation=np.zeros((T, 3))), dtype=np.float64)
        G = G.copy()
        G[:, :, :3, 3] += (root - G[:, 0, :3, 3])[:, None, :]
        return G

    def vertices(self, pose: "SkeletonPose") -> np.ndarray:
        return self._pose_mesh(pose, with_normals=False)[0]

    def vertices_and_normals(self, pose: "SkeletonPose") -> tuple[np.ndarray, np.ndarray | None]:
        """(vertices (T, V, 3), unit vertex normals (T, V, 3)) float32. The normals are the
        bind-pose normals rotated by the skinning transforms (blended like the vertices, then
        renormalised): no per-frame recomputation from the triangles. None if the package
        internals the fast skinning reads are missing (the renderer then computes them)."""
        return self._pose_mesh(pose, with_normals=True)

    def _pose_mesh(self, pose: "SkeletonPose", with_normals: bool):
        G = self.joint_transforms(pose)
        T = len(G)
        if self._skin is None:  # package API, in chunks to bound memory
            out = np.empty((T, self.num_vertices, 3), dtype=np.float32)
            root, quats = _check_pose(pose)
            aa = quat_to_axis_angle(quats)
            for s in range(0, T, 4):
                e = min(T, s + 4)
                p = self._m.rest_pose(batch_dims=(e - s,), dtype=np.float64)
                p["body_pose"] = aa[s:e, 1:NUM_JOINTS]
                p["global_rotation"] = aa[s:e, 0]
                v = np.asarray(self._m.vertices(p))
                out[s:e] = v + (root[s:e] - self._m.joint_transforms(p)[:, 0, :3, 3])[:, None]
            return out, None
        H, bind, Hn = self._skin
        # v' = sum_j w_vj (R_j (v - b_j) + t_j) = sum_j (w_vj [v, 1]) . [R_j | t_j - R_j b_j]^T:
        # one (V, 4J) x (4J, 3T) matrix product for all frames.
        R = G[:, :, :3, :3]
        t = G[:, :, :3, 3] - np.einsum("tjab,jb->tja", R, bind)
        A = np.concatenate([np.swapaxes(R, -1, -2), t[:, :, None, :]], axis=2)  # (T, J, 4, 3)
        out = np.empty((T, H.shape[0], 3), dtype=np.float32)
        normals = np.empty((T, H.shape[0], 3), dtype=np.float32) if with_normals else None
        for s in range(0, T, self.chunk):
            a = A[s:s + self.chunk].astype(np.float32)
            n = len(a)
            rhs = np.ascontiguousarray(a.transpose(1, 2, 0, 3).reshape(H.shape[1], n * 3))
            out[s:s + n] = (H @ rhs).reshape(-1, n, 3).transpose(1, 0, 2)
            if with_normals:   # the rotation rows of the same right-hand side, no translation
                rot = np.ascontiguousarray(a[:, :, :3].transpose(1, 2, 0, 3).reshape(Hn.shape[1], n * 3))
                nv = (Hn @ rot).reshape(-1, n, 3).transpose(1, 0, 2)
                nv /= np.maximum(np.sqrt(np.einsum("tvi,tvi->tv", nv, nv)), 1e-12)[..., None]
                normals[s:s + n] = nv
        return out, normals


# ------------------------------------------------------------------------------------- SMPL
class SMPLBody:
    """The SMPL body through ``smplx`` (neutral shape), from a converted ``.npz`` model file.

    ``body_pose`` = our joints 1..21 followed by zeros for SMPL joints 22, 23 (hands);
    ``global_orient`` = joint 0; ``transl`` places the pelvis (SMPL's joint 0, about which the
    global rotation turns) at ``pose.root``.
    """

    def __init__(self, model_file: str | Path, batch: int = 64) -> None:
        path = Path(model_file)
        if not path.is_file():
            raise BodyModelError(f"SMPL model file not found: {path}")
        try:
            import smplx
            import torch
            from smplx.utils import Struct
        except ImportError as exc:  # pragma: no cover - environment problem
            raise BodyModelError("the SMPL body needs the 'smplx' and 'torch' packages") from exc
        data = load_smpl_npz(path)
        J = data["J_regressor"].shape[0]
        if J < NUM_JOINTS:
            raise BodyModelError(f"{path}: J_regressor has {J} joints, need at least {NUM_JOINTS}")
        self._torch = torch
        self._lbs = smplx.lbs.lbs
        gender = "neutral"
        for g in ("male", "female"):
            if path.stem.lower().endswith("_" + g):
                gender = g
        self.name = f"smpl-{gender}"
        nb = min(10, data["shapedirs"].shape[-1])
        self._model = smplx.SMPL(model_path=str(path), data_struct=Struct(**data), gender=gender,
                                 num_betas=nb, batch_size=1)
        self._num_joints = J
        self.batch = max(1, int(batch))
        self.faces = np.asarray(data["f"], dtype=np.int64)
        with torch.no_grad():
            rest = (self._model.J_regressor @ self._model.v_template).double().numpy()
        self._rest_joints = rest  # (J, 3), betas = 0
        parents = self._model.parents.numpy()
        if tuple(int(p) for p in parents[1:NUM_JOINTS]) != SMPL_PARENTS[1:]:
            raise BodyModelError(f"{path}: kintree_table is not SMPL's")

    @property
    def num_vertices(self) -> int:
        return int(self._model.v_template.shape[0])

    def rest_offsets(self) -> np.ndarray:
        return _offsets_from_positions(self._rest_joints[:NUM_JOINTS])

    def vertices(self, pose: "SkeletonPose") -> np.ndarray:
        torch = self._torch
        root, quats = _check_pose(pose)
        T = len(root)
        aa = np.zeros((T, self._num_joints, 3))
        aa[:, :NUM_JOINTS] = quat_to_axis_angle(quats)
        m = self._model
        out = np.empty((T, self.num_vertices, 3), dtype=np.float32)
        with torch.no_grad():
            for s in range(0, T, self.batch):
                e = min(T, s + self.batch)
                full = torch.as_tensor(aa[s:e].reshape(e - s, -1), dtype=m.v_template.dtype)
                betas = torch.zeros((e - s, m.num_betas), dtype=m.v_template.dtype)
                v, j = self._lbs(betas, full, m.v_template, m.shapedirs, m.posedirs,
                                 m.J_regressor, m.parents, m.lbs_weights)
                shift = torch.as_tensor(root[s:e], dtype=v.dtype) - j[:, 0]
                out[s:e] = (v + shift[:, None]).numpy()
        return out


def load_smpl_npz(path: str | Path) -> dict[str, np.ndarray]:
    """The arrays of a converted SMPL ``.npz`` (no pickle allowed), checked for consistency."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in SMPL_KEYS if k not in z.files]
            if missing:
                raise BodyModelError(f"{path}: not an SMPL model file, missing {missing}")
            data = {k: np.asarray(z[k]) for k in SMPL_KEYS}
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise BodyModelError(f"{path}: cannot read SMPL model file ({exc})") from exc
    V = data["v_template"].shape[0]
    checks = [data["v_template"].shape == (V, 3), data["shapedirs"].shape[:2] == (V, 3),
              data["shapedirs"].ndim == 3, data["posedirs"].shape[:2] == (V, 3),
              data["J_regressor"].ndim == 2 and data["J_regressor"].shape[1] == V,
              data["weights"].shape == (V, data["J_regressor"].shape[0]),
              data["kintree_table"].shape == (2, data["J_regressor"].shape[0]),
              data["f"].ndim == 2 and data["f"].shape[1] == 3]
    if not all(checks):
        raise BodyModelError(f"{path}: inconsistent SMPL array shapes "
                             f"{ {k: v.shape for k, v in data.items()} }")
    if data["f"].size and (data["f"].min() < 0 or data["f"].max() >= V):
        raise BodyModelError(f"{path}: face indices out of range")
    return data


# ------------------------------------------------------------------- official .pkl -> .npz
class _ChumpyStub:
    """Stand-in for a chumpy object while unpickling: keeps its state, runs nothing."""

    state = None

    def __init__(self, *args, **kwargs) -> None:
        self.state = None

    def __setstate__(self, state) -> None:
        self.state = state


class _SparseStub(_ChumpyStub):
    """Stand-in for a scipy.sparse matrix; ``dense()`` rebuilds it from its pickled state."""

    kind = "csc"

    def dense(self) -> np.ndarray:
        st = self.state if isinstance(self.state, dict) else {}
        try:
            data = np.asarray(st["data"], dtype=np.float64)
            indices = np.asarray(st["indices"], dtype=np.int64)
            indptr = np.asarray(st["indptr"], dtype=np.int64)
            shape = tuple(int(s) for s in st.get("_shape", st.get("shape")))
        except (KeyError, TypeError) as exc:
            raise BodyModelError(f"unreadable sparse matrix in SMPL file ({exc})") from exc
        out = np.zeros(shape)
        major = shape[1] if self.kind == "csc" else shape[0]
        if len(indptr) != major + 1 or indptr[-1] > len(data) or len(indices) < indptr[-1]:
            raise BodyModelError("corrupt sparse matrix in SMPL file")
        counts = np.diff(indptr)
        outer = np.repeat(np.arange(major), counts)
        inner = indices[:indptr[-1]]
        if self.kind == "csc":
            np.add.at(out, (inner, outer), data[:indptr[-1]])
        else:
            np.add.at(out, (outer, inner), data[:indptr[-1]])
        return out


class _CsrStub(_SparseStub):
    kind = "csr"


def _safe_reconstructor(cls, base, state):
    """``copyreg._reconstructor`` restricted to the stub classes (py2 protocol-0/1 pickles)."""
    if not (isinstance(cls, type) and issubclass(cls, _ChumpyStub)) or base is not object:
        raise pickle.UnpicklingError(f"refusing to reconstruct {cls!r} from {base!r}")
    return cls()


def _numpy_reconstruct(*args):
    if not args or args[0] is not np.ndarray:
        raise pickle.UnpicklingError("refusing to reconstruct a non-ndarray object")
    from numpy._core.multiarray import _reconstruct   # numpy internals: only for old pickles

    return _reconstruct(*args)


def _numpy_frombuffer(buf, dtype, shape, order):
    if not isinstance(dtype, np.dtype) or dtype.hasobject:
        raise pickle.UnpicklingError("refusing an object array")
    from numpy._core.numeric import _frombuffer

    return _frombuffer(buf, dtype, shape, order)


def _numpy_scalar(dtype, data=None):
    if not isinstance(dtype, np.dtype) or dtype.hasobject:
        raise pickle.UnpicklingError("refusing an object scalar")
    from numpy._core.multiarray import scalar

    return scalar(dtype, data) if data is not None else scalar(dtype)


def _latin1_bytes(text, encoding="latin1"):
    """``_codecs.encode`` as Python 3 pickles bytes at protocols < 3: str -> bytes only."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError("refusing _codecs.encode with unexpected arguments")
    return text.encode("latin1")


class _SafeSMPLUnpickler(pickle.Unpickler):
    """Unpickler for the official SMPL .pkl: numpy arrays, chumpy + scipy.sparse stand-ins.

    Anything else (os.system, builtins.eval, subprocess, ...) is refused.
    """

    def find_class(self, module: str, name: str):
        if module == "chumpy" or module.startswith("chumpy."):
            return _ChumpyStub
        if module in ("numpy.core.multiarray", "numpy._core.multiarray"):
            if name == "_reconstruct":
                return _numpy_reconstruct
            if name == "scalar":
                return _numpy_scalar
        if module in ("numpy.core.numeric", "numpy._core.numeric") and name == "_frombuffer":
            return _numpy_frombuffer
        if module == "numpy" and name == "ndarray":
            return np.ndarray
        if module == "numpy" and name == "dtype":
            return np.dtype
        if module.startswith("scipy.sparse"):
            if name == "csc_matrix":
                return _SparseStub
            if name == "csr_matrix":
                return _CsrStub
        if module == "_codecs" and name == "encode":
            return _latin1_bytes
        if module in ("copy_reg", "copyreg") and name == "_reconstructor":
            return _safe_reconstructor
        if module in ("__builtin__", "builtins") and name in ("object", "set", "frozenset"):
            return {"object": object, "set": set, "frozenset": frozenset}[name]
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from an SMPL model file")


def _plain(value, key: str) -> np.ndarray:
    if isinstance(value, _SparseStub):
        return value.dense()
    if isinstance(value, _ChumpyStub):
        st = value.state
        if isinstance(st, dict) and isinstance(st.get("x"), np.ndarray):
            return st["x"]
        raise BodyModelError(f"SMPL field {key!r} is a chumpy expression, not a stored array")
    if isinstance(value, np.ndarray) and value.dtype != object:
        return value
    raise BodyModelError(f"SMPL field {key!r} has unexpected type {type(value).__name__}")


def convert_smpl_pkl(src: str | Path, dst: str | Path) -> Path:
    """Convert an official (chumpy-pickled) SMPL ``.pkl`` to a plain ``.npz``; return ``dst``.

    The pickle is read by a restricted unpickler: chumpy objects become inert stubs whose
    stored array (state key ``'x'``) is kept, scipy.sparse matrices (J_regressor) are
    rebuilt densely with numpy, and any other class or function is refused, so a malicious
    file cannot run code. The output is written atomically.
    """
    src, dst = Path(src), Path(dst)
    if not src.is_file():
        raise FileNotFoundError(f"SMPL model file not found: {src}")
    raw = src.read_bytes()
    try:
        obj = _SafeSMPLUnpickler(io.BytesIO(raw), encoding="latin1").load()
    except pickle.UnpicklingError as exc:
        raise BodyModelError(f"{src}: {exc}") from exc
    except Exception as exc:
        raise BodyModelError(f"{src}: not a readable SMPL pickle ({type(exc).__name__}: {exc})") from exc
    if not isinstance(obj, dict):
        raise BodyModelError(f"{src}: expected a dict of model arrays, got {type(obj).__name__}")
    missing = [k for k in SMPL_KEYS if k not in obj]
    if missing:
        raise BodyModelError(f"{src}: not an SMPL model, missing {missing}")
    arrays = {}
    for k in SMPL_KEYS:
        a = _plain(obj[k], k)
        arrays[k] = a.astype(np.int64) if k in ("f", "kintree_table") else a.astype(np.float64)
    dst.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(dst) as tmp:
        np.savez(tmp, **arrays)
        load_smpl_npz(tmp)  # the result must be loadable
    return dst


# ----------------------------------------------------------------------------------- default
def smpl_model_file(directory: str | Path | None = None) -> Path | None:
    d = SMPL_DIR if directory is None else Path(directory)
    for name in SMPL_FILES:
        if (d / name).is_file():
            return d / name
    return None


_DEFAULT: dict = {}


def default_body(directory: str | Path | None = None) -> BodyModel:
    """``SMPLBody`` if an SMPL model file is in place (see the module docstring), else the
    ``MannequinBody``. Cached per model file (building the mannequin takes ~0.3 s)."""
    f = smpl_model_file(directory)
    key = str(f) if f is not None else "mannequin"
    if key not in _DEFAULT:
        _DEFAULT[key] = SMPLBody(f) if f is not None else MannequinBody()
    return _DEFAULT[key]
