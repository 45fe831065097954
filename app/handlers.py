"""What happens when someone presses Generate, picks a top-5 video or uploads their own, as
plain functions with no Gradio: each is a generator of page updates, dicts keyed by the names in
``OUTPUTS`` (plus ``"info"``/``"warning"`` for a toast), so tests drive them with a fake service and
no browser. ``app.main`` lays out the page and maps the names to its components.

A request is one ``Request``; ``progress(fraction, desc=...)`` reports progress (Gradio's
``gr.Progress`` on the page, a no-op in tests).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator

from app import views
from app.service import (MODEL_LABELS, QUICK_FORMATS, RETRIEVAL_LABELS, AppService, ClipOptions,
                         ModelRun, NotReady, Outcome, UserError, prompt_notes, remember_choice,
                         resolve_choice, slug)
from backend.defaults import TEMPERATURE
from backend.retrieval.videos.database import DatabaseError
from motioncore.prompt import PromptError

log = logging.getLogger("vimorag.app")

OUTPUTS = ("status", "retrieved", "router", "gallery", "video_a", "video_b", "model3d", "distances",
           "downloads", "details", "state", "video_id", "retrieval")
Updates = Iterator[dict]


def no_progress(fraction: float, desc: str | None = None) -> None:
    """The progress reporter of callers with no progress bar."""


@dataclass
class Request:
    """One press of Generate (or a pick / an upload that goes on to generate)."""
    prompt: str | None
    model: str = "mcdpo"
    retrieval: str = "gemini"
    seed: int | float | str | None = 0
    temperature: float | str | None = TEMPERATURE
    mode: str = "single"                        # "single" or "compare" (McDPO vs SFT)
    video_id: str | None = None
    clip: tuple = (0.0, False, True, "cm")      # length (s), in place, foot lock, BVH units
    keep_video: bool = True                     # a chosen video also serves a new prompt
    head: list[str] = field(default_factory=list)   # notes to show first


def error_message(exc: BaseException) -> str:
    """What the page says about a failed request: the cause in words, never a path or traceback."""
    if isinstance(exc, (PromptError, UserError, NotReady)):
        return views.no_paths(str(exc)[:1].upper() + str(exc)[1:])
    if isinstance(exc, KeyError):
        return f"Not found: {views.no_paths(str(exc.args[0] if exc.args else exc))}"
    if isinstance(exc, FileNotFoundError):
        return f"A file is missing: {views.no_paths(str(exc))}"
    if isinstance(exc, DatabaseError):
        return f"Video database problem: {views.no_paths(str(exc))}"
    if isinstance(exc, ValueError):
        return f"Invalid input: {views.no_paths(str(exc))}"
    log.error("request failed", exc_info=exc)
    return (f"Something went wrong ({type(exc).__name__}: {views.no_paths(str(exc))[:300]}). The app "
            "is still running: try again, or another prompt.")


def _failed(exc: BaseException, st: dict) -> dict:
    msg = error_message(exc)
    return {"warning": msg[:300], "status": views.status_md("error", msg), "state": st}


def generate(service: AppService, req: Request, state: dict | None,
             progress: Callable = no_progress) -> Updates:
    """Retrieve, generate (one model, or McDPO and SFT in compare mode), export, and fill the
    page step by step: the router first, then the motion, then the reference video and the
    top-5. Errors end as a message; the server keeps serving."""
    st = dict(state or {})
    t_start = time.perf_counter()
    parts: dict[str, float] = {}
    try:
        compare = req.mode == "compare"
        clip = ClipOptions.parse(*req.clip)
        uploads = st.get("uploads") or {}
        pipe, text, seed, temperature, vid, models = service.check_inputs(
            req.prompt, req.model, req.retrieval, req.seed, req.temperature, req.video_id, compare,
            uploads)
        notes = list(req.head) + prompt_notes(req.prompt, text)
        chosen_before = req.retrieval == "given"
        retrieval, vid, note = resolve_choice(st, text, req.retrieval, vid, req.keep_video)
        notes += [note] if note else []
        mode_txt = "McDPO vs SFT" if compare else MODEL_LABELS[models[0]]
        progress(0.05, desc="Retrieving a video and writing motion tokens")
        yield {"status": views.status_md("busy", f"Working: {mode_txt}, "
                                                 f"{RETRIEVAL_LABELS[retrieval]}…"), "state": st}
        oc = Outcome(notes=notes, retrieval=retrieval)
        results = []
        for i, m in enumerate(models):
            progress(0.05 + 0.25 * i / len(models),
                     desc=f"{MODEL_LABELS[m]}: retrieving + writing motion tokens")
            results.append(service.generate_motion(pipe, text, m, retrieval, seed, temperature, vid,
                                                   uploads, clip))
        parts["waiting + generation"] = time.perf_counter() - t_start
        r0 = results[0]
        oc.video_id = r0.video_id
        if r0.hits:
            oc.hits = [h.to_json() for h in r0.hits]
            st["hits"] = oc.hits
        # the reference video and thumbnails render on the media thread meanwhile
        media = service.prefetch_media(oc.video_id, [h["id"] for h in oc.hits or []], uploads)
        oc.router = service.router_for(pipe, text, r0.video_id, r0.hits, uploads)
        upd = {"router": views.router_html(oc.router, retrieval, oc.hits or None)}
        if retrieval == "none":
            upd.update(retrieved=None, gallery=[])
            st["hits"] = []
        yield {**upd, "status": views.status_md("busy", "Motion tokens written; rendering the body "
                                                        "mesh and exporting…"), "state": st}

        # The files a browser shows at once (the GLB its 3D view renders itself, the downloads)
        # come first; the body-mesh MP4, the slowest part, follows in its own update.
        t_exp = time.perf_counter()
        run_dir = service.new_run_dir(st)
        stems = [f"vimorag_{m}_{slug(text)}{clip.stem_suffix()}" for m in models]
        for i, (m, res, stem) in enumerate(zip(models, results, stems)):
            progress(0.35 + 0.3 * i / len(models), desc=f"{MODEL_LABELS[m]}: exporting")
            files = service.export(res, run_dir, stem, clip.bvh_units, formats=QUICK_FORMATS)
            progress(0.35 + 0.3 * (i + 0.9) / len(models), desc="text-motion distance")
            oc.runs.append(ModelRun(m, res, files, service.distance(pipe, res)))
        parts["export (BVH, FBX, GLB, NPY)"] = time.perf_counter() - t_exp
        warn = service.servability(pipe, oc.runs[0].result, oc.runs[0].distance)
        if warn and retrieval == "gemini":          # other modes: the video was not a match
            notes.append(warn)
        a = oc.runs[0]
        upd["distances"] = views.distances_md(oc.runs) + (
            "\n\nText-motion distance: the evaluator's distance between the prompt and the motion "
            "(lower = closer)." if a.distance is not None else "")
        upd["downloads"] = [str(p) for r in oc.runs for k, p in r.files.items() if k != "glb_preview"]
        # The 3D view gets its file in this update only: the same Model3D value arriving twice
        # within milliseconds (a last yield is delivered twice) leaves Gradio's viewer without
        # its canvas. API clients find the GLB in the downloads too.
        first_visible = time.perf_counter() - t_start
        yield {**upd, "model3d": str(a.files.get("glb_preview", a.files["glb"])),
               "status": views.status_md("busy", "Motion ready (3D view, downloads); rendering the "
                                                 "body-mesh video…"),
               "state": st}

        t_mp4 = time.perf_counter()
        for i, (r, stem) in enumerate(zip(oc.runs, stems)):
            progress(0.65 + 0.15 * i / len(models), desc=f"{MODEL_LABELS[r.model]}: rendering the video")
            r.files.update(service.export(r.result, run_dir, stem, clip.bvh_units, formats=("mp4",)))
        parts["MP4"] = time.perf_counter() - t_mp4
        upd["video_a"] = str(a.files["mp4"])
        upd["video_b"] = str(oc.runs[1].files["mp4"]) if compare else None
        upd["downloads"] = [str(p) for r in oc.runs for k, p in r.files.items() if k != "glb_preview"]
        yield {**upd, "status": views.status_md("busy", "Motion ready; loading the reference video…"),
               "state": st}

        t_ref = time.perf_counter()
        if oc.video_id is not None:
            progress(0.8, desc="Rendering the reference video (first time only)")
            ref_path, thumbs = media.result()
            upd["retrieved"] = str(ref_path)
            if oc.hits:
                upd["gallery"] = [(str(t),
                                   f"{'▶ ' if h['id'] == oc.video_id else ''}#{h['rank']} "
                                   f"{service.caption(h['id'])} · {h['score']:+.2f}"
                                   + (f" · cues {h['cues']:+.0f}" if h.get("cues") else ""))
                                  for h, t in zip(oc.hits, thumbs)]
            parts["reference video"] = time.perf_counter() - t_ref
        details = {"prompt_used": text, "notes": notes, "mode": req.mode, "retrieval": retrieval,
                   "video_id": oc.video_id, "router": oc.router, "hits": oc.hits,
                   "clip": clip.summary(), "results": []}
        for r in oc.runs:
            s = r.summary()
            s.pop("files", None)
            details["results"].append(s)
        ref = ("a random video, " if compare or retrieval == "random" else "") + (oc.video_id or "none")
        if oc.runs[0].result.mirrored:
            ref += ", read mirrored: it shows the other side than your words"
        chain = getattr(oc.runs[0].result, "parts", None) or []
        lead = float(getattr(oc.runs[0].result, "video_lead", 0.0) or 0.0)
        if lead > 0 and not chain:
            ref += (f"; it led your words at weight {lead:.0%}: they name a motion the model "
                    "knows only from videos")
        if chain:
            ref += (f"; your prompt chains {len(chain)} motions, written one after another: "
                    + ", then ".join(f"“{p['text'][:60]}” ({p['video_id'] or 'no video'}"
                                     + (f", led by its video at {p['video_lead']:.0%}" if p["video_lead"] else "")
                                     + (", written as a left turn: your words name no side"
                                        if p.get("open_turn") else
                                        f", read as “{p['read_as']}”" if p.get("read_as") else "")
                                     + (f", best of {p['pick']['samples']} samples" if p.get("pick") else "")
                                     + (", read off its video by the pose reader"
                                        if (p.get("pick") or {}).get("reader") else "")
                                     + (", mirrored to turn the way your words ask"
                                        if (p.get("pick") or {}).get("mirror") else "")
                                     + (", played at the pace your words ask"
                                        if (p.get("pick") or {}).get("tempo") else "")
                                     + (", written forwards and played in reverse" if p.get("backwards") else "")
                                     + ")" for p in chain))
        read_as = getattr(oc.runs[0].result, "read_as", None) or []
        opened = getattr(oc.runs[0].result, "open_turns", None) or []
        if not chain and opened and opened[0]:
            ref += f"; your words name no side for the turn, so it was written as “{read_as[0]}”"
        elif not chain and read_as and read_as[0]:
            ref += (f"; the model never saw some of your words in training: it read them as "
                    f"“{read_as[0]}”")
        picks = getattr(oc.runs[0].result, "picks", None) or []
        if not chain and picks and picks[0]:
            ref += (f"; best of {picks[0]['samples']} samples: the one that looked most like what "
                    "your words ask was kept"
                    + ("; it was read off the video's poses by the pose reader" if picks[0].get("reader") else "")
                    + ("; it is that sample's mirror image, which turns the way your words ask"
                       if picks[0].get("mirror") else "")
                    + ("; it is played slower or faster, at the pace your words ask"
                       if picks[0].get("tempo") else ""))
        backs = getattr(oc.runs[0].result, "backwards", None) or []
        if not chain and backs and backs[0]:
            ref += ("; no motion the model learnt goes backwards, so it was written going forwards "
                    "and is played in reverse")
        done = (f"Done: {mode_txt} on “{views.md_text(text[:80])}{'…' if len(text) > 80 else ''}” "
                f"(reference video: {views.md_text(ref)}; "
                f"{views.timing_text(parts, time.perf_counter() - t_start, first_visible)}).")
        remember_choice(st, text, retrieval, vid)
        if retrieval == "given":
            upd.update(video_id=vid, retrieval="given")
        elif chosen_before:                         # back to retrieval: the choice is gone
            upd.update(video_id="", retrieval=retrieval)
        if notes:
            upd["info"] = " ".join(notes).replace("**", "")[:300]
        yield {**upd, "details": details, "state": st,
               "status": views.status_md("note" if notes else "ok", "  \n".join([done] + notes))}
    except Exception as exc:          # never a traceback on the page; the server keeps serving
        yield _failed(exc, st)


def pick(service: AppService, req: Request, index, state: dict | None,
         progress: Callable = no_progress) -> Updates:
    """A click on the ``index``-th top-5 thumbnail: that video becomes the reference."""
    hits = (state or {}).get("hits") or []
    i = index if isinstance(index, int) else (index or [0])[0]
    if not 0 <= i < len(hits):
        yield {"status": views.status_md("error", "That video is no longer listed; generate again.")}
        return
    vid = hits[i]["id"]
    yield {"video_id": vid, "retrieval": "given"}
    req.retrieval, req.video_id, req.keep_video = "given", vid, True
    req.head = [f"Using the rank-{hits[i]['rank']} video {vid} as the reference."]
    yield from generate(service, req, state, progress)


def upload(service: AppService, file, req: Request, state: dict | None,
           progress: Callable = no_progress) -> Updates:
    """An uploaded video: analyse it (people, pose, I3D) into the session; with a prompt, go on
    to generate with it as the reference."""
    st = dict(state or {})
    try:
        progress(0.05, desc="Analysing your video (pose + I3D; the first upload loads the video "
                            "models, which takes a while)")
        yield {"status": views.status_md("busy", "Analysing your video (people, pose, I3D features)…")}
        vid, msg = service.add_upload(file, st)
    except Exception as exc:
        yield _failed(exc, st)
        return
    yield {"video_id": vid, "retrieval": "given", "state": st}
    if not (req.prompt or "").strip():
        yield {"status": views.status_md("ok", msg + " Now describe a motion and press Generate."),
               "retrieved": str(service.video_for_display(vid, st.get("uploads"))), "state": st}
        return
    req.retrieval, req.video_id, req.keep_video, req.head = "given", vid, True, [msg]
    yield from generate(service, req, st, progress)


def clear_choice(state: dict | None) -> tuple:
    """"Remove chosen video": (video id, retrieval, keep-video box, state) with no choice left."""
    return "", "gemini", False, {k: v for k, v in (state or {}).items() if k != "chosen"}


__all__ = ["OUTPUTS", "Request", "clear_choice", "error_message", "generate", "no_progress", "pick",
           "upload"]
