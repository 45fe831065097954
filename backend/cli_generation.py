"""Command-line commands of the generation half (motion LLM, SFT, McDPO):

    python -m backend train sft [--video gemini|none]   stage 1 (and the no-video baseline)
    python -m backend train mcdpo                       stage 2 on the SFT model
    python -m backend generate "TEXT" --out DIR         one motion with its exports
    python -m backend bench generate                    text -> motion latency vs the naive path
"""
from __future__ import annotations

import json
from pathlib import Path


def _ship(model, name: str) -> None:
    from backend.cli import _ship as ship

    ship(model, name, "float32")


def _model_config(args, codebook: int):
    from backend.models.motion_llm import MotionLLMConfig

    from backend.models.motion_llm import MLP_TARGETS, POSE_DIM, _default_targets

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


def _common(args, need_retriever: bool = True):
    import torch

    from backend.data.dataset import open_corpus
    from backend.models.vqvae import MotionVQVAE
    from backend.paths import checkpoints_dir
    from backend.retrieval.service import VideoRetriever

    torch.set_num_threads(args.threads)
    corpus = open_corpus(args.data)
    vqvae = MotionVQVAE.from_pretrained(checkpoints_dir() / "vqvae").eval()
    retriever = VideoRetriever.open("embedded") if need_retriever else None
    return corpus, vqvae, retriever


# ------------------------------------------------------------------------------------- SFT
def cmd_train_sft(args) -> int:
    import random

    from backend.models.motion_llm import MotionLLM
    from backend.paths import data_home
    from backend.retrieval.service import VideoRetriever
    from backend.train.curves import plot_llm_curves
    from backend.train.motion_llm import (LLMTrainConfig, VideoBank, build_examples,
                                          self_video_ids, train_sft)

    corpus, vqvae, retriever = _common(args, need_retriever=args.video != "none")
    name = "novideo" if args.video == "none" else "sft"
    work = Path(args.workdir) if args.workdir else data_home() / "runs" / f"llm-{name}"
    examples = build_examples(corpus, vqvae, retriever, args.video, work.parent)
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
    model = MotionLLM(_model_config(args, vqvae.config.nb_code))
    if args.init_from and not (work / "state.pt").is_file():
        _warm_start(model, Path(args.init_from))
    cfg = LLMTrainConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, threads=args.threads,
                         ckpt_every=args.ckpt_every, seed=args.seed, val_every=args.val_every,
                         patience=args.patience, self_video=args.self_video if selfs else 0.0,
                         caption_drop=args.caption_drop)
    model = train_sft(model, examples, videos, cfg, work, resume=not args.no_resume,
                      val_examples=val_first, self_videos=selfs)
    model.save_pretrained(work / "model")
    print(f"Model saved in {work / 'model'}")
    if args.curves:
        print(f"Learning curves: {plot_llm_curves(work / 'log.jsonl', args.curves, 'SFT')}")
    if args.ship:
        _ship(model, f"llm-{name}")
    return 0


def _warm_start(model, folder: Path) -> None:
    """Start from a trained model's tensors (same base, vocabulary and prefix); LoRA modules
    the new model adds start at zero, so training continues from the same function."""
    from backend.models.pretrained import load_folder
    from backend.models.motion_llm import MotionLLMConfig

    config, state = load_folder(folder, MotionLLMConfig, "MotionLLM")
    for name in ("base", "codebook_size", "num_prefix", "lora_r", "lora_alpha", "tokenizer"):
        if getattr(config, name) != getattr(model.config, name):
            raise ValueError(f"--init-from {folder}: its {name} is {getattr(config, name)!r}, "
                             f"this model's {getattr(model.config, name)!r}")
    fresh = model.load_trainable_state_dict(state, partial=True)
    print(f"warm start from {folder}: {len(state)} tensors loaded, {len(fresh)} new (zero-start LoRA)")


# ----------------------------------------------------------------------------------- McDPO
def cmd_train_mcdpo(args) -> int:
    import random

    import numpy as np

    from backend.models.evaluator import TextMotionEvaluator
    from backend.models.motion_llm import MotionLLM
    from backend.paths import checkpoints_dir, data_home
    from backend.train.motion_llm import (Example, LLMTrainConfig, Preference, build_examples,
                                          make_preferences, train_mcdpo)

    corpus, vqvae, retriever = _common(args)
    work = Path(args.workdir) if args.workdir else data_home() / "runs" / "llm-mcdpo"
    work.mkdir(parents=True, exist_ok=True)
    sft_dir = Path(args.sft) if args.sft else checkpoints_dir() / "llm-sft"
    prefs_file = work / "preferences.json"

    def row(p):
        return {"text": p.text, "video_id": p.video_id, "chosen": np.asarray(p.chosen).tolist(),
                "rejected": np.asarray(p.rejected).tolist(), "reward_gap": p.reward_gap,
                "random_video": p.random_video}

    def save(state):                               # {"processed": n prompts, "done": bool, "prefs": [...]}
        tmp = prefs_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state))
        tmp.replace(prefs_file)

    state = {"processed": 0, "done": False, "prefs": []}
    if prefs_file.is_file() and not args.no_resume:
        state = json.loads(prefs_file.read_text())
        if isinstance(state, list):                # an older, finished file
            state = {"processed": len(state), "done": True, "prefs": state}
    if not state["done"]:
        examples = build_examples(corpus, vqvae, retriever, "gemini", work.parent)
        rng = random.Random(args.seed)
        rng.shuffle(examples)
        examples = examples[:args.prompts]
        n_rand = int(round(args.random_share * len(examples)))
        ids = retriever.db.ids
        for e in examples[:n_rand]:            # bad priors: the model must learn to ignore them
            e.video_id, e.random_video = ids[rng.randrange(len(ids))], True
        random.Random(args.seed + 1).shuffle(examples)   # random videos spread over the chunks
        sft = MotionLLM.from_pretrained(sft_dir)
        if sft.config.tokenizer != "vqvae":
            raise SystemExit(f"{sft_dir} writes codes of {sft.config.tokenizer!r}; McDPO needs an "
                             "SFT model trained on checkpoints/vqvae")
        evaluator = TextMotionEvaluator.from_pretrained(checkpoints_dir() / "evaluator")
        gt = {e.mid: corpus.features(e.mid) for e in examples}
        chunk = 128
        if state["processed"]:
            print(f"resuming candidate sampling after {state['processed']} prompts")
        for s in range(state["processed"], len(examples), chunk):
            part = examples[s:s + chunk]
            new = make_preferences(sft, part, retriever, evaluator, vqvae, corpus.normalizer, gt,
                                   kappa=args.kappa, w_l=args.w_l, w_d=args.w_d,
                                   temperature=args.temperature, seed=args.seed * 7919 + s)
            state["prefs"] += [row(p) for p in new]
            state["processed"] = s + len(part)
            save(state)
            print(f"  {state['processed']}/{len(examples)} prompts sampled, {len(state['prefs'])} pairs")
        state["done"] = True
        save(state)
    prefs = [Preference(r["text"], r["video_id"], np.array(r["chosen"]), np.array(r["rejected"]),
                        r["reward_gap"], r["random_video"]) for r in state["prefs"]]
    print(f"{len(prefs)} preference pairs ({sum(p.random_video for p in prefs)} with random videos)")
    policy = MotionLLM.from_pretrained(sft_dir)
    reference = MotionLLM.from_pretrained(sft_dir)
    cfg = LLMTrainConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, threads=args.threads,
                         warmup=min(20, args.steps // 5), ckpt_every=args.ckpt_every, log_every=1)
    model = train_mcdpo(policy, reference, prefs, retriever, cfg, work, beta=args.beta,
                        resume=not args.no_resume)
    model.save_pretrained(work / "model")
    print(f"Model saved in {work / 'model'}")
    if args.curves:
        from backend.train.curves import plot_llm_curves

        print(f"Learning curves: {plot_llm_curves(work / 'log.jsonl', args.curves, 'McDPO')}")
    if args.ship:
        _ship(model, "llm-mcdpo")
    return 0


# -------------------------------------------------------------------------------- generate
def check_generate_args(args) -> None:
    """Everything about the request that can be wrong, checked before any model loads (which
    takes a minute): the prompt, seed, temperature, top-k, formats and the output folder."""
    import tempfile

    from backend.pipeline import check_length, check_sampling
    from core.prompt import clean_prompt
    from viewer.export import parse_formats

    clean_prompt(args.text)                         # PromptError (a ValueError) explains
    check_sampling(args.seed, args.temperature, args.top_k)
    check_length(args.length)
    parse_formats(args.formats)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file, not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as exc:
        raise ValueError(f"cannot write to --out {out}: {exc.strerror or exc}") from None


def cmd_generate(args) -> int:
    import time

    import numpy as np

    from backend.pipeline import VimoRAGPipeline
    from viewer.export import export_motion

    check_generate_args(args)
    t0 = time.perf_counter()
    pipe = VimoRAGPipeline.load(models=(args.model,), evaluator=False)
    load_s = time.perf_counter() - t0
    retrieval = "given" if args.video else args.retrieval
    res = pipe.generate(args.text, model=args.model, retrieval=retrieval, seed=args.seed,
                        temperature=args.temperature, top_k=args.top_k, video_id=args.video,
                        length_s=args.length, in_place=args.in_place, plant_feet=not args.no_foot_lock)
    if res.truncated:
        print(f"note: the prompt was shortened to {len(res.text)} characters")
    for h in res.hits[:args.k]:
        print(f"  retrieved #{h.rank}: {h.id}  score {h.score:.3f} (action {h.action_score:.3f} x "
              f"{h.w_action:.2f}, object {h.object_score:.3f} x {h.w_object:.2f})")
    if res.video_id:
        print(f"video prior: {res.video_id}")
    warn = pipe.servability_warning(res) if retrieval == "gemini" else None
    if warn:
        print(f"warning: {warn}")
    t1 = time.perf_counter()
    files = export_motion(res.joints, args.out, args.formats.split(","), stem=args.stem,
                          clean=False, bvh_units=args.bvh_units)   # res.joints are clean already
    export_s = time.perf_counter() - t1
    np.save(Path(args.out) / f"{args.stem}_codes.npy", res.codes)
    print(f"{len(res.codes)} motion tokens -> {res.seconds:.1f} s of motion; retrieval "
          f"{res.timing['retrieval']:.3f} s, generation {res.timing['generation']:.3f} s, decoding "
          f"{res.timing['decoding']:.3f} s; export {export_s:.1f} s; loading {load_s:.1f} s")
    for fmt, p in files.items():
        print(f"  {fmt}: {p}")
    if args.json:
        out = res.summary()
        out["files"] = {k: str(v) for k, v in files.items()}
        out["timing_s"].update(export=round(export_s, 3), load=round(load_s, 2))
        print(json.dumps(out))
    return 0


def cmd_bench_generate(args) -> int:
    from backend.bench_generate import bench_generate, format_bench_generate

    res = bench_generate(repeats=args.repeats, seconds=args.seconds, threads=args.threads)
    print(format_bench_generate(res))
    if args.json:
        print(json.dumps(res))
    return 0


# ---------------------------------------------------------------------------------- parsers
def register(sub, groups: dict) -> None:
    def common(p, steps, lr, batch):
        p.add_argument("--data", help="HumanML3D-layout folder (default: the embedded corpus)")
        p.add_argument("--config", choices=["embedded", "phi3"], default="embedded",
                       help="embedded = Gemma 3 270M from its package; phi3 = --base DIR with the "
                            "paper's LoRA (r=128, alpha=256)")
        p.add_argument("--base", help="local Hugging Face causal-LM folder (for --config phi3)")
        p.add_argument("--steps", type=int, default=steps)
        p.add_argument("--batch-size", type=int, default=batch)
        p.add_argument("--lr", type=float, default=lr)
        p.add_argument("--threads", type=int, default=2)
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--ckpt-every", type=int, default=50)
        p.add_argument("--workdir", help="run folder with log.jsonl and resumable state")
        p.add_argument("--no-resume", action="store_true")
        p.add_argument("--ship", action="store_true", help="save to checkpoints/ + MANIFEST")
        p.add_argument("--curves", help="write the learning curves to this PNG (e.g. docs/sft_curves.png)")

    s = groups["train"].add_parser(
        "sft", help="motion LLM stage 1: supervised fine-tuning",
        description="Each training caption + its rank-1 Gemini-MVR video (cached) -> ground-truth "
                    "VQ tokens. --video none trains the no-video baseline (MotionGPT-style row). "
                    "Resumable; runs through accelerate (`accelerate launch` scales it).")
    common(s, 1000, 3e-4, 8)
    s.add_argument("--video", choices=["gemini", "none"], default="gemini")
    s.add_argument("--prefix-frames", type=int, default=16,
                   help="video prefix: one embedding per sampled frame of the retriever's per-frame "
                        "features (16 = unpooled), plus the object slot")
    s.add_argument("--self-video", type=float, default=0.5,
                   help="share of captions shown the video of their own motion (needs `videos self`)")
    s.add_argument("--caption-drop", type=float, default=0.0,
                   help="share of the self-video pairs whose caption is replaced by a neutral one, "
                        "so only the video's poses tell the motion")
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
    m = groups["train"].add_parser(
        "mcdpo", help="motion LLM stage 2: McDPO on the SFT model",
        description="Sample KAPPA candidates per prompt from the SFT model, score them with the "
                    "evaluator (reward = -(w_l l/sum l + w_d d/sum d)), keep best/worst as a "
                    "preference pair and train with DPO against the frozen SFT model. A share of "
                    "prompts get random videos.")
    common(m, 200, 5e-5, 8)
    m.add_argument("--sft", help="SFT model folder (default: checkpoints/llm-sft)")
    m.add_argument("--prompts", type=int, default=800)
    m.add_argument("--kappa", type=int, default=4)
    m.add_argument("--random-share", type=float, default=0.3)
    m.add_argument("--w-l", type=float, default=0.9)
    m.add_argument("--w-d", type=float, default=0.1)
    m.add_argument("--beta", type=float, default=0.1)
    m.add_argument("--temperature", type=float, default=1.0)
    m.set_defaults(func=cmd_train_mcdpo)

    g = sub.add_parser(
        "generate", help="text -> motion (+ BVH/FBX/GLB/MP4/NPY)",
        description="Retrieve a video for TEXT, generate motion tokens with the motion LLM, decode "
                    "them and export. Prints the retrieved video, router weights and timing.")
    g.add_argument("text", metavar="TEXT")
    g.add_argument("--model", choices=["mcdpo", "sft", "novideo"], default="mcdpo")
    g.add_argument("--retrieval", choices=["gemini", "random", "none", "object"], default="gemini")
    g.add_argument("--video", help="use this database video id as the prior (skips retrieval)")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--temperature", type=float, default=1.0)
    g.add_argument("--top-k", type=int, default=0, help="sample from the k likeliest tokens (0 = all)")
    g.add_argument("--k", type=int, default=5, help="retrieved videos to list")
    g.add_argument("--length", type=float, default=0.0,
                   help="clip length in seconds, 1 to 9.8 (0 = the model decides)")
    g.add_argument("--in-place", action="store_true",
                   help="remove the horizontal travel (the pelvis stays over its start)")
    g.add_argument("--no-foot-lock", action="store_true",
                   help="do not pin feet while in contact (foot locking is on by default)")
    g.add_argument("--bvh-units", choices=["cm", "m"], default="cm",
                   help="length unit of the BVH file (Blender and Mixamo expect cm)")
    g.add_argument("--formats", default="bvh,fbx,glb,mp4,npy")
    g.add_argument("--stem", default="motion", help="file name stem")
    g.add_argument("--out", required=True, help="output folder")
    g.add_argument("--json", action="store_true")
    g.set_defaults(func=cmd_generate)

    b = groups["bench"].add_parser(
        "generate", help="median text -> motion latency vs the naive path",
        description="Retrieval + generation + decoding (no rendering) of a SECONDS-long motion, "
                    "against the naive path (full-vocabulary head, no KV cache).")
    b.add_argument("--repeats", type=int, default=10)
    b.add_argument("--seconds", type=float, default=4.0)
    b.add_argument("--threads", type=int, default=2)
    b.add_argument("--json", action="store_true")
    b.set_defaults(func=cmd_bench_generate)


__all__ = ["register"]
