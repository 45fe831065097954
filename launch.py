"""Start the VimoRAG browser app: ``python launch.py`` (http://127.0.0.1:7860 by default).

Type a motion ("a person does a cartwheel"): the app retrieves a human video (Gemini-MVR),
the motion LLM writes motion tokens from the text and that video, the VQ-VAE decodes them and
the page plays the body-mesh animation (MP4 + interactive 3D) with BVH/FBX/GLB/MP4/NPY downloads.
Works offline; models load in the background after the page is up.
"""
from __future__ import annotations

import argparse
import os
import sys


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python launch.py",
        description="Serve the VimoRAG app (text -> retrieved video -> 3D motion) on the embedded "
                    "default: offline, CPU. Models come from VIMORAG_CHECKPOINTS (default "
                    "checkpoints/), built data from VIMORAG_DATA (default data/).",
        epilog="Example: python launch.py --port 8080 --concurrency 2")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind (default 127.0.0.1: this machine only; 0.0.0.0 "
                             "exposes the app to your network)")
    parser.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    parser.add_argument("--share", action="store_true",
                        help="also ask Gradio for a temporary public link (needs internet; off by "
                             "default)")
    parser.add_argument("--db", default="embedded",
                        help="video database to retrieve from (default: embedded; others are "
                             "folders under VIMORAG_DATA/videodb/, made with `python -m backend index`)")
    parser.add_argument("--concurrency", type=int, default=1,
                        help="requests worked on at once (default 1; more needs more RAM and cores)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: half the cores, at most 4; 1 is often "
                             "fastest on a busy machine)")
    parser.add_argument("--render-size", type=int, default=384,
                        help="side of the rendered result video in pixels (default 384)")
    parser.add_argument("--no-warm-previews", dest="warm_previews", action="store_false",
                        help="do not prepare the database videos' previews in the background (by "
                             "default the app makes each video's playable MP4 and thumbnail once, one "
                             "at a time, at the lowest CPU priority and only while no request runs, so "
                             "a video's first view need not render it; `python -m backend videos "
                             "previews` makes them all ahead of time)")
    args = parser.parse_args(argv)
    if not 1 <= args.port <= 65535:
        parser.error(f"--port must be in 1..65535, got {args.port}")
    if args.concurrency < 1:
        parser.error("--concurrency must be at least 1")
    if not 64 <= args.render_size <= 2048:
        parser.error("--render-size must be in 64..2048")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    threads = args.threads or max(1, min(4, (os.cpu_count() or 2) // 2))
    # before any heavy import: offscreen GL, offline, thread counts
    os.environ.setdefault("PYOPENGL_PLATFORM", "egl")
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    import torch

    torch.set_num_threads(threads)
    if args.share:
        print("warning: --share makes the app reachable from the internet through Gradio's relay.",
              flush=True)
    from app.main import serve

    return serve(host=args.host, port=args.port, share=args.share, db=args.db,
                 concurrency=args.concurrency, render_size=args.render_size,
                 warm_previews=args.warm_previews)


if __name__ == "__main__":
    sys.exit(main())
