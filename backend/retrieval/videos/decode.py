"""Video decoding for the video database: a fixed number of uniformly spaced RGB frames per video.

Decoding goes through the ffmpeg binary bundled with ``imageio-ffmpeg`` (imageio's ffmpeg
backend). A video is handled in two ffmpeg runs:

1. a *probe* that copies the packets of the first video stream without decoding them (tens of
   milliseconds even for long videos) and yields the exact frame count, fps, duration and size;
2. one *decode* pass in which ffmpeg itself keeps only the sampled frames (``select`` filter) and
   downscales them (``scale`` filter), so Python never receives the other frames.

Every failure (missing file, not a video, corrupt data, no frames, absurd size or length, ffmpeg
errors) is raised as :class:`VideoReadError` naming the file and the reason.
"""
from __future__ import annotations

import logging
import os
import re
import subprocess
from pathlib import Path

import numpy as np

MAX_DURATION_S = 4 * 3600.0  # longer videos are rejected
MAX_SIDE_PX = 8192  # frames wider or taller than this are rejected (8k is 7680 x 4320)
MAX_FRAMES = int(MAX_DURATION_S * 240)  # 4 hours at 240 fps
PROBE_TIMEOUT_S = 300.0
DECODE_TIMEOUT_S = 600.0


class VideoReadError(ValueError):
    """A video could not be used: missing, unreadable, corrupt, empty or absurd."""


def sample_indices(n_frames: int, num: int = 16) -> np.ndarray:
    """``num`` frame indices spread uniformly over a video of ``n_frames`` frames.

    Index ``i`` is the frame at the centre of the ``i``-th of ``num`` equal segments, so the
    samples cover the whole video and avoid its very first and last frame when there are enough
    frames. The result is non-decreasing, lies in ``[0, n_frames)`` and repeats indices when
    ``n_frames < num``.
    """
    n_frames = int(n_frames)
    num = int(num)
    if n_frames < 1:
        raise ValueError(f"n_frames must be >= 1, got {n_frames}")
    if num < 1:
        raise ValueError(f"num must be >= 1, got {num}")
    idx = np.floor((np.arange(num, dtype=np.float64) + 0.5) * n_frames / num).astype(np.int64)
    return np.clip(idx, 0, n_frames - 1)


def _fit_size(width: int, height: int, max_side: int | None) -> tuple[int, int]:
    """Size with the long side at most ``max_side`` (aspect kept, never upscaled, >= 1 px)."""
    if max_side is None or max(width, height) <= max_side:
        return int(width), int(height)
    scale = max_side / max(width, height)
    return max(1, int(round(width * scale))), max(1, int(round(height * scale)))


def frames_from_array(arr, num: int = 16, max_side: int | None = None) -> np.ndarray:
    """Sample ``num`` uniformly spaced frames from an in-memory video ``(T, H, W, 3)``.

    Floating-point input is taken to be in [0, 1]; grayscale ``(T, H, W)`` is expanded to RGB.
    With ``max_side`` the frames are downscaled (aspect kept) so the long side is at most it.
    Returns uint8 ``(num, H', W', 3)``.
    """
    a = np.asarray(arr)
    if a.ndim == 3:
        a = np.repeat(a[..., None], 3, axis=-1)
    if a.ndim != 4 or a.shape[-1] not in (3, 4):
        raise VideoReadError(f"in-memory video: expected shape (T, H, W, 3), got {a.shape}")
    if a.shape[0] < 1 or a.shape[1] < 1 or a.shape[2] < 1:
        raise VideoReadError(f"in-memory video: empty array of shape {a.shape}")
    a = a[..., :3]
    if a.dtype != np.uint8:
        if np.issubdtype(a.dtype, np.floating):
            a = np.nan_to_num(a.astype(np.float32), nan=0.0)
            a = np.clip(np.round(a * 255.0), 0, 255)
        else:
            a = np.clip(a, 0, 255)
        a = a.astype(np.uint8)
    out = a[sample_indices(a.shape[0], num)]
    h, w = out.shape[1:3]
    nw, nh = _fit_size(w, h, max_side)
    if (nw, nh) != (w, h):
        from PIL import Image

        out = np.stack(
            [np.asarray(Image.fromarray(f).resize((nw, nh), Image.BILINEAR)) for f in out]
        )
    return np.ascontiguousarray(out)


# ----------------------------------------------------------------------------- ffmpeg helpers
def _ffmpeg_exe(path: str) -> str:
    try:
        import imageio_ffmpeg
    except ImportError as err:  # pragma: no cover - imageio-ffmpeg is a requirement
        raise VideoReadError(f"{path}: cannot decode videos, imageio-ffmpeg is not installed") from err
    try:
        return imageio_ffmpeg.get_ffmpeg_exe()
    except Exception as err:  # pragma: no cover
        raise VideoReadError(f"{path}: no usable ffmpeg binary ({err})") from err


def _last_error_line(log: str) -> str:
    lines = [ln.strip() for ln in log.splitlines() if ln.strip() and not ln.startswith("frame=")]
    for ln in reversed(lines):
        low = ln.lower()
        if "error" in low or "invalid" in low or "not found" in low or "does not contain" in low:
            return ln
    return lines[-1] if lines else "ffmpeg failed without a message"


_DURATION_RE = re.compile(r"Duration:\s*(\d+):(\d+):(\d+(?:\.\d+)?)")
_STREAM_RE = re.compile(r"Stream #0:\d+.*?: Video: (.*)")
_SIZE_RE = re.compile(r"\b(\d{1,6})x(\d{1,6})\b")
_FPS_RE = re.compile(r"([\d.]+)(k?) (?:fps|tbr)\b")
_FRAME_RE = re.compile(r"frame=\s*(\d+)")
_ROT_RE = re.compile(r"rotation of (-?[\d.]+) degrees")


def _probe(path: str) -> dict:
    """Frame count, fps, duration and displayed size of the first video stream, without decoding."""
    cmd = [_ffmpeg_exe(path), "-hide_banner", "-nostdin", "-i", path,
           "-map", "0:v:0", "-c", "copy", "-f", "null", "-"]
    try:
        proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, timeout=PROBE_TIMEOUT_S)
    except subprocess.TimeoutExpired as err:
        raise VideoReadError(f"{path}: probing took more than {PROBE_TIMEOUT_S:.0f} s") from err
    except OSError as err:
        raise VideoReadError(f"{path}: could not run ffmpeg ({err})") from err
    log = proc.stderr.decode("utf-8", errors="replace")
    if proc.returncode != 0:
        if "matches no streams" in log or "does not contain any stream" in log:
            raise VideoReadError(f"{path}: no video stream")
        raise VideoReadError(f"{path}: not a readable video ({_last_error_line(log)})")
    stream = _STREAM_RE.search(log)
    if stream is None:
        raise VideoReadError(f"{path}: no video stream")
    desc = stream.group(1)
    size = None
    for m in _SIZE_RE.finditer(desc):
        w, h = int(m.group(1)), int(m.group(2))
        if w > 0 and h > 0 and not m.group(0).startswith("0x"):
            size = (w, h)
            break
    if size is None:
        raise VideoReadError(f"{path}: could not determine the frame size")
    rot = _ROT_RE.search(log)
    if rot is not None and int(round(abs(float(rot.group(1))))) % 180 == 90:
        size = (size[1], size[0])  # ffmpeg auto-rotates on decode
    fps = 0.0
    fm = _FPS_RE.search(desc)
    if fm is not None:
        fps = float(fm.group(1)) * (1000.0 if fm.group(2) else 1.0)
    duration = 0.0
    dm = _DURATION_RE.search(log)
    if dm is not None:
        duration = int(dm.group(1)) * 3600 + int(dm.group(2)) * 60 + float(dm.group(3))
    frames = _FRAME_RE.findall(log)
    n_frames = int(frames[-1]) if frames else 0
    if duration <= 0 and fps > 0:
        duration = n_frames / fps
    if fps <= 0 and duration > 0:
        fps = n_frames / duration
    return {"fps": float(fps), "n_frames": n_frames, "duration": float(duration),
            "width": int(size[0]), "height": int(size[1])}


def _check_sane(path: str, info: dict) -> None:
    if info["n_frames"] < 1:
        raise VideoReadError(f"{path}: the video has no frames")
    if max(info["width"], info["height"]) > MAX_SIDE_PX:
        raise VideoReadError(
            f"{path}: frame size {info['width']}x{info['height']} exceeds {MAX_SIDE_PX} px")
    if info["duration"] > MAX_DURATION_S:
        raise VideoReadError(
            f"{path}: duration {info['duration']:.0f} s exceeds {MAX_DURATION_S:.0f} s")
    if info["n_frames"] > MAX_FRAMES:
        raise VideoReadError(f"{path}: {info['n_frames']} frames exceeds {MAX_FRAMES}")


def read_frames(path, num: int = 16, max_side: int | None = 320) -> tuple[np.ndarray, dict]:
    """Decode ``num`` uniformly spaced frames of the video at ``path``.

    Returns ``(frames, info)``: uint8 RGB frames ``(num, H, W, 3)`` whose long side is at most
    ``max_side`` (aspect kept, never upscaled; ``None`` keeps the size), and
    ``info = {"fps", "n_frames", "duration", "width", "height"}`` describing the source video
    (displayed size, i.e. after rotation metadata). Raises :class:`VideoReadError`.
    """
    p = Path(os.fspath(path))
    spath = str(p)
    if not p.exists():
        raise VideoReadError(f"{spath}: file does not exist")
    if not p.is_file():
        raise VideoReadError(f"{spath}: not a regular file")
    try:
        size = p.stat().st_size
    except OSError as err:
        raise VideoReadError(f"{spath}: cannot access the file ({err})") from err
    if size == 0:
        raise VideoReadError(f"{spath}: the file is empty (0 bytes)")
    if not os.access(spath, os.R_OK):
        raise VideoReadError(f"{spath}: the file is not readable (permission denied)")

    info = _probe(spath)
    _check_sane(spath, info)
    frames = _decode_selected(spath, sample_indices(info["n_frames"], num), info, max_side)
    return frames, info


class _DropResizeNotice(logging.Filter):
    """imageio-ffmpeg warns whenever the output size differs from the source: here that is wanted."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("The frame size for reading")


_RESIZE_FILTER = _DropResizeNotice()


def _decode_selected(path: str, indices: np.ndarray, info: dict, max_side: int | None) -> np.ndarray:
    import imageio_ffmpeg

    ff_logger = logging.getLogger("imageio_ffmpeg")
    if _RESIZE_FILTER not in ff_logger.filters:
        ff_logger.addFilter(_RESIZE_FILTER)

    unique = np.unique(indices)
    select = "+".join(f"eq(n\\,{int(i)})" for i in unique)
    ow, oh = _fit_size(info["width"], info["height"], max_side)
    vf = f"select='{select}',scale={ow}:{oh}:flags=area"
    gen = None
    got: list[np.ndarray] = []
    try:
        gen = imageio_ffmpeg.read_frames(
            path,
            input_params=["-hide_banner", "-nostdin"],
            output_params=["-map", "0:v:0", "-vf", vf, "-fps_mode", "passthrough"],
        )
        meta = next(gen)
        w, h = meta["size"]
        for raw in gen:
            got.append(np.frombuffer(raw, dtype=np.uint8).reshape(h, w, 3))
            if len(got) == len(unique):
                break
    except VideoReadError:
        raise
    except StopIteration as err:
        raise VideoReadError(f"{path}: ffmpeg produced no output") from err
    except Exception as err:  # ffmpeg failure, truncated stream, bad header, ...
        msg = " ".join(str(err).split())[:300]
        raise VideoReadError(f"{path}: decoding failed ({type(err).__name__}: {msg})") from err
    finally:
        if gen is not None:
            try:
                gen.close()
            except Exception:
                pass
    if not got:
        raise VideoReadError(f"{path}: no frame could be decoded")
    # The packet count can exceed the number of decodable frames by a few (broken tail):
    # missing samples repeat the last decoded frame.
    while len(got) < len(unique):
        got.append(got[-1])
    pos = np.searchsorted(unique, indices)
    return np.ascontiguousarray(np.stack([got[i] for i in pos]))
