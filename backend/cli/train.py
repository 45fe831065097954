"""``python -m backend train COMPONENT``: every training command (tokenizer, evaluator,
checker, Gemini-MVR's two stages, the motion LLM's SFT and McDPO). Each is resumable from its
run folder; ``--ship`` puts the result in ``checkpoints/`` with its MANIFEST line."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from backend.checkpoints import ship
from backend.cli.common import command_group, load_stack, training_db
from motioncore.io import atomic_write_json


def _dtype(name: str):
    """The torch dtype of a --ship-dtype choice (torch is imported only when a command runs)."""
    import torch

    return {"float16": torch.float16, "float32": torch.float32}[name]


def cmd_train_vqvae(args) -> int:
    import torch
    from backend.data.dataset import open_corpus
    from backend.generation.vqvae import VQVAEConfig
    from backend.checkpoints import data_home
    from backend.generation.train_vqvae import VQTrainConfig, train_vqvae

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {args.device}: torch sees no CUDA GPU here (use --device cpu)")
    if args.freeze_codebook and not args.init:
        raise ValueError("--freeze-codebook keeps a trained codebook: give --init DIR")
    if args.extra_ood < 0 or args.val_ood < 0:
        raise ValueError(f"--extra-ood and --val-ood count motions: give 0 or more "
                         f"(got {args.extra_ood}, {args.val_ood})")
    corpus = open_corpus(args.data)
    norm = corpus.normalizer
    motions = [norm.normalize(f) for f in corpus.load_features("train", progress=True).values()]
    boost = [1.0] * len(motions)
    if args.video_motions if args.video_motions is not None else args.data is None:
        from backend.data.video_motions import N_IN_DIST, video_motion_features

        extra = video_motion_features(progress=True)
        print(f"+ {len(extra)} video-only motions of the video database (no captions; "
              f"{len(extra) - N_IN_DIST} with an OOD kind, drawn {args.ood_boost:g}x as often)")
        motions += [norm.normalize(f) for f in extra]
        boost += [1.0 if i < N_IN_DIST else args.ood_boost for i in range(len(extra))]
    val_ood = None
    if args.extra_ood or args.val_ood:
        from backend.data.video_motions import PROGRAM_SEED, PROGRAM_VAL_SEED, program_motion_features

        if args.extra_ood:
            extra = program_motion_features(args.extra_ood, PROGRAM_SEED, progress=True)
            print(f"+ {len(extra)} caption-free motions with an OOD kind (program seed {PROGRAM_SEED})")
            motions += [norm.normalize(f) for f in extra]
            boost += [1.0] * len(extra)
        if args.val_ood:
            val_ood = [norm.normalize(f) for f in
                       program_motion_features(args.val_ood, PROGRAM_VAL_SEED, progress=True)]
    val = [norm.normalize(f) for f in corpus.load_features("val").values()] \
        if "val" in corpus.splits() else None
    model_cfg = VQVAEConfig.paper() if args.config == "paper" else VQVAEConfig.embedded()
    train_cfg = VQTrainConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                              warmup_steps=min(1000, args.steps // 10),
                              lr_milestones=tuple(args.decay_at) if args.decay_at else None,
                              schedule=args.schedule, root_weight=args.root_weight,
                              joint_weight=args.joint_weight,
                              pos_weight=args.pos_weight, window=args.window,
                              ckpt_every=max(1, min(500 if args.device == "cpu" else 5000,
                                                    args.steps // 4)),
                              threads=args.threads, device=args.device,
                              freeze_codebook=args.freeze_codebook,
                              time_budget_s=60.0 * args.minutes)
    work = Path(args.workdir) if args.workdir else data_home() / "runs" / f"vqvae-{args.config}"
    init = None
    if args.init:
        from backend.generation.vqvae import MotionVQVAE

        init = MotionVQVAE.from_pretrained(args.init)
        model_cfg = init.config
        print(f"Starting from the weights and codebook of {args.init}")
    model = train_vqvae(motions, model_cfg, train_cfg, work, resume=not args.no_resume,
                        val_motions=val, init=init, stats=(norm.mean, norm.std), boost=boost,
                        val_ood_motions=val_ood)
    print(f"Trained model saved in {work / 'model'}")
    if args.curves:
        from backend.curves import plot_vqvae_curves

        print(f"Learning curves: {plot_vqvae_curves(work / 'train_log.jsonl', Path(args.curves))}")
    if args.ship:
        ship("vqvae", model, dtype=_dtype(args.ship_dtype))
    return 0


def cmd_train_evaluator(args) -> int:
    from backend.data.dataset import open_corpus
    from backend.evaluation.evaluator import EvaluatorConfig
    from backend.checkpoints import data_home
    from backend.evaluation.train_evaluator import EvaluatorTrainConfig, train_evaluator

    corpus = open_corpus(args.data)
    splits = corpus.judge_splits()
    cfg = EvaluatorTrainConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                               threads=args.threads, splits=splits)
    print(f"Training on the {' + '.join(splits)} split(s)")
    work = Path(args.workdir) if args.workdir else data_home() / "runs" / "evaluator"
    model = train_evaluator(corpus, EvaluatorConfig.embedded(), cfg, work, resume=not args.no_resume)
    print(f"Trained evaluator saved in {work / 'model'}")
    if args.ship:
        ship("evaluator", model, dtype=_dtype(args.ship_dtype))
    return 0


def cmd_train_checker(args) -> int:
    from backend.data.dataset import open_corpus
    from backend.evaluation.follow import CheckerTrainConfig, train_checker
    from backend.checkpoints import data_home

    if args.more < 0 or not 0.0 <= args.clean <= 1.0:
        raise ValueError(f"--more must be >= 0 and --clean between 0 and 1 (got {args.more}, {args.clean})")
    if args.more and args.role != "checker":
        raise ValueError("--more is for the judge (--role checker); the picker learns what the generator learns")
    corpus = open_corpus(args.data)
    # the judge also learns the ood_judge half; the picker only what the generator learns from (its
    # train split and, with --videos, the motions of the database's train videos, OOD kinds
    # included), so that what it prefers is not what the judge was taught on the OOD judge half
    splits = corpus.judge_splits() if args.role == "checker" else ("train",)
    extra = []
    if args.videos and args.role != "picker":
        raise ValueError("--videos is for --role picker (the judge learns real corpus motions only)")
    for name in args.videos or []:
        from backend.data.video_motions import database_motions
        from backend.retrieval.videos.database import VideoDatabase, database_dir

        db = VideoDatabase.open(database_dir(name))
        if not len(db):
            raise FileNotFoundError(f"--videos {name}: no video database of that name at "
                                    f"{database_dir(name)} (`python -m backend videos build`)")
        motions = database_motions(db.records, "train", progress=True)
        if not motions:
            raise ValueError(f"--videos {name}: no synthetic train video with a known motion")
        extra += motions
    val_extra = []
    if args.more:
        from backend.data.video_motions import JUDGE_VAL_SEED, judge_motions

        extra += judge_motions(args.more, progress=True)
        if args.val_every:
            val_extra = judge_motions(200, seed=JUDGE_VAL_SEED, progress=True)
    print(f"Training the instruction checker ({args.role}) on the {' + '.join(splits)} split(s)"
          + (f" + {len(extra)} database motions ({', '.join(args.videos)})" if args.videos else "")
          + (f" + {args.more} labelled program motions (half with an OOD kind)" if args.more else ""))
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise ValueError("--device cuda: torch sees no CUDA GPU here (use --device cpu)")
    cfg = CheckerTrainConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, threads=args.threads,
                             hidden=args.hidden, layers=args.layers, dropout=args.dropout,
                             weight_decay=args.weight_decay, mirror=args.mirror, clean=args.clean,
                             val_every=args.val_every, device=args.device, seed=args.seed,
                             time_budget_s=60 * args.minutes)
    work = Path(args.workdir) if args.workdir else data_home() / "runs" / args.role
    model = train_checker(corpus, splits, cfg, work, extra=extra, val_extra=val_extra)
    print(f"Trained checker saved in {work / 'model'}")
    if args.curves:
        from backend.curves import plot_checker_curves

        print(f"Learning curves: {plot_checker_curves(work / 'train_log.jsonl', Path(args.curves), args.role)}")
    if args.ship:
        ship(args.role, model, dtype=_dtype(args.ship_dtype))
    return 0


def cmd_train_pose_reader(args) -> int:
    from backend.checkpoints import data_home
    from backend.cli.common import set_threads
    from backend.curves import plot_reader_curves
    from backend.generation.pose_reader import PoseReaderConfig
    from backend.generation.train_pose_reader import ReaderTrainConfig, reader_pairs, train_pose_reader
    from backend.generation.vqvae import load_llm_tokenizer
    from backend.retrieval.service import VideoRetriever

    bad = [f for f in args.stretch if not 0.25 <= f <= 4.0]
    if bad or args.steps < 1 or not 0.0 <= args.dropout < 1.0 or args.noise < 0:
        raise SystemExit("error: --stretch factors must lie in [0.25, 4], --steps >= 1, --dropout in "
                         f"[0, 1) and --noise >= 0 (got stretch {args.stretch}, steps {args.steps}, "
                         f"dropout {args.dropout}, noise {args.noise})")
    from backend.retrieval.videos.database import VideoDatabase, database_dir

    folders = [Path(n) if Path(n).is_dir() else database_dir(n) for n in args.videos]
    missing = [(n, f) for n, f in zip(args.videos, folders) if not f.is_dir()]
    if missing:
        raise SystemExit(f"error: no video database {missing[0][0]!r} (looked in {missing[0][1]}); make "
                         "one with `python -m backend videos build --seed S --db NAME`")
    set_threads(args.threads)
    work = Path(args.workdir) if args.workdir else data_home() / "runs" / "pose-reader"
    vqvae, normalizer = load_llm_tokenizer()
    retriever = VideoRetriever.open("embedded")
    extra = [VideoDatabase.load(f) for f in folders]
    pairs = reader_pairs(retriever, vqvae.eval(), normalizer, work, stretch=tuple(args.stretch),
                         videos=tuple(extra))
    print(f"{len(pairs)} pairs from {1 + len(extra)} video database(s)")
    model = train_pose_reader(pairs, work, PoseReaderConfig(width=args.width, layers=args.layers,
                                                            dropout=args.dropout),
                              ReaderTrainConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                                                val_every=args.val_every, patience=args.patience,
                                                seed=args.seed, select=args.select, noise=args.noise),
                              resume=not args.no_resume)
    if args.curves:
        print(f"curves: {plot_reader_curves(work / 'train_log.jsonl', args.curves)}")
    print(f"pose reader saved in {work / 'model'}")
    if args.ship:
        ship("pose-reader", model)
    return 0


def cmd_train_restater(args) -> int:
    import torch

    from backend.checkpoints import data_home
    from backend.data.dataset import open_corpus
    from backend.generation.restate import RestaterConfig, train_restater

    torch.set_num_threads(args.threads)
    if not 0 < args.gate <= 1 or not 0 < args.single_gate <= 1:
        raise ValueError("--gate and --single-gate are probabilities in (0, 1]")
    if args.c <= 0:
        raise ValueError(f"--c must be positive, got {args.c}")
    corpus = open_corpus(args.data)
    cfg = RestaterConfig(layers=tuple(args.layers), c=args.c, gate=args.gate, single_gate=args.single_gate,
                         sure_of=args.sure_of, led_above=args.led_above)
    model = train_restater(corpus, cfg)
    work = Path(args.workdir) if args.workdir else data_home() / "runs" / "restater"
    model.save_pretrained(work)
    print(f"{model.config.train_parts} training parts, {len(model.config.vocabulary)} words; "
          f"training accuracy {json.dumps(model.config.train_accuracy)}")
    print(f"Restater saved in {work}")
    if args.ship:
        ship("restater", model)
    return 0


def cmd_train_part_neighbours(args) -> int:
    import torch

    from backend.checkpoints import data_home
    from backend.data.dataset import open_corpus
    from backend.generation.neighbours import PartNeighboursConfig, build_part_neighbours

    torch.set_num_threads(args.threads)
    model = build_part_neighbours(open_corpus(args.data), PartNeighboursConfig(k=args.k, need=args.need))
    work = Path(args.workdir) if args.workdir else data_home() / "runs" / "part-neighbours"
    model.save_pretrained(work)
    print(f"{model.config.parts} distinct training caption parts, {len(model.config.kinds)} kinds")
    print(f"Part neighbours saved in {work}")
    if args.ship:
        ship("part-neighbours", model)
    return 0


def cmd_train_kind_reader(args) -> int:
    import torch

    from backend.checkpoints import data_home
    from backend.generation.kind_reader import KindReaderConfig, train_kind_reader

    torch.set_num_threads(args.threads)
    if args.c <= 0:
        raise ValueError(f"--c must be positive, got {args.c}")
    model = train_kind_reader(training_db(args).records, KindReaderConfig(layers=tuple(args.layers), c=args.c))
    work = Path(args.workdir) if args.workdir else data_home() / "runs" / "kind-reader"
    model.save_pretrained(work)
    print(f"{model.config.train_parts} training caption parts, {len(model.kinds)} kinds; "
          f"training accuracy {model.config.train_accuracy:.4f}")
    print(f"Kind reader saved in {work} (measure it: `python -m backend eval retrieval --kind-reader {work}`)")
    if args.ship:
        ship("kind-reader", model)
    return 0


def cmd_train_retriever(args) -> int:
    import torch

    from backend.checkpoints import data_home
    from backend.retrieval.model import RetrieverConfig
    from backend.retrieval.train import train_channels

    torch.set_num_threads(args.threads)
    work = Path(args.workdir) if args.workdir else data_home() / "runs" / "retriever"
    work.mkdir(parents=True, exist_ok=True)
    model = train_channels(training_db(args), steps=args.steps, batch=args.batch_size, lr=args.lr,
                           seed=args.seed, log=work / "log.jsonl", mirror=args.mirror,
                           cfg=RetrieverConfig(text_cues=args.text_cues),
                           soft_positives=args.soft_positives)
    model.save_pretrained(work / "stage1")
    print(f"Stage-1 retriever saved in {work / 'stage1'} (train the router next: "
          "`python -m backend train router`)")
    return 0


def cmd_train_router(args) -> int:
    import torch

    from backend.retrieval.evaluate import evaluate_retrieval, format_retrieval
    from backend.retrieval.model import GeminiMVR
    from backend.checkpoints import data_home
    from backend.retrieval.train import train_router, training_caption_memory

    torch.set_num_threads(args.threads)
    work = Path(args.workdir) if args.workdir else data_home() / "runs" / "retriever"
    if not (work / "stage1" / "model.safetensors").is_file():
        raise FileNotFoundError(f"no stage-1 retriever in {work / 'stage1'}; run "
                                "`python -m backend train retriever` first")
    if args.caption_memory < 0:
        raise ValueError(f"--caption-memory must be 0 (off) or a positive number of neighbours, got {args.caption_memory}")
    db = training_db(args)
    model = GeminiMVR.from_pretrained(work / "stage1")
    if args.caption_memory:
        model.attach_caption_memory(training_caption_memory(db), k=args.caption_memory)
        print(f"caption memory: {model.config.memory_size} training predicates, "
              f"{model.config.memory_k} neighbours per query")
    model = train_router(model, db, steps=args.steps, batch=args.batch_size,
                         lr=args.lr, seed=args.seed, log=work / "log.jsonl")
    model.save_pretrained(work / "model")
    print(format_retrieval(evaluate_retrieval(model, db)))
    from backend.curves import plot_retriever_curves

    return _retriever_trained(args, model, work, plot_retriever_curves)


def cmd_train_appearance(args) -> int:
    import torch

    from backend.checkpoints import checkpoints_dir, data_home
    from backend.retrieval.evaluate import evaluate_retrieval, format_retrieval
    from backend.retrieval.model import GeminiMVR
    from backend.retrieval.train import train_appearance

    init = Path(args.init) if args.init else checkpoints_dir() / "retriever"
    if not (init / "model.safetensors").is_file():
        raise FileNotFoundError(f"no trained retriever at {init}; name one with --init DIR")
    torch.set_num_threads(args.threads)
    model = GeminiMVR.from_pretrained(init)
    if model.config.appearance:
        raise ValueError(f"{init} already reads appearance words; start from a retriever without them")
    work = Path(args.workdir) if args.workdir else data_home() / "runs" / "retriever-appearance"
    work.mkdir(parents=True, exist_ok=True)
    db = training_db(args)
    model = train_appearance(model, db, steps=args.steps, batch=args.batch_size, lr=args.lr,
                             seed=args.seed, log=work / "log.jsonl")
    model.save_pretrained(work / "model")
    for scene, title in ((False, "captions as stored"), (True, "captions with their videos' appearance")):
        print(f"{title}:")
        print(format_retrieval(evaluate_retrieval(model, db, scene=scene)))
    from backend.curves import plot_appearance_curves

    return _retriever_trained(args, model, work, plot_appearance_curves)


def _retriever_trained(args, model, work: Path, plot) -> int:
    """The end of a retriever training command: where the model is, its learning curves
    (``--curves``, drawn by ``plot`` from the run's log) and, with ``--ship``, the shipped copy."""
    import torch

    print(f"Retriever saved in {work / 'model'}")
    if args.curves:
        print(f"Learning curves: {plot(work / 'log.jsonl', args.curves)}")
    if args.ship:
        ship("retriever", model, dtype=torch.float16)
    return 0


def _model_config(args, codebook: int):
    from backend.generation.motion_llm import MotionLLMConfig

    from backend.generation.motion_llm import MLP_TARGETS, POSE_DIM, _default_targets

    over = {"num_prefix": args.prefix_frames + 1} if getattr(args, "prefix_frames", None) else {}
    if getattr(args, "lora_mlp", False):
        over["lora_targets"] = _default_targets() + MLP_TARGETS
    if getattr(args, "pose_prefix", False):
        over["pose_dim"] = POSE_DIM
    if args.config == "phi3":
        if not args.base:
            raise ValueError("--config phi3 needs --base DIR (a local Phi-3-mini folder)")
        return MotionLLMConfig.phi3(args.base, codebook_size=codebook, **over)
    return MotionLLMConfig.embedded(codebook_size=codebook, **over)


def cmd_train_sft(args) -> int:
    import torch
    import random

    from backend.generation.motion_llm import MotionLLM
    from backend.checkpoints import data_home
    from backend.retrieval.service import VideoRetriever
    from backend.curves import plot_llm_curves
    from backend.generation.train_llm import (LLMTrainConfig, VideoBank, build_examples,
                                          self_video_ids, train_sft, video_only_examples)

    shares = {"--self-video": args.self_video, "--random-video": args.random_video,
              "--drop-video": args.drop_video, "--caption-drop": args.caption_drop,
              "--mirror": args.mirror, "--video-only": args.video_only}
    bad = [f"{k} {v:g}" for k, v in shares.items() if not 0 <= v <= 1]
    if bad or args.self_video + args.random_video + args.drop_video > 1:
        raise ValueError(f"shares must lie in [0, 1] and --self-video + --random-video + "
                         f"--drop-video must not exceed 1 (got {', '.join(bad) or 'a sum above 1'})")
    corpus, vqvae, retriever = load_stack(args, need_retriever=args.video != "none")
    name = "novideo" if args.video == "none" else "sft"
    work = Path(args.workdir) if args.workdir else data_home() / "runs" / f"llm-{name}"
    examples = build_examples(corpus, vqvae, retriever, args.video, work.parent, mirror=args.mirror > 0)
    if args.extra_train:
        if "train_extra" not in corpus.splits():
            raise ValueError(f"--extra-train: {corpus.root} has no train_extra split; build it with "
                             "`python -m backend data build --extra N --force`")
        extra = build_examples(corpus, vqvae, retriever, args.video, work.parent, split="train_extra",
                               mirror=args.mirror > 0)
        print(f"+ {len(extra)} examples of the train_extra split")
        examples += extra
    val = build_examples(corpus, vqvae, retriever, args.video, work.parent, split="val")
    seen, val_first = set(), []
    for e in val:                                  # one caption per validation motion
        if e.mid not in seen:
            seen.add(e.mid)
            val_first.append(e)
    random.Random(0).shuffle(val_first)
    val_first = val_first[:args.val_size]
    videos, selfs = retriever, {}
    if args.video != "none" and args.self_video > 0:
        try:
            own = VideoRetriever.open(args.self_db)
        except Exception as exc:                   # noqa: BLE001 - say what to run, then go on
            raise SystemExit(f"--self-video {args.self_video} needs the self-video database "
                             f"{args.self_db!r} ({exc}); build it with `python -m backend videos "
                             "self`, or pass --self-video 0")
        selfs = self_video_ids(own, {e.mid for e in examples})
        videos = VideoBank(retriever, own)
    print(f"{len(examples)} training examples (caption, {args.video} video, motion tokens); "
          f"{len(selfs)} motions with a video of their own (shown to {args.self_video:.0%} of "
          f"their captions); {len(val_first)} validation examples")
    if args.video != "none" and (args.random_video or args.drop_video):
        print(f"{args.random_video:.0%} of captions shown a random video, {args.drop_video:.0%} none")
    if args.mirror:
        print(f"{args.mirror:.0%} of examples shown as their mirror image (left and right swapped)")
    vonly, vval = [], []
    if args.video != "none" and args.video_only > 0:
        vonly = video_only_examples(retriever, vqvae, corpus.normalizer, work.parent, "train")
        vval = video_only_examples(retriever, vqvae, corpus.normalizer, work.parent, "test")
        random.Random(0).shuffle(vval)
        vval = vval[:args.val_video_size]
        if not vonly:
            raise SystemExit("--video-only needs database videos with known motions (the embedded "
                             "synthetic database); this database has none")
        print(f"{args.video_only:.0%} of examples are video-only pairs ({len(vonly)} database "
              f"videos of its train split, neutral caption, the motion each shows); "
              f"{len(vval)} held-out database videos validate them")
    model = MotionLLM(_model_config(args, vqvae.config.nb_code))
    if args.init_from and not (work / "state.pt").is_file():
        from backend.generation.train_llm import warm_start

        warm_start(model, Path(args.init_from))
    cfg = LLMTrainConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, threads=args.threads,
                         ckpt_every=args.ckpt_every, seed=args.seed, val_every=args.val_every,
                         patience=args.patience, self_video=args.self_video if selfs else 0.0,
                         caption_drop=args.caption_drop,
                         random_video=args.random_video if args.video != "none" else 0.0,
                         drop_video=args.drop_video if args.video != "none" else 0.0,
                         mirror=args.mirror, video_only=args.video_only if vonly else 0.0)
    model = train_sft(model, examples, videos, cfg, work, resume=not args.no_resume,
                      val_examples=val_first, self_videos=selfs,
                      random_pool=retriever.video_ids if retriever is not None else None,
                      video_only=vonly, val_video=vval)
    model.save_pretrained(work / "model")
    print(f"Model saved in {work / 'model'}")
    if args.curves:
        print(f"Learning curves: {plot_llm_curves(work / 'log.jsonl', args.curves, 'SFT')}")
    if args.ship:
        ship(f"llm-{name}", model, dtype=torch.float32)
    return 0


def cmd_train_mcdpo(args) -> int:
    import torch
    import random

    import numpy as np

    from backend.evaluation.evaluator import TextMotionEvaluator
    from backend.generation.motion_llm import MotionLLM
    from backend.checkpoints import checkpoints_dir, data_home
    from backend.data.video_motions import record_motion
    from backend.generation.train_llm import (VIDEO_MID, LLMTrainConfig, Preference, build_examples,
                                              make_preferences, train_mcdpo, video_only_examples)
    from motioncore.features import joints_to_features

    corpus, vqvae, retriever = load_stack(args)
    work = Path(args.workdir) if args.workdir else data_home() / "runs" / "llm-mcdpo"
    work.mkdir(parents=True, exist_ok=True)
    sft_dir = Path(args.sft) if args.sft else checkpoints_dir() / "llm-sft"
    prefs_file = work / "preferences.json"

    def row(p):
        return {"text": p.text, "video_id": p.video_id, "chosen": np.asarray(p.chosen).tolist(),
                "rejected": np.asarray(p.rejected).tolist(), "reward_gap": p.reward_gap,
                "random_video": p.random_video}

    def save(state):                               # {"processed": n prompts, "done": bool, "prefs": [...]}
        atomic_write_json(prefs_file, state)

    state = {"processed": 0, "done": False, "prefs": []}
    if prefs_file.is_file() and not args.no_resume:
        state = json.loads(prefs_file.read_text())
        if isinstance(state, list):                # an older, finished file
            state = {"processed": len(state), "done": True, "prefs": state}
    if not state["done"]:
        examples = build_examples(corpus, vqvae, retriever, "gemini", work.parent)
        rng = random.Random(args.seed)
        rng.shuffle(examples)
        n_video = int(round(args.video_only_share * args.prompts))
        examples = examples[:args.prompts - n_video]
        n_rand = min(int(round(args.random_share * args.prompts)), len(examples))   # a share of all prompts
        ids = retriever.db.ids
        for e in examples[:n_rand]:            # bad priors: the model must learn to ignore them
            e.video_id, e.random_video = ids[rng.randrange(len(ids))], True
        if n_video:                            # video-only prompts: a train database video, no words
            vonly = video_only_examples(retriever, vqvae, corpus.normalizer, work.parent, "train")
            random.Random(args.seed + 3).shuffle(vonly)
            examples += vonly[:n_video]
        random.Random(args.seed + 1).shuffle(examples)   # random videos spread over the chunks
        sft = MotionLLM.from_pretrained(sft_dir)
        if sft.config.tokenizer != "vqvae":
            raise SystemExit(f"{sft_dir} writes codes of {sft.config.tokenizer!r}; McDPO needs an "
                             "SFT model trained on checkpoints/vqvae")
        evaluator = TextMotionEvaluator.from_pretrained(checkpoints_dir() / "evaluator")
        shown = {e.mid: e.video_id for e in examples if e.mid.startswith(VIDEO_MID)}
        db_motions = {m: record_motion(retriever.db.record(v)) for m, v in shown.items()}
        gt = {e.mid: (joints_to_features(db_motions[e.mid][0]) if e.mid in shown else corpus.features(e.mid))
              for e in examples}
        follow = None
        if args.w_follow:
            from backend.evaluation.checker import InstructionChecker
            from backend.evaluation.follow import follow_reward, load_programs
            from backend.evaluation.pick import Picker

            checker = InstructionChecker.from_pretrained(checkpoints_dir() / "checker")
            programs = load_programs(corpus)
            programs.update({m: segs for m, (_, segs) in db_motions.items()})
            picker = Picker.from_pretrained() if shown else None
            if shown and picker is None:
                raise SystemExit("--video-only-share with --w-follow needs checkpoints/picker (video-only "
                                 "prompts are judged by the picker, never by the evaluation's checker)")

            follow = follow_reward(checker, programs, picker.checker if picker else None, VIDEO_MID)
        for key in ("w_follow", "video_only_share"):
            if state.get(key, 0.0) != getattr(args, key) and state["processed"]:
                raise SystemExit(f"{prefs_file} was sampled with --{key.replace('_', '-')} "
                                 f"{state.get(key, 0.0)}; pass the same, or --no-resume")
            state[key] = getattr(args, key)
        chunk = 128
        if state["processed"]:
            print(f"resuming candidate sampling after {state['processed']} prompts")
        for s in range(state["processed"], len(examples), chunk):
            part = examples[s:s + chunk]
            new = make_preferences(sft, part, retriever, evaluator, vqvae, corpus.normalizer, gt,
                                   kappa=args.kappa, w_l=args.w_l, w_d=args.w_d,
                                   temperature=args.temperature, seed=args.seed * 7919 + s,
                                   follow=follow, w_f=args.w_follow)
            state["prefs"] += [row(p) for p in new]
            state["processed"] = s + len(part)
            save(state)
            print(f"  {state['processed']}/{len(examples)} prompts sampled, {len(state['prefs'])} pairs")
        state["done"] = True
        save(state)
    prefs = [Preference(r["text"], r["video_id"], np.array(r["chosen"]), np.array(r["rejected"]),
                        r["reward_gap"], r["random_video"]) for r in state["prefs"]]
    print(f"{len(prefs)} preference pairs ({sum(p.random_video for p in prefs)} with random videos)")
    if args.min_gap:
        kept = [p for p in prefs if p.reward_gap >= args.min_gap]
        print(f"keeping the {len(kept)} pairs whose reward gap is at least {args.min_gap:g}")
        if not kept:
            raise ValueError(f"no preference pair has a reward gap of {args.min_gap:g} or more")
        prefs = kept
    val_prefs = []
    if args.val_pairs:
        if args.val_pairs >= len(prefs):
            raise ValueError(f"--val-pairs {args.val_pairs} leaves no pair to train on ({len(prefs)})")
        order = list(range(len(prefs)))
        random.Random(args.seed + 2).shuffle(order)
        val_prefs = [prefs[i] for i in order[:args.val_pairs]]
        prefs = [prefs[i] for i in order[args.val_pairs:]]
        print(f"held out {len(val_prefs)} pairs (their prompts are never trained on) for validation")
    policy = MotionLLM.from_pretrained(sft_dir)
    reference = MotionLLM.from_pretrained(sft_dir)
    cfg = LLMTrainConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, threads=args.threads,
                         warmup=min(20, args.steps // 5), ckpt_every=args.ckpt_every, log_every=1,
                         val_every=args.val_every if val_prefs else 0, patience=args.patience)
    model = train_mcdpo(policy, reference, prefs, retriever, cfg, work, beta=args.beta,
                        resume=not args.no_resume, val_prefs=val_prefs)
    model.save_pretrained(work / "model")
    print(f"Model saved in {work / 'model'}")
    if args.curves:
        from backend.curves import plot_llm_curves

        print(f"Learning curves: {plot_llm_curves(work / 'log.jsonl', args.curves, 'McDPO')}")
    if args.ship:
        ship("llm-mcdpo", model, dtype=torch.float32)
    return 0


DATA_HELP = "HumanML3D-layout folder (default: the embedded corpus)"


def _schedule(p, steps: int, lr: float, batch: int | None = None, seed: bool = False) -> None:
    p.add_argument("--steps", type=int, default=steps)
    if batch:
        p.add_argument("--batch-size", type=int, default=batch)
    p.add_argument("--lr", type=float, default=lr)
    if seed:
        p.add_argument("--seed", type=int, default=0)


def _run(p, workdir: str, ship: str | None, resume: bool = True, ship_dtype: str | None = None) -> None:
    """The options every training run shares: threads, run folder, resuming, shipping."""
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--workdir", help=f"run folder with logs and resumable state (default: {workdir})")
    if resume:
        p.add_argument("--no-resume", action="store_true", help="start over even if a run exists")
    if ship:
        p.add_argument("--ship", action="store_true",
                       help=f"copy the result to checkpoints/{ship} and record it in the MANIFEST")
    if ship_dtype:
        p.add_argument("--ship-dtype", choices=["float16", "float32"], default=ship_dtype)


def add(sub) -> None:
    """Add these commands to the top-level parser."""
    tsub = command_group(sub, "train", "train a component", metavar="COMPONENT")
    v = tsub.add_parser(
        "vqvae", help="train the motion VQ-VAE (tokenizer)",
        description="Train the T2M-GPT-style motion VQ-VAE on the train split plus, for the "
                    "embedded corpus, the video-only motions of the video database (OOD kinds "
                    "included; the tokenizer never sees text). Resumable: rerunning continues "
                    "from the last checkpoint in the work folder.")
    v.add_argument("--data", help=DATA_HELP)
    v.add_argument("--config", choices=["embedded", "paper"], default="embedded",
                   help="model size: embedded (CPU, ~5 MB) or paper (T2M-GPT 512x512)")
    _schedule(v, 6000, 2e-4, 64)
    v.add_argument("--decay-at", type=int, nargs="*", metavar="STEP",
                   help="steps where the learning rate is multiplied by 0.05 (default: 2/3 of --steps)")
    v.add_argument("--schedule", choices=["step", "cosine"], default="step",
                   help="learning-rate decay after warmup: step (T2M-GPT, see --decay-at) or "
                        "cosine down to 0.05 x --lr")
    v.add_argument("--root-weight", type=float, default=0.0,
                   help="extra loss weight on the 4 root terms (turn, velocity, height)")
    v.add_argument("--joint-weight", type=float, default=0.0,
                   help="loss weight on the root-aligned joint error in metres (heading "
                        "integrated over the window: what root-aligned MPJPE measures)")
    v.add_argument("--pos-weight", type=float, default=0.5,
                   help="extra loss weight on the root-relative joint positions")
    v.add_argument("--window", type=int, default=64, help="frames per training crop")
    v.add_argument("--video-motions", action=argparse.BooleanOptionalAction, default=None,
                   help="also train on the video database's video-only motions (default: on "
                        "for the embedded corpus, off with --data)")
    v.add_argument("--init", metavar="DIR",
                   help="start from a trained VQ-VAE folder (its size, weights and codebook)")
    v.add_argument("--freeze-codebook", action="store_true",
                   help="with --init: keep its codebook as it is, so the codes keep their meaning "
                        "to motion LLMs trained on it (encoder and decoder still learn)")
    v.add_argument("--ood-boost", type=float, default=1.0,
                   help="draw windows of the video-only motions that contain an OOD kind this "
                        "many times as often (they are 250 of ~3,700 motions)")
    v.add_argument("--extra-ood", type=int, default=0, metavar="N",
                   help="also train on N caption-free motions that contain an OOD kind, drawn "
                        "by the corpus's program generator with its own seed (no text, no "
                        "video: only the tokenizer sees them)")
    v.add_argument("--val-ood", type=int, default=0, metavar="N",
                   help="also log the reconstruction of N more such motions (another seed, "
                        "never trained on) as OOD validation, beside the val split's rows")
    v.add_argument("--minutes", type=float, default=0.0,
                   help="time budget: after timing 200 steps, train only as many of --steps as "
                        "fit in this many minutes (the schedule decays over those; the steps "
                        "run are recorded in train_config.json)")
    v.add_argument("--device", default="cpu",
                   help="torch device: cpu, or cuda on a GPU machine (never needed)")
    v.add_argument("--curves", metavar="PNG", help="write the learning curves to this PNG")
    _run(v, "data/runs/vqvae-CONFIG", "vqvae", ship_dtype="float16")
    v.set_defaults(func=cmd_train_vqvae)
    e = tsub.add_parser(
        "evaluator", help="train the text-motion evaluator (metrics' embedding space)",
        description="Train the evaluator's text head (on frozen MiniLM) and motion encoder "
                    "contrastively on the train split. Resumable.")
    e.add_argument("--data", help=DATA_HELP)
    _schedule(e, 2500, 1e-3, 64)
    _run(e, "data/runs/evaluator", "evaluator", ship_dtype="float16")
    e.set_defaults(func=cmd_train_evaluator)
    c = tsub.add_parser(
        "checker", help="train the instruction checker (a judge of what prompts ask)",
        description="Train the InstructionChecker on real motions and their programs: the train "
                    "split plus the ood_judge half of the OOD motions (never the generator's "
                    "data). Verify it with `eval follow` before trusting it.")
    c.add_argument("--data", help="corpus folder with programs.jsonl (default: the embedded corpus)")
    _schedule(c, 2500, 1e-3, 32)
    c.add_argument("--hidden", type=int, default=128, help="width of the conv + GRU (default 128)")
    c.add_argument("--layers", type=int, default=2, help="GRU layers (default 2)")
    c.add_argument("--dropout", type=float, default=0.1)
    c.add_argument("--weight-decay", type=float, default=1e-4)
    c.add_argument("--mirror", type=float, default=0.0, metavar="P",
                   help="share of training samples shown as their mirror image, sides and turns "
                        "swapped (default 0)")
    c.add_argument("--more", type=int, default=0, metavar="N",
                   help="judge only: also learn N labelled motions drawn by the corpus's program "
                        "generator with their own seed (half in-distribution, half with an OOD "
                        "kind; none is a corpus, database or tokenizer motion); with --val-every, "
                        "200 more with another seed join the val score (default 0)")
    c.add_argument("--clean", type=float, default=0.0, metavar="P",
                   help="share of training samples shown as the clean-up step makes them (rigid, "
                        "grounded, feet planted, as users and every generated row get motions), so "
                        "the judge reads them alike (default 0)")
    c.add_argument("--val-every", type=int, default=0, metavar="K",
                   help="score the real val motions every K steps and keep the best model (0: off)")
    c.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    c.add_argument("--minutes", type=float, default=0.0,
                   help="stop training after this many minutes (0: run every step)")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--curves", metavar="PNG", help="also draw the learning curves into PNG")
    c.add_argument("--role", choices=["checker", "picker"], default="checker",
                   help="checker (default): the judge of `eval follow`, trained on the judge splits "
                        "and shipped to checkpoints/checker; picker: the one that chooses among "
                        "sampled motions at inference (best-of-N), trained on the train split "
                        "only (and --videos), shipped to checkpoints/picker")
    c.add_argument("--videos", metavar="NAME", nargs="+", default=None,
                   help="picker only: also learn the motions of these video databases' train videos "
                        "(the generator's video-only pairs; e.g. embedded: OOD kinds included; "
                        "videos-777: more of them, `videos build --seed 777 ...`)")
    _run(c, "data/runs/ROLE", "checker or checkpoints/picker (--role)", resume=False, ship_dtype="float16")
    c.set_defaults(func=cmd_train_checker)

    def llm_options(p, steps, lr, ship):
        p.add_argument("--data", help=DATA_HELP)
        p.add_argument("--config", choices=["embedded", "phi3"], default="embedded",
                       help="embedded = Gemma 3 270M from its package; phi3 = --base DIR with the "
                            "paper's LoRA (r=128, alpha=256)")
        p.add_argument("--base", help="local Hugging Face causal-LM folder (for --config phi3)")
        _schedule(p, steps, lr, 8, seed=True)
        p.add_argument("--ckpt-every", type=int, default=50)
        p.add_argument("--curves", help="write the learning curves to this PNG (e.g. docs/sft_curves.png)")
        _run(p, f"data/runs/{ship}", ship)
    s = tsub.add_parser(
        "sft", help="motion LLM stage 1: supervised fine-tuning",
        description="Each training caption + its rank-1 Gemini-MVR video (cached) -> ground-truth "
                    "VQ tokens. --video none trains the no-video baseline (MotionGPT-style row). "
                    "Resumable; runs through accelerate (`accelerate launch` scales it).")
    llm_options(s, 1000, 3e-4, "llm-sft")
    s.add_argument("--video", choices=["gemini", "none"], default="gemini")
    s.add_argument("--prefix-frames", type=int, default=16,
                   help="video prefix: one embedding per sampled frame of the retriever's per-frame "
                        "features (16 = unpooled), plus the object slot")
    s.add_argument("--self-video", type=float, default=0.5,
                   help="share of captions shown the video of their own motion (needs `videos self`)")
    s.add_argument("--caption-drop", type=float, default=0.0,
                   help="share of the self-video pairs whose caption is replaced by a neutral one, "
                        "so only the video's poses tell the motion")
    s.add_argument("--random-video", type=float, default=0.0,
                   help="share of captions shown a random database video instead of their rank-1 "
                        "one: rank-1 videos of training captions agree with them more often than "
                        "those of new prompts, so the model learns to over-trust them")
    s.add_argument("--drop-video", type=float, default=0.0,
                   help="share of captions shown no video at all (the words alone)")
    s.add_argument("--mirror", type=float, default=0.0,
                   help="share of examples shown as their mirror image: the mirrored motion's "
                        "tokens, the caption with left and right swapped, the mirrored video "
                        "(so every side-naming caption has a counterpart differing only in the side)")
    s.add_argument("--video-only", type=float, default=0.0,
                   help="share of examples replaced by a video-only pair: a database video of its "
                        "train split with a neutral caption -> the motion it shows (the synthetic "
                        "database knows them). Kinds no caption names (OOD) reach the model this "
                        "way only, never with their words")
    s.add_argument("--extra-train", action="store_true",
                   help="also train on the corpus's train_extra split (more in-distribution motions "
                        "with train phrasings: `python -m backend data build --extra N --force`)")
    s.add_argument("--val-video-size", type=int, default=120,
                   help="held-out database videos (test split) validating the video-only pairs")
    s.add_argument("--self-db", default="self-train", help="database of the self videos")
    s.add_argument("--lora-mlp", action="store_true",
                   help="LoRA on the MLP projections too (more capacity than attention only)")
    s.add_argument("--pose-prefix", action="store_true",
                   help="a trainable pose encoder reads the video's keypoints (each sampled frame's "
                        "joints and their motion) into the prefix, beside the retriever's features")
    s.add_argument("--init-from", metavar="DIR",
                   help="warm start from a trained model folder (e.g. checkpoints/llm-sft); with "
                        "--lora-mlp its attention LoRA is kept and the MLP LoRA starts at zero")
    s.add_argument("--val-every", type=int, default=100, help="steps between validation passes")
    s.add_argument("--val-size", type=int, default=160, help="validation examples (val split)")
    s.add_argument("--patience", type=int, default=3,
                   help="stop after this many validations without a better loss (0 = never)")
    s.set_defaults(func=cmd_train_sft)
    m = tsub.add_parser(
        "mcdpo", help="motion LLM stage 2: McDPO on the SFT model",
        description="Sample KAPPA candidates per prompt from the SFT model, score them with the "
                    "evaluator (reward = -(w_l l/sum l + w_d d/sum d)), keep best/worst as a "
                    "preference pair and train with DPO against the frozen SFT model. A share of "
                    "prompts get random videos.")
    llm_options(m, 200, 5e-5, "llm-mcdpo")
    m.add_argument("--sft", help="SFT model folder (default: checkpoints/llm-sft)")
    m.add_argument("--prompts", type=int, default=800)
    m.add_argument("--kappa", type=int, default=4)
    m.add_argument("--random-share", type=float, default=0.3,
                   help="share of all prompts whose caption is shown a random database video "
                        "instead of its rank-1 one (never a video-only prompt)")
    m.add_argument("--w-l", type=float, default=0.9)
    m.add_argument("--w-d", type=float, default=0.1)
    m.add_argument("--w-follow", type=float, default=0.0,
                   help="add W x the share of what the prompt asks that the instruction checker "
                        "sees in a candidate to its reward (0 = the paper's reward; needs the "
                        "corpus's programs.jsonl and checkpoints/checker)")
    m.add_argument("--video-only-share", type=float, default=0.0,
                   help="share of prompts that are video-only pairs (a train database video, the "
                        "neutral caption, the motion it shows; as SFT's --video-only): McDPO then "
                        "also prefers candidates that write what the video shows (OOD kinds "
                        "included; with --w-follow, judged by checkpoints/picker, not the checker)")
    m.add_argument("--beta", type=float, default=0.1)
    m.add_argument("--val-pairs", type=int, default=0,
                   help="hold out this many preference pairs (their prompts never trained on): "
                        "held-out DPO loss / margin / accuracy are logged, the best step's weights "
                        "are kept, --patience stops early")
    m.add_argument("--val-every", type=int, default=10, help="steps between held-out checks")
    m.add_argument("--min-gap", type=float, default=0.0,
                   help="train only on pairs whose chosen and rejected rewards differ by at least "
                        "this much (clearer preferences; the rewards are shares of the candidates' sum)")
    m.add_argument("--patience", type=int, default=4,
                   help="stop after this many held-out checks without a lower loss (0: never)")
    m.add_argument("--temperature", type=float, default=1.0)
    m.set_defaults(func=cmd_train_mcdpo)

    r = tsub.add_parser(
        "restater", help="read prompts in words the motion LLM never saw (a few minutes)",
        description="Fit linear heads on the frozen base LM's middle-layer states of the training "
                    "captions' parts (kind, repetitions, speed, side, turn, one motion or more), so "
                    "a prompt part in unseen words is handed to the motion LLM in training "
                    "phrasing (backend/generation/restate.py). Training captions only.")
    r.add_argument("--data", help="corpus folder with programs.jsonl (default: the embedded corpus)")
    r.add_argument("--layers", type=int, nargs="+", default=[6, 8],
                   help="hidden states read, averaged over the part's tokens (default 6 8)")
    r.add_argument("--c", type=float, default=0.1, help="inverse L2 strength of the heads (default 0.1)")
    r.add_argument("--gate", type=float, default=0.9,
                   help="kind probability needed to restate a part (default 0.9)")
    r.add_argument("--sure-of", choices=["all", "kind"], default="kind",
                   help="kind: the kind's probability must reach --gate; all: every attribute the "
                        "restated part states must (fewer parts restated; test following 63.5 vs "
                        "66.2 %%, README) (default kind)")
    r.add_argument("--led-above", type=float, default=0.5,
                   help="parts the retrieved video leads at a weight above this keep their words "
                        "(kinds known only from videos; default 0.5; test following 66.6 vs 66.2 %% "
                        "with 0, OOD 35.2 vs 34.5 %%)")
    r.add_argument("--single-gate", type=float, default=0.5,
                   help="probability that a part names one motion, needed to restate it (default 0.5)")
    _run(r, "data/runs/restater", "restater", resume=False)
    r.set_defaults(func=cmd_train_restater)

    kr = tsub.add_parser(
        "kind-reader", help="read the motion kind a query names, for retrieval (about a minute)",
        description="Fit a linear head on the frozen base LM's middle-layer states of the video "
                    "database's training captions (each part of a chained caption labelled with "
                    "its video's kind), so retrieval can re-rank videos by the kind the words ask "
                    "for (backend/generation/kind_reader.py). Training captions only.")
    kr.add_argument("--db-dir", help="captioned database folder (default: the embedded one)")
    kr.add_argument("--layers", type=int, nargs="+", default=[6, 8],
                    help="hidden states read, averaged over the part's tokens (default 6 8)")
    kr.add_argument("--c", type=float, default=0.1, help="inverse L2 strength of the head (default 0.1)")
    _run(kr, "data/runs/kind-reader", "kind-reader", resume=False)
    kr.set_defaults(func=cmd_train_kind_reader)

    pn = tsub.add_parser(
        "part-neighbours", help="index the training caption parts by MiniLM, for reading kinds (about a minute)",
        description="Embed every distinct part of the training captions with MiniLM and keep its "
                    "kind, so a prompt part in unseen words can be read by the kind its nearest "
                    "training parts agree on (backend/generation/neighbours.py). Training captions only.")
    pn.add_argument("--data", help=DATA_HELP)
    pn.add_argument("--k", type=int, default=20, help="neighbours that vote (default 20)")
    pn.add_argument("--need", type=int, default=16, help="votes a kind needs (default 16)")
    _run(pn, "data/runs/part-neighbours", "part-neighbours", resume=False)
    pn.set_defaults(func=cmd_train_part_neighbours)

    pr = tsub.add_parser(
        "pose-reader", help="read a video's keypoints into motion tokens (about 17 minutes)",
        description="Train the PoseReader (backend/generation/pose_reader.py): the 16 sampled "
                    "keypoint frames of a database video, each at its time, -> the VQ codes of the "
                    "motion it shows. Pairs: the synthetic database's train videos and their mirror "
                    "images (a tenth held out for early stopping; the test videos are never read). "
                    "Parts of a prompt the retrieved video leads are written with it. Resumable.")
    _schedule(pr, 3000, 5e-4, 32, seed=True)
    pr.add_argument("--width", type=int, default=192, help="model width (default 192)")
    pr.add_argument("--layers", type=int, default=3, help="encoder and decoder layers (default 3)")
    pr.add_argument("--dropout", type=float, default=0.1, help="dropout in every layer (default 0.1)")
    pr.add_argument("--noise", type=float, default=0.01,
                    help="Gaussian jitter on the keypoints (their coordinates span about [-1, 1]; default 0.01)")
    pr.add_argument("--val-every", type=int, default=100)
    pr.add_argument("--patience", type=int, default=6,
                    help="stop after this many validations without a better score (default 6)")
    pr.add_argument("--stretch", type=float, nargs="*", default=[],
                    help="also train on each video as if it lasted this many times as long (its motion "
                         "resampled in time: slower or faster performances of the same poses), e.g. "
                         "0.8 1.25 (default: none)")
    pr.add_argument("--videos", nargs="*", default=[], metavar="NAME",
                    help="more video databases (names under data/videodb/ or folders) whose train "
                         "videos add pairs, e.g. other video-only motions of the same kinds made by "
                         "`python -m backend videos build --seed 777 --in-dist 300 --ood 1200` "
                         "(database videos-777; default: the embedded database only)")
    pr.add_argument("--select", choices=["acc", "loss"], default="acc",
                    help="keep the model with the highest held-out code accuracy (default; the drafts "
                         "are the most likely codes) or the lowest held-out cross-entropy")
    pr.add_argument("--curves", help="write the learning curves to this PNG")
    _run(pr, "data/runs/pose-reader", "pose-reader")
    pr.set_defaults(func=cmd_train_pose_reader)

    t = tsub.add_parser("retriever", help="Gemini-MVR stage 1: both channels",
                        description="Train the action channel (keypoint encoder + predicate text "
                                    "head) and the object channel's projections contrastively on "
                                    "captioned videos.")
    _schedule(t, 1500, 5e-4, 64, seed=True)
    t.add_argument("--db-dir", help="captioned database folder (default: the embedded one)")
    t.add_argument("--mirror", action="store_true",
                   help="also train on the mirror image of every video whose captions name a side, "
                        "with left/right (clockwise/counterclockwise) swapped in its captions")
    t.add_argument("--soft-positives", type=float, default=0.0, metavar="S",
                   help="give share S of each caption's contrastive target to the batch's other "
                        "videos showing the same motion (kinds, named sides, direction) instead of "
                        "pushing them away (default 0: exact video only)")
    t.add_argument("--text-cues", action="store_true",
                   help="the predicate head also reads word cues (left/right, backward/turning/"
                        "forward, slow/fast, twice/three+ times) beside MiniLM's embedding, which "
                        "hardly separates them; best with --mirror")
    _run(t, "data/runs/retriever", None, resume=False)
    t.set_defaults(func=cmd_train_retriever)
    t = tsub.add_parser("router", help="Gemini-MVR stage 2: the router (channels frozen)",
                        description="Freeze both channels and train only the router on the fused "
                                    "score; prints the retrieval table.")
    _schedule(t, 600, 1e-2, 128, seed=True)
    t.add_argument("--db-dir", help="captioned database folder (default: the embedded one)")
    t.add_argument("--curves", metavar="PNG",
                   help="also draw both stages' learning curves from the run's log.jsonl into PNG")
    t.add_argument("--caption-memory", type=int, default=5, metavar="K",
                   help="keep the training captions' predicate embeddings and mix a query's text "
                        "embedding with those of its K nearest ones in MiniLM space, so verbs the "
                        "training captions never used still find their videos (default 5; 0: off)")

    _run(t, "data/runs/retriever", "retriever", resume=False)
    t.set_defaults(func=cmd_train_router)
    t = tsub.add_parser("appearance", help="teach a finished retriever the database's appearance words",
                        description="Add appearance projections to a finished retriever's object channel "
                                    "and train only them on the database's captions followed by what "
                                    "each video looks like (clothes' colour, wall, floor: "
                                    "backend/retrieval/scene.py); both channels and the router stay "
                                    "as they were, so queries naming no colour or setting rank exactly "
                                    "as before. Prints the retrieval table for plain and described captions.")
    _schedule(t, 1500, 5e-4, 64, seed=True)
    t.add_argument("--init", metavar="DIR", help="the retriever to extend (default: checkpoints/retriever)")
    t.add_argument("--db-dir", help="captioned database folder (default: the embedded one)")
    t.add_argument("--curves", metavar="PNG", help="write the learning curves to this PNG")
    _run(t, "data/runs/retriever-appearance", "retriever", resume=False)
    t.set_defaults(func=cmd_train_appearance)
