"""``python -m app.bench [--json]``: one request through the app's own handlers, no browser.

The app is started as ``launch.py`` starts it (models loading in the background, the shipped
checkpoints), then one Generate press runs through ``app.handlers.generate`` with the real
``AppService``. Reported: how long the app took to be ready, and for the request the time from
the click to each page update (what it showed), to the first visible motion (the update that
carries the 3D view and the downloads) and to everything, with the parts the status line gives.
Seconds move with the machine's load; compare runs on the same machine. (It lives in ``app/``
because the back end never imports the app.)
"""
from __future__ import annotations

import argparse
import json
import os
import re
import tempfile
import time

from app import handlers
from app.service import AppService, ModelHolder, default_pipeline_factory

SHOWS = ("router", "model3d", "downloads", "video_a", "retrieved", "gallery", "details")


def bench_app(prompt: str = "a person walks forward and waves", mode: str = "single",
              render_size: int = 384) -> dict:
    t0 = time.perf_counter()
    holder = ModelHolder(default_pipeline_factory()).start()
    holder.wait()
    ready = time.perf_counter() - t0
    if holder.error:
        raise RuntimeError(f"the models did not load: {holder.error}")
    with tempfile.TemporaryDirectory(prefix="vimorag-bench-app-") as tmp:
        service = AppService(holder, workdir=tmp, render_size=render_size)
        timeline = []
        click = time.perf_counter()
        first_visible = None
        status = ""
        for upd in handlers.generate(service, handlers.Request(prompt, mode=mode), {}):
            at = time.perf_counter() - click
            shown = [k for k in SHOWS if upd.get(k) not in (None, [], "")]
            timeline.append({"at_s": round(at, 3), "shows": shown})
            if first_visible is None and "model3d" in upd:
                first_visible = at
            status = upd.get("status", status)
        everything = time.perf_counter() - click
        service.pool.shutdown(wait=True)
    if "Done" not in status:
        raise RuntimeError(f"the request failed: {re.sub(r'<[^>]+>', '', status)[:300]}")
    parts = dict(re.findall(r"([A-Za-z][A-Za-z0-9 +(),/]*?) (\d+\.\d) s", status.split("s in all", 1)[-1]))
    return {"prompt": prompt, "mode": mode, "render_size": render_size, "app_ready_s": ready,
            "click_to_first_motion_s": first_visible, "click_to_everything_s": everything,
            "timeline": timeline, "status_parts_s": {k.strip(": "): float(v) for k, v in parts.items()},
            "targets_s": {"first_motion": 3.0, "everything": 6.0, "app_ready": 20.0},
            "cpus": os.cpu_count(), "load_avg_1min": os.getloadavg()[0]}


def format_bench_app(r: dict) -> str:
    lines = [f"app, one {r['mode']} request at {r['render_size']} px ({r['cpus']} CPUs, load average "
             f"{r['load_avg_1min']:.1f}):",
             f"  app ready (models loaded)   {r['app_ready_s']:6.1f} s  (target < {r['targets_s']['app_ready']:.0f} s)",
             f"  click -> first motion       {r['click_to_first_motion_s']:6.1f} s  (target < {r['targets_s']['first_motion']:.0f} s)",
             f"  click -> everything         {r['click_to_everything_s']:6.1f} s  (target < {r['targets_s']['everything']:.0f} s)",
             "  page updates (seconds after the click: what they showed):"]
    lines += [f"    {u['at_s']:6.2f}  {', '.join(u['shows']) or 'status'}" for u in r["timeline"]]
    lines.append("  parts (the status line): " + ", ".join(f"{k} {v:.1f} s" for k, v in r["status_parts_s"].items()))
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m app.bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("--prompt", default="a person walks forward and waves")
    ap.add_argument("--mode", choices=("single", "compare"), default="single")
    ap.add_argument("--size", type=int, default=384, help="MP4 size, as the app renders it")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    res = bench_app(args.prompt, args.mode, args.size)
    print(format_bench_app(res))
    if args.json:
        print(json.dumps(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
