"""Does the motion LLM write the motion a video shows? (issue 12: "teach it to read motion from video")

A prompt part whose words name a motion the LLM only knows from videos is written from its
retrieved video alone (the video lead at weight 1: the neutral caption ``NEUTRAL_TEXT`` and the
video; ``backend.generation.video_lead``). How well that works is bounded by how well the LLM
reads a video. The synthetic database knows the motion behind each of its videos
(``backend.data.video_motions.record_motion``), so every database video is a question with an
answer: generate from (neutral caption, video), and let the instruction checker compare what the
generated motion does with what the video's motion does (kind, count, side, turn, slow/fast:
``follow.asked_attributes`` of the video's own program). The same checker reads the database
motions themselves: that row is the ceiling (the checker's own error).

``split="train"``: the videos the LLM's video-only pairs learned from (can it say back what it
was taught?); ``split="test"``: held-out database videos (can it read a video it never saw?).
``ood_only``: only the videos showing a kind no caption names (cartwheel, backflip, crawl, roll).
"""
from __future__ import annotations

from collections import defaultdict

import numpy as np
import torch

from backend.data.video_motions import record_motion
from backend.evaluation.follow import ATTRIBUTES, asked_attributes, check
from backend.generation.motion_llm import NEUTRAL_TEXT
from backend.generation.pose_reader import reader_tokens, video_duration
from motioncore.clean import clean_motion
from motioncore.features import joints_to_features


def database_questions(retriever, split: str = "test", ood_only: bool = False) -> list[tuple[str, np.ndarray, list[dict]]]:
    """(video id, the motion's 263-d features, its segments) of each synthetic database video of
    the database's ``split`` whose whole motion it shows."""
    out = []
    for vid in retriever.db.ids:
        rec = retriever.db.record(vid)
        spec = rec.get("spec") or {}
        if spec.get("split") != split or (ood_only and not spec.get("ood")):
            continue
        motion = record_motion(rec)
        if motion is not None and motion[1]:
            out.append((vid, joints_to_features(motion[0]), motion[1]))
    return out


def _shares(checker, features: list[np.ndarray], programs: list[list[dict]]) -> dict:
    """Per attribute and per (attribute, kind): share satisfied and how many were asked."""
    hits: dict = defaultdict(list)
    for segs, pred in zip(programs, checker.predict(features)):
        asked = asked_attributes(segs)
        for (attr, kind, _), (_, ok) in zip(asked, check(pred, asked)):
            hits[attr].append(ok)
            hits[f"{attr}/{kind}"].append(ok)
    every = [h for a in ATTRIBUTES for h in hits.get(a, [])]
    return {"followed": float(np.mean(every)) if every else float("nan"), "attributes": len(every),
            **{k: {"share": float(np.mean(v)), "n": len(v)} for k, v in sorted(hits.items())}}


@torch.no_grad()
def video_reading(llm, vqvae, normalizer, retriever, checker, split: str = "test", ood_only: bool = False,
                  samples: int = 1, seed: int = 0, batch: int = 32, limit: int = 0,
                  temperature: float = 1.0, reader=None) -> dict:
    """{"questions": n, "database motion": shares, "generated": shares} (``_shares``) for the
    database videos of ``split``; ``samples`` generations per video (each judged on its own),
    sampled at ``temperature``. ``reader``: a ``PoseReader`` writes the codes instead of ``llm``
    (as many tokens as the video is long; temperature 0 = its most likely code per position)."""
    if int(samples) < 1:
        raise ValueError(f"samples must be >= 1, got {samples}")
    qs = database_questions(retriever, split, ood_only)
    if limit:
        qs = qs[:limit]
    if not qs:
        raise ValueError(f"no database video of split {split!r} with a known motion (a synthetic "
                         "database is needed: `python -m backend videos build`)")
    videos = [retriever.video_prior(vid) for vid, _, _ in qs] * samples
    programs = [segs for _, _, segs in qs] * samples
    durations = [video_duration(retriever.db.record(vid)) for vid, _, _ in qs] * samples if reader else []
    rng = np.random.default_rng(seed)
    feats = []
    for s in range(0, len(videos), batch):
        vids = videos[s:s + batch]
        if reader is not None:
            durs = durations[s:s + batch]
            codes = reader.write([v.keypoints for v in vids], durs, [reader_tokens(d, reader) for d in durs],
                                 temperature=temperature, seed=int(rng.integers(2 ** 31)))
        else:
            codes = llm.generate([NEUTRAL_TEXT] * len(vids), vids, greedy=False, min_tokens=4,
                                 seed=int(rng.integers(2 ** 31)), temperature=temperature)
        for c in codes:
            c = c if len(c) else np.zeros(1, np.int64)
            f = normalizer.denormalize(vqvae.decode(torch.from_numpy(c)[None])[0].numpy())
            feats.append(joints_to_features(clean_motion(f).joints))
    return {"questions": len(qs), "samples": samples,
            "database motion": _shares(checker, [f for _, f, _ in qs], [segs for _, _, segs in qs]),
            "generated": _shares(checker, feats, programs)}


def format_video_reading(res: dict, title: str) -> str:
    rows = [("database motion (the checker's ceiling)", res["database motion"]), ("generated", res["generated"])]
    lines = [title, f"{'row':<42}{'all':>8}" + "".join(f"{a:>11}" for a in ATTRIBUTES), "-" * 97]
    for name, r in rows:
        cells = "".join(f"{r[a]['share']:>11.1%}" if a in r else f"{'-':>11}" for a in ATTRIBUTES)
        lines.append(f"{name:<42}{r['followed']:>8.1%}{cells}")
    kinds = sorted({k.split("/", 1)[1] for k in res["generated"] if "/" in k})
    lines.append("")
    lines.append(f"{'generated / database, by kind':<30}" + "".join(f"{a:>16}" for a in ATTRIBUTES))
    for kind in kinds:
        cells = []
        for a in ATTRIBUTES:
            g, d = res["generated"].get(f"{a}/{kind}"), res["database motion"].get(f"{a}/{kind}")
            cells.append(f"{g['share']:>5.0%} /{d['share']:>4.0%} {g['n']:>3}" if g and d else f"{'-':>16}")
        lines.append(f"{kind:<30}" + "".join(f"{c:>16}" for c in cells))
    return "\n".join(lines)


__all__ = ["database_questions", "format_video_reading", "video_reading"]
