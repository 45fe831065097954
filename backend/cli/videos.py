"""``python -m backend videos|index|retrieve``: the video database and retrieval from it."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from backend.checkpoints import ship
from backend.cli.common import command_group


def cmd_videos_build(args) -> int:
    from backend.checkpoints import data_home
    from backend.retrieval.service import shipped_database_dir
    from backend.retrieval.videos.database import database_dir
    from backend.retrieval.videos.ingest import IngestConfig, build_embedded
    from backend.retrieval.videos.synth import N_IN_DIST, N_OOD, VIDEO_SEED, embedded_specs

    other = args.seed != VIDEO_SEED or args.in_dist is not None or args.ood is not None
    if other and args.ship:
        raise SystemExit("error: --ship copies the embedded database (default seed and sizes) only")
    if min(args.in_dist or 0, args.ood or 0, args.limit) < 0 or args.seed < 0:
        raise SystemExit("error: --in-dist, --ood, --limit and --seed must be >= 0")
    n_in = args.in_dist if args.in_dist is not None else (args.limit if args.limit else N_IN_DIST)
    n_ood = args.ood if args.ood is not None else (max(1, args.limit // 4) if args.limit else N_OOD)
    if n_in + n_ood == 0:
        raise SystemExit("error: nothing to build (--in-dist 0 --ood 0)")
    specs = embedded_specs(n_in, n_ood, args.seed)
    if args.workdir:
        work = Path(args.workdir)
    elif other:          # a training-only database: where `train pose-reader --videos NAME` finds it
        work = database_dir(args.db or f"videos-{args.seed}")
    else:
        work = data_home() / "videodb-build" / "embedded"
    report = build_embedded(work, specs, IngestConfig(), workers=args.workers)
    print(report.summary().splitlines()[0] + f"  ({work})")
    if args.ship:                                  # the shipped copy: the three flat files
        import tempfile

        from backend.retrieval.videos.database import VideoDatabase

        with tempfile.TemporaryDirectory() as flat:
            ship(shipped_database_dir().name, files=VideoDatabase.load(work).write_flat(flat))
    return 0


def cmd_videos_self(args) -> int:
    from backend.data.dataset import open_corpus
    from backend.retrieval.videos.database import database_dir
    from backend.retrieval.videos.ingest import IngestConfig, build_embedded
    from backend.retrieval.videos.synth import motion_video_spec

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


def cmd_videos_previews(args) -> int:
    from backend.retrieval.service import VideoRetriever
    from backend.retrieval.videos.previews import prepare_previews

    r = VideoRetriever.open(args.db)
    ids = r.video_ids[:args.limit] if args.limit else r.video_ids
    res = prepare_previews(r, ids)
    print(f"{res['videos']} videos: {res['made']} previews made, {res['already_there']} already there, "
          f"{len(res['failed'])} failed ({r.db.root / 'media'})")
    for vid, why in list(res["failed"].items())[:20]:
        print(f"  {vid}: {why}")
    if args.json:
        print(json.dumps(res))
    return 1 if res["failed"] else 0


def cmd_index(args) -> int:
    from backend.retrieval.service import open_database
    from backend.retrieval.videos.database import database_dir
    from backend.retrieval.videos.ingest import IngestConfig, index_folder

    if args.db == "embedded":
        open_database("embedded")                    # seed the working copy first
    report = index_folder(args.folder, database_dir(args.db), IngestConfig(frames=args.frames),
                          workers=args.workers, engine=args.engine, address=args.address)
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

    from motioncore.prompt import clean_prompt
    from backend.retrieval.service import VideoRetriever

    text = clean_prompt(args.text)
    t0 = time.perf_counter()
    from backend.generation.kind_reader import with_kind_reader

    r = with_kind_reader(VideoRetriever.open(args.db))
    r.encode_query(["warm-up"])                      # loads the text encoder
    t1 = time.perf_counter()
    hits = r.search(text, k=args.k, mode=args.mode, rng=np.random.default_rng(args.seed))
    t2 = time.perf_counter()
    print(f"{'rank':<6}{'video':<24}{'score':>8}{'action':>9}{'object':>9}{'w_action':>10}{'w_object':>10}"
          f"{'cues':>6}{'kinds':>7}")
    for h in hits:
        print(f"{h.rank:<6}{h.id:<24}{h.score:>8.3f}{h.action_score:>9.3f}{h.object_score:>9.3f}"
              f"{h.w_action:>10.2f}{h.w_object:>10.2f}{h.cues:>+6.0f}{h.kinds:>+7.1f}")
    print(f"({len(r.db)} videos; query {1000 * (t2 - t1):.1f} ms, loading {t1 - t0:.1f} s)")
    if args.json:
        print(json.dumps({"query": text, "mode": args.mode, "results": [h.to_json() for h in hits]}))
    return 0


def add(sub) -> None:
    """Add these commands to the top-level parser."""
    vsub = command_group(sub, "videos", "the embedded video database")
    b = vsub.add_parser(
        "build", help="render and analyse the embedded video database (resumable)",
        description="Render 1,050 short videos of video-only motions (random camera, background, "
                    "body colour and shape), run MediaPipe Pose and I3D on 16 sampled frames of "
                    "each, and store keypoints + features. About 1 hour on 2 cores; interrupt "
                    "and rerun to resume. --ship copies the result to checkpoints/videodb.")
    b.add_argument("--workers", type=int, default=2, help="worker processes")
    b.add_argument("--limit", type=int, default=0, help="build only this many in-distribution "
                                                        "videos (+1/4 OOD), for a quick try")
    b.add_argument("--workdir", help="build folder (default: data/videodb-build/embedded; with another "
                                     "--seed or sizes: data/videodb/NAME)")
    b.add_argument("--seed", type=int, default=4242,
                   help="draw the video-only motions with this seed (default %(default)s: the embedded "
                        "database; another seed gives other motions of the same kinds, e.g. more "
                        "training videos for `train pose-reader --videos NAME`)")
    b.add_argument("--in-dist", type=int, metavar="N", help="in-distribution videos (default 800)")
    b.add_argument("--ood", type=int, metavar="N", help="videos with an OOD kind (default 250)")
    b.add_argument("--db", metavar="NAME", help="database name for another seed or sizes "
                                                "(default videos-SEED)")
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
    pv = vsub.add_parser(
        "previews", help="make every video's playable MP4 and thumbnail ahead of time",
        description="Render (synthetic videos) or transcode (users' files) every video of a "
                    "database to the browser-playable MP4 the app shows, and its thumbnail, into "
                    "the database's media/ folder, so no user waits for them on first view. What "
                    "exists is kept (resumable). About 2-3 s per synthetic video on one core.")
    pv.add_argument("--db", default="embedded", help="database name")
    pv.add_argument("--limit", type=int, default=0, help="only the first N videos")
    pv.add_argument("--json", action="store_true")
    pv.set_defaults(func=cmd_videos_previews)

    i = sub.add_parser(
        "index", help="add a folder of videos to a video database",
        description="Decode every video under DIR, sample frames, estimate 2D keypoints "
                    "(MediaPipe Pose, bundled model) and I3D features, and add them to the "
                    "database NAME (and its FAISS index). Unreadable, empty or person-less videos "
                    "are skipped and reported. Interrupt and rerun to resume; nothing is added "
                    "twice. --engine ray runs the same per-video map on Ray Data (a local "
                    "instance, or the cluster at --address), then the same merge.")
    i.add_argument("folder", metavar="DIR", help="folder (searched recursively) or one video file")
    i.add_argument("--db", default="embedded", help="database name (default: embedded, the one "
                                                    "`retrieve` and the app use)")
    i.add_argument("--workers", type=int, default=1,
                   help="worker processes (pool), or Ray workers: the local instance's CPUs / actors "
                        "on the cluster (ray)")
    i.add_argument("--engine", choices=["pool", "ray"], default="pool",
                   help="pool: this process or a local process pool (default, one machine); ray: "
                        "Ray Data, on a local Ray instance it starts or on --address")
    i.add_argument("--address", help="join this Ray cluster (e.g. 10.0.0.1:6379 or auto) instead of "
                                     "starting a local instance; needs --engine ray")
    i.add_argument("--frames", type=int, default=16, help="frames sampled per video")
    i.add_argument("--json", action="store_true")
    i.set_defaults(func=cmd_index)

    r = sub.add_parser("retrieve", help="retrieve videos for a text",
                       description="Rank the database's videos for TEXT with Gemini-MVR: fused "
                                   "score, both channel scores and the router's weights. The 20 best "
                                   "are re-ranked by how the videos' captions agree with the side, "
                                   "direction, speed and count the words ask ('cues': agreeing minus "
                                   "disagreeing; not in random mode). The 50 best are re-ranked also "
                                   "by the share of the text's kinds each video shows ('kinds', -1 to "
                                   "+1): each part's kind of a text that chains motions ('A, then B'), "
                                   "read off the part's own best videos and, with the shipped kind "
                                   "reader (checkpoints/kind-reader), its words; with the reader every "
                                   "text's kind is read so.")
    r.add_argument("text", metavar="TEXT")
    r.add_argument("--k", type=int, default=5)
    r.add_argument("--mode", default="gemini", choices=["gemini", "action", "object", "fixed", "random"],
                   help="gemini = router-weighted fusion (default); action/object = one channel; "
                        "fixed = 0.5/0.5; random = random videos")
    r.add_argument("--db", default="embedded")
    r.add_argument("--seed", type=int, default=0, help="for --mode random")
    r.add_argument("--json", action="store_true")
    r.set_defaults(func=cmd_retrieve)
