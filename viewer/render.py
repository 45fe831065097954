"""Offscreen rendering of motions to MP4: a posed body mesh (pyrender, EGL) or a fast
skeleton drawing (pure numpy), encoded with ffmpeg (libx264, yuv420p) via imageio-ffmpeg.

Rendering runs headless through EGL (``PYOPENGL_PLATFORM=egl``; Mesa's llvmpipe on a
machine without a GPU). The variable is set here before pyrender / PyOpenGL are imported;
a process that imported PyOpenGL earlier with another platform keeps that one.

Camera. Square images, perspective (``yfov``), looking at the body from ``azimuth`` degrees
about +y (0 = in front of the body's initial facing when ``relative_azimuth``) and
``elevation`` degrees above the horizon. With ``follow`` the look-at point tracks the body's
horizontal centre smoothed over time by a zero-phase Gaussian (sigma ``follow_smoothing``
seconds; the straight line from the first to the last position is kept exactly, so steady
travel stays centred at the ends), at a constant height and a constant distance: there is no
jitter and no zoom pumping. The distance (unless ``distance`` is given) is the smallest that
keeps every vertex of every frame inside the view with ``margin`` to spare. Without
``follow`` the camera is fixed on the centre of the whole motion.

Speed on a CPU (llvmpipe). Only the body is rasterised by OpenGL (no MSAA by default:
pyrender's fixed 4x MSAA doubles the cost), read back as RGBA (alpha = body coverage, no
depth readback). The floor (world-fixed checker at the lowest point of the motion, or at
``floor_height``) is ray-cast in numpy, with a soft blob shadow under the body, and the body
is composited over it. Lighting: a directional key light from the camera's upper left, a
weaker fill from the right and ambient light, all moving with the camera. The body is shaded
by our lean shaders (``viewer/shaders``: the usual microfacet model for an untextured
dielectric, as pyrender's general shader computes it, minus its per-vertex matrix inverse and
unused texture/shadow/point-light paths; llvmpipe shades vertices on the drawing thread, so
that inverse was on the critical path).

One ``Renderer`` keeps its OpenGL context and is meant to be reused (its first render costs
about a second: EGL start-up and shader compilation); use it from one thread.
``render_motion_mp4`` keeps one renderer per thread.
"""
from __future__ import annotations

import os

os.environ.setdefault("PYOPENGL_PLATFORM", "egl")

import threading  # noqa: E402
import uuid  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Iterable, Iterator  # noqa: E402
import types

import numpy as np  # noqa: E402
from scipy.sparse import csr_matrix

from motioncore.skeleton import FPS, JOINT_NAMES  # noqa: E402
from motioncore.features import facing_direction
from motioncore.features import validate_joints
from motioncore.skeleton import KINEMATIC_CHAINS


class RenderError(RuntimeError):
    """Rendering or encoding failed (no OpenGL context, ffmpeg error, ...)."""


@dataclass
class RenderConfig:
    size: int = 512                      # square frames, pixels
    fps: float = FPS
    body_color: tuple = (0.55, 0.65, 0.85)
    background: tuple = (1.0, 1.0, 1.0)
    follow: bool = True                  # camera tracks the travelling body (smoothly)
    follow_smoothing: float = 0.5        # seconds, Gaussian sigma of the tracked path
    azimuth: float = 30.0                # degrees about +y; 0 = front view
    relative_azimuth: bool = True        # azimuth measured from the body's initial facing
    elevation: float = 12.0              # degrees above the horizon
    distance: float | None = None        # metres; None = fit the body (all frames) in view
    yfov: float = 40.0                   # vertical field of view, degrees
    margin: float = 0.12                 # fraction of the half-view kept free around the body
    floor: bool = True
    floor_checker: bool = True
    floor_tile: float = 1.0              # metres
    floor_colors: tuple = ((0.88, 0.88, 0.88), (0.72, 0.72, 0.72))
    floor_height: float | None = None    # None = the lowest point of the motion
    msaa: int = 0                        # multisampling (0 = off; 4 = smoother, ~2x slower on CPU)
    key_light: float = 2.2               # directional key light intensity (fill = 1/3)
    ambient: float = 0.22
    crf: int = 20                        # x264 quality (lower = better, bigger)
    preset: str = "veryfast"             # x264 speed preset

    def validate(self) -> "RenderConfig":
        if not (isinstance(self.size, (int, np.integer)) and 16 <= self.size <= 4096):
            raise ValueError(f"size must be an integer in [16, 4096], got {self.size!r}")
        if not (self.fps > 0 and np.isfinite(self.fps)):
            raise ValueError(f"fps must be positive, got {self.fps!r}")
        if not 5.0 <= self.yfov <= 120.0:
            raise ValueError(f"yfov must be in [5, 120] degrees, got {self.yfov!r}")
        if not 0.0 <= self.margin < 0.9:
            raise ValueError(f"margin must be in [0, 0.9), got {self.margin!r}")
        if self.msaa not in (0, 2, 4, 8):
            raise ValueError(f"msaa must be 0, 2, 4 or 8, got {self.msaa!r}")
        if not self.floor_tile > 0:
            raise ValueError(f"floor_tile must be positive, got {self.floor_tile!r}")
        if self.distance is not None and not self.distance > 0:
            raise ValueError(f"distance must be positive, got {self.distance!r}")
        for name in ("body_color", "background"):
            c = np.asarray(getattr(self, name), dtype=float)
            if c.shape != (3,) or np.any(c < 0) or np.any(c > 1):
                raise ValueError(f"{name} must be three floats in [0, 1], got {getattr(self, name)!r}")
        return self


# ---------------------------------------------------------------------------------- camera
@dataclass
class CameraPath:
    poses: np.ndarray     # (T, 4, 4) camera-to-world (OpenGL: looks along -z, y up)
    yfov: float           # radians
    znear: float
    zfar: float
    floor_y: float
    center: np.ndarray    # (2,) xz centre of the floor
    extent: float         # half size of the floor, metres


def _smooth(x: np.ndarray, sigma: float) -> np.ndarray:
    """Zero-phase Gaussian smoothing along axis 0 (sigma in samples). The straight line
    through the first and last samples is kept exactly (steady travel stays centred at the
    ends); only the deviation from it is smoothed, with zero padding."""
    x = np.asarray(x, dtype=np.float64)
    T = len(x)
    if sigma <= 0 or T < 3:
        return x.copy()
    line = x[0] + (x[-1] - x[0]) * (np.arange(T) / (T - 1))[:, None]
    dev = x - line
    r = int(np.ceil(3 * sigma))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    k /= k.sum()
    out = np.empty_like(x)
    for c in range(x.shape[1]):
        out[:, c] = np.convolve(np.pad(dev[:, c], r), k, mode="valid")
    return line + out


def _look_at(eye: np.ndarray, target: np.ndarray) -> np.ndarray:
    """(..., 4, 4) camera-to-world matrices looking from ``eye`` at ``target``, +y up."""
    z = eye - target
    z = z / np.linalg.norm(z, axis=-1, keepdims=True)
    up = np.broadcast_to(np.array([0.0, 1.0, 0.0]), z.shape)
    x = np.cross(up, z)
    n = np.linalg.norm(x, axis=-1, keepdims=True)
    x = np.where(n > 1e-9, x / np.maximum(n, 1e-12), np.array([1.0, 0.0, 0.0]))
    y = np.cross(z, x)
    M = np.zeros(z.shape[:-1] + (4, 4))
    M[..., :3, 0], M[..., :3, 1], M[..., :3, 2], M[..., :3, 3] = x, y, z, eye
    M[..., 3, 3] = 1.0
    return M


def view_direction(azimuth_deg: float, elevation_deg: float, facing_yaw: float = 0.0) -> np.ndarray:
    """Unit vector (3,) from the looked-at point towards the camera: ``azimuth_deg`` about +y from
    ``facing_yaw`` (radians, 0 = +z), ``elevation_deg`` above the horizon (clipped to +-80)."""
    az = np.radians(azimuth_deg) + facing_yaw
    el = np.radians(np.clip(elevation_deg, -80.0, 80.0))
    return np.array([np.sin(az) * np.cos(el), np.sin(el), np.cos(az) * np.cos(el)])


def camera_path(points: np.ndarray, cfg: RenderConfig, facing_yaw: float = 0.0,
                pad: float = 0.0, floor_pad: float = 0.0) -> CameraPath:
    """Camera for every frame framing ``points`` (T, N, 3) (vertices or joints).

    ``facing_yaw``: the body's initial heading (radians, 0 = +z, positive towards +x), added
    to ``cfg.azimuth`` when ``cfg.relative_azimuth``. ``pad``: extra radius (metres) around
    each point when fitting the view; ``floor_pad``: how far below the lowest point the
    automatic floor lies (skeleton drawing: the bone radius).
    """
    P = np.asarray(points, dtype=np.float64)
    T = len(P)
    lo, hi = P.min(axis=1), P.max(axis=1)  # (T, 3)
    centre = 0.5 * (lo + hi)
    floor_y = float(lo[:, 1].min() - floor_pad) if cfg.floor_height is None else float(cfg.floor_height)
    cy = float(np.median(centre[:, 1]))
    if cfg.follow:
        xz = _smooth(centre[:, [0, 2]], cfg.follow_smoothing * cfg.fps)
    else:
        xz = np.broadcast_to(0.5 * (lo[:, [0, 2]].min(0) + hi[:, [0, 2]].max(0)), (T, 2))
        cy = float(0.5 * (lo[:, 1].min() + hi[:, 1].max()))
    target = np.stack([xz[:, 0], np.full(T, cy), xz[:, 1]], axis=-1)

    d = view_direction(cfg.azimuth, cfg.elevation, facing_yaw if cfg.relative_azimuth else 0.0)
    basis = _look_at(d, np.zeros(3))[:3, :3]  # columns x, y, z of the camera
    yfov = np.radians(cfg.yfov)
    tan = np.tan(yfov / 2) * (1.0 - cfg.margin)
    if cfg.distance is None:
        rel = P - target[:, None, :]
        c = rel @ basis  # (T, N, 3) camera-frame coordinates relative to the target
        need = c[..., 2] + pad + (np.maximum(np.abs(c[..., 0]), np.abs(c[..., 1])) + pad) / tan
        dist = float(max(need.max(), (c[..., 2].max() + pad) + 0.3, 0.5))
    else:
        dist = float(cfg.distance)
    eye = target + dist * d
    poses = _look_at(eye, target)
    span = float(np.ptp(xz, axis=0).max()) if T > 1 else 0.0
    extent = float(min(dist * 3.0 + span + 3.0, 60.0))
    ground = xz.mean(axis=0)
    return CameraPath(poses=poses, yfov=yfov, znear=max(0.02, dist * 0.02),
                      zfar=dist + 2.5 * extent + 10.0, floor_y=floor_y, center=ground, extent=extent)


def facing_yaw_of(joints: np.ndarray) -> float:
    """Heading (radians, 0 = +z, positive towards +x) of a skeleton over its first frames."""
    f = facing_direction(np.asarray(joints[: min(len(joints), 5)], dtype=np.float64)).mean(axis=0)
    if np.linalg.norm(f) < 1e-6:
        return 0.0
    return float(np.arctan2(f[0], f[2]))


# ------------------------------------------------------------------------------ mesh helpers
class NormalSolver:
    """Area-weighted unit vertex normals of one triangle topology, many frames at once
    (a sparse vertex-face incidence product)."""

    def __init__(self, faces: np.ndarray, num_vertices: int) -> None:
        self.faces = np.asarray(faces, dtype=np.int64)
        F = len(self.faces)
        self.inc = csr_matrix((np.ones(3 * F, np.float32), (self.faces.ravel(), np.repeat(np.arange(F), 3))),
                              shape=(num_vertices, F))

    def __call__(self, vertices: np.ndarray) -> np.ndarray:
        """(T, V, 3) -> (T, V, 3) float32 unit normals."""
        v = np.asarray(vertices, dtype=np.float32)
        f = self.faces
        fn = np.cross(v[:, f[:, 1]] - v[:, f[:, 0]], v[:, f[:, 2]] - v[:, f[:, 0]])  # (T, F, 3)
        T, F = fn.shape[:2]
        n = (self.inc @ fn.transpose(1, 0, 2).reshape(F, T * 3)).reshape(-1, T, 3).transpose(1, 0, 2)
        norm = np.linalg.norm(n, axis=-1, keepdims=True)
        return (n / np.maximum(norm, 1e-12)).astype(np.float32)


def vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Area-weighted unit vertex normals (V, 3) of one mesh."""
    return NormalSolver(faces, len(vertices))(np.asarray(vertices)[None])[0]


def _light_pose(cam_pose: np.ndarray, right: float, up: float) -> np.ndarray:
    """A directional light shining from the camera side, offset ``right``/``up``."""
    x, y, z = cam_pose[:3, 0], cam_pose[:3, 1], cam_pose[:3, 2]
    direction = z + right * x + up * y
    return _look_at(cam_pose[:3, 3] + direction, cam_pose[:3, 3])


class FloorPainter:
    """The floor plane as an image, ray-cast in numpy (cheaper than rasterising it with
    llvmpipe): a world-fixed checker (or plain) floor that fades into the background where
    its tiles get smaller than a few pixels or far away, with a soft blob shadow under the
    body. The camera of ``CameraPath`` keeps one orientation and height, so the ray-floor
    distances are computed once and each frame only shifts the pattern."""

    def __init__(self, cam: CameraPath, cfg: RenderConfig) -> None:
        S = cfg.size
        self.size, self.cfg, self.cam = S, cfg, cam
        self.f = (S / 2) / np.tan(cam.yfov / 2)
        u = (np.arange(S) + 0.5 - S / 2) / self.f
        uu, vv = np.meshgrid(u, -u)
        self.rays = np.stack([uu, vv, -np.ones_like(uu)], -1).reshape(-1, 3).astype(np.float32)
        self.bg = np.asarray(cfg.background, dtype=np.float32)
        self._bg32 = _pack_rgba(_to_uint8(self.bg))
        self.colors = [np.asarray(c, dtype=np.float32) for c in cfg.floor_colors]
        R = cam.poses[:, :3, :3]
        self.static = bool(np.allclose(R, R[:1], atol=1e-9) and np.allclose(
            cam.poses[:, 1, 3], cam.poses[0, 1, 3], atol=1e-9))
        self._geom = self._geometry(cam.poses[0]) if self.static else None

    def _geometry(self, pose):
        dirs = self.rays @ pose[:3, :3].T.astype(np.float32)
        eye_y = np.float32(pose[1, 3])
        hit = (dirs[:, 1] < -1e-6) & (eye_y > self.cam.floor_y)
        idx = np.nonzero(hit)[0]
        d = dirs[idx]
        s = (np.float32(self.cam.floor_y) - eye_y) / d[:, 1]
        off = (s[:, None] * d[:, [0, 2]]).astype(np.float32)  # hit point relative to the eye (xz)
        # pixel footprint on the floor (metres): ray length / focal / |cos incidence|
        dn = np.sqrt(np.einsum("ij,ij->i", d, d))
        length = s * dn
        foot = length * dn / (self.f * -d[:, 1])
        tile = float(self.cfg.floor_tile)
        fade = np.maximum(np.clip((foot / tile - 0.08) / 0.25, 0, 1),
                          np.clip((length - 0.6 * self.cam.extent) / (0.4 * self.cam.extent), 0, 1))
        fade = fade[:, None].astype(np.float32)
        c0 = _pack_rgba(_to_uint8(self.colors[0] * (1 - fade) + self.bg * fade))
        c1 = _pack_rgba(_to_uint8(self.colors[1] * (1 - fade) + self.bg * fade))
        if len(idx) and idx[-1] - idx[0] + 1 == len(idx):  # no camera roll: rows below the horizon
            idx = slice(int(idx[0]), int(idx[-1]) + 1)
        return idx, off, c0, c1

    def paint_rgba32(self, t: int, shadow_xz: np.ndarray | None = None,
                     shadow_strength: float = 0.0) -> np.ndarray:
        """(H*W,) uint32 (RGBA bytes, native order) background + floor for frame ``t``."""
        pose = self.cam.poses[t]
        idx, off, c0, c1 = self._geom if self.static else self._geometry(pose)
        img = np.empty(self.size * self.size, dtype=np.uint32)
        img[:] = self._bg32
        inv = np.float32(1.0 / float(self.cfg.floor_tile))
        px = off[:, 0] + np.float32(pose[0, 3])
        pz = off[:, 1] + np.float32(pose[2, 3])
        if self.cfg.floor_checker:
            par = ((np.floor(px * inv) + np.floor(pz * inv)).astype(np.int64) & 1).astype(bool)
            col = np.where(par, c1, c0)
        else:
            col = c0.copy()
        if shadow_xz is not None and shadow_strength > 0:
            d2 = (px - np.float32(shadow_xz[0])) ** 2 + (pz - np.float32(shadow_xz[1])) ** 2
            near = np.nonzero(d2 < 0.5)[0]
            shade = 1.0 - shadow_strength * np.exp(-d2[near] / (2 * 0.22 ** 2))
            rgba = col[near].view(np.uint8).reshape(-1, 4)
            rgba[:, :3] = (rgba[:, :3] * shade[:, None]).astype(np.uint8)
            col[near] = rgba.view(np.uint32).ravel()
        if isinstance(idx, slice):
            img[idx] = col
        else:
            img[idx] = col
        return img

    def paint(self, t: int, shadow_xz: np.ndarray | None = None, shadow_strength: float = 0.0) -> np.ndarray:
        """(H, W, 3) uint8 background + floor for frame ``t``."""
        rgba = self.paint_rgba32(t, shadow_xz, shadow_strength)
        return np.ascontiguousarray(rgba.view(np.uint8).reshape(self.size, self.size, 4)[..., :3])


def _pack_rgba(rgb8: np.ndarray) -> np.ndarray:
    """(..., 3) uint8 -> (...,) uint32 whose bytes are R, G, B, 255."""
    rgb8 = np.asarray(rgb8, dtype=np.uint8)
    out = np.empty(rgb8.shape[:-1] + (4,), np.uint8)
    out[..., :3] = rgb8
    out[..., 3] = 255
    return np.ascontiguousarray(out).view(np.uint32)[..., 0]


def _to_uint8(img: np.ndarray) -> np.ndarray:
    return (np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def _composite(rgba: np.ndarray, ground32: np.ndarray, cfg: RenderConfig) -> np.ndarray:
    """Body render (H, W, 4) over the floor image (H*W,) uint32; alpha = body coverage.
    Antialiased edges (MSAA) were resolved against the background colour: undo that."""
    H, W = rgba.shape[:2]
    rgba = np.ascontiguousarray(rgba)
    alpha = rgba[..., 3].reshape(-1)
    out = np.where(alpha > 0, rgba.view(np.uint32).reshape(-1), ground32)
    edge = np.nonzero((alpha > 0) & (alpha < 255))[0]
    if len(edge):
        a = alpha[edge, None].astype(np.float32) / 255.0
        src = rgba.reshape(-1, 4)[edge, :3].astype(np.float32)
        floor = ground32[edge].view(np.uint8).reshape(-1, 4)[:, :3].astype(np.float32)
        bg = np.asarray(cfg.background, np.float32) * 255.0
        mixed = np.clip(src + (1.0 - a) * (floor - bg), 0, 255).astype(np.uint8)
        px = np.empty((len(edge), 4), np.uint8)
        px[:, :3], px[:, 3] = mixed, 255
        out[edge] = px.view(np.uint32).ravel()
    return out.view(np.uint8).reshape(H, W, 4)


def _shadow_params(points: np.ndarray, floor_y: float) -> tuple[np.ndarray, np.ndarray]:
    """Per frame: blob-shadow centre (T, 2) under the body and its strength (T,)."""
    lo, hi = points.min(axis=1), points.max(axis=1)
    centre = 0.5 * (lo[:, [0, 2]] + hi[:, [0, 2]])
    height = np.maximum(lo[:, 1] - floor_y, 0.0)
    return centre, 0.35 * np.exp(-height / 0.4)


def _set_msaa(pyrender_renderer, samples: int) -> None:
    """Give one pyrender Renderer a main framebuffer with ``samples`` MSAA samples (pyrender
    hard-codes 4, which costs ~2x on llvmpipe) and a colour-only readback (pyrender always
    reads and linearises depth too). Instance-level: other renderers are untouched. Without
    the pyrender internals this relies on (0.1.45) it leaves the renderer as it is."""
    from OpenGL import GL as gl

    def configure(self):
        if self._main_fb is not None and (self.viewport_width, self.viewport_height) != self._main_fb_dims:
            self._delete_main_framebuffer()
        if self._main_fb is not None:
            return
        w, h = self.viewport_width, self.viewport_height
        self._main_cb, self._main_db = gl.glGenRenderbuffers(2)
        gl.glBindRenderbuffer(gl.GL_RENDERBUFFER, self._main_cb)
        gl.glRenderbufferStorage(gl.GL_RENDERBUFFER, gl.GL_RGBA, w, h)
        gl.glBindRenderbuffer(gl.GL_RENDERBUFFER, self._main_db)
        gl.glRenderbufferStorage(gl.GL_RENDERBUFFER, gl.GL_DEPTH_COMPONENT24, w, h)
        self._main_fb = gl.glGenFramebuffers(1)
        gl.glBindFramebuffer(gl.GL_DRAW_FRAMEBUFFER, self._main_fb)
        gl.glFramebufferRenderbuffer(gl.GL_DRAW_FRAMEBUFFER, gl.GL_COLOR_ATTACHMENT0, gl.GL_RENDERBUFFER, self._main_cb)
        gl.glFramebufferRenderbuffer(gl.GL_DRAW_FRAMEBUFFER, gl.GL_DEPTH_ATTACHMENT, gl.GL_RENDERBUFFER, self._main_db)
        self._main_cb_ms, self._main_db_ms = gl.glGenRenderbuffers(2)
        gl.glBindRenderbuffer(gl.GL_RENDERBUFFER, self._main_cb_ms)
        gl.glRenderbufferStorageMultisample(gl.GL_RENDERBUFFER, samples, gl.GL_RGBA, w, h)
        gl.glBindRenderbuffer(gl.GL_RENDERBUFFER, self._main_db_ms)
        gl.glRenderbufferStorageMultisample(gl.GL_RENDERBUFFER, samples, gl.GL_DEPTH_COMPONENT24, w, h)
        self._main_fb_ms = gl.glGenFramebuffers(1)
        gl.glBindFramebuffer(gl.GL_DRAW_FRAMEBUFFER, self._main_fb_ms)
        gl.glFramebufferRenderbuffer(gl.GL_DRAW_FRAMEBUFFER, gl.GL_COLOR_ATTACHMENT0, gl.GL_RENDERBUFFER, self._main_cb_ms)
        gl.glFramebufferRenderbuffer(gl.GL_DRAW_FRAMEBUFFER, gl.GL_DEPTH_ATTACHMENT, gl.GL_RENDERBUFFER, self._main_db_ms)
        self._main_fb_dims = (w, h)

    def read_rgba(self, scene, flags):
        """Colour only (RGBA, no depth readback or linearisation): alpha is the body mask."""
        w, h = self._main_fb_dims
        if samples:
            gl.glBindFramebuffer(gl.GL_READ_FRAMEBUFFER, self._main_fb_ms)
            gl.glBindFramebuffer(gl.GL_DRAW_FRAMEBUFFER, self._main_fb)
            gl.glBlitFramebuffer(0, 0, w, h, 0, 0, w, h, gl.GL_COLOR_BUFFER_BIT, gl.GL_LINEAR)
            gl.glBindFramebuffer(gl.GL_READ_FRAMEBUFFER, self._main_fb)
        else:
            gl.glBindFramebuffer(gl.GL_READ_FRAMEBUFFER, self._main_fb_ms)
        buf = gl.glReadPixels(0, 0, w, h, gl.GL_RGBA, gl.GL_UNSIGNED_BYTE)
        return np.frombuffer(buf, dtype=np.uint8).reshape(h, w, 4)[::-1], None

    needed = ("_main_fb", "_main_fb_ms", "_main_fb_dims", "_delete_main_framebuffer",
              "_configure_main_framebuffer", "_read_main_framebuffer")
    if all(hasattr(pyrender_renderer, a) for a in needed):
        pyrender_renderer._delete_main_framebuffer()
        pyrender_renderer._configure_main_framebuffer = types.MethodType(configure, pyrender_renderer)
        pyrender_renderer._read_main_framebuffer = types.MethodType(read_rgba, pyrender_renderer)


_COMPOSITOR = None
_COMPOSITOR_GUARD = threading.Lock()


def _compositor():
    """One process-wide helper thread that paints the floor and composites a frame while the
    OpenGL thread draws the next (numpy releases the GIL for the array work)."""
    global _COMPOSITOR
    with _COMPOSITOR_GUARD:
        if _COMPOSITOR is None:
            from concurrent.futures import ThreadPoolExecutor

            _COMPOSITOR = ThreadPoolExecutor(max(1, min(2, (os.cpu_count() or 1) - 1)),
                                             thread_name_prefix="render-composite")
        return _COMPOSITOR


def _update_vertices(offscreen, prim, buf: np.ndarray, positions: np.ndarray,
                     normals: np.ndarray) -> bool:
    """Overwrite the vertex buffer of a primitive pyrender has already uploaded (0.1.45 keeps
    positions and normals interleaved in its first buffer, in that order) with new positions
    and normals, in place: no new buffers, no re-upload of the triangles. False (nothing done)
    if the primitive does not look like that, so the caller builds a new mesh instead."""
    from OpenGL import GL as gl

    bufs = getattr(prim, "_buffers", None)
    if getattr(prim, "_vaid", None) is None or not bufs or buf.shape != (len(positions), 6):
        return False
    if any(getattr(prim, a, None) is not None for a in ("tangents", "texcoord_0", "texcoord_1", "color_0")):
        return False
    buf[:, :3] = positions
    buf[:, 3:] = normals
    offscreen._platform.make_current()
    gl.glBindBuffer(gl.GL_ARRAY_BUFFER, bufs[0])
    gl.glBufferSubData(gl.GL_ARRAY_BUFFER, 0, buf.nbytes, buf)
    gl.glBindBuffer(gl.GL_ARRAY_BUFFER, 0)
    prim._positions, prim._normals = positions, normals   # what the primitive shows now
    prim._bounds = None
    return True


SHADER_DIR = Path(__file__).with_name("shaders")


def _lean_programs():
    """A pyrender shader-program cache reading our lean body shaders (``viewer/shaders``: the
    same picture for an untextured dielectric lit by directional + ambient light, without the
    per-vertex matrix inverse and the unused paths of pyrender's general shader; measured ~1.5x
    faster per frame on llvmpipe, pixels within one level). None if pyrender's internals differ."""
    try:
        from pyrender.shader_program import ShaderProgramCache
    except ImportError:  # pragma: no cover - other pyrender versions
        return None
    if not all((SHADER_DIR / n).is_file() for n in ("mesh.vert", "mesh.frag")):
        return None
    return ShaderProgramCache(shader_dir=str(SHADER_DIR))


# ---------------------------------------------------------------------------------- renderer
def _delete_offscreen(r) -> None:
    """Free a pyrender OffscreenRenderer without ``eglTerminate``: pyrender terminates the EGL
    display when it deletes a context, and the display is shared by every context of the
    process, so any other renderer (another thread, another size) would fail afterwards with
    EGL_BAD_DISPLAY. Only this renderer's context is destroyed here."""
    plat = getattr(r, "_platform", None)
    if plat is not None and hasattr(plat, "_egl_display"):
        def destroy_only(plat=plat):
            from OpenGL.EGL import eglDestroyContext

            if plat._egl_display is not None and plat._egl_context is not None:
                eglDestroyContext(plat._egl_display, plat._egl_context)
            plat._egl_context = None
            plat._egl_display = None
        plat.delete_context = destroy_only
    r.delete()


class Renderer:
    """Offscreen renderer (one OpenGL context, reused across calls). Not thread-safe: use one
    per thread (``shared_renderer()``)."""

    def __init__(self, size: int = 512) -> None:
        try:
            import pyrender
        except Exception as exc:  # pragma: no cover - environment problem
            raise RenderError(f"pyrender is not usable ({type(exc).__name__}: {exc}); "
                              "install pyrender and Mesa EGL (libegl1)") from exc
        self._pr = pyrender
        self.size = int(size)
        self._r = None
        self._samples = None
        self._programs: dict = {}
        self._normals: tuple | None = None
        self._lock = threading.Lock()

    def _gl(self, size: int, samples: int):
        if self._r is not None and (self.size != size or self._samples != samples):
            _delete_offscreen(self._r)
            self._r = None
        if self._r is None:
            try:
                self._r = self._pr.OffscreenRenderer(size, size)
            except Exception as exc:
                raise RenderError(f"cannot create an offscreen OpenGL context "
                                  f"(PYOPENGL_PLATFORM={os.environ.get('PYOPENGL_PLATFORM')}): "
                                  f"{type(exc).__name__}: {exc}") from exc
            _set_msaa(self._r._renderer, samples)
            self._programs = {False: getattr(self._r._renderer, "_program_cache", None),
                              True: _lean_programs()}
            self.size, self._samples = size, samples
        return self._r

    def _use_programs(self, lean: bool) -> None:
        """Draw with our lean body shaders (``lean``) or pyrender's own (the previous path)."""
        cache = self._programs.get(bool(lean)) or self._programs.get(False)
        if cache is not None and hasattr(self._r._renderer, "_program_cache"):
            self._r._renderer._program_cache = cache

    def _normal_solver(self, faces: np.ndarray, num_vertices: int) -> NormalSolver:
        key = (faces.shape, num_vertices, hash(faces.tobytes()))
        if self._normals is None or self._normals[0] != key:
            self._normals = (key, NormalSolver(faces, num_vertices))
        return self._normals[1]

    def close(self) -> None:
        if self._r is not None:
            try:
                _delete_offscreen(self._r)
            finally:
                self._r = None

    def __enter__(self) -> "Renderer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- mesh
    def iter_mesh(self, vertices: np.ndarray, faces: np.ndarray, cfg: RenderConfig | None = None,
                  facing_yaw: float = 0.0, normals: np.ndarray | None = None,
                  in_place: bool = True) -> Iterator[np.ndarray]:
        """Yield rendered frames (H, W, 3) uint8 one by one (lets encoding overlap).
        Arguments are checked before the first frame is requested.

        ``normals`` (T, V, 3): unit vertex normals of every frame (e.g. skinned ones from
        ``MannequinBody.vertices_and_normals``); None = computed from the triangles.
        ``in_place`` (default): one mesh for the whole clip whose vertex buffer is overwritten
        each frame, drawn by our lean body shaders (``viewer/shaders``); False = a new pyrender
        mesh per frame drawn by pyrender's own shader (the previous path, kept for comparison:
        the same pictures within one level, slower)."""
        cfg = (cfg or RenderConfig()).validate()
        V = np.asarray(vertices)
        F = np.asarray(faces)
        if V.ndim != 3 or V.shape[-1] != 3 or len(V) == 0 or V.shape[1] == 0:
            raise ValueError(f"vertices must have shape (T, V, 3) with T, V >= 1, got {V.shape}")
        if F.ndim != 2 or F.shape[1] != 3 or len(F) == 0 or not np.issubdtype(F.dtype, np.integer):
            raise ValueError(f"faces must be integers of shape (F, 3), got {F.shape} {F.dtype}")
        if F.min() < 0 or F.max() >= V.shape[1]:
            raise ValueError("face indices out of range of the vertices")
        if not np.all(np.isfinite(V)):
            raise ValueError("vertices contain NaN or infinite values")
        if normals is not None:
            normals = np.asarray(normals)
            if normals.shape != V.shape:
                raise ValueError(f"normals must have the vertices' shape {V.shape}, got {normals.shape}")
            normals = normals.astype(np.float32, copy=False)
        V = V.astype(np.float32, copy=False)
        step = max(1, V.shape[1] // 4000)
        sub = V[:, ::step]
        cam = camera_path(sub, cfg, facing_yaw, pad=0.02)
        return self._mesh_frames(V, F.astype(np.int64), cfg, cam, sub, normals, bool(in_place))

    def _mesh_frames(self, V, F, cfg, cam, sub, given_normals=None, in_place=True) -> Iterator[np.ndarray]:
        pr = self._pr
        with self._lock:
            r = self._gl(cfg.size, int(cfg.msaa))
            self._use_programs(lean=in_place)
            if given_normals is None:
                solver = self._normal_solver(F, V.shape[1])
                normals = lambda s, e: solver(V[s:e])  # noqa: E731
            else:
                normals = lambda s, e: given_normals[s:e]  # noqa: E731
            F32 = F.astype(np.uint32)
            # background alpha 0: the alpha channel of the RGBA readback is the body's coverage
            scene = pr.Scene(bg_color=(*map(float, cfg.background), 0.0),
                             ambient_light=(float(cfg.ambient),) * 3)
            cam_node = scene.add(pr.PerspectiveCamera(yfov=cam.yfov, znear=cam.znear, zfar=cam.zfar,
                                                      aspectRatio=1.0), pose=cam.poses[0])
            key = scene.add(pr.DirectionalLight(color=np.ones(3), intensity=float(cfg.key_light)),
                            pose=_light_pose(cam.poses[0], -0.6, 0.9))
            fill = scene.add(pr.DirectionalLight(color=np.ones(3), intensity=float(cfg.key_light) / 3),
                             pose=_light_pose(cam.poses[0], 0.9, 0.1))
            body_mat = pr.MetallicRoughnessMaterial(
                baseColorFactor=(*map(float, cfg.body_color), 1.0), metallicFactor=0.0,
                roughnessFactor=0.55)
            floor = FloorPainter(cam, cfg) if cfg.floor else None
            shadow_xz, shadow_k = _shadow_params(sub, cam.floor_y)
            def finish(color, t):
                if floor is not None:
                    ground = floor.paint_rgba32(t, shadow_xz[t], float(shadow_k[t]))
                    color = _composite(color, ground, cfg)
                return np.ascontiguousarray(color[..., :3])

            pool = _compositor() if floor is not None else None
            pending = None
            chunk = 8
            body = None            # in place: (node, primitive, interleaved (V, 6) float32 buffer)
            for s in range(0, len(V), chunk):
                N = normals(s, s + chunk)
                for i in range(len(N)):
                    t = s + i
                    scene.set_pose(cam_node, cam.poses[t])
                    scene.set_pose(key, _light_pose(cam.poses[t], -0.6, 0.9))
                    scene.set_pose(fill, _light_pose(cam.poses[t], 0.9, 0.1))
                    if body is not None and _update_vertices(r, body[1], body[2], V[t], N[i]):
                        color, _ = r.render(scene, flags=pr.RenderFlags.RGBA)
                    else:
                        if body is not None:          # the buffer could not be updated
                            scene.remove_node(body[0])
                            body, in_place = None, False
                        prim = pr.Primitive(positions=V[t], normals=N[i], indices=F32, material=body_mat)
                        node = scene.add(pr.Mesh([prim]))
                        try:
                            color, _ = r.render(scene, flags=pr.RenderFlags.RGBA)
                        finally:
                            if in_place:
                                body = (node, prim, np.empty((V.shape[1], 6), np.float32))
                            else:
                                scene.remove_node(node)
                    if not in_place or pool is None:   # the previous path: all on this thread
                        yield finish(color, t)
                        continue
                    job = pool.submit(finish, color, t)   # floor + compositing overlap the next draw
                    if pending is not None:
                        yield pending.result()
                    pending = job
            if pending is not None:
                yield pending.result()
            # the GPU buffers of the clip's mesh are released by the next render call on this
            # renderer (pyrender drops meshes that are no longer in the scene)

    def render_mesh(self, vertices: np.ndarray, faces: np.ndarray, cfg: RenderConfig | None = None,
                    facing_yaw: float = 0.0, normals: np.ndarray | None = None,
                    in_place: bool = True) -> np.ndarray:
        """(T, H, W, 3) uint8 frames of the mesh sequence ``vertices`` (T, V, 3) (see ``iter_mesh``)."""
        return np.stack(list(self.iter_mesh(vertices, faces, cfg, facing_yaw, normals, in_place)))

    # -- skeleton
    def iter_skeleton(self, joints: np.ndarray, cfg: RenderConfig | None = None,
                      facing_yaw: float | None = None) -> Iterator[np.ndarray]:
        return iter_skeleton_frames(joints, cfg, facing_yaw)

    def render_skeleton(self, joints: np.ndarray, cfg: RenderConfig | None = None,
                        facing_yaw: float | None = None) -> np.ndarray:
        """(T, H, W, 3) uint8 frames of a stick figure (pure numpy, no OpenGL)."""
        return np.stack(list(iter_skeleton_frames(joints, cfg, facing_yaw)))


# ------------------------------------------------------------------------ skeleton drawing
_SIDE = tuple("L" if n.startswith("left_") else "R" if n.startswith("right_") else "C"
              for n in JOINT_NAMES)
_BONE_COLORS = {"L": (0.20, 0.45, 0.85), "R": (0.85, 0.30, 0.20), "C": (0.30, 0.30, 0.35)}
_BONE_RADIUS = 0.035
_HEAD_RADIUS = 0.10


def _skeleton_bones():
    bones = []
    for chain in KINEMATIC_CHAINS:
        for a, b in zip(chain[:-1], chain[1:]):
            bones.append((a, b))
    return tuple(dict.fromkeys(bones))


def _paint_capsule(img, p0, p1, r, color, aa=1.0):
    """Alpha-blend a 2-D capsule (segment p0-p1 in pixels, radius r) into img (H, W, 3)."""
    H, W = img.shape[:2]
    x0 = int(max(0, np.floor(min(p0[0], p1[0]) - r - 1)))
    x1 = int(min(W, np.ceil(max(p0[0], p1[0]) + r + 2)))
    y0 = int(max(0, np.floor(min(p0[1], p1[1]) - r - 1)))
    y1 = int(min(H, np.ceil(max(p0[1], p1[1]) + r + 2)))
    if x0 >= x1 or y0 >= y1:
        return
    ys, xs = np.mgrid[y0:y1, x0:x1]
    px, py = xs + 0.5, ys + 0.5
    d = p1 - p0
    L2 = float(d @ d)
    if L2 < 1e-12:
        t = np.zeros_like(px)
    else:
        t = np.clip(((px - p0[0]) * d[0] + (py - p0[1]) * d[1]) / L2, 0.0, 1.0)
    dist = np.hypot(px - (p0[0] + t * d[0]), py - (p0[1] + t * d[1]))
    alpha = np.clip(r - dist + 0.5 * aa, 0.0, 1.0)[..., None].astype(np.float32)
    patch = img[y0:y1, x0:x1]
    patch *= 1.0 - alpha
    patch += alpha * np.asarray(color, dtype=np.float32)


def iter_skeleton_frames(joints: np.ndarray, cfg: RenderConfig | None = None,
                         facing_yaw: float | None = None) -> Iterator[np.ndarray]:
    """Yield stick-figure frames: perspective-projected capsules (left limbs blue, right red,
    head a disc), painter-sorted by depth, anti-aliased, on the same floor and camera as the
    mesh renderer. Pure numpy (no OpenGL). Arguments are checked before the first frame."""
    cfg = (cfg or RenderConfig()).validate()
    J = validate_joints(joints, min_frames=1)
    if facing_yaw is None:
        facing_yaw = facing_yaw_of(J)
    cam = camera_path(J, cfg, facing_yaw, pad=max(_BONE_RADIUS, _HEAD_RADIUS), floor_pad=_BONE_RADIUS)
    return _skeleton_frames(J, cfg, cam)


def _skeleton_frames(J, cfg, cam) -> Iterator[np.ndarray]:
    S = cfg.size
    f = (S / 2) / np.tan(cam.yfov / 2)
    bones = _skeleton_bones()
    head = JOINT_NAMES.index("head")
    bg = np.asarray(cfg.background, dtype=np.float32)
    floor = FloorPainter(cam, cfg) if cfg.floor else None
    shadow_xz, shadow_k = _shadow_params(J, cam.floor_y)
    for t in range(len(J)):
        pose = cam.poses[t]
        if floor is not None:
            img = floor.paint(t, shadow_xz[t], float(shadow_k[t])).astype(np.float32) / 255.0
        else:
            img = np.empty((S, S, 3), np.float32)
            img[:] = bg
        pc = (J[t] - pose[:3, 3]) @ pose[:3, :3]  # camera frame
        depth = np.maximum(-pc[:, 2], 1e-3)
        px = np.stack([S / 2 + f * pc[:, 0] / depth, S / 2 - f * pc[:, 1] / depth], -1)
        items = [(0.5 * (depth[a] + depth[b]), a, b) for a, b in bones] + [(depth[head], head, head)]
        for _, a, b in sorted(items, key=lambda it: -it[0]):
            if a == b:
                r = f * _HEAD_RADIUS / depth[a]
                col = np.asarray(_BONE_COLORS["C"])
            else:
                r = f * _BONE_RADIUS / (0.5 * (depth[a] + depth[b]))
                col = np.asarray(_BONE_COLORS[_SIDE[b]])
            _paint_capsule(img, px[a], px[b], r + 1.2, col * 0.55)   # outline
            _paint_capsule(img, px[a], px[b], r, col)
        yield _to_uint8(img)


# ------------------------------------------------------------------------------------ MP4
def _check_output(path: Path) -> Path:
    path = Path(path)
    if path.suffix.lower() not in (".mp4", ".m4v", ".mov"):
        raise ValueError(f"output must be an .mp4 file, got {path.name!r}")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.exists():
        raise FileNotFoundError(f"output folder does not exist: {parent}")
    if not parent.is_dir():
        raise NotADirectoryError(f"output folder is not a directory: {parent}")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise PermissionError(f"output folder is not writable: {parent}")
    if path.exists() and path.is_dir():
        raise IsADirectoryError(f"output path is a directory: {path}")
    return path


def write_mp4(frames: np.ndarray | Iterable[np.ndarray], path: str | Path, fps: float = FPS,
              crf: int = 20, preset: str = "veryfast", overlap: bool = True) -> Path:
    """Encode RGB uint8 frames ((T, H, W, 3) array or an iterable of (H, W, 3)) as H.264 MP4
    (libx264, yuv420p, +faststart for browsers). Odd sizes are padded to even by repeating
    the last row / column. Atomic: written to a temporary file beside ``path`` and renamed;
    on any error nothing is left at ``path`` (an existing file there is kept).

    ``overlap`` (default): frames are handed to ffmpeg by a writer thread through a small
    queue, so the caller's thread (rendering the next frame) never waits on the pipe;
    frames are still taken from ``frames`` on the calling thread (an OpenGL context stays
    on its thread)."""
    import imageio_ffmpeg

    path = _check_output(Path(path))
    if not (fps > 0 and np.isfinite(fps)):
        raise ValueError(f"fps must be positive, got {fps!r}")
    if isinstance(frames, np.ndarray):
        if frames.ndim != 4 or frames.shape[-1] != 3 or len(frames) == 0:
            raise ValueError(f"frames must have shape (T, H, W, 3) with T >= 1, got {frames.shape}")
    it = iter(frames)
    try:
        first = next(it)
    except StopIteration:
        raise ValueError("no frames to write") from None
    first = np.asarray(first)
    if first.ndim != 3 or first.shape[-1] != 3 or min(first.shape[:2]) < 2:
        raise ValueError(f"each frame must have shape (H, W, 3), H, W >= 2, got {first.shape}")
    if first.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 RGB, got dtype {first.dtype}")
    H, W = first.shape[:2]
    He, We = H + H % 2, W + W % 2

    def even(fr: np.ndarray) -> bytes:
        if fr.shape != (H, W, 3) or fr.dtype != np.uint8:
            raise ValueError(f"frame of shape {fr.shape} / {fr.dtype} differs from the first "
                             f"frame's ({H}, {W}, 3) uint8")
        if (He, We) != (H, W):
            fr = np.pad(fr, ((0, He - H), (0, We - W), (0, 0)), mode="edge")
        return np.ascontiguousarray(fr).tobytes()

    tmp = path.with_name(f".{path.stem}.{os.getpid()}.{uuid.uuid4().hex[:8]}.partial{path.suffix}")
    writer = imageio_ffmpeg.write_frames(
        str(tmp), (We, He), fps=float(fps), codec="libx264", pix_fmt_in="rgb24",
        pix_fmt_out="yuv420p", quality=None, macro_block_size=1, ffmpeg_log_level="error",
        output_params=["-preset", str(preset), "-crf", str(int(crf)), "-movflags", "+faststart"])
    try:
        try:
            writer.send(None)
            if overlap:
                _send_threaded(writer, first, it, even)
            else:
                writer.send(even(first))
                for fr in it:
                    writer.send(even(np.asarray(fr)))
        except (OSError, BrokenPipeError) as exc:
            raise RenderError(f"ffmpeg failed writing {path}: {exc}") from exc
        finally:
            writer.close()
        if not tmp.is_file() or tmp.stat().st_size == 0:
            raise RenderError(f"ffmpeg produced no output for {path}")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def _send_threaded(writer, first: np.ndarray, rest: Iterator, to_bytes, depth: int = 3) -> None:
    """Send ``first`` and then every frame of ``rest`` to the started ffmpeg ``writer`` from a
    helper thread; frames are produced (and checked) here, at most ``depth`` wait in between.
    The first error on either side stops both and is raised here."""
    import queue

    q: queue.Queue = queue.Queue(maxsize=depth)
    failed: list[BaseException] = []
    stop = threading.Event()

    def pump() -> None:
        try:
            while True:
                item = q.get()
                if item is None:
                    return
                writer.send(item)
        except BaseException as exc:  # noqa: BLE001 - handed to the producing thread
            failed.append(exc)
            stop.set()
            while q.get() is not None:    # drain so the producer never blocks on a full queue
                pass

    thread = threading.Thread(target=pump, name="mp4-writer", daemon=True)
    thread.start()
    try:
        q.put(to_bytes(first))
        for fr in rest:
            if stop.is_set():
                break
            q.put(to_bytes(np.asarray(fr)))
    finally:
        q.put(None)
        thread.join()
    if failed:
        raise failed[0]


# --------------------------------------------------------------------------- whole pipeline
_LOCAL = threading.local()


def shared_renderer() -> Renderer:
    """This thread's reusable renderer."""
    r = getattr(_LOCAL, "renderer", None)
    if r is None:
        r = _LOCAL.renderer = Renderer()
    return r


def render_motion_mp4(joints: np.ndarray, path: str | Path, cfg: RenderConfig | None = None,
                      body=None, skeleton_only: bool = False,
                      renderer: Renderer | None = None) -> Path:
    """Render joint positions (T, 22, 3) (y up, metres) to an MP4 at ``path``.

    Mesh mode: ``motioncore.ik.solve_ik`` fits rotations on ``body``'s own rest skeleton (default
    ``viewer.body.default_body()``: SMPL if installed, else the mannequin), the body is posed
    and rendered with pyrender. ``skeleton_only``: a numpy stick figure (no OpenGL needed).
    Frames stream into ffmpeg while rendering. Raises ValueError / MotionFormatError for bad
    input, OSError subclasses for a bad output path, RenderError for rendering/encoding.
    """
    cfg = (cfg or RenderConfig()).validate()
    J = validate_joints(joints, min_frames=1)
    path = _check_output(Path(path))
    yaw = facing_yaw_of(J)
    if skeleton_only:
        frames = iter_skeleton_frames(J, cfg, yaw)
    else:
        from viewer.body import default_body
        from motioncore.ik import solve_ik

        body = body if body is not None else default_body()
        pose = solve_ik(J, rest_offsets=body.rest_offsets(), fps=cfg.fps)
        verts, normals = pose_body(body, pose)
        frames = (renderer or shared_renderer()).iter_mesh(verts, body.faces, cfg, yaw, normals=normals)
    return write_mp4(frames, path, cfg.fps, crf=cfg.crf, preset=cfg.preset)


def pose_body(body, pose) -> tuple[np.ndarray, np.ndarray | None]:
    """(vertices, skinned normals or None) of ``body`` posed by ``pose``: bodies that skin
    their normals (``vertices_and_normals``) give both, others vertices only."""
    both = getattr(body, "vertices_and_normals", None)
    if both is not None:
        return both(pose)
    return body.vertices(pose), None


__all__ = ["CameraPath", "FloorPainter", "NormalSolver", "RenderConfig", "RenderError", "Renderer",
           "camera_path", "facing_yaw_of", "iter_skeleton_frames", "pose_body", "render_motion_mp4", "shared_renderer", "vertex_normals",
           "write_mp4"]
