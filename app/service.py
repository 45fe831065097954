"""What the app does, without any Gradio: load the models once (in the background), run one
generation or a McDPO-vs-SFT comparison into a session's folder, ingest an uploaded video,
make thumbnails and playable copies of database videos.

Heavy work (the models, rendering with the thread's own EGL context) runs on a small pool of
long-lived worker threads (``concurrency`` of them), so renderers are created once per worker
rather than once per short-lived request thread.
"""
from __future__ import annotations

import atexit
import contextlib
import logging
import os
import re
import shutil
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from app.views import caption_label
from backend.defaults import TEMPERATURE
from backend.retrieval.videos.previews import (display_path, display_video, make_thumbnail, thumbnail_path,
                                               transcode_mp4)
from motioncore.prompt import MAX_PROMPT_CHARS, PromptError

log = logging.getLogger("vimorag.app")

MODEL_LABELS = {"mcdpo": "McDPO", "sft": "SFT", "novideo": "text-only"}
RETRIEVAL_LABELS = {"gemini": "Gemini-MVR", "random": "random video", "none": "no video",
                    "given": "chosen video", "object": "object channel only"}
EXPORT_FORMATS = ("bvh", "fbx", "glb", "mp4", "npy")
QUICK_FORMATS = ("bvh", "fbx", "glb", "npy")   # shown (3D view, downloads) before the MP4 exists
KEEP_RUNS = 4                    # per session: older run folders are deleted
UPLOAD_PREFIX = "upload-"        # ids of a session's private uploads (never database ids)
WARM_QUIET_S = 5.0               # the preview warmer works only after this long without requests


class NotReady(RuntimeError):
    """The models are still loading, or failed to load."""


class UserError(ValueError):
    """Bad input from the person using the app: the message is shown as is."""


# --------------------------------------------------------------------------- model loading
def default_pipeline_factory(db: str = "embedded", models=("mcdpo", "sft")):
    """Load whichever of the requested motion LLMs exist (at least one), the retriever, the
    VQ-VAE and the evaluator."""
    def factory():
        from backend.checkpoints import checkpoints_dir
        from backend.pipeline import VimoRAGPipeline

        ck = checkpoints_dir()
        have = [m for m in models if (ck / f"llm-{m}" / "model.safetensors").is_file()]
        if not have:
            raise FileNotFoundError(
                f"no trained motion model in {ck} (expected {', '.join(f'llm-{m}/' for m in models)}); "
                "train them (`python -m backend train sft`, then `train mcdpo`; see the README) or point "
                "VIMORAG_CHECKPOINTS at a folder that has them")
        return VimoRAGPipeline.load(models=tuple(have), db=db, evaluator=True)
    return factory


class ModelHolder:
    """Loads the pipeline once, in a background thread; ``get()`` hands it out when ready."""

    def __init__(self, factory, warm_up: bool = True):
        self._factory, self._warm_up = factory, warm_up
        self.pipeline = None
        self.error: str | None = None
        self.started = self.finished = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()

    def start(self) -> "ModelHolder":
        if self._thread is None:
            self.started = time.time()
            self._thread = threading.Thread(target=self._load, name="vimorag-model-loader", daemon=True)
            self._thread.start()
        return self

    def _load(self) -> None:
        try:
            p = self._factory()
            if self._warm_up:
                warm_up(p)
            self.pipeline = p
        except Exception as exc:          # shown on the page; the server keeps running
            log.exception("loading the models failed")
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            self.finished = time.time()
            self._ready.set()

    def wait(self, timeout: float | None = None) -> bool:
        return self._ready.wait(timeout)

    @property
    def state(self) -> str:
        if self.pipeline is not None:
            return "ready"
        return "failed" if self.error else "loading"

    def get(self):
        if self.pipeline is not None:
            return self.pipeline
        if self.error:
            raise NotReady(f"the models could not be loaded ({self.error}). Fix the set-up and "
                           "restart the app.")
        waited = time.time() - (self.started or time.time())
        raise NotReady(f"the models are still loading ({waited:.0f} s so far; usually well under a "
                       "minute). Please try again in a moment.")

    def describe(self) -> str:
        s = self.state
        if s == "loading":
            return f"Loading models… ({time.time() - (self.started or time.time()):.0f} s)"
        if s == "failed":
            return f"**The models could not be loaded:** {self.error}"
        p = self.pipeline
        models = ", ".join(MODEL_LABELS.get(m, m) for m in p.models)
        return (f"Ready: {models} · {len(p.retriever.db):,} videos in the database · loaded in "
                f"{self.finished - self.started:.0f} s")


def warm_up(pipeline) -> None:
    """Load what the first request would otherwise load (text encoder, body model)."""
    pipeline.retriever.encode_query(["a person walks forward"])
    try:
        from viewer.body import default_body

        default_body()
    except Exception:                      # rendering problems surface, clearly, per request
        log.warning("body model warm-up failed", exc_info=True)


# ------------------------------------------------------------------------------- results
@dataclass
class ModelRun:
    model: str
    result: object                         # backend.pipeline.GenerationResult
    files: dict                            # export_motion's {format: path}
    distance: float | None = None

    @property
    def label(self) -> str:
        return MODEL_LABELS.get(self.model, self.model)

    def summary(self) -> dict:
        s = self.result.summary()
        s["text_motion_distance"] = None if self.distance is None else round(self.distance, 4)
        s["files"] = {k: str(v) for k, v in self.files.items()}
        return s


@dataclass
class Outcome:
    """Everything one request produced (for the UI and the API)."""
    runs: list[ModelRun] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    video_id: str | None = None
    retrieval: str = "gemini"
    router: dict | None = None             # scores + weights of the video used
    hits: list[dict] = field(default_factory=list)


@dataclass(frozen=True)
class ClipOptions:
    """What a clip maker sets besides the prompt: length (s; None = the model decides), no
    root travel, foot locking, and the BVH file's length unit."""
    length_s: float | None = None
    in_place: bool = False
    foot_lock: bool = True
    bvh_units: str = "cm"

    @classmethod
    def parse(cls, length=None, in_place=False, foot_lock=True, bvh_units="cm") -> "ClipOptions":
        from backend.pipeline import check_length
        from viewer.export import BVH_UNITS

        try:
            length_s = check_length(float(length) if length not in (None, "") else None)
        except (TypeError, ValueError) as exc:
            raise UserError(str(exc) if "clip length" in str(exc) else
                            f"the clip length must be a number of seconds, got {length!r}") from None
        units = bvh_units or "cm"
        if units not in BVH_UNITS:
            raise UserError(f"unknown BVH units {units!r}; choose {' or '.join(BVH_UNITS)}")
        return cls(length_s, bool(in_place), True if foot_lock is None else bool(foot_lock), units)

    def summary(self) -> dict:
        return {"length_s": self.length_s, "in_place": self.in_place, "foot_lock": self.foot_lock,
                "bvh_units": self.bvh_units}

    def stem_suffix(self) -> str:
        """Download names say what was asked: ``_4.0s``, ``_inplace``."""
        return (f"_{self.length_s:.1f}s" if self.length_s else "") + ("_inplace" if self.in_place else "")


def resolve_choice(state: dict, text: str, retrieval: str, video_id: str | None,
                   keep: bool) -> tuple[str, str | None, str | None]:
    """A chosen (or uploaded) video is for the prompt it was chosen with: a new prompt returns to
    Gemini-MVR retrieval unless the person ticked "keep". Returns (retrieval, video id, note).
    ``state["chosen"]`` ({id, prompt}) is recorded by ``remember_choice`` after each run."""
    chosen = (state or {}).get("chosen") or {}
    if (retrieval == "given" and not keep and video_id and chosen.get("id") == video_id
            and chosen.get("prompt") != text):
        return "gemini", None, (f"New prompt, so back to Gemini-MVR retrieval: the chosen video "
                                f"{video_id} was for an earlier prompt (tick “Keep this video for new "
                                f"prompts” to reuse it).")
    return retrieval, video_id, None


def remember_choice(state: dict, text: str, retrieval: str, video_id: str | None) -> None:
    if retrieval == "given" and video_id:
        state["chosen"] = {"id": video_id, "prompt": text}
    else:
        state.pop("chosen", None)


def slug(text: str, n: int = 40) -> str:
    s = re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_").lower()[:n].strip("_")
    return s or "motion"


def prompt_notes(raw: str, cleaned: str) -> list[str]:
    """What the person should know about how their prompt was read."""
    n = len(re.sub(r"\s+", " ", raw or "").strip())
    if n > MAX_PROMPT_CHARS:
        return [f"Your prompt has {n:,} characters; prompts are cut to {MAX_PROMPT_CHARS} characters "
                f"(at a word boundary), so only its first {len(cleaned)} were used."]
    return []


class AppService:
    def __init__(self, holder: ModelHolder, workdir: Path | None = None, render_size: int = 384,
                 concurrency: int = 1):
        self.holder = holder
        if workdir is None:                  # our own scratch folder: removed when the app exits
            workdir = tempfile.mkdtemp(prefix="vimorag-app-")
            atexit.register(shutil.rmtree, workdir, True)
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.render_size = int(render_size)
        self.pool = ThreadPoolExecutor(max(1, int(concurrency)), thread_name_prefix="vimorag-worker")
        # Reference videos and thumbnails render here, beside the motion's export on the pool.
        self.media_pool = ThreadPoolExecutor(1, thread_name_prefix="vimorag-media")
        self.db_lock = threading.RLock()     # uploads change the database under everyone
        self._media_locks: dict[str, threading.Lock] = {}
        self._media_guard = threading.Lock()

        self._active = 0                     # requests' calls in flight (the preview warmer waits)
        self._last_active = 0.0              # when the last one ended (time.monotonic)
        self._activity = threading.Condition()
        self._warmer: threading.Thread | None = None
        self._stop_warming = threading.Event()
        self.warmed: dict = {"made": 0, "already_there": 0, "failed": {}, "done": False}

    # ------------------------------------------------------------------ helpers
    def call(self, fn, *args, **kw):
        """Run ``fn`` on a worker thread and wait for it."""
        with self._busy():
            return self.pool.submit(fn, *args, **kw).result()

    @contextlib.contextmanager
    def _busy(self):
        """Marks a request's work in flight, so the preview warmer stays out of its way."""
        with self._activity:
            self._active += 1
        try:
            yield
        finally:
            with self._activity:
                self._active -= 1
                self._last_active = time.monotonic()
                self._activity.notify_all()

    # ------------------------------------------------------------- preview warmer
    def start_preview_warmer(self, ids=None, quiet_s: float = WARM_QUIET_S) -> threading.Thread:
        """Prepare the database videos' previews (the playable MP4 and the thumbnail the page
        shows, ``backend.retrieval.videos.previews``) on an idle core, in the background, so a
        video's first view need not render it: one video at a time, at the lowest CPU priority,
        and only while no request has been worked on for ``quiet_s`` seconds. What exists is
        kept; ``self.warmed`` counts the work; ``stop_preview_warmer`` ends it."""
        if self._warmer is None:
            self._warmer = threading.Thread(target=self._warm, args=(ids, quiet_s),
                                            name="vimorag-previews", daemon=True)
            self._warmer.start()
        return self._warmer

    def stop_preview_warmer(self, timeout: float | None = None) -> None:
        self._stop_warming.set()
        with self._activity:
            self._activity.notify_all()
        if self._warmer is not None:
            self._warmer.join(timeout)

    def _wait_until_quiet(self, quiet_s: float) -> bool:
        """Block while requests are in flight or ended less than ``quiet_s`` ago; False once
        the warmer is told to stop."""
        with self._activity:
            while not self._stop_warming.is_set():
                idle = time.monotonic() - self._last_active
                if self._active == 0 and idle >= quiet_s:
                    return True
                self._activity.wait(0.2 if self._active else max(0.05, quiet_s - idle))
        return False

    def _warm(self, ids, quiet_s: float) -> None:
        try:                                  # this thread only (Linux): the lowest priority
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
        except (AttributeError, OSError):
            pass
        self.holder.wait()
        try:
            r = self.holder.get().retriever
        except NotReady:
            return
        for vid in list(r.video_ids if ids is None else ids):
            if not self._wait_until_quiet(quiet_s):
                return
            if display_path(r, vid).is_file() and thumbnail_path(r, vid).is_file():
                self.warmed["already_there"] += 1
                continue
            try:
                with self._media_lock("video:" + vid):
                    display_video(r, vid)
                self._thumbnail(vid, _direct)
                self.warmed["made"] += 1
            except Exception as exc:  # noqa: BLE001 - one unreadable video must not stop the rest
                self.warmed["failed"][vid] = f"{type(exc).__name__}: {exc}"
        self.warmed["done"] = True

    def session_dir(self, state: dict) -> Path:
        d = state.get("dir")
        if not d or not Path(d).is_dir():
            d = str(self.workdir / f"session-{uuid.uuid4().hex[:12]}")
            Path(d).mkdir(parents=True, exist_ok=True)
            state["dir"] = d
        return Path(d)

    def new_run_dir(self, state: dict) -> Path:
        base = self.session_dir(state)
        state["runs"] = int(state.get("runs", 0)) + 1
        run = base / f"run-{state['runs']:04d}"
        run.mkdir(parents=True, exist_ok=True)
        for old in sorted(base.glob("run-*"))[:-KEEP_RUNS]:
            shutil.rmtree(old, ignore_errors=True)
        return run

    @staticmethod
    def drop_session(state) -> None:
        d = (state or {}).get("dir") if isinstance(state, dict) else None
        if d:
            shutil.rmtree(d, ignore_errors=True)

    def _media_lock(self, key: str) -> threading.Lock:
        with self._media_guard:
            return self._media_locks.setdefault(key, threading.Lock())

    # ------------------------------------------------------------------ generation
    def check_inputs(self, prompt, model: str, retrieval: str, seed, temperature, video_id, compare: bool,
                     uploads: dict | None = None):
        """What the page sends, as the pipeline takes it: numbers from the form, the session's
        uploads and compare mode are the app's to check; everything else is
        ``VimoRAGPipeline.check_request``'s (the one place requests are checked)."""
        pipe = self.holder.get()
        try:
            seed = int(seed if seed not in (None, "") else 0)
        except (TypeError, ValueError):
            raise UserError(f"the seed must be a whole number, got {seed!r}") from None
        try:
            temperature = float(temperature if temperature not in (None, "") else TEMPERATURE)
        except (TypeError, ValueError):
            raise UserError(f"the temperature must be a number, got {temperature!r}") from None
        video_id = (video_id or "").strip() or None
        upload = bool(video_id and video_id.startswith(UPLOAD_PREFIX))
        if retrieval == "given" and upload and video_id not in (uploads or {}):
            raise UserError(f"the uploaded video {video_id!r} is not one of this browser "
                            "session's uploads (they end with the session): upload it again")
        if compare:
            missing = [m for m in ("mcdpo", "sft") if m not in pipe.models]
            if missing:
                raise UserError("comparison needs both McDPO and SFT; not loaded: " + ", ".join(missing))
        models = ["mcdpo", "sft"] if compare else [model]
        try:
            for m in models:
                text, _ = pipe.check_request(prompt if prompt is not None else "", m, retrieval, seed,
                                             temperature, video_id=video_id, outside_video=upload)
        except PromptError:
            raise
        except ValueError as exc:
            raise UserError(str(exc)) from None
        return pipe, text, seed, temperature, video_id, models

    def generate_motion(self, pipe, text: str, model: str, retrieval: str, seed: int,
                        temperature: float, video_id: str | None, uploads: dict | None = None,
                        clip: ClipOptions = ClipOptions()):
        video = None
        if retrieval == "given" and video_id and video_id.startswith(UPLOAD_PREFIX):
            video = self.upload_features(pipe, uploads[video_id])
        with self.db_lock:
            return self.call(pipe.generate, text, model=model, retrieval=retrieval, seed=seed,
                             temperature=temperature, video_id=video_id, k=5, video=video,
                             length_s=clip.length_s, in_place=clip.in_place, plant_feet=clip.foot_lock)

    def export(self, result, out_dir: Path, stem: str, bvh_units: str = "cm",
               formats: tuple = EXPORT_FORMATS) -> dict:
        """Write ``formats`` of a result into ``out_dir`` (the GLB with its floor preview)."""
        from viewer.export import export_motion
        from viewer.render import RenderConfig

        return self.call(export_motion, result.joints, out_dir, formats=tuple(formats), stem=stem,
                         render_cfg=RenderConfig(size=self.render_size), clean=False,  # already clean
                         bvh_units=bvh_units, glb_preview="glb" in formats)

    def distance(self, pipe, result) -> float | None:
        if getattr(pipe, "evaluator", None) is None:
            return None
        try:
            return float(self.call(pipe.text_motion_distance, result.text, result.features))
        except Exception:
            log.warning("text-motion distance failed", exc_info=True)
            return None

    def servability(self, pipe, result, distance: float | None) -> str | None:
        try:
            return self.call(pipe.servability_warning, result, distance)
        except Exception:
            log.warning("servability check failed", exc_info=True)
            return None

    def router_for(self, pipe, text: str, video_id: str | None, hits: list,
                   uploads: dict | None = None) -> dict | None:
        """Channel scores and router weights of the video used (from the hit when retrieved,
        computed for a chosen or uploaded video)."""
        if video_id is None:
            return None
        for h in hits:
            if h.id == video_id:
                return {"id": h.id, "rank": h.rank, "score": h.score, "action_score": h.action_score,
                        "object_score": h.object_score, "w_action": h.w_action, "w_object": h.w_object}
        r = pipe.retriever
        if video_id.startswith(UPLOAD_PREFIX):
            up = (uploads or {})[video_id]
            with np.load(up["features"], allow_pickle=False) as z:
                emb = self.call(r.encode_arrays, z["keypoints"], z["object"])
        else:
            with self.db_lock:
                row = r.db.row(video_id)
                emb = {k: r.emb[k][row] for k in ("a", "o", "w")}
        return {"id": video_id, "rank": None, **self.call(r.scores_for, text, emb)}

    # ------------------------------------------------------------------ media
    def prefetch_media(self, video_id: str | None, hit_ids: list[str], uploads: dict | None = None):
        """Start preparing what the page shows beside the motion (the reference video, the top-k
        thumbnails) on the media thread, so it renders while the motion is exported and its
        MP4 rendered (the second core); a Future of (video path or None, thumbnail paths).
        ``video_for_display`` / ``thumbnail`` later find the files made (or wait for them)."""
        def work():
            with self._busy():
                path = self._video_for_display(video_id, uploads, _direct) if video_id else None
                return path, [self._thumbnail(h, _direct) for h in hit_ids]
        return self.media_pool.submit(work)

    def video_for_display(self, video_id: str, uploads: dict | None = None) -> Path:
        """A browser-playable MP4 of a database video (rendered / transcoded once, cached) or
        of one of the session's uploads (kept in the session's folder)."""
        return self._video_for_display(video_id, uploads, self.call)

    def _video_for_display(self, video_id: str, uploads: dict | None, call) -> Path:
        if video_id.startswith(UPLOAD_PREFIX):
            up = (uploads or {})[video_id]
            out = Path(up["video"]).with_name(f"{video_id}.mp4")
            with self._media_lock("upload:" + str(out)):
                if not out.is_file():
                    call(transcode_mp4, Path(up["video"]), out)
            return out
        r = self.holder.get().retriever
        with self._media_lock("video:" + video_id):
            return call(display_video, r, video_id)

    def caption(self, video_id: str) -> str:
        """A short label saying what the video shows (its caption, else its file name)."""
        try:
            return caption_label(self.holder.get().retriever.db.record(video_id))
        except KeyError:
            return video_id

    def thumbnail(self, video_id: str) -> Path:
        """One middle frame of a database video as a JPEG (cheap: no full render)."""
        return self._thumbnail(video_id, self.call)

    def _thumbnail(self, video_id: str, call) -> Path:
        r = self.holder.get().retriever
        out = thumbnail_path(r, video_id)
        with self._media_lock("thumb:" + video_id):
            if not out.is_file():
                call(make_thumbnail, r, video_id, out)
        return out

    # ------------------------------------------------------------------ uploads
    def add_upload(self, upload_path, state: dict) -> tuple[str, str]:
        """(video id, message) for a user's video file. The video stays the uploader's: it is
        analysed (pose + I3D) into the browser session's folder, listed in ``state["uploads"]``
        and removed with the session; the shared database never sees it (adding videos to a
        database is `python -m backend index`)."""
        from backend.retrieval.videos.ingest import VIDEO_SUFFIXES, IngestConfig, ingest_file

        self.holder.get()                     # the models are loaded (else NotReady explains)
        if not upload_path:
            raise UserError("choose a video file to upload first")
        src = Path(upload_path)
        if src.suffix.lower() not in VIDEO_SUFFIXES:
            raise UserError(f"{src.name!r} is not a video file this app reads (use one of "
                            f"{', '.join(sorted(VIDEO_SUFFIXES))})")
        if not src.is_file() or src.stat().st_size == 0:
            raise UserError(f"the uploaded file {src.name!r} is empty or could not be received")
        folder = self.session_dir(state) / "uploads"
        folder.mkdir(parents=True, exist_ok=True)
        name = re.sub(r"[^A-Za-z0-9_.-]+", "_", src.stem)[:40] or "video"
        work = Path(tempfile.mkdtemp(prefix=".upload-", dir=folder))
        try:
            dst = work / f"{name}{src.suffix.lower()}"
            shutil.copyfile(src, dst)
            res = self.call(ingest_file, str(dst), IngestConfig())
            if not res.ok:
                raise UserError(f"your video {src.name!r} cannot be used: {res.skipped}")
            vid = f"{UPLOAD_PREFIX}{name}-{res.key[:8]}"
            final = folder / f"{vid}{src.suffix.lower()}"
            os.replace(dst, final)
            feats = folder / f"{vid}.npz"
            np.savez(feats, keypoints=res.keypoints, object=res.object)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        state.setdefault("uploads", {})[vid] = {"name": src.name, "video": str(final), "features": str(feats)}
        return vid, (f"Your video {src.name} is the reference video now (as {vid}; private to this "
                     "browser session, removed when it ends).")

    def upload_features(self, pipe, upload: dict):
        """VideoFeatures of an upload (what the motion LLM reads, as for database videos)."""
        with np.load(upload["features"], allow_pickle=False) as z:
            z_kp, z_obj = np.asarray(z["keypoints"], np.float32), np.asarray(z["object"])
        return self.call(pipe.retriever.prior_arrays, z_kp, z_obj)


def _direct(fn, *args, **kw):
    """Run ``fn`` on the calling thread (the media thread's counterpart of ``AppService.call``)."""
    return fn(*args, **kw)


__all__ = ["ClipOptions", "remember_choice", "resolve_choice", "AppService", "EXPORT_FORMATS", "QUICK_FORMATS", "MODEL_LABELS", "ModelHolder", "ModelRun", "NotReady",
           "Outcome", "RETRIEVAL_LABELS", "UserError", "default_pipeline_factory", "prompt_notes",
           "slug", "transcode_mp4", "warm_up"]
