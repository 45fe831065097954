"""``python -m backend bench WHAT``: speed benchmarks (they print figures; tests never time)."""
from __future__ import annotations

import json
import sys

from backend.cli.common import command_group


def cmd_bench_render(args) -> int:
    from backend.bench.render import bench_render

    f = bench_render(seconds=args.seconds, size=args.size, repeats=args.repeats)
    print(f"{args.seconds:.0f}-s motion ({f['frames']} frames) at {args.size}x{args.size}, body "
          f"{f['body']}, median of {f['repeats']} interleaved runs, {f['cpus']} CPUs, "
          f"load average {f['load_avg_1min']:.1f}:")
    print(f"{'path':<52}{'seconds':>10}")
    print(f"{'current (in place, skinned normals, writer thread)':<52}{f['total_s']:>10.2f}")
    print(f"{'previous (new mesh per frame, recomputed normals)':<52}{f['previous_total_s']:>10.2f}")
    print(f"{'skeleton only':<52}{f['skeleton_only_total_s']:>10.2f}")
    print(f"speed-up over the previous path: {f['speedup_vs_previous']:.2f}x "
          f"({f['ms_per_frame']:.1f} ms/frame; target <= {f['target_s']} s)")
    print("per frame, each part timed on its own (ms):")
    for k, v in f["per_frame_ms"].items():
        print(f"  {k:<34}{v:>8.2f}")
    if args.json:
        print(json.dumps(f))
    return 0


def cmd_bench_eval(args) -> int:
    from backend.bench.render import bench_eval

    f = bench_eval(repeats=args.repeats, split=args.split)
    print(f"{f['repeats']}-repeat evaluation of the VQ-VAE row on {f['split']} ({f['motions']} motions): "
          f"{f['evaluation_s']:.1f} s ({f['per_repeat_s']:.2f} s per repeat, "
          f"{f['motions_per_s']:.0f} motions/s; loading models {f['load_s']:.1f} s)")
    if args.json:
        print(json.dumps(f))
    return 0


def cmd_bench_retrieval(args) -> int:
    from backend.bench.retrieval import run_bench_retrieval

    res, text = run_bench_retrieval(sizes=tuple(args.sizes), queries=args.queries,
                                    ingest_videos=args.ingest_videos, workers=args.workers)
    print(text)
    if args.json:
        print(json.dumps(res))
    return 0


def cmd_bench_generate(args) -> int:
    from backend.bench.generate import bench_generate, format_bench_generate

    res = bench_generate(repeats=args.repeats, seconds=args.seconds, threads=args.threads)
    print(format_bench_generate(res))
    if args.json:
        print(json.dumps(res))
    return 0


def cmd_bench_peers(args) -> int:
    from backend.bench.peers import bench_peers, format_bench_peers

    if args.repeats < 1 or args.threads < 1:
        print("error: --repeats and --threads must be at least 1", file=sys.stderr)
        return 2
    res = bench_peers(repeats=args.repeats, threads=args.threads, time_steps=args.time_steps)
    print(format_bench_peers(res))
    if args.json:
        print(json.dumps(res))
    return 0


def cmd_bench_db(args) -> int:
    from backend.bench.database import bench_append, bench_open, format_bench_db

    res = {}
    if args.sizes:
        res["append"] = bench_append(tuple(args.sizes), add=args.add, shard_rows=args.shard_rows,
                                     rewrite=args.rewrite, repeats=args.repeats, workdir=args.workdir)
    if args.open:
        res["open"] = bench_open(args.open, shard_rows=args.shard_rows, workdir=args.workdir)
    print(format_bench_db(res))
    if args.json:
        print(json.dumps(res))
    return 0


def cmd_bench_ingest(args) -> int:
    from backend.bench.ingest import bench_ingest, format_bench_ingest

    res = bench_ingest(args.videos, workers=tuple(args.workers), engines=tuple(args.engines),
                       stand_in=args.stand_in, workdir=args.workdir)
    print(format_bench_ingest(res))
    if args.json:
        print(json.dumps(res))
    return 0


def cmd_bench_cold(args) -> int:
    from backend.bench.cold import bench_cold, format_bench_cold

    res = bench_cold(text=args.text, model=args.model, formats=args.formats, conversion=args.conversion)
    print(format_bench_cold(res))
    if args.json:
        print(json.dumps(res))
    return 0


def add(sub) -> None:
    """Add these commands to the top-level parser."""
    bsub = command_group(sub, "bench", "speed benchmarks (print figures; --json adds them as JSON)",
                         metavar="WHAT")
    r = bsub.add_parser("render", help="time a body-mesh motion -> MP4 render",
                        description="Render a real walking motion of SECONDS at SIZE x SIZE to "
                                    "MP4 with the default body and report each stage (median of "
                                    "repeats).")
    r.add_argument("--seconds", type=float, default=4.0)
    r.add_argument("--size", type=int, default=512)
    r.add_argument("--repeats", type=int, default=3)
    r.add_argument("--json", action="store_true", help="print the figures as JSON on the last line")
    r.set_defaults(func=cmd_bench_render)
    e = bsub.add_parser("eval", help="time a full generation evaluation of one generator",
                        description="Time `eval generation` for the VQ-VAE reconstruction row "
                                    "(encoding is done once per repeat for all metrics).")
    e.add_argument("--repeats", type=int, default=20)
    e.add_argument("--split", default="test")
    e.add_argument("--json", action="store_true", help="print the figures as JSON on the last line")
    e.set_defaults(func=cmd_bench_eval)
    b = bsub.add_parser(
        "generate", help="median text -> motion latency vs the naive path",
        description="Retrieval + generation + decoding (no rendering) of a SECONDS-long motion, "
                    "against the naive path (full-vocabulary head, no KV cache).")
    b.add_argument("--repeats", type=int, default=10)
    b.add_argument("--seconds", type=float, default=4.0)
    b.add_argument("--threads", type=int, default=2)
    b.add_argument("--json", action="store_true")
    b.set_defaults(func=cmd_bench_generate)
    pe = bsub.add_parser(
        "peers", help="text -> motion against stand-ins of MoMask and T2M-GPT",
        description="Median text -> 4-s motion time of ours (the fast path and the pipeline as the app "
                    "calls it) against timing stand-ins of MoMask and T2M-GPT: our own modules at the "
                    "peers' published inference sizes with random weights, running their sampling "
                    "loops (backend/bench/peers.py). Interleaved rounds.")
    pe.add_argument("--repeats", type=int, default=5)
    pe.add_argument("--threads", type=int, default=1, help="torch threads (default 1, as issue 16 measured)")
    pe.add_argument("--time-steps", type=int, default=10,
                    help="MoMask's masked-transformer iterations (10: its README's evaluation; 18: its "
                         "generation script's default)")
    pe.add_argument("--json", action="store_true")
    pe.set_defaults(func=cmd_bench_peers)
    bb = bsub.add_parser("retrieval", help="query latency at scale, ingestion speed",
                                    description="Query latency (text encoding + search) with "
                                                "synthetic vectors at each size, exact vs HNSW "
                                                "with recall@1; ingestion videos per minute on "
                                                "rendered videos.")
    bb.add_argument("--sizes", type=int, nargs="+", default=[1_000, 100_000, 1_000_000])
    bb.add_argument("--queries", type=int, default=200)
    bb.add_argument("--ingest-videos", type=int, default=8, help="videos to time ingestion on (0: skip)")
    bb.add_argument("--workers", type=int, default=1)
    bb.add_argument("--json", action="store_true")
    bb.set_defaults(func=cmd_bench_retrieval)
    d = bsub.add_parser(
        "db", help="cost of adding videos as the database grows; memory to open a large one",
        description="Merge --add new videos into synthetic sharded databases of each of --sizes "
                    "entries (the merge `index` runs) and print the seconds per size and the "
                    "largest/smallest ratio; --open N prints the memory added by opening a database "
                    "of N entries (in a fresh process). Writes its databases to a temporary folder "
                    "(--workdir): about 3.7 KB per entry, --open's arrays are file holes.")
    d.add_argument("--sizes", type=int, nargs="*", default=[10_000, 100_000])
    d.add_argument("--add", type=int, default=100, help="videos added per merge")
    d.add_argument("--repeats", type=int, default=3, help="merges per size (the median is shown)")
    d.add_argument("--rewrite", action="store_true",
                   help="also time writing the whole database as a new version (the cost of every "
                        "merge before the sharded layout)")
    d.add_argument("--open", type=int, default=0, metavar="N", help="entries of the database to open")
    d.add_argument("--shard-rows", type=int, default=4096)
    d.add_argument("--workdir", help="where the temporary databases go (default: the system's temp)")
    d.add_argument("--json", action="store_true")
    d.set_defaults(func=cmd_bench_db)
    g = bsub.add_parser(
        "ingest", help="ingestion throughput: process pool vs Ray Data (1 and 2 workers)",
        description="Index the same --videos rendered MP4s with each engine and worker count into "
                    "fresh databases; print seconds, videos/minute, Ray's ratio to the pool and its "
                    "overhead per video (with and without its start-up, timed alone).")
    g.add_argument("--videos", type=int, default=40)
    g.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    g.add_argument("--engines", nargs="+", choices=["pool", "ray"], default=["pool", "ray"])
    g.add_argument("--stand-in", action="store_true",
                   help="cheap stand-in for pose + I3D: time the engines' own cost only")
    g.add_argument("--workdir", help="where the videos and databases go (default: the system's temp)")
    g.add_argument("--json", action="store_true")
    g.set_defaults(func=cmd_bench_ingest)
    c = bsub.add_parser("cold", help="start-up: --help, a fresh-process generate, load parts",
                        description="Time `python -m backend --help` and `generate` from new "
                                    "processes, and the parts of loading (imports, tokenizer, base, "
                                    "pipeline, first generation) inside one new process.")
    c.add_argument("--text", default="a person walks forward")
    c.add_argument("--model", default="mcdpo")
    c.add_argument("--formats", default="bvh,fbx,glb,mp4,npy")
    c.add_argument("--conversion", action="store_true",
                   help="also time the first-use GGUF conversion into an empty data folder, the "
                        "fast path against transformers' own reading (about 2 minutes)")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=cmd_bench_cold)
