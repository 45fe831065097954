"""``python -m backend <command>``: the one command-line entry of VimoRAG's back end.

Each command group lives in a small function that adds its own sub-parser; the work itself
is imported lazily so ``--help`` is instant. Every ``eval``/``bench`` command accepts
``--json`` and then prints one JSON object (the figures) as its last line.
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path


def _threads(n: int) -> None:
    import torch

    torch.set_num_threads(max(1, n))


# ------------------------------------------------------------------------------------ data
def cmd_data_build(args) -> int:
    from backend.data.corpus import CorpusConfig, build_corpus, corpus_is_built
    from backend.paths import embedded_corpus_dir

    out = Path(args.out) if args.out else embedded_corpus_dir()
    if corpus_is_built(out) and not args.force:
        print(f"The corpus is already built at {out} (use --force to rebuild).")
        if args.ship:
            _ship_normalizer(out)
        return 0
    cfg = CorpusConfig(n_in_dist=args.n_in_dist, n_ood=args.n_ood, seed=args.seed)
    build_corpus(out, cfg)
    meta = json.loads((out / "BUILD.json").read_text())
    print(f"Wrote {sum(meta['counts'].values())} motions to {out}: " +
          ", ".join(f"{k} {v}" for k, v in meta["counts"].items()))
    if args.ship:
        _ship_normalizer(out)
    return 0


def _ship_normalizer(corpus_dir: Path) -> None:
    """Ship the corpus's Mean/Std (what the VQ-VAE's inputs are normalised with), so generation
    never needs the corpus."""
    from backend import manifest
    from backend.paths import checkpoints_dir

    target = checkpoints_dir() / "normalizer"
    target.mkdir(parents=True, exist_ok=True)
    for f in ("Mean.npy", "Std.npy"):
        (target / f).write_bytes((corpus_dir / f).read_bytes())
    manifest.record(target, "python -m backend " + shlex.join(sys.argv[1:]))
    print(f"Shipped {target} (Mean/Std of {corpus_dir})")


def add_data(sub) -> None:
    p = sub.add_parser("data", help="build or inspect motion datasets")
    dsub = p.add_subparsers(dest="data_cmd", required=True, metavar="COMMAND")
    b = dsub.add_parser(
        "build", help="build the embedded mocap corpus (HumanML3D layout)",
        description="Retarget pybullet's DeepMimic mocap clips onto the SMPL skeleton, augment "
                    "them into captioned motions and write a HumanML3D-layout folder with "
                    "train/val/test/ood splits. Deterministic for a given seed.")
    b.add_argument("--out", help="output folder (default: $VIMORAG_DATA/embedded, i.e. data/embedded)")
    b.add_argument("--seed", type=int, default=2025)
    b.add_argument("--n-in-dist", type=int, default=3300, help="motions for train/val/test")
    b.add_argument("--n-ood", type=int, default=500, help="motions with out-of-distribution kinds")
    b.add_argument("--force", action="store_true", help="rebuild even if the folder is complete")
    b.add_argument("--ship", action="store_true",
                   help="also copy Mean/Std to checkpoints/normalizer (+ MANIFEST)")
    b.set_defaults(func=cmd_data_build)


# ----------------------------------------------------------------------------------- train
def cmd_train_vqvae(args) -> int:
    from backend.data.dataset import open_corpus
    from backend.models.vqvae import VQVAEConfig
    from backend.paths import data_home
    from backend.train.vqvae import VQTrainConfig, train_vqvae

    corpus = open_corpus(args.data)
    norm = corpus.normalizer
    motions = [norm.normalize(f) for f in corpus.load_features("train", progress=True).values()]
    if args.video_motions if args.video_motions is not None else args.data is None:
        from backend.video.synth import video_motion_features

        extra = video_motion_features(progress=True)
        print(f"+ {len(extra)} video-only motions of the video database (no captions; "
              f"OOD kinds included)")
        motions += [norm.normalize(f) for f in extra]
    val = [norm.normalize(f) for f in corpus.load_features("val").values()] \
        if "val" in corpus.splits() else None
    model_cfg = VQVAEConfig.paper() if args.config == "paper" else VQVAEConfig.embedded()
    train_cfg = VQTrainConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                              warmup_steps=min(1000, args.steps // 10),
                              lr_milestones=tuple(args.decay_at) if args.decay_at else None,
                              schedule=args.schedule, root_weight=args.root_weight,
                              joint_weight=args.joint_weight,
                              pos_weight=args.pos_weight, window=args.window,
                              ckpt_every=max(1, min(500, args.steps // 4)), threads=args.threads)
    work = Path(args.workdir) if args.workdir else data_home() / "runs" / f"vqvae-{args.config}"
    init = None
    if args.init:
        from backend.models.vqvae import MotionVQVAE

        init = MotionVQVAE.from_pretrained(args.init)
        model_cfg = init.config
        print(f"Starting from the weights and codebook of {args.init}")
    model = train_vqvae(motions, model_cfg, train_cfg, work, resume=not args.no_resume,
                        val_motions=val, init=init, stats=(norm.mean, norm.std))
    print(f"Trained model saved in {work / 'model'}")
    if args.curves:
        from backend.train.curves import plot_vqvae_curves

        print(f"Learning curves: {plot_vqvae_curves(work / 'train_log.jsonl', Path(args.curves))}")
    if args.ship:
        _ship(model, "vqvae", args.ship_dtype)
    return 0


def _ship(model, name: str, dtype_name: str) -> None:
    """Save a trained component to checkpoints/NAME and record it (sha256 + this command)."""
    import torch

    from backend import manifest
    from backend.paths import checkpoints_dir

    target = checkpoints_dir() / name
    model.save_pretrained(target, dtype={"float16": torch.float16, "float32": torch.float32}[dtype_name])
    manifest.record(target, "python -m backend " + shlex.join(sys.argv[1:]))
    print(f"Shipped to {target} and recorded in {checkpoints_dir() / 'MANIFEST'}")


def cmd_train_evaluator(args) -> int:
    from backend.data.dataset import open_corpus
    from backend.models.evaluator import EvaluatorConfig
    from backend.paths import data_home
    from backend.train.evaluator import EvaluatorTrainConfig, train_evaluator

    corpus = open_corpus(args.data)
    splits = corpus.judge_splits()
    cfg = EvaluatorTrainConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                               threads=args.threads, splits=splits)
    print(f"Training on the {' + '.join(splits)} split(s)")
    work = Path(args.workdir) if args.workdir else data_home() / "runs" / "evaluator"
    model = train_evaluator(corpus, EvaluatorConfig.embedded(), cfg, work, resume=not args.no_resume)
    print(f"Trained evaluator saved in {work / 'model'}")
    if args.ship:
        _ship(model, "evaluator", args.ship_dtype)
    return 0


def cmd_train_checker(args) -> int:
    from backend.data.dataset import open_corpus
    from backend.eval.follow import CheckerTrainConfig, train_checker
    from backend.paths import data_home

    corpus = open_corpus(args.data)
    splits = corpus.judge_splits()
    print(f"Training the instruction checker on the {' + '.join(splits)} split(s)")
    cfg = CheckerTrainConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, threads=args.threads)
    work = Path(args.workdir) if args.workdir else data_home() / "runs" / "checker"
    model = train_checker(corpus, splits, cfg, work)
    print(f"Trained checker saved in {work / 'model'}")
    if args.ship:
        _ship(model, "checker", args.ship_dtype)
    return 0


def add_train(sub) -> None:
    p = sub.add_parser("train", help="train a component")
    tsub = p.add_subparsers(dest="train_cmd", required=True, metavar="COMPONENT")
    v = tsub.add_parser(
        "vqvae", help="train the motion VQ-VAE (tokenizer)",
        description="Train the T2M-GPT-style motion VQ-VAE on the train split plus, for the "
                    "embedded corpus, the video-only motions of the video database (OOD kinds "
                    "included; the tokenizer never sees text). Resumable: rerunning continues "
                    "from the last checkpoint in the work folder.")
    v.add_argument("--data", help="HumanML3D-layout folder (default: the embedded corpus)")
    v.add_argument("--config", choices=["embedded", "paper"], default="embedded",
                   help="model size: embedded (CPU, ~5 MB) or paper (T2M-GPT 512x512)")
    v.add_argument("--steps", type=int, default=6000)
    v.add_argument("--batch-size", type=int, default=64)
    v.add_argument("--lr", type=float, default=2e-4)
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
    v.add_argument("--curves", metavar="PNG", help="write the learning curves to this PNG")
    v.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    v.add_argument("--workdir", help="run folder with logs and resumable state "
                                     "(default: data/runs/vqvae-CONFIG)")
    v.add_argument("--no-resume", action="store_true", help="start over even if a run exists")
    v.add_argument("--ship", action="store_true",
                   help="copy the result to checkpoints/vqvae and record it in the MANIFEST")
    v.add_argument("--ship-dtype", choices=["float16", "float32"], default="float16")
    v.set_defaults(func=cmd_train_vqvae)
    e = tsub.add_parser(
        "evaluator", help="train the text-motion evaluator (metrics' embedding space)",
        description="Train the evaluator's text head (on frozen MiniLM) and motion encoder "
                    "contrastively on the train split. Resumable.")
    e.add_argument("--data", help="HumanML3D-layout folder (default: the embedded corpus)")
    e.add_argument("--steps", type=int, default=2500)
    e.add_argument("--batch-size", type=int, default=64)
    e.add_argument("--lr", type=float, default=1e-3)
    e.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    e.add_argument("--workdir", help="run folder (default: data/runs/evaluator)")
    e.add_argument("--no-resume", action="store_true", help="start over even if a run exists")
    e.add_argument("--ship", action="store_true",
                   help="copy the result to checkpoints/evaluator and record it in the MANIFEST")
    e.add_argument("--ship-dtype", choices=["float16", "float32"], default="float16")
    e.set_defaults(func=cmd_train_evaluator)
    c = tsub.add_parser(
        "checker", help="train the instruction checker (a judge of what prompts ask)",
        description="Train the InstructionChecker on real motions and their programs: the train "
                    "split plus the ood_judge half of the OOD motions (never the generator's "
                    "data). Verify it with `eval follow` before trusting it.")
    c.add_argument("--data", help="corpus folder with programs.jsonl (default: the embedded corpus)")
    c.add_argument("--steps", type=int, default=2500)
    c.add_argument("--batch-size", type=int, default=32)
    c.add_argument("--lr", type=float, default=1e-3)
    c.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    c.add_argument("--workdir", help="run folder (default: data/runs/checker)")
    c.add_argument("--ship", action="store_true",
                   help="copy the result to checkpoints/checker and record it in the MANIFEST")
    c.add_argument("--ship-dtype", choices=["float16", "float32"], default="float16")
    c.set_defaults(func=cmd_train_checker)
    return tsub


# ------------------------------------------------------------------------------------ eval
def cmd_eval_vqvae(args) -> int:
    from backend.data.dataset import open_corpus
    from backend.eval.vqvae import evaluate_split, format_table
    from backend.models.vqvae import MotionVQVAE, load_t2m_gpt
    from backend.paths import checkpoints_dir

    _threads(args.threads)
    corpus = open_corpus(args.data)
    if args.t2m_gpt:
        model = load_t2m_gpt(args.t2m_gpt)
        source = str(args.t2m_gpt)
    else:
        folder = Path(args.checkpoint) if args.checkpoint else checkpoints_dir() / "vqvae"
        model = MotionVQVAE.from_pretrained(folder)
        source = str(folder)
    available = set(corpus.splits())
    rows = []
    for split in [s for s in args.splits.split(",") if s]:
        if split not in available:
            print(f"(split {split!r} not in {corpus.root}; skipped)")
            continue
        rows.append(evaluate_split(model, corpus, split, progress=not args.json))
    if not rows:
        print(f"error: none of the splits {args.splits!r} exist in {corpus.root}", file=sys.stderr)
        return 2
    print(f"VQ-VAE reconstruction ({source}) on {corpus.root}")
    print(format_table(rows))
    if args.json:
        print(json.dumps({"model": source, "data": str(corpus.root),
                          "results": {r["split"]: r for r in rows}}))
    return 0


def load_evaluator(args):
    from backend.models.evaluator import TextMotionEvaluator, load_guo_evaluator
    from backend.paths import checkpoints_dir

    if args.guo_evaluator:
        return load_guo_evaluator(args.guo_evaluator), str(args.guo_evaluator)
    folder = Path(args.evaluator) if args.evaluator else checkpoints_dir() / "evaluator"
    return TextMotionEvaluator.from_pretrained(folder), str(folder)


def cmd_eval_generation(args) -> int:
    from backend.data.dataset import open_corpus
    from backend.eval.generation import (GENERATORS, evaluate, format_plausibility, format_table,
                                         plausibility_rows, to_json)

    _threads(args.threads)
    corpus = open_corpus(args.data)
    evaluator, source = load_evaluator(args)
    from backend.eval import llm_rows                 # registers the motion-LLM rows

    names = ["real", "vqvae"] + [g for g in llm_rows.expand(args.generator) if g not in ("real", "vqvae")]
    unknown = [n for n in names if n not in GENERATORS]
    if unknown:
        print(f"error: unknown generator {', '.join(unknown)} (known: {', '.join(sorted(GENERATORS))})",
              file=sys.stderr)
        return 2
    generators = [GENERATORS[n](corpus) for n in names]
    available = set(corpus.splits())
    tables, plaus = {}, {}
    for split in [s for s in args.splits.split(",") if s]:
        if split not in available:
            print(f"(split {split!r} not in {corpus.root}; skipped)")
            continue
        results = evaluate(evaluator, corpus, split, generators, repeats=args.repeats,
                           seed=args.seed, mm_samples=args.mm_samples,
                           mm_repeats=args.mm_repeats, progress=not args.json,
                           max_motions=args.max_motions)
        print(format_table(split, results))
        print()
        tables[split] = to_json(results)
        plaus[split] = plausibility_rows(corpus, split, generators, seed=args.seed,
                                         max_motions=args.max_motions, progress=not args.json)
        print(format_plausibility(split, plaus[split]))
        print()
    subset = f"; {args.max_motions} motions per split" if args.max_motions else ""
    print(f"evaluator: {source}; data: {corpus.root}; {args.repeats} repeats{subset}; "
          "mean ± 1.96·std/√repeats")
    if args.json:
        print(json.dumps({"evaluator": source, "data": str(corpus.root), "repeats": args.repeats,
                          "max_motions": args.max_motions, "tables": tables,
                          "plausibility": plaus}))
    return 0


def cmd_eval_follow(args) -> int:
    import numpy as np

    from backend.data.dataset import open_corpus
    from backend.eval.follow import format_table, load_programs, score
    from backend.eval.generation import EvalItem, VQVAEReconstruction, load_split
    from backend.models.checker import InstructionChecker
    from backend.models.vqvae import MotionVQVAE
    from backend.paths import checkpoints_dir
    from core.features import joints_to_features
    from viewer.clean import clean_motion

    _threads(args.threads)
    corpus = open_corpus(args.data)
    programs = load_programs(corpus)
    folder = Path(args.checker) if args.checker else checkpoints_dir() / "checker"
    checker = InstructionChecker.from_pretrained(folder)
    vq = VQVAEReconstruction(MotionVQVAE.from_pretrained(checkpoints_dir() / "vqvae"), corpus)
    gens = []
    if args.generator:
        from backend.eval import llm_rows
        from backend.eval.generation import GENERATORS

        gens = [GENERATORS[n](corpus) for n in llm_rows.expand(args.generator)]
    tables = {}
    for split in [s for s in args.splits.split(",") if s]:
        if split not in corpus.splits():
            print(f"(split {split!r} not in {corpus.root}; skipped)")
            continue
        data = load_split(corpus, split, min_frames=8)
        ids = sorted(data)
        if args.max_motions and args.max_motions < len(ids):
            ids = sorted(np.random.default_rng([args.seed, 99]).choice(ids, args.max_motions, replace=False))
        real = [data[m][0] for m in ids]
        # whole motions (a protocol crop could cut a repetition), to a multiple of 4 frames
        items = [EvalItem(m, data[m][1][0], f[: len(f) // 4 * 4], f) for m, f in zip(ids, real)]
        recon = [joints_to_features(clean_motion(f).joints) for f in vq.generate(items, None)]
        progs = [programs[m] for m in ids]
        tables[split] = {"Real motion": score(checker, progs, real),
                         "VQ-VAE reconstruction": score(checker, progs, recon)}
        for g in gens:                              # what users get: generated, then cleaned
            feats = g.generate(items, np.random.default_rng([args.seed, 1]))
            motions = [joints_to_features(clean_motion(f).joints) for f in feats]
            tables[split][g.name] = score(checker, progs, motions)
        print(f"{split}:")
        print(format_table(tables[split]))
        print()
    examples = {}
    if args.examples:
        from backend.eval.follow import example_motions, format_examples, score_examples
        from backend.pipeline import VimoRAGPipeline

        pipe = VimoRAGPipeline.load(models=tuple(args.examples), evaluator=False)
        for model in args.examples:
            examples[model] = score_examples(checker, example_motions(pipe, model, args.seeds))
            print(format_examples(model, examples[model]))
            print()
    print(f"checker: {folder}; data: {corpus.root}")
    if args.json:
        print(json.dumps({"checker": str(folder), "data": str(corpus.root), "tables": tables,
                          "examples": examples}))
    return 0


def cmd_eval_servable(args) -> int:
    from backend.eval.servable import run_calibration
    from backend.paths import checkpoints_dir
    from backend.pipeline import VimoRAGPipeline

    _threads(args.threads)
    pipe = VimoRAGPipeline.load(models=(args.model,), evaluator=True)
    check, report = run_calibration(pipe, args.captions, args.model, args.seed, args.miss)
    print(f"thresholds: best retrieval score >= {check.min_retrieval:+.3f}, text-motion distance <= "
          f"{check.max_distance:.3f} (each passes {1 - args.miss:.1%} of calibration captions)")
    print(f"held-out: {check.false_alarm:.1%} of servable captions flagged (false alarms), "
          f"{check.hit_rate:.1%} of unservable prompts flagged (by retrieval "
          f"{report['unservable_flagged_by']['retrieval']:.0%}, by distance "
          f"{report['unservable_flagged_by']['distance']:.0%})")
    if args.ship:
        from backend.manifest import record
        from backend.models.pretrained import save_pretrained_atomic

        dest = save_pretrained_atomic(check, checkpoints_dir() / "servable")
        record(dest, "python -m backend eval servable " + " ".join(
            f"--{k.replace('_', '-')} {v}" for k, v in (("captions", args.captions), ("model", args.model),
                                                        ("seed", args.seed), ("miss", args.miss))) + " --ship")
        print(f"shipped {dest}")
    if args.json:
        print(json.dumps(report))
    return 0


def cmd_eval_video_use(args) -> int:
    import random

    import torch

    from backend.data.dataset import open_corpus
    from backend.eval.video_use import format_video_use, video_use
    from backend.models.motion_llm import MotionLLM
    from backend.models.vqvae import MotionVQVAE
    from backend.paths import checkpoints_dir, data_home
    from backend.retrieval.service import VideoRetriever
    from backend.train.motion_llm import build_examples

    _threads(args.threads)
    corpus = open_corpus(args.data)
    folder = Path(args.model) if Path(args.model).is_dir() else checkpoints_dir() / f"llm-{args.model}"
    model = MotionLLM.from_pretrained(folder)
    vqvae = MotionVQVAE.from_pretrained(checkpoints_dir() / model.config.tokenizer).eval()
    retriever = VideoRetriever.open("embedded")
    try:
        own = VideoRetriever.open(args.self_db) if args.split == "train" else None
    except Exception:                                   # noqa: BLE001 - the self rows are optional
        own = None
    examples = build_examples(corpus, vqvae, retriever, "gemini", data_home() / "runs", split=args.split)
    first, seen = [], set()
    for e in examples:                                  # one caption per motion
        if e.mid not in seen:
            seen.add(e.mid)
            first.append(e)
    random.Random(args.seed).shuffle(first)
    if own is not None:                                 # motions with a video of their own first
        first.sort(key=lambda e: not own.has_video(f"self-{e.mid}"))
    with torch.no_grad():
        res = video_use(model.eval(), first[:args.size], retriever, own, args.seed)
    print(format_video_use(res, f"{folder.name} on {args.split} ({len(first[:args.size])} captions)"))
    if args.json:
        print(json.dumps({"model": str(folder), "split": args.split, "rows": res}))
    return 0


def add_eval(sub) -> None:
    p = sub.add_parser("eval", help="evaluate a component (prints a table; --json adds figures)")
    esub = p.add_subparsers(dest="eval_cmd", required=True, metavar="COMPONENT")
    v = esub.add_parser(
        "vqvae", help="reconstruction MPJPE and codebook usage of the motion VQ-VAE",
        description="Encode and decode every motion of the chosen splits (cropped to 196 "
                    "frames) and report MPJPE in millimetres and codebook usage.")
    v.add_argument("--data", help="HumanML3D-layout folder (default: the embedded corpus)")
    v.add_argument("--checkpoint", help="folder written by save_pretrained (default: checkpoints/vqvae)")
    v.add_argument("--t2m-gpt", help="evaluate the published T2M-GPT VQ-VAE (t2m.pth) instead")
    v.add_argument("--splits", default="test,ood",
                   help="comma-separated splits; ones the dataset lacks (e.g. ood) are skipped")
    v.add_argument("--threads", type=int, default=2)
    v.add_argument("--json", action="store_true", help="print the figures as JSON on the last line")
    v.set_defaults(func=cmd_eval_vqvae)
    g = esub.add_parser(
        "generation", help="paper-style table: FID, R-Precision, MM-Dist, Diversity, MModality",
        description="Guo et al. protocol on the test and OOD splits: rows 'Real motion' and "
                    "'VQ-VAE reconstruction' plus any --generator; each metric as mean ± "
                    "1.96·std/√repeats over repeated evaluations.")
    g.add_argument("--data", help="HumanML3D-layout folder (default: the embedded corpus)")
    g.add_argument("--evaluator", help="trained evaluator folder (default: checkpoints/evaluator)")
    g.add_argument("--guo-evaluator", help="folder with the original Guo et al. evaluator "
                                           "(t2m/text_mot_match, glove/) for HumanML3D numbers")
    g.add_argument("--generator", action="append", default=[], metavar="NAME",
                   help="add a generator row (repeatable): novideo, sft-gemini, mcdpo-gemini, "
                        "sft-random, mcdpo-random, mcdpo-object, or vimorag for all six")
    g.add_argument("--splits", default="test,ood")
    g.add_argument("--repeats", type=int, default=20)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--max-motions", type=int, default=0,
                   help="evaluate on a fixed random subset of this many motions per split (0 = all)")
    g.add_argument("--mm-samples", type=int, default=100, help="texts for MultiModality")
    g.add_argument("--mm-repeats", type=int, default=30, help="generations per text for MultiModality")
    g.add_argument("--threads", type=int, default=2)
    g.add_argument("--json", action="store_true", help="print the figures as JSON on the last line")
    g.set_defaults(func=cmd_eval_generation)
    f = esub.add_parser(
        "follow", help="instruction following: share of what prompts ask that motions do",
        description="For every motion of the chosen splits, list what its prompt asks (kind, "
                    "count, side, direction, speed; from programs.jsonl) and check it with the "
                    "instruction checker, on the real motions (the checker's own accuracy), "
                    "on the VQ-VAE's cleaned reconstructions and on any --generator row.")
    f.add_argument("--data", help="corpus folder with programs.jsonl (default: the embedded corpus)")
    f.add_argument("--checker", help="checker folder (default: checkpoints/checker)")
    f.add_argument("--splits", default="test,ood", help="comma-separated splits (default: test,ood)")
    f.add_argument("--generator", action="append", default=[], metavar="NAME",
                   help="also score a generator row on the first caption of every motion "
                        "(repeatable; names as in `eval generation`, vimorag for all six)")
    f.add_argument("--seed", type=int, default=0, help="sampling seed of the generator rows")
    f.add_argument("--max-motions", type=int, default=0,
                   help="a fixed random subset of this many motions per split (0 = all)")
    f.add_argument("--examples", action="append", default=[], choices=["mcdpo", "sft", "novideo"],
                   metavar="MODEL", help="also check the app's example prompts generated by MODEL "
                                         "(shipped; Gemini-MVR retrieval; repeatable)")
    f.add_argument("--seeds", type=int, default=3, help="samples per example prompt")
    f.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    f.add_argument("--json", action="store_true", help="print the figures as JSON (last line)")
    f.set_defaults(func=cmd_eval_follow)
    vu = esub.add_parser(
        "video-use", help="does a motion LLM read its video? token loss under different videos",
        description="Per-token loss of the ground-truth motion codes of held-out captions with "
                    "their rank-1 video, a random video, no video and (train split, `videos self`) "
                    "the video of the motion itself.")
    vu.add_argument("--model", default="sft", help="sft, mcdpo, novideo or a model folder")
    vu.add_argument("--split", default="val", help="corpus split (train: the self-video rows too)")
    vu.add_argument("--size", type=int, default=160, help="captions (one per motion)")
    vu.add_argument("--self-db", default="self-train", help="database of the self videos")
    vu.add_argument("--data", help="corpus folder (default: the embedded corpus)")
    vu.add_argument("--seed", type=int, default=0)
    vu.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    vu.add_argument("--json", action="store_true")
    vu.set_defaults(func=cmd_eval_video_use)
    sv = esub.add_parser(
        "servable", help="calibrate the warning for prompts the models cannot serve",
        description="Best Gemini-MVR score and text-motion distance of the generated motion, for "
                    "held-out test captions and for prompts of motions the corpus does not contain "
                    "(backend.eval.servable.UNSERVABLE_PROMPTS). Thresholds from one half, rates "
                    "on the other; --ship writes checkpoints/servable/ (read by the app and generate).")
    sv.add_argument("--captions", type=int, default=200, help="test motions (first caption of each)")
    sv.add_argument("--model", choices=["mcdpo", "sft"], default="mcdpo")
    sv.add_argument("--seed", type=int, default=0)
    sv.add_argument("--miss", type=float, default=0.025,
                    help="share of calibration captions each threshold may flag")
    sv.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    sv.add_argument("--ship", action="store_true", help="save to checkpoints/servable + MANIFEST")
    sv.add_argument("--json", action="store_true")
    sv.set_defaults(func=cmd_eval_servable)
    return esub


# ---------------------------------------------------------------------------------- export
def cmd_export(args) -> int:
    from viewer.export import export_motion, load_motion, parse_formats
    from viewer.render import RenderConfig

    formats = parse_formats(args.formats)
    motion = load_motion(args.motion, keep_features=True)
    cfg = RenderConfig(size=args.size, fps=args.fps, follow=not args.fixed_camera)
    written = export_motion(motion, args.out, formats, stem=args.stem or Path(args.motion).stem,
                            render_cfg=cfg, skeleton_only=args.skeleton_only,
                            foot_skate_cleanup=args.foot_skate_cleanup, fps=args.fps,
                            clean=not args.no_clean, bvh_units=args.bvh_units)
    for fmt, path in written.items():
        print(f"{fmt:>12}: {path}")
    return 0


def add_export(sub) -> None:
    p = sub.add_parser(
        "export", help="export a motion (.npy) to BVH, FBX, GLB, MP4, NPY",
        description="MOTION.npy holds HumanML3D features (frames x 263) or joint positions "
                    "(frames x 22 x 3); the shape tells which. Joint rotations come from IK on "
                    "the SMPL skeleton. By default the motion is first cleaned (rigid skeleton, on the "
                    "floor, planted feet; features' contact channels are used), and the NPY "
                    "joints are the forward kinematics of the exported rotations. BVH/FBX are in "
                    "centimetres (BVH: --bvh-units m for metres), Y up, 20 fps by default.")
    p.add_argument("motion", help="path to a .npy motion")
    p.add_argument("--formats", default="bvh,fbx,glb,mp4,npy",
                   help="comma-separated subset of bvh,fbx,glb,mp4,npy")
    p.add_argument("--out", required=True, help="output folder (created if needed)")
    p.add_argument("--stem", help="file name stem (default: the motion file's name)")
    p.add_argument("--fps", type=float, default=20.0)
    p.add_argument("--size", type=int, default=512, help="video size in pixels (square)")
    p.add_argument("--skeleton-only", action="store_true", help="fast stick-figure video, no body mesh")
    p.add_argument("--fixed-camera", action="store_true", help="do not follow the body")
    p.add_argument("--foot-skate-cleanup", action="store_true",
                   help="with --no-clean: still pin feet while in contact")
    p.add_argument("--no-clean", action="store_true",
                   help="skip the clean-skeleton step (grounding, planted feet); the joints are "
                        "still fitted to one rigid skeleton so every file agrees")
    p.add_argument("--bvh-units", choices=["cm", "m"], default="cm",
                   help="length unit of the BVH file (Blender and Mixamo expect cm)")
    p.set_defaults(func=cmd_export)


# ------------------------------------------------------------------------------------ body
def cmd_body_convert(args) -> int:
    from viewer.body import convert_smpl_pkl

    out = convert_smpl_pkl(args.src, args.dst)
    print(f"Wrote {out}; the viewer uses it when it lies in checkpoints/body_models/smpl/")
    return 0


def add_body(sub) -> None:
    p = sub.add_parser("body", help="body-model utilities (SMPL files you bring yourself)")
    bsub = p.add_subparsers(dest="body_cmd", required=True, metavar="COMMAND")
    c = bsub.add_parser(
        "convert-pkl", help="convert an official SMPL .pkl to a plain .npz",
        description="The official SMPL .pkl files hold chumpy objects, and chumpy does not import "
                    "on Python 3.11. This reads them with a restricted unpickler (arrays only; "
                    "anything else is refused) and writes SMPL_NEUTRAL.npz-style arrays. Put the "
                    "result at checkpoints/body_models/smpl/SMPL_NEUTRAL.npz (or _MALE/_FEMALE).")
    c.add_argument("src", help="e.g. basicmodel_neutral_lbs_10_207_0_v1.1.0.pkl")
    c.add_argument("dst", help="e.g. checkpoints/body_models/smpl/SMPL_NEUTRAL.npz")
    c.set_defaults(func=cmd_body_convert)


# ----------------------------------------------------------------------------------- bench
def cmd_bench_render(args) -> int:
    from backend.bench import bench_render

    figures = bench_render(seconds=args.seconds, size=args.size, repeats=args.repeats)
    print(f"{'stage':<28}{'seconds':>10}")
    for key in ("ik_s", "posing_s", "render_s", "total_s", "skeleton_only_total_s"):
        print(f"{key:<28}{figures[key]:>10.2f}")
    print("(render_s = rendering + MP4 encoding; they overlap, frames stream into ffmpeg)")
    print(f"{args.seconds:.0f}-s motion at {args.size}x{args.size}: {figures['total_s']:.2f} s "
          f"({figures['ms_per_frame']:.1f} ms/frame; target <= 3 s), body: {figures['body']}")
    if args.json:
        print(json.dumps(figures))
    return 0


def cmd_bench_eval(args) -> int:
    from backend.bench import bench_eval

    f = bench_eval(repeats=args.repeats, split=args.split)
    print(f"{f['repeats']}-repeat evaluation of the VQ-VAE row on {f['split']} ({f['motions']} motions): "
          f"{f['evaluation_s']:.1f} s ({f['per_repeat_s']:.2f} s per repeat, "
          f"{f['motions_per_s']:.0f} motions/s; loading models {f['load_s']:.1f} s)")
    if args.json:
        print(json.dumps(f))
    return 0


def add_bench(sub) -> None:
    p = sub.add_parser("bench", help="speed benchmarks (print figures; --json adds them as JSON)")
    bsub = p.add_subparsers(dest="bench_cmd", required=True, metavar="WHAT")
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
    return bsub


# ------------------------------------------------------------------------------------ main
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m backend",
        description="VimoRAG back end: data, training, evaluation. Works offline; the embedded "
                    "corpus is built on first use. Add --help after any command for its options.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_data(sub)
    groups = {"train": add_train(sub), "eval": add_eval(sub), "bench": add_bench(sub)}
    add_export(sub)
    add_body(sub)
    from backend import cli_generation, cli_retrieval

    cli_retrieval.register(sub, groups)
    cli_generation.register(sub, groups)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from backend.data.dataset import CorpusError
    from backend.video.database import DatabaseError
    from core.features import MotionFormatError

    try:
        return args.func(args)
    except (CorpusError, DatabaseError, MotionFormatError, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
