"""Command-line commands of the retrieval half (video database, Gemini-MVR, FAISS):

    python -m backend videos build      render + analyse the embedded video database
    python -m backend videos self       videos of the training motions themselves (generator training)
    python -m backend index DIR         add a folder of your videos to a database
    python -m backend retrieve "TEXT"   ranked videos with fused score, channel scores, weights
    python -m backend train retriever   stage 1: action + object channels
    python -m backend train router      stage 2: the router on frozen channels
    python -m backend eval retrieval    R@1 / R@5 / R@10 / MedR on held-out captions
    python -m backend bench retrieval   query latency at 1k / 100k / 1M videos, ingestion speed
"""
from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import numpy as np


def _record(folder: Path) -> None:
    from backend import manifest

    manifest.record(folder, "python -m backend " + shlex.join(sys.argv[1:]))
    print(f"Shipped {folder} and recorded it in the MANIFEST")


# ---------------------------------------------------------------------------------- videos
def cmd_videos_build(args) -> int:
    from backend.paths import data_home
    from backend.retrieval.service import shipped_database_dir
    from backend.video.database import live_folder
    from backend.video.ingest import IngestConfig, build_embedded
    from backend.video.synth import N_IN_DIST, N_OOD, embedded_specs

    n_in = args.limit if args.limit else N_IN_DIST
    n_ood = max(1, args.limit // 4) if args.limit else N_OOD
    specs = embedded_specs(n_in, n_ood)
    work = Path(args.workdir) if args.workdir else data_home() / "videodb-build" / "embedded"
    report = build_embedded(work, specs, IngestConfig(), workers=args.workers)
    print(report.summary().splitlines()[0])
    if args.ship:
        target = shipped_database_dir()
        target.mkdir(parents=True, exist_ok=True)
        src = live_folder(work)
        for f in ("keypoints.npy", "object.npy", "videos.jsonl"):   # the shipped copy: plain files
            (target / f).write_bytes((src / f).read_bytes())
        _record(target)
    return 0


def cmd_videos_self(args) -> int:
    from backend.data.dataset import open_corpus
    from backend.video.database import database_dir
    from backend.video.ingest import IngestConfig, build_embedded
    from backend.video.synth import motion_video_spec

    corpus = open_corpus(args.data)
    ids = corpus.split_ids(args.split)
    if args.limit:
        ids = ids[:args.limit]
    specs = []
    for i, mid in enumerate(ids):
        f = corpus.root / "new_joints" / f"{mid}.npy"
        n = len(np.load(f, mmap_mode="r"))
        specs.append(motion_video_spec(mid, f.resolve(), n, index=i))
    root = database_dir(args.db or f"self-{args.split}")
    report = build_embedded(root, specs, IngestConfig(), workers=args.workers)
    print(report.summary().splitlines()[0] + f"  ({root})")
    return 0


def cmd_index(args) -> int:
    from backend.retrieval.service import open_database
    from backend.video.database import database_dir
    from backend.video.ingest import IngestConfig, index_folder

    if args.db == "embedded":
        open_database("embedded")                    # seed the working copy first
    report = index_folder(args.folder, database_dir(args.db), IngestConfig(frames=args.frames),
                          workers=args.workers)
    print(report.summary())
    try:
        from backend.retrieval.service import VideoRetriever

        VideoRetriever.open(args.db)                 # embed the new rows and extend the index
    except FileNotFoundError as exc:
        print(f"(index not updated: {exc})")
    if args.json:
        print(json.dumps({"added": report.added, "already": report.already,
                          "skipped": report.skipped, "total": report.total}))
    return 0


def cmd_retrieve(args) -> int:
    import time

    import numpy as np

    from core.prompt import clean_prompt
    from backend.retrieval.service import VideoRetriever

    text = clean_prompt(args.text)
    t0 = time.perf_counter()
    r = VideoRetriever.open(args.db)
    r.encode_query(["warm-up"])                      # loads the text encoder
    t1 = time.perf_counter()
    hits = r.search(text, k=args.k, mode=args.mode, rng=np.random.default_rng(args.seed))
    t2 = time.perf_counter()
    print(f"{'rank':<6}{'video':<24}{'score':>8}{'action':>9}{'object':>9}{'w_action':>10}{'w_object':>10}")
    for h in hits:
        print(f"{h.rank:<6}{h.id:<24}{h.score:>8.3f}{h.action_score:>9.3f}{h.object_score:>9.3f}"
              f"{h.w_action:>10.2f}{h.w_object:>10.2f}")
    print(f"({len(r.db)} videos; query {1000 * (t2 - t1):.1f} ms, loading {t1 - t0:.1f} s)")
    if args.json:
        print(json.dumps({"query": text, "mode": args.mode, "results": [h.to_json() for h in hits]}))
    return 0


# ----------------------------------------------------------------------------------- train
def _training_db(args):
    from backend.retrieval.service import open_database
    from backend.video.database import VideoDatabase

    return VideoDatabase.load(args.db_dir) if args.db_dir else open_database("embedded")


def cmd_train_retriever(args) -> int:
    import torch

    from backend.paths import data_home
    from backend.train.retriever import train_channels

    torch.set_num_threads(args.threads)
    work = Path(args.workdir) if args.workdir else data_home() / "runs" / "retriever"
    work.mkdir(parents=True, exist_ok=True)
    model = train_channels(_training_db(args), steps=args.steps, batch=args.batch_size, lr=args.lr,
                           seed=args.seed, log=work / "log.jsonl")
    model.save_pretrained(work / "stage1")
    print(f"Stage-1 retriever saved in {work / 'stage1'} (train the router next: "
          "`python -m backend train router`)")
    return 0


def cmd_train_router(args) -> int:
    import torch

    from backend.eval.retrieval import evaluate_retrieval, format_retrieval
    from backend.models.retriever import GeminiMVR
    from backend.paths import checkpoints_dir, data_home
    from backend.train.retriever import train_router

    torch.set_num_threads(args.threads)
    work = Path(args.workdir) if args.workdir else data_home() / "runs" / "retriever"
    if not (work / "stage1" / "model.safetensors").is_file():
        raise FileNotFoundError(f"no stage-1 retriever in {work / 'stage1'}; run "
                                "`python -m backend train retriever` first")
    db = _training_db(args)
    model = train_router(GeminiMVR.from_pretrained(work / "stage1"), db, steps=args.steps,
                         lr=args.lr, seed=args.seed, log=work / "log.jsonl")
    model.save_pretrained(work / "model")
    print(format_retrieval(evaluate_retrieval(model, db)))
    print(f"Retriever saved in {work / 'model'}")
    if args.ship:
        target = checkpoints_dir() / "retriever"
        model.save_pretrained(target, dtype=torch.float16)
        _record(target)
    return 0


# ------------------------------------------------------------------------------ eval/bench
def cmd_eval_retrieval(args) -> int:
    from backend.eval.retrieval import evaluate_retrieval, format_retrieval
    from backend.models.retriever import GeminiMVR
    from backend.paths import checkpoints_dir

    d = Path(args.retriever) if args.retriever else checkpoints_dir() / "retriever"
    res = evaluate_retrieval(GeminiMVR.from_pretrained(d), _training_db(args), split=args.split)
    print(format_retrieval(res))
    if args.json:
        print(json.dumps(res))
    return 0


def cmd_bench_retrieval(args) -> int:
    from backend.bench_retrieval import run_bench_retrieval

    res, text = run_bench_retrieval(sizes=tuple(args.sizes), queries=args.queries,
                                    ingest_videos=args.ingest_videos, workers=args.workers)
    print(text)
    if args.json:
        print(json.dumps(res))
    return 0


# ---------------------------------------------------------------------------------- parsers
def register(sub, groups: dict) -> None:
    """Add the retrieval commands to the top-level parser and to the train/eval/bench groups."""
    v = sub.add_parser("videos", help="the embedded video database")
    vsub = v.add_subparsers(dest="videos_cmd", required=True, metavar="COMMAND")
    b = vsub.add_parser(
        "build", help="render and analyse the embedded video database (resumable)",
        description="Render 1,050 short videos of video-only motions (random camera, background, "
                    "body colour and shape), run MediaPipe Pose and I3D on 16 sampled frames of "
                    "each, and store keypoints + features. About 1 hour on 2 cores; interrupt "
                    "and rerun to resume. --ship copies the result to checkpoints/videodb.")
    b.add_argument("--workers", type=int, default=2, help="worker processes")
    b.add_argument("--limit", type=int, default=0, help="build only this many in-distribution "
                                                        "videos (+1/4 OOD), for a quick try")
    b.add_argument("--workdir", help="build folder (default: data/videodb-build/embedded)")
    b.add_argument("--ship", action="store_true", help="copy to checkpoints/videodb + MANIFEST")
    b.set_defaults(func=cmd_videos_build)
    sv = vsub.add_parser(
        "self", help="videos of the corpus's own motions, for the generator's self-video pairs",
        description="Render each motion of a corpus split (its first 196 frames, random camera, "
                    "background and body) and run the same perception as the database (MediaPipe "
                    "Pose + I3D on 16 sampled frames) into the database NAME (default self-SPLIT). "
                    "`train sft --self-video P` pairs a share P of the captions with the video of "
                    "their own motion, so the generator learns what a pose sequence means in "
                    "motion tokens. About 1.5 s per motion per worker; resumable.")
    sv.add_argument("--data", help="HumanML3D-layout folder (default: the embedded corpus)")
    sv.add_argument("--split", default="train")
    sv.add_argument("--db", help="database name (default: self-SPLIT)")
    sv.add_argument("--workers", type=int, default=2, help="worker processes")
    sv.add_argument("--limit", type=int, default=0, help="only the first N motions of the split")
    sv.set_defaults(func=cmd_videos_self)

    i = sub.add_parser(
        "index", help="add a folder of videos to a video database",
        description="Decode every video under DIR, sample frames, estimate 2D keypoints "
                    "(MediaPipe Pose, bundled model) and I3D features, and add them to the "
                    "database NAME (and its FAISS index). Unreadable, empty or person-less videos "
                    "are skipped and reported. Interrupt and rerun to resume; nothing is added "
                    "twice.")
    i.add_argument("folder", metavar="DIR", help="folder (searched recursively) or one video file")
    i.add_argument("--db", default="embedded", help="database name (default: embedded, the one "
                                                    "`retrieve` and the app use)")
    i.add_argument("--workers", type=int, default=1, help="worker processes")
    i.add_argument("--frames", type=int, default=16, help="frames sampled per video")
    i.add_argument("--json", action="store_true")
    i.set_defaults(func=cmd_index)

    r = sub.add_parser("retrieve", help="retrieve videos for a text",
                       description="Rank the database's videos for TEXT with Gemini-MVR: fused "
                                   "score, both channel scores and the router's weights.")
    r.add_argument("text", metavar="TEXT")
    r.add_argument("--k", type=int, default=5)
    r.add_argument("--mode", default="gemini", choices=["gemini", "action", "object", "fixed", "random"],
                   help="gemini = router-weighted fusion (default); action/object = one channel; "
                        "fixed = 0.5/0.5; random = random videos")
    r.add_argument("--db", default="embedded")
    r.add_argument("--seed", type=int, default=0, help="for --mode random")
    r.add_argument("--json", action="store_true")
    r.set_defaults(func=cmd_retrieve)

    def common_train(p, steps, lr):
        p.add_argument("--steps", type=int, default=steps)
        p.add_argument("--lr", type=float, default=lr)
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--threads", type=int, default=2)
        p.add_argument("--db-dir", help="captioned database folder (default: the embedded one)")
        p.add_argument("--workdir", help="run folder (default: data/runs/retriever)")

    t = groups["train"].add_parser("retriever", help="Gemini-MVR stage 1: both channels",
                                   description="Train the action channel (keypoint encoder + "
                                               "predicate text head) and the object channel's "
                                               "projections contrastively on captioned videos.")
    common_train(t, 1500, 5e-4)
    t.add_argument("--batch-size", type=int, default=64)
    t.set_defaults(func=cmd_train_retriever)
    t = groups["train"].add_parser("router", help="Gemini-MVR stage 2: the router (channels frozen)",
                                   description="Freeze both channels and train only the router on "
                                               "the fused score; prints the retrieval table.")
    common_train(t, 600, 1e-2)
    t.add_argument("--ship", action="store_true", help="copy to checkpoints/retriever + MANIFEST")
    t.set_defaults(func=cmd_train_router)

    e = groups["eval"].add_parser("retrieval", help="text -> video R@1/5/10 and median rank",
                                  description="Held-out captions against held-out videos, for "
                                              "object-only, action-only, fixed 0.5/0.5 and the "
                                              "trained router.")
    e.add_argument("--retriever", help="retriever folder (default: checkpoints/retriever)")
    e.add_argument("--db-dir", help="captioned database folder (default: the embedded one)")
    e.add_argument("--split", default="test")
    e.add_argument("--json", action="store_true")
    e.set_defaults(func=cmd_eval_retrieval)

    bb = groups["bench"].add_parser("retrieval", help="query latency at scale, ingestion speed",
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


__all__ = ["register"]
