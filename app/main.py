"""The VimoRAG browser app (Gradio): prompt -> retrieved video -> motion -> export.

    build_app(pipeline_factory=None, ...) -> gr.Blocks     (tests inject a pipeline factory)
    serve(host="127.0.0.1", port=7860, ...) -> int           (``python launch.py``)

API endpoints (``gradio_client``; state is kept per client session):
    /status                                   -> (model status text, _)
    /generate(prompt, model, retrieval, seed, temperature, mode, video_id, *clip, keep_video)
    /add_video(file, prompt, model, seed, temperature, mode, *clip)
both -> the outputs below. ``clip`` = length (s, 0 = the model decides), in place, foot locking,
BVH units ("cm"/"m"); these and ``keep_video`` have defaults, so clients may leave them out. A
chosen video (retrieval "given") serves the prompt it was chosen with; a new prompt in the same
session goes back to Gemini-MVR unless ``keep_video`` is true.
Outputs, in order: status, retrieved video, router HTML, top-5 gallery, result video (McDPO or
the chosen model), second result video (SFT, compare mode), animated GLB, distances,
downloads, details (JSON), video id, retrieval.
"""
from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path

import gradio as gr

from app import views
from backend.eval.follow import EXAMPLE_PROMPTS
from backend.video.ingest import VIDEO_SUFFIXES
from app.service import (MODEL_LABELS, RETRIEVAL_LABELS, AppService, ClipOptions, ModelHolder, ModelRun,
                         NotReady, Outcome, UserError, default_pipeline_factory, prompt_notes,
                         remember_choice, resolve_choice, slug)

log = logging.getLogger("vimorag.app")

EXAMPLES = [prompt for prompt, _ in EXAMPLE_PROMPTS]   # each checked by `eval follow --examples`
MODEL_CHOICES = [("McDPO (preference-tuned)", "mcdpo"), ("SFT only", "sft")]
RETRIEVAL_CHOICES = [("Gemini-MVR", "gemini"), ("Random video", "random"), ("No video", "none"),
                     ("Chosen video", "given")]
A_LABEL = "Body-mesh animation"
UPLOAD_TYPES = sorted(VIDEO_SUFFIXES)
MODE_CHOICES = [("Single model", "single"), ("Compare McDPO vs SFT", "compare")]

INTRO = """# VimoRAG · text → retrieved human video → 3D motion
Describe a motion. The app retrieves the most relevant human video from its database
(**Gemini-MVR**: an action channel, an object channel and a router that weighs them), a motion
language model writes motion tokens from your text **plus that video**, and a VQ-VAE decodes them
into a body animation you can download as BVH, FBX, GLB, MP4 or NumPy."""


def _error_message(exc: BaseException) -> str:
    from backend.video.database import DatabaseError
    from core.prompt import PromptError

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


def build_app(pipeline_factory=None, *, db: str = "embedded", concurrency: int = 1,
              render_size: int = 384, workdir: str | Path | None = None,
              holder: ModelHolder | None = None) -> gr.Blocks:
    """The page. ``pipeline_factory()`` returns a loaded ``VimoRAGPipeline``; it runs once, in a
    background thread, as soon as the app is built."""
    holder = holder or ModelHolder(pipeline_factory or default_pipeline_factory(db)).start()
    service = AppService(holder, workdir, render_size=render_size, concurrency=concurrency)

    with gr.Blocks(title="VimoRAG", analytics_enabled=False, delete_cache=(1800, 7200)) as demo:
        demo.vimorag_service = service          # for tests and serve()
        gr.Markdown(INTRO)
        model_status = gr.Markdown(holder.describe(), elem_id="model-status")
        timer = gr.Timer(1.0)
        state = gr.State({}, delete_callback=AppService.drop_session)

        with gr.Row(equal_height=False):
            with gr.Column(scale=3):
                prompt = gr.Textbox(label="Describe a motion", lines=2, max_lines=6,
                                    placeholder="a person does a cartwheel", elem_id="prompt")
                gr.Examples(EXAMPLES, inputs=[prompt], label="Examples (the first four are "
                            "out-of-distribution: no such motion in the generator's training data)",
                            examples_per_page=9)
            with gr.Column(scale=2):
                mode = gr.Radio(MODE_CHOICES, value="single", label="Mode", elem_id="mode")
                model = gr.Radio(MODEL_CHOICES, value="mcdpo", label="Motion model", elem_id="model")
                retrieval = gr.Radio(RETRIEVAL_CHOICES, value="gemini", label="Video retrieval",
                                     elem_id="retrieval")
                with gr.Row():
                    seed = gr.Number(0, label="Seed", precision=0, minimum=0, elem_id="seed")
                    temperature = gr.Slider(0.1, 2.0, value=1.0, step=0.05, label="Temperature",
                                            elem_id="temperature")
                with gr.Accordion("Clip options", open=False):
                    length = gr.Slider(0.0, 9.8, value=0.0, step=0.2, elem_id="length",
                                       label="Clip length (s; 0 = the model decides)")
                    with gr.Row():
                        in_place = gr.Checkbox(False, label="In place (no root travel)",
                                               elem_id="in-place")
                        foot_lock = gr.Checkbox(True, label="Foot locking", elem_id="foot-lock")
                    bvh_units = gr.Radio([("centimetres", "cm"), ("metres", "m")], value="cm",
                                         label="BVH units", elem_id="bvh-units")
                generate = gr.Button("Generate", variant="primary", elem_id="generate")
        status = gr.Markdown("", elem_id="status")

        with gr.Row(equal_height=False):
            with gr.Column(scale=2, min_width=320):
                gr.Markdown("### Retrieved video")
                retrieved = gr.Video(label=views.PANEL_LABELS["gemini"][0], autoplay=True,
                                     loop=True, interactive=False, height=340, elem_id="retrieved")
                router = gr.HTML(views.router_html(None, "none").replace(
                    "No video", "Nothing retrieved yet. No video"), elem_id="router")
            with gr.Column(scale=3, min_width=320):
                gr.Markdown("### Generated motion")
                with gr.Row():
                    video_a = gr.Video(label=A_LABEL, autoplay=True, loop=True,
                                       interactive=False, height=340, elem_id="result-a")
                    video_b = gr.Video(label="SFT", autoplay=True, loop=True, interactive=False,
                                       height=340, visible=False, elem_id="result-b")
                distances = gr.Markdown("", elem_id="distances")
        with gr.Row(equal_height=False):
            with gr.Column(scale=3, min_width=320):
                gallery = gr.Gallery(label=views.PANEL_LABELS["gemini"][1], columns=5, rows=1, height=210,
                                     allow_preview=False, object_fit="contain", interactive=False,
                                     elem_id="top5")
            with gr.Column(scale=2, min_width=240):
                upload = gr.File(label="…or use your own video as the reference (upload)",
                                 file_count="single", file_types=UPLOAD_TYPES, height=120,
                                 elem_id="upload")
                video_id = gr.Textbox(label="Chosen video id (used with retrieval = Chosen video)",
                                      elem_id="video-id")
                with gr.Row():
                    keep_video = gr.Checkbox(False, label="Keep this video for new prompts",
                                             elem_id="keep-video")
                    clear_video = gr.Button("Remove chosen video", size="sm", elem_id="clear-video")
        with gr.Row(equal_height=False):
            with gr.Column(scale=3, min_width=320):
                model3d = gr.Model3D(label="Interactive 3D (animated GLB: drag to orbit)", height=380,
                                     elem_id="model3d")
            with gr.Column(scale=2, min_width=240):
                downloads = gr.File(label="Downloads: BVH, FBX, GLB, MP4, NPY", file_count="multiple",
                                    interactive=False, elem_id="downloads")
        with gr.Accordion("Details (JSON)", open=False):
            details = gr.JSON(label="details", elem_id="details")

        outputs = [status, retrieved, router, gallery, video_a, video_b, model3d, distances,
                   downloads, details, state, video_id, retrieval]

        # ------------------------------------------------------------------ handlers
        def run(prompt_v, model_v, retrieval_v, seed_v, temp_v, mode_v, vid_v, clip_v, st, progress,
                head=None, keep=True):
            """Generator of {component: value} updates; errors end as a message. ``clip_v``:
            the raw (length, in place, foot lock, BVH units) values; ``keep``: a chosen video
            also serves a prompt other than the one it was chosen with."""
            st = dict(st or {})
            t_start = time.perf_counter()
            parts: dict[str, float] = {}
            try:
                compare = mode_v == "compare"
                clip = ClipOptions.parse(*clip_v)
                uploads = st.get("uploads") or {}
                pipe, text, seed_i, temp_f, vid, models = service.check_inputs(
                    prompt_v, model_v, retrieval_v, seed_v, temp_v, vid_v, compare, uploads)
                notes = list(head or []) + prompt_notes(prompt_v, text)
                chosen_before = retrieval_v == "given"
                retrieval_v, vid, note = resolve_choice(st, text, retrieval_v, vid, keep)
                notes += [note] if note else []
                mode_txt = "McDPO vs SFT" if compare else MODEL_LABELS[models[0]]
                progress(0.05, desc="Retrieving a video and writing motion tokens")
                yield {status: views.status_md("busy", f"Working: {mode_txt}, "
                                               f"{RETRIEVAL_LABELS[retrieval_v]}…"), state: st}
                oc = Outcome(notes=notes, retrieval=retrieval_v)
                results = []
                for i, m in enumerate(models):
                    progress(0.05 + 0.25 * i / len(models),
                             desc=f"{MODEL_LABELS[m]}: retrieving + writing motion tokens")
                    results.append(service.generate_motion(pipe, text, m, retrieval_v, seed_i,
                                                           temp_f, vid, uploads, clip))
                parts["waiting + generation"] = time.perf_counter() - t_start
                r0 = results[0]
                oc.video_id = r0.video_id
                if r0.hits:
                    oc.hits = [h.to_json() for h in r0.hits]
                    st["hits"] = oc.hits
                oc.router = service.router_for(pipe, text, r0.video_id, r0.hits, uploads)
                upd = {router: views.router_html(oc.router, retrieval_v, oc.hits or None)}
                if retrieval_v == "none":
                    upd[retrieved] = None
                    upd[gallery] = []
                    st["hits"] = []
                yield {**upd, status: views.status_md("busy", "Motion tokens written; rendering the "
                                                      "body mesh and exporting…"), state: st}

                t_exp = time.perf_counter()
                run_dir = service.new_run_dir(st)
                for i, (m, res) in enumerate(zip(models, results)):
                    progress(0.35 + 0.4 * i / len(models), desc=f"{MODEL_LABELS[m]}: rendering + exporting")
                    files = service.export(res, run_dir, f"vimorag_{m}_{slug(text)}{clip.stem_suffix()}",
                                           clip.bvh_units)
                    progress(0.35 + 0.4 * (i + 0.9) / len(models), desc="text-motion distance")
                    oc.runs.append(ModelRun(m, res, files, service.distance(pipe, res)))
                parts["rendering + export"] = time.perf_counter() - t_exp
                warn = service.servability(pipe, oc.runs[0].result, oc.runs[0].distance)
                if warn and retrieval_v == "gemini":     # other modes: the video was not a match
                    notes.append(warn)
                a = oc.runs[0]
                upd[video_a] = str(a.files["mp4"])
                upd[video_b] = str(oc.runs[1].files["mp4"]) if compare else None
                upd[distances] = views.distances_md(oc.runs) + (
                    "\n\nText-motion distance: the evaluator's distance between the prompt and the "
                    "motion (lower = closer)." if oc.runs[0].distance is not None else "")
                upd[downloads] = [str(p) for r in oc.runs for k, p in r.files.items() if k != "glb_preview"]
                # The 3D view gets its file in this update only: the same Model3D value arriving
                # twice within milliseconds (a last yield is delivered twice) leaves Gradio's
                # viewer without its canvas. API clients find the GLB in the downloads too.
                yield {**upd, model3d: str(a.files.get("glb_preview", a.files["glb"])),
                       status: views.status_md("busy", "Motion ready; loading the reference video…"),
                       state: st}

                t_ref = time.perf_counter()
                if oc.video_id is not None:
                    progress(0.8, desc="Rendering the reference video (first time only)")
                    upd[retrieved] = str(service.video_for_display(oc.video_id, uploads))
                    if oc.hits:
                        progress(0.9, desc="Top-5 thumbnails")
                        upd[gallery] = [(str(service.thumbnail(h["id"])),
                                         f"{'▶ ' if h['id'] == oc.video_id else ''}#{h['rank']} "
                                         f"{service.caption(h['id'])} · {h['score']:+.2f}")
                                        for h in oc.hits]
                    parts["reference video"] = time.perf_counter() - t_ref
                details_v = {"prompt_used": text, "notes": notes, "mode": mode_v,
                             "retrieval": retrieval_v, "video_id": oc.video_id, "router": oc.router,
                             "hits": oc.hits, "clip": clip.summary(), "results": []}
                for r in oc.runs:
                    s = r.summary()
                    s.pop("files", None)
                    details_v["results"].append(s)
                ref = ("a random video, " if compare or retrieval_v == "random" else "") + (oc.video_id or "none")
                done = (f"Done: {mode_txt} on “{views.md_text(text[:80])}{'…' if len(text) > 80 else ''}” "
                        f"(reference video: {views.md_text(ref)}; {views.timing_text(parts)}).")
                msg = "  \n".join([done] + notes)
                if notes:
                    gr.Info(" ".join(notes).replace("**", "")[:300])
                remember_choice(st, text, retrieval_v, vid)
                if retrieval_v == "given":
                    upd.update({video_id: vid, retrieval: "given"})
                elif chosen_before:                  # back to retrieval: the choice is gone
                    upd.update({video_id: "", retrieval: retrieval_v})
                yield {**upd, details: details_v, state: st,
                       status: views.status_md("note" if notes else "ok", msg)}
            except Exception as exc:      # never a traceback on the page; the server keeps serving
                msg = _error_message(exc)
                gr.Warning(msg[:300])
                yield {status: views.status_md("error", msg), state: st}

        def on_generate(prompt_v, model_v, retrieval_v, seed_v, temp_v, mode_v, vid_v, len_v, place_v,
                        lock_v, units_v, keep_v, st, progress=gr.Progress()):
            yield from run(prompt_v, model_v, retrieval_v, seed_v, temp_v, mode_v, vid_v,
                           (len_v, place_v, lock_v, units_v), st, progress, keep=bool(keep_v))

        def on_pick(prompt_v, model_v, seed_v, temp_v, mode_v, len_v, place_v, lock_v, units_v, st,
                    evt: gr.SelectData, progress=gr.Progress()):
            hits = (st or {}).get("hits") or []
            i = evt.index if isinstance(evt.index, int) else (evt.index or [0])[0]
            if not 0 <= i < len(hits):
                yield {status: views.status_md("error", "That video is no longer listed; generate again.")}
                return
            vid = hits[i]["id"]
            yield {video_id: vid, retrieval: "given"}
            yield from run(prompt_v, model_v, "given", seed_v, temp_v, mode_v, vid,
                           (len_v, place_v, lock_v, units_v), st, progress,
                           head=[f"Using the rank-{hits[i]['rank']} video {vid} as the reference."])

        def on_upload(file_v, prompt_v, model_v, seed_v, temp_v, mode_v, len_v, place_v, lock_v, units_v,
                      st, progress=gr.Progress()):
            st = dict(st or {})
            try:
                progress(0.05, desc="Analysing your video (pose + I3D; the first upload loads the "
                                    "video models, which takes a while)")
                yield {status: views.status_md("busy", "Analysing your video (people, pose, I3D "
                                               "features)…")}
                vid, msg = service.add_upload(file_v, st)
            except Exception as exc:
                msg = _error_message(exc)
                gr.Warning(msg[:300])
                yield {status: views.status_md("error", msg), state: st}
                return
            yield {video_id: vid, retrieval: "given", state: st}
            if not (prompt_v or "").strip():
                yield {status: views.status_md("ok", msg + " Now describe a motion and press Generate."),
                       retrieved: str(service.video_for_display(vid, st.get("uploads"))), state: st}
                return
            yield from run(prompt_v, model_v, "given", seed_v, temp_v, mode_v, vid,
                           (len_v, place_v, lock_v, units_v), st, progress, head=[msg])

        def on_labels(mode_v, retrieval_v):
            """The video panels say what they show (compare mode: random videos)."""
            shown = views.PANEL_LABELS["random" if mode_v == "compare" else retrieval_v]
            return gr.update(label=shown[0]), gr.update(label=shown[1])

        def on_status():
            done = holder.state != "loading"
            return holder.describe(), gr.Timer(active=not done)

        def on_mode(mode_v, retrieval_v):
            """Compare: both models side by side, random retrieval by default (the paper's
            comparison: same seed, same random video)."""
            if mode_v == "compare":
                return (gr.Radio(interactive=False), "random",
                        gr.Video(label="McDPO"), gr.Video(visible=True, value=None))
            return (gr.Radio(interactive=True), ("gemini" if retrieval_v == "random" else retrieval_v),
                    gr.Video(label=A_LABEL), gr.Video(visible=False, value=None))

        # ------------------------------------------------------------------ wiring
        work = dict(concurrency_id="work", show_progress="full", show_progress_on=[video_a, retrieved])
        clip_inputs = [length, in_place, foot_lock, bvh_units]
        gen_inputs = [prompt, model, retrieval, seed, temperature, mode, video_id, *clip_inputs,
                      keep_video, state]
        generate.click(on_generate, gen_inputs, outputs, api_name="generate", **work)
        prompt.submit(on_generate, gen_inputs, outputs, api_visibility="private", **work)
        gallery.select(on_pick, [prompt, model, seed, temperature, mode, *clip_inputs, state], outputs,
                       api_visibility="private", **work)
        upload.upload(on_upload, [upload, prompt, model, seed, temperature, mode, *clip_inputs, state], outputs,
                      api_name="add_video", **work)
        clear_video.click(lambda st: ("", "gemini", False, {k: v for k, v in (st or {}).items()
                                                              if k != "chosen"}),
                          [state], [video_id, retrieval, keep_video, state], api_visibility="private",
                          queue=False, show_progress="hidden")
        for trigger in (mode.change, retrieval.change):
            trigger(on_labels, [mode, retrieval], [retrieved, gallery], api_visibility="private",
                    queue=False, show_progress="hidden")
        mode.change(on_mode, [mode, retrieval], [model, retrieval, video_a, video_b], api_visibility="private",
                    queue=False, show_progress="hidden")
        demo.load(on_status, None, [model_status, timer], api_name="status", queue=False,
                  show_progress="hidden")
        timer.tick(on_status, None, [model_status, timer], api_visibility="private", queue=False,
                   show_progress="hidden")
    return demo


def allowed_paths(service: AppService, db: str = "embedded") -> list[str]:
    """What the file route may serve: the sessions' output folders (unguessable names) and the
    rendered previews of the database videos. Never the data folder itself: the database files
    list every video's server path, and model weights live there too."""
    from backend.video.database import database_dir

    media = database_dir(db) / "media"
    media.mkdir(parents=True, exist_ok=True)
    return [str(service.workdir), str(media)]


def port_problem(host: str, port: int) -> str | None:
    """Why ``host:port`` cannot be bound (None when it can), checked before loading models."""
    import socket

    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host, port))
    except OSError as exc:
        return exc.strerror or str(exc)
    return None


def serve(host: str = "127.0.0.1", port: int = 7860, share: bool = False, db: str = "embedded",
          concurrency: int = 1, render_size: int = 384, pipeline_factory=None,
          workdir: str | None = None) -> int:
    """Build and serve the app until interrupted. Returns an exit status."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    problem = port_problem(host, port)
    if problem:
        print(f"error: cannot serve on {host}:{port}: {problem} (choose another with --port)", flush=True)
        return 1
    if threading.current_thread() is threading.main_thread():   # SIGTERM: exit cleanly (atexit runs)
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    demo = build_app(pipeline_factory, db=db, concurrency=concurrency, render_size=render_size,
                     workdir=workdir)
    service = demo.vimorag_service
    demo.queue(default_concurrency_limit=max(1, int(concurrency)), max_size=64)
    print(f"VimoRAG app: loading models in the background; serving on http://{host}:{port}", flush=True)
    t0 = time.time()
    try:
        demo.launch(server_name=host, server_port=port, share=share, show_error=False,
                    allowed_paths=allowed_paths(service, db), max_file_size="500mb", ssr_mode=False,
                    theme=gr.themes.Soft(), css=views.CSS, quiet=False, footer_links=["api"])
    except OSError as exc:
        print(f"error: cannot serve on {host}:{port}: {exc}", flush=True)
        return 1
    except KeyboardInterrupt:
        pass
    finally:
        log.info("served for %.0f s", time.time() - t0)
    return 0


__all__ = ["EXAMPLES", "build_app", "serve"]
