"""Instruction following: does a motion do what its prompt asks?

The corpus knows what every motion is made of (``programs.jsonl``: kinds, repetitions, limb
side, turn, speed), and its captions say exactly that, so a held-out prompt comes with its
answers. ``asked_attributes`` lists what a prompt asks and can be measured on a motion:

- ``kind``: every kind the prompt names is in the motion;
- ``count``: the repetitions of a counted action ("twice", "three times": jumps, kicks,
  punches, spins, spin-kicks, cartwheels, backflips, rolls);
- ``side``: the limb of a kick, punch or spin-kick (left / right);
- ``direction``: for turning kinds and locomotion, the turn (left / right) or none
  ("walks forward" must not curve);
- ``speed``: only when the prompt says slow or fast.

A kind named twice in one prompt is checked for presence only (its two segments could not be
told apart). ``InstructionChecker`` (``backend/evaluation/checker.py``) reads the answers off the
motion's features; it is trained on real motions and must first be right on held-out real
motions (>= 95 % of attributes) before it judges generators.
"""
from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from backend.checkpoints import save_pretrained_atomic
from backend.data.captions import ALWAYS_TURNING, COUNTED_ACTIONS, SIDE_ACTIONS, TURN_ACTIONS, mirror_segments
from backend.evaluation.checker import KINDS, MAX_REPS, SIDES, SPEEDS, TURNS, CheckerConfig, InstructionChecker
from motioncore.features import joints_to_features, mirror_features

ATTRIBUTES = ("kind", "count", "side", "direction", "speed")


def asked_attributes(segments: list[dict]) -> list[tuple[str, str, object]]:
    """(attribute, kind, expected value) for everything a prompt of these segments asks. A kind
    that always turns (``ALWAYS_TURNING``) with no side named asks no direction: "turns around"
    turns one way or the other, never straight on (every corpus program of such a kind names its
    side, so this only concerns readings of words)."""
    counts = Counter(s["action"] for s in segments)
    out = []
    for kind in dict.fromkeys(s["action"] for s in segments):
        out.append(("kind", kind, True))
        if counts[kind] > 1:
            continue
        seg = next(s for s in segments if s["action"] == kind)
        if kind in COUNTED_ACTIONS and 1 <= int(seg.get("reps") or 1) <= MAX_REPS:
            out.append(("count", kind, int(seg.get("reps") or 1)))
        if kind in SIDE_ACTIONS and seg.get("side") in SIDES:
            out.append(("side", kind, seg["side"]))
        if kind in TURN_ACTIONS and (seg.get("turn") or kind not in ALWAYS_TURNING):
            out.append(("direction", kind, seg.get("turn") or "none"))
        if seg.get("speed") in ("slow", "fast"):
            out.append(("speed", kind, seg["speed"]))
    return out


def check(prediction: dict, asked: list[tuple[str, str, object]]) -> list[tuple[str, bool]]:
    """(attribute, satisfied) for each asked attribute, from ``InstructionChecker.predict``."""
    res = []
    for attr, kind, want in asked:
        k = KINDS.index(kind)
        if attr == "kind":
            ok = prediction["presence"][k] > 0.5
        elif attr == "count":
            ok = int(prediction["reps"][k]) + 1 == want
        elif attr == "side":
            ok = SIDES[int(prediction["side"][k])] == want
        elif attr == "direction":
            ok = TURNS[int(prediction["turn"][k])] == want
        else:
            ok = SPEEDS[int(prediction["speed"][k])] == want
        if attr != "kind":                    # a count, side, turn or speed of a kind not done is not followed
            ok = ok and prediction["presence"][k] > 0.5
        res.append((attr, bool(ok)))
    return res


def score(checker: InstructionChecker, programs: list[list[dict]], features: list[np.ndarray]) -> dict:
    """Share of satisfied attributes, overall and per attribute, over motions and their prompts."""
    preds = checker.predict(features)
    hits: dict[str, list[bool]] = {a: [] for a in ATTRIBUTES}
    by_kind: dict[str, list[bool]] = {}
    for segs, pred in zip(programs, preds):
        asked = asked_attributes(segs)
        for (attr, ok), (_, kind, _) in zip(check(pred, asked), asked):
            hits[attr].append(ok)
            by_kind.setdefault(f"{attr}/{kind}", []).append(ok)
    every = [h for a in ATTRIBUTES for h in hits[a]]
    return {"motions": len(programs), "attributes": len(every),
            "followed": float(np.mean(every)) if every else float("nan"),
            **{f"{a}": (float(np.mean(hits[a])) if hits[a] else None) for a in ATTRIBUTES},
            "counts": {a: len(hits[a]) for a in ATTRIBUTES},
            "by_kind": {k: {"share": float(np.mean(v)), "n": len(v)} for k, v in sorted(by_kind.items())}}


def followed_shares(checker: InstructionChecker, segments: list[list[dict]],
                    features: list[np.ndarray]) -> np.ndarray:
    """Per motion, the share of what its prompt (``segments``) asks that the checker sees in
    ``features``; NaN where the prompt asks nothing checkable. (McDPO's optional reward term.)"""
    if len(segments) != len(features):
        raise ValueError(f"{len(segments)} programs for {len(features)} motions")
    out = np.full(len(features), np.nan)
    for i, (segs, pred) in enumerate(zip(segments, checker.predict(features))):
        hits = [ok for _, ok in check(pred, asked_attributes(segs))]
        if hits:
            out[i] = float(np.mean(hits))
    return out


# The app's example prompts and what each asks that the checker can see: (attribute, kind,
# expected). Kinds the words leave open ("rolls", "turns around", "dances") are checked for
# presence only; "dances" names no single kind of the checker and asks nothing.
EXAMPLE_PROMPTS: list[tuple[str, list[tuple[str, str, object]]]] = [
    ("a person does a cartwheel", [("kind", "cartwheel", True), ("count", "cartwheel", 1)]),
    ("someone does a backflip", [("kind", "backflip", True), ("count", "backflip", 1)]),
    ("a person crawls forward", [("kind", "crawl", True)]),
    ("a person rolls on the ground", [("kind", "roll", True)]),
    ("a person walks forward and then turns around",
     [("kind", "walk", True), ("direction", "walk", "none"), ("kind", "turn", True)]),
    ("someone jumps up twice", [("kind", "jump", True), ("count", "jump", 2)]),
    ("a man kicks with his right leg", [("kind", "kick", True), ("side", "kick", "right")]),
    ("a person dances happily", []),
    ("a person punches forward, then spins", [("kind", "punch", True), ("kind", "spin", True)]),
]


def follow_reward(checker: InstructionChecker, programs: dict[str, list[dict]],
                  video_checker: InstructionChecker | None = None, video_prefix: str = "video-"):
    """McDPO's follow term: a function (motion ids, features) -> ``followed_shares`` of each
    motion's program (``programs[id]``). Ids starting with ``video_prefix`` (video-only pairs:
    a database video's motion, OOD kinds included) are judged by ``video_checker`` (the picker:
    never the evaluation's judge, which learned the OOD kinds' judge half); the rest by
    ``checker``."""
    def follow(mids: list[str], feats: list[np.ndarray]) -> np.ndarray:
        out = np.full(len(mids), np.nan)
        video = np.array([m.startswith(video_prefix) for m in mids], bool)
        if video.any() and video_checker is None:
            raise ValueError("video-only motions need a video_checker (the picker)")
        for sel, judge in ((~video, checker), (video, video_checker)):
            idx = np.flatnonzero(sel)
            if len(idx):
                out[idx] = followed_shares(judge, [programs[mids[i]] for i in idx], [feats[i] for i in idx])
        return out
    return follow


def example_motions(pipeline, model: str, seeds: int = 3, retrieval: str = "gemini",
                    temperature: float = 1.0, top_k: int = 0, guidance: float = 0.0,
                    match_sides: bool = True, video_lead: bool = False, compose: bool = True) -> dict:
    """prompt -> the features of what ``pipeline`` generates for it (cleaned, as users get them),
    one per seed 0..seeds-1, sampled at ``temperature`` (from the ``top_k`` likeliest tokens);
    ``video_lead``: as the app, the video leads words the model only saw in videos."""
    return {prompt: [joints_to_features(pipeline.generate(prompt, model=model, retrieval=retrieval,
                                                          seed=s, temperature=temperature,
                                                          top_k=top_k, guidance=guidance,
                                                          match_sides=match_sides,
                                                          video_lead=video_lead,
                                                          compose=compose).joints)
                     for s in range(seeds)]
            for prompt, _ in EXAMPLE_PROMPTS}


def score_examples(checker: InstructionChecker, motions: dict[str, list[np.ndarray]]) -> dict:
    """Per example prompt (``motions``: prompt -> generated (T, 263) features, one per seed):
    the share of its asked attributes satisfied over the seeds, and per attribute."""
    asked = dict(EXAMPLE_PROMPTS)
    out = {}
    for prompt, feats in motions.items():
        preds = checker.predict(feats)
        per = {f"{attr} {kind}={want}": float(np.mean([check(p, [(attr, kind, want)])[0][1] for p in preds]))
               for attr, kind, want in asked[prompt]}
        out[prompt] = {"followed": float(np.mean(list(per.values()))) if per else None, "checks": per,
                       "samples": len(feats)}
    return out


def format_examples(model: str, rows: dict) -> str:
    lines = [f"{model}: app example prompts (share of samples doing what the words ask)"]
    for prompt, r in rows.items():
        checks = ", ".join(f"{k} {v:.0%}" for k, v in r["checks"].items()) or "(nothing checkable)"
        lines.append(f"  {prompt:<48} {checks}")
    return "\n".join(lines)


# ------------------------------------------------------------------------------- training
def targets(segments: list[dict]) -> dict[str, np.ndarray]:
    """Training labels of one program: presence (16,), and per head a class (16,) with -1 where
    the head has no label (kind absent, named twice, or the attribute does not apply)."""
    k = len(KINDS)
    t = {"presence": np.zeros(k, np.float32), **{h: np.full(k, -1, np.int64)
                                                 for h in ("reps", "speed", "side", "turn")}}
    counts = Counter(s["action"] for s in segments)
    for seg in segments:
        i = KINDS.index(seg["action"])
        t["presence"][i] = 1.0
        if counts[seg["action"]] > 1:
            continue
        t["reps"][i] = min(max(int(seg.get("reps") or 1), 1), MAX_REPS) - 1
        t["speed"][i] = SPEEDS.index(seg.get("speed") or "normal")
        if seg.get("side") in SIDES:
            t["side"][i] = SIDES.index(seg["side"])
        t["turn"][i] = TURNS.index(seg.get("turn") or "none")
    return t


@dataclass
class CheckerTrainConfig:
    steps: int = 2500
    batch_size: int = 32
    lr: float = 1e-3
    seed: int = 0
    threads: int = 2
    log_every: int = 100
    hidden: int = 128
    layers: int = 2
    dropout: float = 0.1
    weight_decay: float = 1e-4
    mirror: float = 0.0        # share of training samples shown mirrored (sides and turns swapped)
    clean: float = 0.0         # share of training samples shown as the clean-up step makes them
    val_every: int = 0         # steps between scores on held-out real motions (the best is kept)
    device: str = "cpu"
    time_budget_s: float = 0.0  # > 0: stop after this many seconds of training (the best is kept)


def load_programs(corpus) -> dict[str, list[dict]]:
    programs = corpus.programs()
    if not programs:
        raise FileNotFoundError(f"{Path(corpus.root) / 'programs.jsonl'} is missing: instruction following "
                                "needs the corpus's programs (the embedded corpus has them; HumanML3D does not)")
    return programs


def train_checker(corpus, splits: tuple[str, ...], cfg: CheckerTrainConfig, out_dir: Path,
                  progress: bool = True, val_split: str | None = "val",
                  extra: list[tuple[np.ndarray, list[dict]]] | None = None,
                  val_extra: list[tuple[np.ndarray, list[dict]]] | None = None) -> InstructionChecker:
    """Train on real motions of ``splits``; with ``cfg.val_every`` the share of attributes
    followed by the real motions of ``val_split`` is scored every that many steps and the best
    model is the one kept (``val_followed`` rows in train_log.jsonl; ``val_extra`` motions join
    that score). ``extra``: more (features, segments) to learn. ``cfg.mirror``: that share of
    the samples is the mirror image, with sides and turns swapped in its labels. ``cfg.clean``:
    that share is the motion as ``motioncore.clean.clean_motion`` returns it (what users and every
    generated row get), so the judge reads a motion alike with or without the clean-up, which
    moves heights and feet but changes no kind, count, side, turn or speed."""
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    device = torch.device(cfg.device)
    programs = load_programs(corpus)
    feats, labels, mirrored = [], [], []
    for split in splits:
        for mid, f in tqdm(sorted(corpus.load_features(split).items()), desc=f"checker data {split}",
                           disable=not progress):
            feats.append(f)
            labels.append(targets(programs[mid]))
            if cfg.mirror > 0:
                mirrored.append((mirror_features(f), targets(mirror_segments(programs[mid]))))
    for f, segments in extra or []:
        feats.append(f)
        labels.append(targets(segments))
        if cfg.mirror > 0:
            mirrored.append((mirror_features(f), targets(mirror_segments(segments))))
    cleaned = []
    if cfg.clean > 0:
        from motioncore.clean import clean_motion

        for f in tqdm(feats, desc="checker data, cleaned", disable=not progress):
            cleaned.append(joints_to_features(clean_motion(f).joints))
    val = None
    if cfg.val_every and val_split and val_split in corpus.splits():
        vf = corpus.load_features(val_split)
        val = ([programs[m] for m in sorted(vf)], [vf[m] for m in sorted(vf)])
    if cfg.val_every and val_extra:
        progs, vfeats = val or ([], [])
        val = (progs + [s for _, s in val_extra], vfeats + [f for f, _ in val_extra])
    model = InstructionChecker(CheckerConfig(hidden=cfg.hidden, layers=cfg.layers, dropout=cfg.dropout))
    model.set_normalization(corpus.normalizer.mean, corpus.normalizer.std).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, cfg.lr, total_steps=cfg.steps, pct_start=0.1)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(cfg.seed)
    best, best_state = -1.0, None

    def validate(step: int, log) -> None:
        nonlocal best, best_state
        r = score(model, *val)
        model.train()
        log.write(json.dumps({"step": step, "val_followed": r["followed"],
                              "val": {a: r[a] for a in ATTRIBUTES}}) + "\n")
        log.flush()
        if r["followed"] > best:
            best = r["followed"]
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}

    model.train()
    t0 = time.monotonic()
    with open(out_dir / "train_log.jsonl", "w") as log:
        for step in tqdm(range(cfg.steps), desc="checker", disable=not progress):
            if cfg.time_budget_s and time.monotonic() - t0 > cfg.time_budget_s:
                log.write(json.dumps({"step": step, "stopped": "time budget"}) + "\n")
                if val is not None:
                    validate(step, log)
                break
            idx = rng.choice(len(feats), size=cfg.batch_size, replace=False)
            flip = rng.random(cfg.batch_size) < cfg.mirror
            # drawn only when asked, so runs without --clean draw what they always drew
            tidy = rng.random(cfg.batch_size) < cfg.clean if cfg.clean > 0 else np.zeros(cfg.batch_size, bool)
            pairs = []
            for i, m, c in zip(idx, flip, tidy):
                if m:
                    pairs.append((mirror_features(cleaned[i]) if c else mirrored[i][0], mirrored[i][1]))
                else:
                    pairs.append((cleaned[i] if c else feats[i], labels[i]))
            x, lengths = model.batch([f for f, _ in pairs])
            out = model(x, lengths)
            y = torch.from_numpy(np.stack([lab["presence"] for _, lab in pairs])).to(device)
            loss = F.binary_cross_entropy_with_logits(out["presence"], y)
            for head in ("reps", "speed", "side", "turn"):
                y = torch.from_numpy(np.stack([lab[head] for _, lab in pairs])).reshape(-1).to(device)
                if (y >= 0).any():
                    loss = loss + F.cross_entropy(out[head].reshape(len(y), -1), y, ignore_index=-1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            if (step + 1) % cfg.log_every == 0:
                log.write(json.dumps({"step": step + 1, "loss": loss.item()}) + "\n")
                log.flush()
            if val is not None and ((step + 1) % cfg.val_every == 0 or step + 1 == cfg.steps):
                validate(step + 1, log)
    if best_state is not None:
        model.load_state_dict(best_state)
    model = model.cpu().eval()
    save_pretrained_atomic(model, out_dir / "model")
    (out_dir / "train_config.json").write_text(json.dumps({**asdict(cfg), "splits": list(splits),
                                                           "extra_motions": len(extra or []),
                                                           "best_val_followed": best if best >= 0 else None},
                                                          indent=2))
    return model


def format_table(rows: dict[str, dict]) -> str:
    head = f"{'row':<28}{'motions':>8}{'attrs':>7}{'all':>7}" + "".join(f"{a:>11}" for a in ATTRIBUTES)
    lines = [head, "-" * len(head)]
    for name, r in rows.items():
        cells = "".join(f"{'-' if r[a] is None else format(r[a], '.1%'):>11}" for a in ATTRIBUTES)
        lines.append(f"{name:<28}{r['motions']:>8}{r['attributes']:>7}{r['followed']:>7.1%}{cells}")
    return "\n".join(lines)


def format_by_kind(rows: dict[str, dict], min_n: int = 5) -> str:
    """Per motion kind, each row's share of each attribute (``score(...)["by_kind"]``; kinds
    asked fewer than ``min_n`` times in an attribute show '-')."""
    kinds = sorted({k.split("/", 1)[1] for r in rows.values() for k in r.get("by_kind", {})})
    lines = []
    for name, r in rows.items():
        bk = r.get("by_kind", {})
        lines.append(f"{name}: share of each attribute followed (n asked), by kind")
        lines.append(f"  {'kind':<16}" + "".join(f"{a:>14}" for a in ATTRIBUTES))
        for kind in kinds:
            cells = []
            for a in ATTRIBUTES:
                c = bk.get(f"{a}/{kind}")
                cells.append(f"{c['share']:>7.0%} ({c['n']:>3})" if c and c["n"] >= min_n else f"{'-':>13}")
            if any(c.strip() != "-" for c in cells):
                lines.append(f"  {kind:<16}" + "".join(f"{c:>14}" for c in cells))
    return "\n".join(lines)
