"""What the app shows of a database video: a browser-playable MP4 and a thumbnail, made once and
kept in the database's ``media/`` folder (``media/<id>.mp4``, ``media/thumbs/<id>.jpg``).

The app makes them when a video is first shown (on its media thread), and meanwhile prepares
them for the whole database on an idle core (``AppService.start_preview_warmer``: one video at a
time, lowest priority, only while no request runs; about 1.3 s a video here); ``python -m backend
videos previews`` makes them ahead of time (resumable: what exists is kept), so no user waits for
a render on first view.
"""
from __future__ import annotations

import io
import subprocess
from pathlib import Path

import numpy as np

from motioncore.io import atomic_output, atomic_write_bytes

THUMB_SIDE = 192


def transcode_mp4(src: Path, out: Path, max_side: int = 480) -> Path:
    """H.264 MP4 copy of any video ffmpeg reads (for videos in other formats)."""
    import imageio_ffmpeg

    scale = f"scale='min({max_side},iw)':-2"
    with atomic_output(out) as tmp:
        cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-loglevel", "error", "-i", str(src), "-an",
               "-vf", scale, "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p",
               "-movflags", "+faststart", str(tmp)]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        if proc.returncode != 0 or not tmp.is_file():
            raise RuntimeError(f"could not convert {src.name} for playback: "
                               f"{proc.stderr.strip()[-300:]}")
    return out


def display_path(retriever, video_id: str) -> Path:
    """Where the playable MP4 of a stored video is (or will be) in ``media/``: a synthetic
    video's rendering (``retriever.video_path``), else a transcoded copy of the user's file."""
    return retriever.db.root / "media" / f"{video_id}.mp4"


def display_video(retriever, video_id: str) -> Path:
    """The browser-playable MP4 of a stored video, made once (rendered or transcoded)."""
    rec = retriever.db.record(video_id)
    if rec.get("kind") == "synthetic":
        return Path(retriever.video_path(video_id))
    src = Path(retriever.video_path(video_id))
    out = display_path(retriever, video_id)
    if not out.is_file():
        transcode_mp4(src, out)
    return out


def thumbnail_path(retriever, video_id: str) -> Path:
    return retriever.db.root / "media" / "thumbs" / f"{video_id}.jpg"


def make_thumbnail(retriever, video_id: str, out: Path | None = None, side: int = THUMB_SIDE) -> Path:
    """A JPEG of the video's middle frame, at most ``side`` pixels a side (written atomically)."""
    out = out or thumbnail_path(retriever, video_id)
    rec = retriever.db.record(video_id)
    if rec.get("kind") == "synthetic":
        from backend.retrieval.videos.synth import VideoSpec, render_frames

        spec = VideoSpec.from_json(rec["spec"])
        frame = render_frames(spec, np.array([spec.frames // 2]))[0]
    else:
        from backend.retrieval.videos.decode import read_frames

        frame = read_frames(retriever.video_path(video_id), num=1, max_side=side)[0][0]
    from PIL import Image

    img = Image.fromarray(np.asarray(frame, np.uint8))
    img.thumbnail((side, side))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=85)
    atomic_write_bytes(out, buf.getvalue(), "thumbnail")
    return out


def prepare_previews(retriever, ids=None, progress: bool = True) -> dict:
    """Make the playable MP4 and the thumbnail of every video of ``ids`` (default: the whole
    database) that lacks them. Returns counts: made, already there, failed (id -> reason)."""
    from tqdm import tqdm

    ids = list(retriever.video_ids if ids is None else ids)
    made = kept = 0
    failed: dict[str, str] = {}
    for vid in tqdm(ids, desc="previews", unit="video", disable=not progress):
        todo = [p for p in (display_path(retriever, vid), thumbnail_path(retriever, vid)) if not p.is_file()]
        if not todo:
            kept += 1
            continue
        try:
            display_video(retriever, vid)
            if not thumbnail_path(retriever, vid).is_file():
                make_thumbnail(retriever, vid)
            made += 1
        except Exception as exc:  # noqa: BLE001 - one unreadable video must not stop the rest
            failed[vid] = f"{type(exc).__name__}: {exc}"
    return {"videos": len(ids), "made": made, "already_there": kept, "failed": failed}


__all__ = ["display_path", "display_video", "make_thumbnail", "prepare_previews", "thumbnail_path",
           "transcode_mp4"]
