"""The embedded motion corpus: pybullet's real mocap clips, augmented and captioned, written in
the HumanML3D folder layout so that one loader serves it and the real HumanML3D.

Each motion is a *program* of 1-3 segments (a kind of motion, repetitions, limb side, turn
direction, speed). A program is realised from the retargeted clips with mirroring, tempo
0.75-1.33x, sub-windows of long clips, repetitions, curved paths and smooth blends between
segments, then described by ``captions.caption_set``. Everything is seeded: the same seed
gives the same corpus, byte for byte.

Splits: motions made only of in-distribution kinds go to train / val / test; every motion
containing an OOD kind (cartwheel, backflip, crawl, roll) goes to one of two disjoint OOD
halves, so those kinds never appear in any train/val/test pair: ``ood_judge`` trains only the
judges (the evaluator and the instruction checker, never the generator) and ``ood`` is what
every OOD table evaluates on. Val/test/OOD captions draw mostly on held-out
phrasings (see ``captions``).

``n_extra`` > 0 adds a ``train_extra`` split: more in-distribution motions, captioned with the
train phrasings, drawn after every other index (so the other splits, their captions and the
normaliser stay byte for byte what they were). Only the generator's SFT reads it (``train sft
--extra-train``); the tokenizer, the judges and the normaliser keep to ``train``.
"""
from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from backend.data.captions import caption_set
from backend.data.mocap import BaseClip, Clip, blend, load_base_clips, mirror_label
from motioncore.features import features_to_joints, joints_to_features, mean_std
from motioncore.skeleton import FPS

CORPUS_VERSION = 2   # 2: HumanML3D-exact heading (motioncore.features), OOD split in two halves
IN_DIST_KINDS = ("walk", "turn", "run", "jump", "kick", "punch", "spin", "spinkick",
                 "dance_a", "dance_b", "getup_facedown", "getup_faceup")
OOD_KINDS = ("cartwheel", "backflip", "crawl", "roll")
CYCLIC = {"walk", "turn", "run", "crawl"}          # repetitions read as distance, paths may curve
WINDOWABLE = {"walk", "run", "crawl", "dance_a", "dance_b", "spin"}
MAX_REPS = {"walk": 4, "turn": 3, "run": 5, "jump": 3, "kick": 3, "punch": 3, "spin": 2,
            "spinkick": 3, "dance_a": 3, "dance_b": 2, "getup_facedown": 1, "getup_faceup": 1,
            "cartwheel": 2, "backflip": 3, "crawl": 3, "roll": 3}
MIN_SECONDS, MAX_SECONDS = 2.0, 10.0


@dataclass
class CorpusConfig:
    n_in_dist: int = 3300
    n_ood: int = 500
    seed: int = 2025
    val_fraction: float = 0.05
    test_fraction: float = 0.15
    captions_per_motion: int = 3
    n_extra: int = 0          # train_extra: more generator-only train motions (see the docstring)


def _speed(tempo: float) -> str:
    return "slow" if tempo < 0.88 else "fast" if tempo > 1.14 else "normal"


def realise_segment(kind: str, clips: dict[str, list[BaseClip]], rng: np.random.Generator,
                    reps: int | None = None) -> tuple[Clip, dict]:
    """One segment of ``kind``: pick a source clip, augment it, return it with its label."""
    base = clips[kind][rng.integers(len(clips[kind]))]
    tempo = float(rng.uniform(0.75, 1.33))
    clip = base.clip.retime(tempo)
    side, turn = base.side, base.turn
    if kind in WINDOWABLE and clip.duration > 1.6 and rng.random() < 0.5:
        n = len(clip)
        length = int(rng.integers(max(int(0.6 * n), 8), n + 1))
        start = int(rng.integers(0, n - length + 1))
        clip = clip.window(start, start + length)
    if reps is None:
        reps = int(rng.integers(1, MAX_REPS[kind] + 1))
    clip = clip.repeated(reps, base.loops)
    if kind in ("walk", "run", "crawl") and rng.random() < 0.35:
        turn = "left" if rng.random() < 0.5 else "right"
        rate = float(rng.uniform(0.35, 0.8)) * (1 if turn == "left" else -1)
        clip = clip.curved(rate)
    if rng.random() < 0.5:
        clip = clip.mirrored()
        side, turn = mirror_label(side), mirror_label(turn)
    label = {"action": kind, "reps": reps, "side": side, "turn": turn, "speed": _speed(tempo)}
    return clip, label


def realise_program(kinds: list[str], clips, rng, min_seconds: float = MIN_SECONDS,
                    max_seconds: float = MAX_SECONDS) -> tuple[Clip, list[dict]]:
    """Segments of ``kinds`` blended one after another, lasting min..max seconds. Draws again
    when the length is off (single repetitions after a few long draws, the most repetitions
    after a few short ones); drops the last segment if that still fails."""
    too_long = 0
    for attempt in range(24):
        if attempt < 8:
            reps = [None] * len(kinds)
        else:
            reps = [1 if too_long > 4 else MAX_REPS[k] for k in kinds]
        parts = [realise_segment(k, clips, rng, reps=r) for k, r in zip(kinds, reps)]
        motion = parts[0][0]
        for clip, _ in parts[1:]:
            motion = blend(motion, clip)
        if min_seconds <= motion.duration <= max_seconds:
            return motion, [label for _, label in parts]
        too_long += motion.duration > max_seconds
    if len(kinds) > 1:
        return realise_program(kinds[:-1], clips, rng, min_seconds, max_seconds)
    raise RuntimeError(f"could not realise a {min_seconds}-{max_seconds} s motion for {kinds}")


def draw_kinds(rng: np.random.Generator, ood: bool) -> list[str]:
    n = int(rng.choice([1, 2, 3], p=[0.5, 0.35, 0.15]))
    kinds = [str(k) for k in rng.choice(IN_DIST_KINDS, size=n)]
    if ood:
        slot = int(rng.integers(n)) if n > 1 and rng.random() < 0.5 else 0
        kinds = kinds if n > 1 and rng.random() < 0.5 else kinds[:1]
        slot = min(slot, len(kinds) - 1)
        kinds[slot] = str(rng.choice(OOD_KINDS))
    # Getting up only makes sense first; spread it there.
    for getup in ("getup_facedown", "getup_faceup"):
        if getup in kinds[1:]:
            kinds.remove(getup)
            kinds.insert(0, getup)
    return kinds


def make_motion(index: int, ood: bool, cfg: CorpusConfig, clips) -> dict:
    rng = np.random.default_rng([cfg.seed, index])
    kinds = draw_kinds(rng, ood)
    clip, segments = realise_program(kinds, clips, rng)
    joints = clip.joints()
    feats = joints_to_features(joints)
    return {"segments": segments, "features": feats, "joints": features_to_joints(feats)}


def assign_splits(n_in: int, n_ood: int, cfg: CorpusConfig) -> dict[str, list[int]]:
    order = np.random.default_rng([cfg.seed, 7]).permutation(n_in)
    n_val = int(round(cfg.val_fraction * n_in))
    n_test = int(round(cfg.test_fraction * n_in))
    ood = n_in + np.random.default_rng([cfg.seed, 8]).permutation(n_ood)
    splits = {"val": sorted(order[:n_val].tolist()),
              "test": sorted(order[n_val:n_val + n_test].tolist()),
              "train": sorted(order[n_val + n_test:].tolist()),
              "ood_judge": sorted(ood[:n_ood // 2].tolist()),
              "ood": sorted(ood[n_ood // 2:].tolist())}
    if cfg.n_extra:
        splits["train_extra"] = list(range(n_in + n_ood, n_in + n_ood + cfg.n_extra))
    return splits


def motion_id(index: int) -> str:
    return f"{index:06d}"


def build_corpus(out_dir: str | Path, cfg: CorpusConfig = CorpusConfig(), progress: bool = True) -> Path:
    """Write the corpus to ``out_dir`` atomically (built in a temporary sibling, then renamed)."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    clips: dict[str, list[BaseClip]] = {}
    for b in load_base_clips():
        clips.setdefault(b.kind, []).append(b)
    splits = assign_splits(cfg.n_in_dist, cfg.n_ood, cfg)
    split_of = {i: s for s, ids in splits.items() for i in ids}
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    try:
        for sub in ("new_joint_vecs", "new_joints", "texts"):
            (tmp / sub).mkdir()
        programs, train_feats = [], []
        total = cfg.n_in_dist + cfg.n_ood + cfg.n_extra
        for i in tqdm(range(total), desc="building motion corpus", disable=not progress,
                      unit="motion"):
            m = make_motion(i, ood=cfg.n_in_dist <= i < cfg.n_in_dist + cfg.n_ood, cfg=cfg, clips=clips)
            mid = motion_id(i)
            np.save(tmp / "new_joint_vecs" / f"{mid}.npy", m["features"])
            np.save(tmp / "new_joints" / f"{mid}.npy", m["joints"])
            split = split_of[i]
            rng = random.Random(cfg.seed * 1_000_003 + i)
            caps = caption_set(m["segments"], rng, n=cfg.captions_per_motion,
                               held_out=split not in ("train", "train_extra"))
            duration = len(m["features"]) / FPS
            (tmp / "texts" / f"{mid}.txt").write_text(
                "".join(f"{text}#{' '.join(tokens)}#0.0#0.0\n" for text, tokens in caps))
            programs.append({"id": mid, "split": split, "seconds": round(duration, 2),
                             "segments": m["segments"]})
            if split == "train":
                train_feats.append(m["features"])
        mean, std = mean_std(train_feats)
        np.save(tmp / "Mean.npy", mean)
        np.save(tmp / "Std.npy", std)
        for split, ids in splits.items():
            (tmp / f"{split}.txt").write_text("".join(motion_id(i) + "\n" for i in ids))
        (tmp / "all.txt").write_text("".join(motion_id(i) + "\n" for i in range(total)))
        with open(tmp / "programs.jsonl", "w") as fh:
            for p in programs:
                fh.write(json.dumps(p) + "\n")
        config = asdict(cfg)
        if not cfg.n_extra:
            del config["n_extra"]      # a corpus without extras keeps the BUILD.json it always had
        (tmp / "BUILD.json").write_text(json.dumps(
            {"version": CORPUS_VERSION, "config": config,
             "counts": {s: len(ids) for s, ids in splits.items()},
             "ood_kinds": list(OOD_KINDS), "in_dist_kinds": list(IN_DIST_KINDS)}, indent=2))
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def corpus_is_built(folder: str | Path) -> bool:
    meta = Path(folder) / "BUILD.json"
    if not meta.is_file():
        return False
    try:
        return json.loads(meta.read_text()).get("version") == CORPUS_VERSION
    except ValueError:
        return False
