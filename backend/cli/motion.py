"""``python -m backend generate|export|body``: text -> motion with its files, exporting a
motion, and body-model utilities."""
from __future__ import annotations

import json
from pathlib import Path

from backend.cli.common import command_group
from backend.defaults import GUIDANCE as DEFAULT_GUIDANCE
from backend.defaults import TEMPERATURE as DEFAULT_TEMPERATURE
from motioncore.skeleton import FPS


def check_generate_args(args) -> None:
    """Everything about the request that can be wrong, checked before any model loads (which
    takes a minute): the prompt, seed, temperature, top-k, formats and the output folder."""
    import tempfile

    from backend.pipeline import check_length, check_sampling
    from motioncore.prompt import clean_prompt
    from viewer.export import parse_formats

    clean_prompt(args.text)                         # PromptError (a ValueError) explains
    check_sampling(args.seed, args.temperature, args.top_k, args.guidance)
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
                        length_s=args.length, in_place=args.in_place, plant_feet=not args.no_foot_lock,
                        guidance=args.guidance, video_lead=not args.no_video_lead,
                        compose=not args.whole_prompt, restate=not args.words_as_typed,
                        pick=not args.one_sample)
    if res.truncated:
        print(f"note: the prompt was shortened to {len(res.text)} characters")
    for h in res.hits[:args.k]:
        print(f"  retrieved #{h.rank}: {h.id}  score {h.score:.3f} (action {h.action_score:.3f} x "
              f"{h.w_action:.2f}, object {h.object_score:.3f} x {h.w_object:.2f}; cues {h.cues:+.0f})")
    if res.video_id and not res.parts:
        print(f"video prior: {res.video_id}" + (f" (it led the words at weight {res.video_lead:.2f}: they "
                                                 "name a motion the model knows only from videos)"
                                                 if res.video_lead > 0 else ""))
    for i, p in enumerate(res.parts, 1):
        print(f"part {i} of {len(res.parts)}: \"{p['text']}\" -> {p['tokens']} tokens, video {p['video_id']}"
              + (f", lead {p['video_lead']:.2f}" if p["video_lead"] > 0 else "")
              + (f"; read as \"{p['read_as']}\"" if p["read_as"] else "")
              + (" (no side named for the turn)" if p.get("open_turn") else "")
              + (f"; picked sample {p['pick']['chosen'] + 1} of {p['pick']['samples']}" if p.get("pick") else "")
              + (" (the pose reader's draft)" if (p.get("pick") or {}).get("reader") else "")
              + (" (its mirror image)" if (p.get("pick") or {}).get("mirror") else ""))
    if not res.parts and res.read_as and res.read_as[0]:
        why = ("the words name no side for the turn" if res.open_turns and res.open_turns[0]
               else "words the model never saw, said in its training words")
        print(f"read as: \"{res.read_as[0]}\" ({why})")
    if not res.parts and res.picks and res.picks[0]:
        pk = res.picks[0]
        print(f"picked sample {pk['chosen'] + 1} of {pk['samples']} (the picker sees {pk['score']:.0%} of what "
              "the words ask in it" + ("; the pose reader's draft, read off the video's poses" if pk.get("reader") else "")
              + ("; its mirror image, turning the way the words ask" if pk.get("mirror") else "") + ")")
    warn = pipe.servability_warning(res) if retrieval == "gemini" else None
    if warn:
        print(f"warning: {warn}")
    t1 = time.perf_counter()
    files = export_motion(res.joints, args.out, args.formats.split(","), stem=args.stem,
                          clean=False, bvh_units=args.bvh_units)   # res.joints are clean already
    export_s = time.perf_counter() - t1
    np.save(Path(args.out) / f"{args.stem}_codes.npy", res.codes)
    print(f"{len(res.codes)} motion tokens -> {res.seconds:.1f} s of motion; retrieval "
          f"{res.timing['retrieval']:.3f} s, reading {res.timing.get('reading', 0.0):.3f} s, generation {res.timing['generation']:.3f} s, decoding "
          f"{res.timing['decoding']:.3f} s; export {export_s:.1f} s; loading {load_s:.1f} s")
    for fmt, p in files.items():
        print(f"  {fmt}: {p}")
    if args.json:
        out = res.summary()
        out["files"] = {k: str(v) for k, v in files.items()}
        out["timing_s"].update(export=round(export_s, 3), load=round(load_s, 2))
        print(json.dumps(out))
    return 0


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


def cmd_body_convert(args) -> int:
    from viewer.body import convert_smpl_pkl

    out = convert_smpl_pkl(args.src, args.dst)
    print(f"Wrote {out}; the viewer uses it when it lies in checkpoints/body_models/smpl/")
    return 0


def add(sub) -> None:
    """Add these commands to the top-level parser."""
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
    p.add_argument("--fps", type=float, default=FPS)
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
    bsub = command_group(sub, "body", "body-model utilities (SMPL files you bring yourself)")
    c = bsub.add_parser(
        "convert-pkl", help="convert an official SMPL .pkl to a plain .npz",
        description="The official SMPL .pkl files hold chumpy objects, and chumpy does not import "
                    "on Python 3.11. This reads them with a restricted unpickler (arrays only; "
                    "anything else is refused) and writes SMPL_NEUTRAL.npz-style arrays. Put the "
                    "result at checkpoints/body_models/smpl/SMPL_NEUTRAL.npz (or _MALE/_FEMALE).")
    c.add_argument("src", help="e.g. basicmodel_neutral_lbs_10_207_0_v1.1.0.pkl")
    c.add_argument("dst", help="e.g. checkpoints/body_models/smpl/SMPL_NEUTRAL.npz")
    c.set_defaults(func=cmd_body_convert)

    g = sub.add_parser(
        "generate", help="text -> motion (+ BVH/FBX/GLB/MP4/NPY)",
        description="Retrieve a video for TEXT, generate motion tokens with the motion LLM, decode "
                    "them and export. Prints the retrieved video, router weights and timing.")
    g.add_argument("text", metavar="TEXT")
    g.add_argument("--model", choices=["mcdpo", "sft", "novideo"], default="mcdpo")
    g.add_argument("--retrieval", choices=["gemini", "random", "none", "object"], default="gemini")
    g.add_argument("--video", help="use this database video id as the prior (skips retrieval)")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--temperature", type=float, default=DEFAULT_TEMPERATURE,
                   help="sampling temperature (default %(default)s; docs/lab-notebook.md, *Sampling temperature*)")
    g.add_argument("--top-k", type=int, default=0, help="sample from the k likeliest tokens (0 = all)")
    g.add_argument("--guidance", type=float, default=DEFAULT_GUIDANCE, metavar="G",
                   help="text guidance: weigh the words G times more against the video "
                        "(0 = off; default %(default)s)")
    g.add_argument("--no-video-lead", action="store_true",
                   help="the words always lead (by default, when they name a motion the model "
                        "knows only from videos, e.g. a cartwheel, the retrieved video leads them)")
    g.add_argument("--whole-prompt", action="store_true",
                   help="write the prompt whole even when it chains motions (by default \"A, then B\" "
                        "is written part by part, each part with its own retrieved video)")
    g.add_argument("--words-as-typed", action="store_true",
                   help="the model reads the prompt as typed (by default words it never saw in "
                        "training are read by its base LM and said again in its training words; "
                        "the output shows how: \"read as\")")
    g.add_argument("--one-sample", action="store_true",
                   help="one sample per prompt part (by default a part whose words the restater reads "
                        "confidently is sampled several times and the picker keeps the one that does "
                        "most of what they ask; the output says which)")
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
