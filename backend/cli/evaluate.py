"""``python -m backend eval WHAT``: every evaluation table (tokenizer, generation, instruction
following, servability, video use, retrieval). ``--json`` adds the figures as the last line."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from backend.cli.common import command_group, set_threads, training_db
from backend.defaults import GUIDANCE as DEFAULT_GUIDANCE, FIRM_LEAD, READ_LEAD, LED_LENGTH, LED_TEMPERATURE, READER_ABOVE, READER_DRAFTS, READER_TEMPO, RETIME, RETIME_CHOICES, TEMPO_MARGIN, MIRROR, PICK_SEES, PICK_SEES_CHOICES, NEIGHBOUR_KINDS, PLAIN_SUBJECTS, SAMPLES, SAY_SPEEDS, TEMPERATURE


def load_evaluator(args):
    from backend.evaluation.evaluator import TextMotionEvaluator, load_guo_evaluator
    from backend.checkpoints import checkpoints_dir

    if args.guo_evaluator:
        return load_guo_evaluator(args.guo_evaluator), str(args.guo_evaluator)
    folder = Path(args.evaluator) if args.evaluator else checkpoints_dir() / "evaluator"
    return TextMotionEvaluator.from_pretrained(folder), str(folder)


def cmd_eval_vqvae(args) -> int:
    from backend.data.dataset import open_corpus
    from backend.evaluation.tokenizer import evaluate_split, format_table
    from backend.generation.vqvae import MotionVQVAE, load_t2m_gpt
    from backend.checkpoints import checkpoints_dir

    set_threads(args.threads)
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


def _margin(text: str) -> float:
    """--tempo-margin: a number >= 0 (refused by argparse, before anything loads)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def add_session17_switches(parser) -> None:
    """The switches back to how the LLM rows were measured before sessions 17 and 18."""
    parser.add_argument("--words-as-typed", action="store_true",
                        help="the LLM reads every prompt part as typed; by default a part in words it "
                             "never read reaches it in training phrasing, as the app does "
                             "(checkpoints/restater, backend/generation/restate.py)")
    parser.add_argument("--pick", type=int, default=SAMPLES, metavar="N",
                        help="sample each prompt part the restater reads confidently N times and keep "
                             "the motion the picker sees doing most of what it asks, as the app does "
                             "(checkpoints/picker, backend/evaluation/pick.py; default %(default)s; "
                             "1: one sample, as every row before session 19)")
    parser.add_argument("--no-rerank", action="store_true",
                        help="retrieval by the learned scores alone, without re-ranking the top videos "
                             "by their captions' cues (backend/retrieval/rerank.py)")
    parser.add_argument("--led-cues", action="store_true",
                        help="search a part the video leads again with the speed and count the "
                             "restater reads in its words (Restater.stated_cues; off by default, as "
                             "in the app: no gain measured)")
    parser.add_argument("--led-temperature", type=float, default=LED_TEMPERATURE, metavar="T",
                        help="the most a part the video leads is sampled at, as the app does "
                             "(default %(default)s; 0: the row's temperature, as before session 21)")
    parser.add_argument("--led-mix", action="store_true",
                        help="a part the video leads mixes its words' branch in by the lead's weight "
                             "(as before session 21); by default it is written from its video alone, "
                             "as the app does")
    parser.add_argument("--reader-drafts", type=int, default=READER_DRAFTS, metavar="N",
                        help="a part the video leads also gets N drafts from the pose reader "
                             "(checkpoints/pose-reader: the video's keypoints read into motion tokens) "
                             "among its samples, as the app does (default %(default)s; 0: none)")
    parser.add_argument("--reader-only", action="store_true",
                        help="a part the video leads gets the reader's drafts only (no LLM samples)")
    parser.add_argument("--reader-tempo", action=argparse.BooleanOptionalAction, default=READER_TEMPO,
                        help="a led part whose words ask slow or fast also gets a draft of its video "
                             "played slower or faster (default: %(default)s)")
    parser.add_argument("--reader-above", type=float, default=READER_ABOVE, metavar="W",
                        help="parts whose video weight is above W get the drafts (default %(default)s: "
                             "the led parts)")
    parser.add_argument("--reader", metavar="DIR", help="pose reader folder (default checkpoints/pose-reader)")
    parser.add_argument("--picker", metavar="DIR", help="picker folder (default checkpoints/picker)")
    parser.add_argument("--firm-lead", action=argparse.BooleanOptionalAction, default=FIRM_LEAD,
                        help="a part the video leads at all (weight > 0) whose database video shows a "
                             "kind the generator knows only from videos is led fully, as the app does "
                             "(backend/generation/video_lead.py firm_lead; default: %(default)s)")
    parser.add_argument("--read-lead", action=argparse.BooleanOptionalAction, default=READ_LEAD,
                        help="with --firm-lead, a part whose words the kind reader reads as such a kind "
                             "is led fully when its video shows that kind, as the app does "
                             "(checkpoints/kind-reader; default: %(default)s)")
    parser.add_argument("--retime", choices=RETIME_CHOICES, default=RETIME,
                        help="a picked part whose words ask slow or fast: 'kept' plays its kept sample "
                             "that much slower or faster when the picker reads the speed better that "
                             "way and nothing else worse; 'pool' adds each sample so played to the "
                             "picker's choices; 'off' neither (backend/generation/tempo.py; default, "
                             "as the app: %(default)s)")
    parser.add_argument("--tempo-margin", type=_margin, default=TEMPO_MARGIN, metavar="M",
                        help="with --retime pool: a copy played slower or faster is kept only when the "
                             "picker reads it M better (expected share of asked attributes) than every "
                             "sample as written, as the app does (default %(default)s; 0: the best "
                             "reading wins, as before session 35)")
    parser.add_argument("--mirror", action=argparse.BooleanOptionalAction, default=MIRROR,
                        help="a picked part whose words ask a left or right turn or limb side also has "
                             "each sample's mirror image among the picker's choices, as the app does "
                             "(backend/generation/mirror.py; default: %(default)s)")
    parser.add_argument("--picker-sees", choices=PICK_SEES_CHOICES, default=PICK_SEES,
                        help="what the picker reads each sample from: 'decoded' the VQ-VAE's features, "
                             "'joints' the features of the joints they recover (what the body shows), "
                             "'clean' those of the clean skeleton users get (slower), 'both' the mean "
                             "of its readings of 'decoded' and 'joints' (Picker.read; "
                             "default, as the app: %(default)s)")
    parser.add_argument("--led-length", type=float, default=LED_LENGTH, metavar="S",
                        help="the LLM's samples of a part the retrieved video leads (its words name a "
                             "motion known only from videos) last at least S times its video's "
                             "duration, as the app does; 0: they end where they will "
                             "(defaults.LED_LENGTH; default: %(default)s)")
    parser.add_argument("--word-speeds", action=argparse.BooleanOptionalAction, default=True,
                        help="the restater reads the speed an unseen word states (\"hastily\") alone in "
                             "a training sentence, as the app does (Restater.word_speeds, "
                             "defaults.WORD_SPEED); --no-word-speeds: within the part only, as before "
                             "session 32 (default: %(default)s)")
    parser.add_argument("--said-speeds", action=argparse.BooleanOptionalAction, default=SAY_SPEEDS,
                        help="a part kept in its words reaches the LLM with each unseen speed adverb "
                             "(\"sluggishly\") said in its training word (\"slowly\") (Restater.said_speeds, "
                             "defaults.SAY_SPEEDS; tried in session 40, not shipped: the app gives such "
                             "words as typed) (default: %(default)s)")
    parser.add_argument("--neighbour-kinds", action=argparse.BooleanOptionalAction, default=NEIGHBOUR_KINDS,
                        help="a part with unseen words whose kind the restater reads below its gate takes "
                             "the kind its nearest training caption parts (MiniLM) and the kind reader "
                             "agree on, and is restated (Restater.use_neighbours, defaults.NEIGHBOUR_KINDS; "
                             "needs checkpoints/part-neighbours) (default: %(default)s)")
    parser.add_argument("--plain-subjects", action=argparse.BooleanOptionalAction, default=PLAIN_SUBJECTS,
                        help="the restater reads each part with its subject said as the training captions "
                             "say it (\"a guy is dashing\" read as \"a person dashing\"; "
                             "Restater.reading_text, defaults.PLAIN_SUBJECTS) (default: %(default)s)")
    parser.add_argument("--whole-prompts", action="store_true",
                        help="write every prompt whole, even one that chains motions (\"A, then B\"); "
                             "by default such a prompt is written part by part, each part with its own "
                             "video, as the app does (backend/generation/compose.py)")


NOT_GENERATION = ("checker", "servable")
"""Shipped folders that ``eval generation`` never loads (``eval follow``'s judge, the app's
servability warning): a new one leaves a resumed protocol run's numbers valid."""


def manifest_fingerprint(manifest: Path | None = None) -> str | None:
    """A short hash of the checkpoints/MANIFEST lines (each names a shipped weight file by its
    sha256) of every folder ``eval generation`` can load, ``NOT_GENERATION`` left out: a resumed
    protocol run refuses to mix the numbers of other shipped models. Since session 35 (the judge)
    and 43 (servable); folders written before hashed those lines too, so they refuse to resume
    after a change of them."""
    import hashlib

    from backend.checkpoints import checkpoints_dir

    manifest = Path(manifest) if manifest else checkpoints_dir() / "MANIFEST"
    if not manifest.is_file():
        return None
    kept = [line for line in manifest.read_text().splitlines()
            if not (len(line.split()) > 1 and line.split()[1].split("/")[0] in NOT_GENERATION)]
    return hashlib.sha256("\n".join(kept).encode()).hexdigest()[:16]


def cmd_eval_generation(args) -> int:
    from backend.data.dataset import open_corpus
    from backend.evaluation.generation import (Progress, evaluate, format_plausibility, format_table,
                                               plausibility_rows, to_json)
    from backend.evaluation.rows import GENERATORS, expand, with_sampling

    if args.resume:                   # before anything loads: a bad folder is said at once
        if Path(args.resume).exists() and not Path(args.resume).is_dir():
            print(f"error: --resume {args.resume} is a file, not a folder", file=sys.stderr)
            return 2
        Path(args.resume).mkdir(parents=True, exist_ok=True)
    set_threads(args.threads)
    corpus = open_corpus(args.data)
    evaluator, source = load_evaluator(args)
    names = ["real", "vqvae"] + [g for g in expand(args.generator) if g not in ("real", "vqvae")]
    unknown = [n for n in names if n not in GENERATORS]
    if unknown:
        print(f"error: unknown generator {', '.join(unknown)} (known: {', '.join(sorted(GENERATORS))})",
              file=sys.stderr)
        return 2
    generators = with_sampling([GENERATORS[n](corpus) for n in names], args.guidance,
                               args.temperature, args.top_k, not args.no_side_match, args.int8,
                               args.video_lead, not args.whole_prompts, not args.no_rerank,
                             not args.words_as_typed, args.pick, args.weights,
                             args.led_cues, args.led_temperature or None, not args.led_mix,
                             args.reader_drafts, args.reader_only, args.reader, args.reader_tempo,
                             args.reader_above, args.firm_lead, args.picker,
                             args.retime, args.read_lead, args.mirror, args.picker_sees, args.led_length,
                             args.word_speeds, tempo_margin=args.tempo_margin,
                             said_speeds=args.said_speeds, neighbour_kinds=args.neighbour_kinds,
                             plain_subjects=args.plain_subjects)
    available = set(corpus.splits())
    tables, plaus = {}, {}
    for split in [s for s in args.splits.split(",") if s]:
        if split not in available:
            print(f"(split {split!r} not in {corpus.root}; skipped)")
            continue
        resume = None
        if args.resume:
            config = {k: v for k, v in sorted(vars(args).items())
                      if k not in ("repeats", "json", "threads", "splits", "resume", "func")
                      and not (k == "tempo_margin" and args.retime != "pool")}   # matters with pool only
            resume = Progress(Path(args.resume) / f"generation-{split}.json",
                              {**config, "split": split, "rows": [g.name for g in generators],
                               "evaluator": args.evaluator or "checkpoints/evaluator",
                               "checkpoints": manifest_fingerprint()},
                              assumed={"mirror": False,      # runs before session 29 mirrored nothing
                                       "picker_sees": "decoded",    # nor read joints (session 30)
                                       "led_length": 0.0,           # nor stretched led parts (31)
                                       "word_speeds": False,        # nor read speed words alone (32)
                                       "said_speeds": False,        # nor said them again (40)
                                       "neighbour_kinds": False,    # nor read kinds by neighbours (41)
                                       "plain_subjects": False,     # nor plain subjects (42)
                                       **({"tempo_margin": 0.0}     # nor kept pool copies by a
                                          if args.retime == "pool" else {})})   # margin (35)
        results = evaluate(evaluator, corpus, split, generators, repeats=args.repeats,
                           seed=args.seed, mm_samples=args.mm_samples,
                           mm_repeats=args.mm_repeats, progress=not args.json,
                           max_motions=args.max_motions, resume=resume)
        print(format_table(split, results))
        print()
        tables[split] = to_json(results)
        plaus[split] = plausibility_rows(corpus, split, generators, seed=args.seed,
                                         max_motions=args.max_motions, progress=not args.json,
                                         resume=resume)
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
    from backend.evaluation.follow import format_by_kind, format_table, load_programs, score
    from motioncore.prompt import split_agreement
    from backend.evaluation.generation import EvalItem, VQVAEReconstruction, load_split
    from backend.evaluation.checker import InstructionChecker
    from backend.generation.vqvae import MotionVQVAE
    from backend.checkpoints import checkpoints_dir
    from motioncore.features import joints_to_features
    from motioncore.clean import clean_motion

    set_threads(args.threads)
    corpus = open_corpus(args.data)
    programs = load_programs(corpus)
    folder = Path(args.checker) if args.checker else checkpoints_dir() / "checker"
    checker = InstructionChecker.from_pretrained(folder)
    vq = VQVAEReconstruction(MotionVQVAE.from_pretrained(checkpoints_dir() / "vqvae"), corpus)
    gens = []
    if args.generator:
        from backend.evaluation.rows import GENERATORS, expand, with_sampling

        gens = with_sampling([GENERATORS[n](corpus) for n in expand(args.generator)], args.guidance,
                             args.temperature, args.top_k, not args.no_side_match, args.int8,
                             args.video_lead, not args.whole_prompts, not args.no_rerank,
                             not args.words_as_typed, args.pick, args.weights,
                             args.led_cues, args.led_temperature or None, not args.led_mix,
                             args.reader_drafts, args.reader_only, args.reader, args.reader_tempo,
                             args.reader_above, args.firm_lead, args.picker,
                             args.retime, args.read_lead, args.mirror, args.picker_sees, args.led_length,
                             args.word_speeds, tempo_margin=args.tempo_margin,
                             said_speeds=args.said_speeds, neighbour_kinds=args.neighbour_kinds,
                             plain_subjects=args.plain_subjects)
    tables, prompt_split = {}, {}
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
        if args.by_kind:
            print(format_by_kind(tables[split]))
        if gens and any(getattr(g, "compose", False) for g in gens):
            caps = [(c.text, len(programs[m])) for m in sorted(data) for c in data[m][1]]
            agree = split_agreement([c for c, _ in caps], [n for _, n in caps])
            prompt_split[split] = agree
            print(f"chained prompts written part by part: the parts are the motion's segments for "
                  f"{agree['agree']:.1%} of the {agree['captions']} {split} captions (fewer parts "
                  f"{agree['fewer']:.1%}: written whole; more {agree['more']:.1%})")
        print()
    examples = {}
    if args.examples:
        from backend.evaluation.follow import example_motions, format_examples, score_examples
        from backend.pipeline import VimoRAGPipeline

        pipe = VimoRAGPipeline.load(models=tuple(args.examples), evaluator=False)
        if args.no_rerank:
            pipe.retriever.rerank_weight = 0.0
        for model in args.examples:
            motions = example_motions(pipe, model, args.seeds, temperature=args.temperature,
                                      top_k=args.top_k, guidance=args.guidance,
                                      match_sides=not args.no_side_match, video_lead=args.video_lead,
                                      compose=not args.whole_prompts)
            examples[model] = score_examples(checker, motions)
            print(format_examples(model, examples[model]))
            print()
    print(f"checker: {folder}; data: {corpus.root}")
    if args.json:
        print(json.dumps({"checker": str(folder), "data": str(corpus.root), "tables": tables,
                          "examples": examples, "prompt_split": prompt_split}))
    return 0


def cmd_eval_servable(args) -> int:
    from backend.evaluation.servable import run_calibration
    from backend.checkpoints import checkpoints_dir
    from backend.pipeline import VimoRAGPipeline

    set_threads(args.threads)
    pipe = VimoRAGPipeline.load(models=(args.model,), evaluator=True)
    check, report = run_calibration(pipe, args.captions, args.model, args.seed, args.miss,
                                    current=pipe.servable)
    print(f"thresholds: best retrieval score >= {check.min_retrieval:+.3f}, text-motion distance <= "
          f"{check.max_distance:.3f} (each passes {1 - args.miss:.1%} of calibration captions)")
    print(f"held-out: {check.false_alarm:.1%} of servable captions flagged (false alarms), "
          f"{check.hit_rate:.1%} of unservable prompts flagged (by retrieval "
          f"{report['unservable_flagged_by']['retrieval']:.0%}, by distance "
          f"{report['unservable_flagged_by']['distance']:.0%})")
    if "current" in report:
        cur = report["current"]
        from backend.evaluation.servable import stale_sources

        stale = stale_sources(pipe.servable)
        print(f"shipped thresholds (>= {cur['min_retrieval']:+.3f}, <= {cur['max_distance']:.3f}) on the same "
              f"held-out prompts: {cur['false_alarm']:.1%} false alarms, {cur['hit_rate']:.1%} flagged"
              + (f"; calibrated on other weights of {', '.join(stale)}" if stale else ""))
    if args.ship:
        from backend.checkpoints import record
        from backend.checkpoints import save_pretrained_atomic

        dest = save_pretrained_atomic(check, checkpoints_dir() / "servable")
        record(dest, "python -m backend eval servable " + " ".join(
            f"--{k.replace('_', '-')} {v}" for k, v in (("captions", args.captions), ("model", args.model),
                                                        ("seed", args.seed), ("miss", args.miss))) + " --ship")
        print(f"shipped {dest}")
    if args.json:
        print(json.dumps(report))
    return 0


def cmd_eval_video_lead(args) -> int:
    from backend.checkpoints import checkpoints_dir, record, save_pretrained_atomic
    from backend.data.dataset import open_corpus
    from backend.generation.video_lead import calibrate
    from backend.retrieval.service import VideoRetriever

    set_threads(args.threads)
    corpus = open_corpus()
    train = [c.text for m in corpus.split_ids("train") for c in corpus.captions(m)]
    from backend.generation.kind_reader import with_kind_reader

    lead, report = calibrate(train, with_kind_reader(VideoRetriever.open("embedded")), k=args.k, known_miss=args.known_miss,
                             split=args.split, space=args.space)
    print(f"{report['prompts']} database captions ({args.split} split) ({report['known']} of known kinds, "
          f"{report['unknown']} of kinds only videos show); novelty median {report['novelty_known_median']:+.3f} "
          f"vs {report['novelty_unknown_median']:+.3f}")
    print(f"the video's weight rises from 0 at novelty {lead.config.low:+.3f} to 1 at {lead.config.high:+.3f}: "
          f"{lead.config.known_led:.1%} of known-kind captions get some video lead, "
          f"{lead.config.unknown_led:.1%} of video-only-kind captions a weight >= 0.5")
    if args.ship:
        dest = save_pretrained_atomic(lead, checkpoints_dir() / "video-lead")
        record(dest, f"python -m backend eval video-lead --k {args.k} --known-miss {args.known_miss} "
                     f"--split {args.split} --space {args.space} --ship")
        print(f"shipped {dest}")
    if args.json:
        print(json.dumps(report))
    return 0


def cmd_eval_video_use(args) -> int:
    import random

    import torch

    from backend.data.dataset import open_corpus
    from backend.evaluation.video_use import format_video_use, video_use
    from backend.generation.motion_llm import MotionLLM
    from backend.generation.vqvae import MotionVQVAE
    from backend.checkpoints import checkpoints_dir, data_home
    from backend.retrieval.service import VideoRetriever
    from backend.generation.train_llm import build_examples

    set_threads(args.threads)
    corpus = open_corpus(args.data)
    folder = Path(args.model) if Path(args.model).is_dir() else checkpoints_dir() / f"llm-{args.model}"
    model = MotionLLM.from_pretrained(folder)
    vqvae = MotionVQVAE.from_pretrained(checkpoints_dir() / model.config.tokenizer).eval()
    from backend.generation.kind_reader import with_kind_reader

    retriever = with_kind_reader(VideoRetriever.open("embedded"))
    try:
        own = VideoRetriever.open(args.self_db or f"self-{args.split}")
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


def cmd_eval_video_reading(args) -> int:
    from backend.checkpoints import checkpoints_dir
    from backend.evaluation.checker import InstructionChecker
    from backend.evaluation.video_reading import format_video_reading, video_reading
    from backend.generation.motion_llm import MotionLLM
    from backend.generation.vqvae import load_llm_tokenizer
    from backend.retrieval.service import VideoRetriever

    set_threads(args.threads)
    reader = llm = None
    if args.reader:
        from backend.generation.pose_reader import PoseReader
        try:
            reader = PoseReader.from_pretrained(args.reader)
        except FileNotFoundError as exc:
            raise SystemExit(str(exc)) from None
        folder = Path(args.reader)
        vqvae, normalizer = load_llm_tokenizer()
    else:
        folder = Path(args.model) if Path(args.model).is_dir() else checkpoints_dir() / f"llm-{args.model}"
        if not (folder / "model.safetensors").is_file():
            raise SystemExit(f"no trained motion LLM at {folder}; see README, *Motion LLM: SFT and McDPO*")
        llm = MotionLLM.from_pretrained(folder)
        llm.merge_lora_(args.weights)
        vqvae, normalizer = load_llm_tokenizer(name=llm.config.tokenizer)
    checker = InstructionChecker.from_pretrained(Path(args.checker) if args.checker
                                                 else checkpoints_dir() / "checker")
    from backend.generation.kind_reader import with_kind_reader

    retriever = with_kind_reader(VideoRetriever.open("embedded"))
    res = video_reading(llm, vqvae, normalizer, retriever, checker, args.split, args.ood_only,
                        args.samples, args.seed, limit=args.limit, temperature=args.temperature,
                        reader=reader)
    which = "OOD-kind " if args.ood_only else ""
    print(format_video_reading(res, f"{folder.name}: {res['questions']} {which}database videos "
                                    f"({args.split} split), {args.samples} sample(s) each at T {args.temperature:g}, "
                                    "neutral caption (the video alone)"))
    if args.json:
        print(json.dumps({"model": str(folder), "split": args.split, "ood_only": args.ood_only, **res}))
    return 0


def cmd_eval_retrieval(args) -> int:
    from backend.retrieval.evaluate import evaluate_retrieval, format_retrieval
    from backend.retrieval.model import GeminiMVR
    from backend.checkpoints import checkpoints_dir

    d = Path(args.retriever) if args.retriever else checkpoints_dir() / "retriever"
    for flag, value in (("--rerank-weight", args.rerank_weight), ("--chain-weight", args.chain_weight),
                        ("--read-weight", args.read_weight)):
        if value is not None and value < 0:
            print(f"error: {flag} must be 0 or more", file=sys.stderr)
            return 2
    kw = {} if args.rerank_weight is None else {"rerank_weight": args.rerank_weight}
    if args.chain_weight is not None:
        kw["chain_weight"] = args.chain_weight
    if args.read_weight is not None:
        kw["read_weight"] = args.read_weight
    if args.kind_reader != "none":
        from backend.generation.kind_reader import KindReader

        reader = KindReader.from_pretrained(None if args.kind_reader == "shipped" else args.kind_reader)
        if reader is None and args.kind_reader != "shipped":
            print(f"error: no kind reader in {args.kind_reader}", file=sys.stderr)
            return 2
        kw["kind_reader"] = reader
    res = evaluate_retrieval(GeminiMVR.from_pretrained(d), training_db(args), split=args.split,
                             scene=args.scene_words, **kw)
    print(format_retrieval(res))
    if args.json:
        print(json.dumps(res))
    return 0


def cmd_eval_sides(args) -> int:
    import torch

    from backend.checkpoints import checkpoints_dir
    from backend.retrieval.model import GeminiMVR
    from backend.retrieval.side_probe import detector_agreement, format_probe, mirror_similarity

    if args.limit < 0:
        print("error: --limit must be 0 (all videos) or positive", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    d = Path(args.retriever) if args.retriever else checkpoints_dir() / "retriever"
    model = GeminiMVR.from_pretrained(d)
    db = training_db(args)
    det = detector_agreement(db, limit=args.limit or None)
    sim = mirror_similarity(model, db, split=args.split)
    print(format_probe(det, sim))
    if args.json:
        print(json.dumps({"detector": det, "mirror": sim}))
    return 0


def cmd_eval_read_gate(args) -> int:
    from backend.defaults import READ_LEAD_GATE
    from backend.generation.kind_reader import KindReader, labelled_parts
    from backend.generation.restate import Restater
    from backend.generation.video_lead import lead_gates

    set_threads(args.threads)
    reader = KindReader.from_pretrained(args.kind_reader)
    restater = Restater.from_pretrained()
    if reader is None or restater is None:
        print("error: needs the kind reader and the restater (checkpoints/kind-reader, checkpoints/restater)",
              file=sys.stderr)
        return 2
    texts, kinds = labelled_parts(list(training_db(args).records), args.split)
    if not texts:
        print(f"error: no {args.split} captions with recorded kinds in the database", file=sys.stderr)
        return 2
    known = set(restater.config.classes["action"])
    tables = {"alone": lead_gates(reader.read(texts), kinds, known, args.gates)}
    if args.backed:             # readings the part's own videos do not outvote (not shipped)
        from backend.retrieval.service import VideoRetriever

        retriever = VideoRetriever.open(args.db_dir or "embedded").use_kind_reader(reader)
        tables["backed"] = lead_gates(retriever.backed_reads(texts), kinds, known, args.gates)
    print(f"{len(texts)} {args.split} caption parts, {sum(k not in known for k in kinds)} of a kind the "
          f"generator knows only from videos; shipped gate {READ_LEAD_GATE:g}")
    for name, rows in tables.items():
        print({"alone": "the reader's reading alone", "backed": "readings retrieval backs (tried, not shipped)"}[name])
        print(f"{'gate':>5} {'led':>5} {'right':>6} {'wrong':>6} {'known':>6} {'net':>5} {'caught':>7}")
        for r in rows:
            print(f"{r['gate']:5.2f} {r['led']:5d} {r['right']:6d} {r['wrong']:6d} {r['known_led']:6d} "
                  f"{r['net']:5d} {r['caught']:7.1%}")
    if args.json:
        print(json.dumps({"split": args.split, "parts": len(texts), "gate": READ_LEAD_GATE, "rows": tables["alone"],
                          **({"backed": tables["backed"]} if "backed" in tables else {})}))
    return 0


def cmd_eval_look(args) -> int:
    from backend.evaluation.look import PROMPTS, format_rows, look
    from backend.pipeline import VimoRAGPipeline
    from motioncore.io import atomic_write_text
    from motioncore.prompt import PromptError, clean_prompt
    from viewer.sheet import contact_sheet

    from backend.checkpoints import data_home

    if args.frames < 1:
        print("error: --frames must be at least 1", file=sys.stderr)
        return 2
    prompts = args.prompt or list(PROMPTS)
    try:
        prompts = [clean_prompt(p) for p in prompts]
    except PromptError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    set_threads(args.threads)
    pipe = VimoRAGPipeline.load(models=(args.model,), evaluator=False)
    rows = look(pipe, prompts, model=args.model, seed=args.seed, temperature=args.temperature,
                video_lead=not args.no_video_lead, restate=not args.words_as_typed)
    out = Path(args.out) if args.out else data_home() / "look"
    sheet = contact_sheet([(f"{r['prompt']} ({r['model']}, seed {r['seed']})", r["joints"]) for r in rows],
                          out / "look.png", frames=args.frames)
    facts = [{k: v for k, v in r.items() if k != "joints"} for r in rows]
    atomic_write_text(out / "look.json", json.dumps(facts, indent=1) + "\n", "look.json")
    print(format_rows(rows))
    print(f"contact sheet: {sheet}; facts: {out / 'look.json'}")
    if args.json:
        print(json.dumps(facts))
    return 0


def cmd_eval_paired(args) -> int:
    from backend.evaluation.paired import METRICS, format_paired, paired

    folder_b = args.folder_b or args.folder
    metrics = [m for m in args.metrics.split(",") if m]
    bad = [m for m in metrics if m not in METRICS]
    if bad or not metrics:
        print(f"error: unknown metric {', '.join(bad) or '(none)'} (known: {', '.join(METRICS)})", file=sys.stderr)
        return 2
    out = {}
    for split in [s for s in args.splits.split(",") if s]:
        try:
            results = paired(args.folder, args.row_a, folder_b, args.row_b, split, metrics)
        except (FileNotFoundError, ValueError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        print(format_paired(results))
        print()
        out[split] = [r.to_json() for r in results]
    print("A - B: mean over the repeats both rows finished ± half the 95 % Student-t interval; "
          "every repeat scores both rows on the same draw of captions and crops")
    if args.json:
        print(json.dumps(out))
    return 0


def _weights_option(p) -> None:
    from backend.defaults import LEAN_WEIGHTS, WEIGHT_CHOICES

    p.add_argument("--weights", choices=WEIGHT_CHOICES, default=LEAN_WEIGHTS,
                   help="dtype of the LLM rows' decoder weights (default %(default)s, as the app; "
                        "float32: the tokens of transformers' own pass; docs/lab-notebook.md, *Generation speed*)")


def add(sub) -> None:
    """Add these commands to the top-level parser."""
    esub = command_group(sub, "eval", "evaluate a component (prints a table; --json adds figures)",
                         metavar="COMPONENT")
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
                        "sft-random, mcdpo-random, mcdpo-object, or vimorag for all six; "
                        "sft-none, mcdpo-none: the SFT / McDPO model with no video")
    g.add_argument("--splits", default="test,ood")
    g.add_argument("--repeats", type=int, default=20)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--max-motions", type=int, default=0,
                   help="evaluate on a fixed random subset of this many motions per split (0 = all)")
    g.add_argument("--mm-samples", type=int, default=100, help="texts for MultiModality")
    g.add_argument("--mm-repeats", type=int, default=30, help="generations per text for MultiModality")
    g.add_argument("--guidance", type=float, default=DEFAULT_GUIDANCE, metavar="G",
                   help="text guidance of the LLM rows: logits + G x (logits - logits with a neutral caption); 0 = off (default: the app's, %(default)s)")
    g.add_argument("--temperature", type=float, default=1.0,
                   help="sampling temperature of the LLM rows (default 1.0)")
    g.add_argument("--top-k", type=int, default=0,
                   help="LLM rows sample from the k likeliest tokens (0 = all)")
    g.add_argument("--no-side-match", action="store_true",
                   help="retrieved videos reach the LLM rows as they are (by default a video whose "
                        "captions name only the other side than the prompt comes mirrored, as in the app)")
    g.add_argument("--int8", action="store_true",
                   help="LLM rows with int8 weights (LoRA merged, then dynamic int8 quantization): "
                        "the lossy fast path of `bench generate`, to compare against the default rows")
    _weights_option(g)
    add_session17_switches(g)
    g.add_argument("--video-lead", action="store_true",
                   help="rows with retrieval let the video lead words the model only saw in videos "
                        "(checkpoints/video-lead, as the app does; `eval video-lead`)")
    g.add_argument("--resume", metavar="DIR",
                   help="keep each finished row of each repeat in DIR (one JSON file per split) and, "
                        "when the same command runs again, go on from there with exactly the numbers "
                        "an uninterrupted run gives (for the full protocol, hours on a CPU); "
                        "--repeats may grow between runs")
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
    f.add_argument("--by-kind", action="store_true",
                   help="also print each row's attributes per motion kind (where the misses are)")
    f.add_argument("--temperature", type=float, default=1.0,
                   help="sampling temperature of the LLM rows and the example prompts' motions "
                        "(default 1.0)")
    f.add_argument("--top-k", type=int, default=0,
                   help="the LLM rows and example prompts sample from the k likeliest tokens "
                        "(0 = all)")
    f.add_argument("--guidance", type=float, default=DEFAULT_GUIDANCE, metavar="G",
                   help="text guidance of the LLM rows: logits + G x (logits - logits with a neutral caption); 0 = off (default: the app's, %(default)s)")
    f.add_argument("--no-side-match", action="store_true",
                   help="retrieved videos reach the LLM rows as they are (by default a video whose "
                        "captions name only the other side than the prompt comes mirrored, as in the app)")
    f.add_argument("--int8", action="store_true",
                   help="generator rows with int8 weights (as `eval generation --int8`)")
    _weights_option(f)
    add_session17_switches(f)
    f.add_argument("--video-lead", action="store_true",
                   help="rows with retrieval let the video lead words the model only saw in videos "
                        "(checkpoints/video-lead, as the app does; `eval video-lead`)")
    f.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    f.add_argument("--json", action="store_true", help="print the figures as JSON (last line)")
    f.set_defaults(func=cmd_eval_follow)
    vu = esub.add_parser(
        "video-use", help="does a motion LLM read its video? token loss under different videos",
        description="Per-token loss of the ground-truth motion codes of held-out captions with "
                    "their rank-1 video, a random video, no video and (train split, `videos self`) "
                    "the video of the motion itself.")
    vu.add_argument("--model", default="sft", help="sft, mcdpo, novideo or a model folder")
    vu.add_argument("--split", default="val", help="corpus split (self-video rows where `videos self` rendered it)")
    vu.add_argument("--size", type=int, default=160, help="captions (one per motion)")
    vu.add_argument("--self-db", help="database of the self videos (default: self-SPLIT, as `videos "
                                      "self --split SPLIT` names it; held-out splits test reading "
                                      "poses the model never trained on)")
    vu.add_argument("--data", help="corpus folder (default: the embedded corpus)")
    vu.add_argument("--seed", type=int, default=0)
    vu.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    vu.add_argument("--json", action="store_true")
    vu.set_defaults(func=cmd_eval_video_use)
    vr = esub.add_parser(
        "video-reading", help="does a motion LLM write the motion a video shows? (the video alone)",
        description="For each synthetic database video of a split (the database knows the motion "
                    "behind it), generate from the neutral caption and the video, as a part the "
                    "video leads is written, and let the instruction checker compare the generated "
                    "motion with the video's own program (kind, count, side, turn, speed); the "
                    "database motions themselves are the ceiling. train: the videos the LLM's "
                    "video-only pairs learned from; test: held-out videos.")
    vr.add_argument("--model", default="mcdpo", help="sft, mcdpo or a model folder")
    vr.add_argument("--reader", help="judge a PoseReader folder instead of the LLM (e.g. "
                                     "checkpoints/pose-reader): it writes each video's tokens")
    vr.add_argument("--split", choices=["train", "test"], default="test",
                    help="database split (default %(default)s: videos the LLM never saw)")
    vr.add_argument("--ood-only", action="store_true",
                    help="only videos of kinds no caption names (cartwheel, backflip, crawl, roll)")
    vr.add_argument("--samples", type=int, default=1, help="generations per video")
    vr.add_argument("--limit", type=int, default=0, help="at most this many videos (0: all)")
    vr.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (default %(default)s)")
    vr.add_argument("--checker", help="judge folder (default: checkpoints/checker)")
    vr.add_argument("--seed", type=int, default=0)
    _weights_option(vr)
    vr.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    vr.add_argument("--json", action="store_true")
    vr.set_defaults(func=cmd_eval_video_reading)
    sv = esub.add_parser(
        "servable", help="calibrate the warning for prompts the models cannot serve",
        description="Best Gemini-MVR score and text-motion distance of the generated motion, for "
                    "held-out test captions and for prompts of motions the corpus does not contain "
                    "(backend.evaluation.servable.UNSERVABLE_PROMPTS). Thresholds from one half, rates "
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
    vl = esub.add_parser(
        "video-lead", help="calibrate when the retrieved video leads the generator (prompts of "
                           "kinds it only saw in videos)",
        description="Novelty of a prompt = best MiniLM cosine to its top-k retrieved videos' captions "
                    "minus best cosine to the generator's training captions. Calibrated on the "
                    "database's videos (their captions as prompts, own video left out): the "
                    "video's weight is 0 up to the novelty that passes 1 - KNOWN_MISS of known-kind "
                    "captions and 1 from the median novelty of video-only kinds. --ship writes "
                    "checkpoints/video-lead/ (read by generate, the app and --video-lead).")
    vl.add_argument("--k", type=int, default=5, help="retrieved videos whose captions are compared")
    vl.add_argument("--known-miss", type=float, default=0.05,
                    help="share of known-kind captions allowed any video lead")
    vl.add_argument("--split", choices=["train", "test"], default="train",
                    help="database videos whose captions calibrate (train: worded as users word "
                         "prompts; test: held-out phrasings)")
    vl.add_argument("--space", choices=["retriever", "minilm"], default="retriever",
                    help="embedding the cosines are taken in: the searching retriever's text "
                         "embedding (default; separates video-only kinds in unseen words far "
                         "better; the lead then belongs to that retriever) or MiniLM's")
    vl.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    vl.add_argument("--ship", action="store_true", help="save to checkpoints/video-lead + MANIFEST")
    vl.add_argument("--json", action="store_true")
    vl.set_defaults(func=cmd_eval_video_lead)
    lk = esub.add_parser(
        "look", help="a look at new prompts: one motion each, a contact sheet and measured facts",
        description="Generate one motion per prompt as the app does (retrieval, the LLM, clean-up), "
                    "draw a few frames of each as stick figures into OUT/look.png, and measure "
                    "what the words can be checked against (travel forward/left relative to the "
                    "initial facing, speed, share of frames upside down, pelvis height, foot "
                    "heights) into OUT/look.json. Without PROMPT: six wordings never trained on "
                    "(an OOD kind, a count on one foot, backwards slowly, a side).")
    lk.add_argument("prompt", nargs="*", help="prompts (default: backend.evaluation.look.PROMPTS)")
    lk.add_argument("--model", default="mcdpo", choices=["mcdpo", "sft", "novideo"])
    lk.add_argument("--seed", type=int, default=0)
    lk.add_argument("--temperature", type=float, default=TEMPERATURE,
                    help="sampling temperature (default: the app's, %(default)s)")
    lk.add_argument("--no-video-lead", action="store_true", help="the words always lead")
    lk.add_argument("--words-as-typed", action="store_true",
                    help="the LLM reads the prompts as typed (no restating of unseen words)")
    lk.add_argument("--frames", type=int, default=8, help="frames drawn per motion")
    lk.add_argument("--out", help="output folder (default: data/look under the data folder)")
    lk.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    lk.add_argument("--json", action="store_true", help="print the facts as JSON (last line)")
    lk.set_defaults(func=cmd_eval_look)
    pd = esub.add_parser(
        "paired", help="two protocol rows compared repeat by repeat (A - B with a t interval)",
        description="Read two rows of `eval generation --resume` folders and print, per split and "
                    "metric, row A minus row B in each repeat both have finished, their mean and a "
                    "95 %% Student-t interval. Every repeat scores all rows on the same draw of "
                    "captions and crops, so the paired difference leaves the draw's own spread out "
                    "(two rows whose mean ± 1.96·std/√n intervals overlap can still differ in every "
                    "repeat). Nothing is generated; it takes a second.",
        epilog="example: python -m backend eval paired docs/protocol41r 'McDPO + random video' "
               "'SFT + random video' --splits ood")
    pd.add_argument("folder", help="an `eval generation --resume` folder holding row A (and B)")
    pd.add_argument("row_a", help="row A, by the start of its name (e.g. 'McDPO + random video')")
    pd.add_argument("row_b", help="row B, by the start of its name")
    pd.add_argument("--folder-b", help="the folder holding row B, when another run made it with the "
                                       "same seed and motions (default: FOLDER)")
    pd.add_argument("--splits", default="test,ood", help="comma-separated splits (default %(default)s)")
    pd.add_argument("--metrics", default="fid,r_top1,r_top3,mm_dist,diversity",
                    help="comma-separated metrics (default %(default)s)")
    pd.add_argument("--json", action="store_true", help="print the figures as JSON on the last line")
    pd.set_defaults(func=cmd_eval_paired)
    e = esub.add_parser("retrieval", help="text -> video R@1/5/10 and median rank",
                                  description="Held-out captions against held-out videos, for "
                                              "object-only, action-only, fixed 0.5/0.5, the "
                                              "trained router, and the action channel and the "
                                              "router re-ranked by the captions' cues, by the "
                                              "kinds of a chained query's parts, and (with a kind "
                                              "reader) by the kinds read from the words too.")
    e.add_argument("--retriever", help="retriever folder (default: checkpoints/retriever)")
    e.add_argument("--kind-reader", default="shipped", metavar="DIR",
                   help="kind reader folder for the read-kind rows (default: shipped, "
                        "checkpoints/kind-reader when there; none: leave those rows out)")
    e.add_argument("--db-dir", help="captioned database folder (default: the embedded one)")
    e.add_argument("--split", default="test")
    e.add_argument("--scene-words", action="store_true",
                   help="query with every caption followed by what its video looks like (clothes' "
                        "colour, wall, floor: backend/retrieval/scene.py), as real video captions "
                        "say it; default: the captions as stored, motion words only")
    e.add_argument("--rerank-weight", type=float, default=None, metavar="W",
                   help="score per agreeing cue in the re-ranked rows (default: the retriever's, "
                        "backend/retrieval/rerank.py RERANK_WEIGHT); pick it on --split train")
    e.add_argument("--chain-weight", type=float, default=None, metavar="W",
                   help="score added to a video showing every part's kind of a chained query "
                        "(\"A, then B\") in the chain re-ranked rows (default: CHAIN_WEIGHT in "
                        "backend/retrieval/rerank.py); pick it on --split train")
    e.add_argument("--read-weight", type=float, default=None, metavar="W",
                   help="the same in the read-kind rows, where every query's kinds are read from "
                        "its words and its videos (default: READ_WEIGHT in backend/retrieval/rerank.py); "
                        "pick it on --split train")
    e.add_argument("--json", action="store_true")
    e.set_defaults(func=cmd_eval_retrieval)
    rg = esub.add_parser("read-gate", help="how the read lead's gate leads the database's held-out caption parts",
                         description="Read every caption part of a database split with the kind reader and "
                                     "count, per gate, the parts the read lead would lead (their reading names "
                                     "a kind the generator knows only from videos at >= gate): led by their "
                                     "own kind (right), by another (wrong; 'known': parts of a kind the "
                                     "generator writes from words), net = right - wrong, and the share of "
                                     "video-only-kind parts caught (backend/generation/video_lead.py "
                                     "lead_gates; docs/lab-notebook.md, *Named turns and mirror images*); once for the "
                                     "reader's readings alone and once for those retrieval backs "
                                     "(VideoRetriever.backed_reads; tried, not shipped: docs/lab-notebook.md, *Backed reading*).")
    rg.add_argument("--split", default="test", help="database split (default: test, the held-out captions; "
                                                    "the reader learned the train ones)")
    rg.add_argument("--gates", type=float, nargs="+", default=[0.0, 0.2, 0.3, 0.4, 0.5, 0.6],
                    help="gates to count (default: %(default)s)")
    rg.add_argument("--kind-reader", metavar="DIR", help="kind reader folder (default checkpoints/kind-reader)")
    rg.add_argument("--backed", action=argparse.BooleanOptionalAction, default=True,
                    help="also count the readings the part's own videos back (docs/lab-notebook.md, *Backed reading*; "
                         "needs the retriever; default: %(default)s)")
    rg.add_argument("--db-dir", help="captioned database folder (default: the embedded one)")
    rg.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    rg.add_argument("--json", action="store_true", help="print the figures as JSON (last line)")
    rg.set_defaults(func=cmd_eval_read_gate)
    sd = esub.add_parser("sides", help="where left/right is lost: pose detector, video side, text side",
                         description="Three numbers for the retriever's side problem: how often the "
                                     "pose detector's left/right order matches the rendered truth, "
                                     "how far a video's action embedding is from its mirror image's, "
                                     "and how far a caption's predicate embedding is from its mirror "
                                     "caption's (backend/retrieval/side_probe.py).")
    sd.add_argument("--retriever", help="retriever folder (default: checkpoints/retriever)")
    sd.add_argument("--db-dir", help="captioned database folder (default: the embedded one)")
    sd.add_argument("--split", default="test", help="split of the mirror comparisons (default: test)")
    sd.add_argument("--limit", type=int, default=0, help="judge the detector on the first N videos (0 = all)")
    sd.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    sd.add_argument("--json", action="store_true", help="print the figures as JSON (last line)")
    sd.set_defaults(func=cmd_eval_sides)
