"""The VimoRAG browser app (Gradio): the page's layout and wiring; what a request does is in
``app.handlers`` (plain functions), the work behind it in ``app.service``.

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
import socket
import sys
import threading
import time
from pathlib import Path

import gradio as gr

from app import handlers, views
from app.service import AppService, ModelHolder, default_pipeline_factory
from backend.defaults import TEMPERATURE
from backend.evaluation.follow import EXAMPLE_PROMPTS
from backend.retrieval.videos.database import database_dir
from backend.retrieval.videos.ingest import VIDEO_SUFFIXES

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
                    temperature = gr.Slider(0.1, 2.0, value=TEMPERATURE, step=0.05, label="Temperature",
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

        # ------------------------------------------------------------------ handlers
        # (the work is in app.handlers; here only Gradio's side: components and toasts)
        components = {"status": status, "retrieved": retrieved, "router": router, "gallery": gallery,
                      "video_a": video_a, "video_b": video_b, "model3d": model3d,
                      "distances": distances, "downloads": downloads, "details": details,
                      "state": state, "video_id": video_id, "retrieval": retrieval}
        outputs = [components[name] for name in handlers.OUTPUTS]

        def page(updates):
            for upd in updates:
                if "info" in upd:
                    gr.Info(upd.pop("info"))
                if "warning" in upd:
                    gr.Warning(upd.pop("warning"))
                yield {components[k]: v for k, v in upd.items()}

        def on_generate(prompt_v, model_v, retrieval_v, seed_v, temp_v, mode_v, vid_v, len_v, place_v,
                        lock_v, units_v, keep_v, st, progress=gr.Progress()):
            req = handlers.Request(prompt_v, model_v, retrieval_v, seed_v, temp_v, mode_v, vid_v,
                                   (len_v, place_v, lock_v, units_v), keep_video=bool(keep_v))
            yield from page(handlers.generate(service, req, st, progress))

        def on_pick(prompt_v, model_v, seed_v, temp_v, mode_v, len_v, place_v, lock_v, units_v, st,
                    evt: gr.SelectData, progress=gr.Progress()):
            req = handlers.Request(prompt_v, model_v, "given", seed_v, temp_v, mode_v,
                                   clip=(len_v, place_v, lock_v, units_v))
            yield from page(handlers.pick(service, req, evt.index, st, progress))

        def on_upload(file_v, prompt_v, model_v, seed_v, temp_v, mode_v, len_v, place_v, lock_v, units_v,
                      st, progress=gr.Progress()):
            req = handlers.Request(prompt_v, model_v, "given", seed_v, temp_v, mode_v,
                                   clip=(len_v, place_v, lock_v, units_v))
            yield from page(handlers.upload(service, file_v, req, st, progress))

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
        clear_video.click(handlers.clear_choice, [state], [video_id, retrieval, keep_video, state],
                          api_visibility="private",
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
    media = database_dir(db) / "media"
    media.mkdir(parents=True, exist_ok=True)
    return [str(service.workdir), str(media)]


def port_problem(host: str, port: int) -> str | None:
    """Why ``host:port`` cannot be bound (None when it can), checked before loading models."""
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host, port))
    except OSError as exc:
        return exc.strerror or str(exc)
    return None


def serve(host: str = "127.0.0.1", port: int = 7860, share: bool = False, db: str = "embedded",
          concurrency: int = 1, render_size: int = 384, pipeline_factory=None,
          workdir: str | None = None, warm_previews: bool = True) -> int:
    """Build and serve the app until interrupted. Returns an exit status. ``warm_previews``: the
    database videos' previews are prepared on an idle core meanwhile
    (``AppService.start_preview_warmer``)."""
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
    if warm_previews:
        service.start_preview_warmer()
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
