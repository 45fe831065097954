"""Train the PoseReader (``pose_reader.py``) on the video database's train videos.

Pairs: each synthetic train-split database video (its 16 sampled keypoint frames and length;
the embedded database and, with ``--videos``, more databases of video-only motions)
-> the VQ codes of the motion it shows, and the same pair mirrored (keypoints and motion: left
and right swapped), exactly the LLM's video-only pairs (``train_llm.video_only_examples``). A
tenth of the videos (by id) is held out for validation and early stopping; the database's test
split is never read (``eval video-reading`` judges on it). Cross-entropy per token position,
AdamW, linear warm-up then cosine decay; small Gaussian noise on the keypoints. Logged to
``WORKDIR/train_log.jsonl`` (training and "val" rows), best model in ``WORKDIR/model``, resumable
from ``WORKDIR/state.pt``.
"""
from __future__ import annotations

import json
import math
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from backend.generation.pose_reader import FPS, PoseReader, PoseReaderConfig, video_duration
from backend.generation.train_llm import video_only_examples
from backend.retrieval.sides import mirror_keypoints
from motioncore.io import atomic_write


@dataclass
class ReaderTrainConfig:
    steps: int = 3000
    batch_size: int = 32
    lr: float = 5e-4
    weight_decay: float = 0.05
    warmup: int = 100
    noise: float = 0.01        # keypoint jitter (their coordinates span about [-1, 1])
    val_share: float = 0.1
    val_every: int = 100
    patience: int = 6          # validations without a better score before stopping
    select: str = "acc"        # "acc": keep the highest held-out code accuracy (what argmax drafts
    #                            are), "loss": the lowest held-out cross-entropy
    seed: int = 0


@dataclass
class Pair:
    vid: str
    keypoints: np.ndarray   # (F, 17, 3)
    duration: float
    codes: np.ndarray


def stretched_codes(db, vqvae, normalizer, workdir: Path, factors: tuple[float, ...]) -> dict:
    """{(video id, factor, mirrored): codes} of each train-split motion of the video database
    ``db`` played ``factor`` times as long (joints resampled in time: a slower or faster
    performance of the same poses; the video's sampled frames show the same poses at the same
    relative times). Cached in ``workdir`` per database, factors and tokenizer."""
    from backend.data.video_motions import record_motion
    from backend.generation.train_llm import plain_and_mirrored_codes, tokenizer_fingerprint
    from motioncore.features import joints_to_features, resample

    rows = [r for r in db.records if (r.get("spec") or {}).get("split") == "train"]
    key = zlib.crc32(json.dumps([sorted(r.get("key", r["id"]) for r in rows), list(factors)]).encode())
    cache = Path(workdir) / f"stretched-{key:08x}-{tokenizer_fingerprint(vqvae)}.npz"
    if cache.is_file():
        with np.load(cache, allow_pickle=False) as z:
            return {(k.split("|")[0], float(k.split("|")[1]), k.split("|")[2] == "m"): z[k] for k in z.files}
    down, out = vqvae.config.downsample, {}
    for r in tqdm(rows, desc="tokenizing stretched database motions", leave=False):
        m = record_motion(r)
        if m is None or len(m[0]) < 2:
            continue
        for s in factors:
            f = joints_to_features(resample(m[0], FPS / s, FPS).astype(np.float32))
            if len(f) >= down * 2 + 1:
                out[(r["id"], float(s), False)], out[(r["id"], float(s), True)] = \
                    plain_and_mirrored_codes(f, vqvae, normalizer)
    Path(workdir).mkdir(parents=True, exist_ok=True)
    flat = {f"{v}|{s}|{'m' if mir else 'p'}": c for (v, s, mir), c in out.items()}
    atomic_write(cache, lambda fh: np.savez(fh, **flat))
    return out


def reader_pairs(retriever, vqvae, normalizer, workdir: Path, max_tokens: int = 49,
                 stretch: tuple[float, ...] = (), videos: tuple = ()) -> list[Pair]:
    """Every train-split video with a known motion of the retriever's database and of the
    databases ``videos`` (``VideoDatabase``s, e.g. more video-only motions drawn with another
    seed: ``videos build --seed S``), plain and mirrored; with ``stretch`` factors, also as if it
    lasted that many times as long (``stretched_codes``)."""
    out, seen = [], set()
    for db in (retriever.db, *videos):
        ids = {r["id"] for r in db.records}
        if ids & seen:
            raise ValueError(f"databases share video ids ({sorted(ids & seen)[0]}, ...); build the extra "
                             "one with another --seed")
        seen |= ids
        out += _database_pairs(db, vqvae, normalizer, workdir, max_tokens, stretch)
    return out


def _database_pairs(db, vqvae, normalizer, workdir: Path, max_tokens: int, stretch: tuple) -> list[Pair]:
    out = []
    extra = stretched_codes(db, vqvae, normalizer, workdir, tuple(stretch)) if stretch else {}
    for ex in video_only_examples(db, vqvae, normalizer, workdir, split="train"):
        vid = ex.video_id
        kp = np.asarray(db.keypoints[db.row(vid)], np.float32)
        dur = video_duration(db.record(vid))
        out.append(Pair(vid, kp, dur, np.asarray(ex.codes[:max_tokens], np.int64)))
        if ex.mirror_codes is not None:
            out.append(Pair(vid, np.asarray(mirror_keypoints(kp), np.float32), dur,
                            np.asarray(ex.mirror_codes[:max_tokens], np.int64)))
        for s in stretch:
            for mir in (False, True):
                c = extra.get((vid, float(s), mir))
                if c is not None:
                    k = np.asarray(mirror_keypoints(kp), np.float32) if mir else kp
                    out.append(Pair(vid, k, dur * float(s), np.asarray(c[:max_tokens], np.int64)))
    return [p for p in out if len(p.codes) >= 1]


def split_pairs(pairs: list[Pair], share: float) -> tuple[list[Pair], list[Pair]]:
    """(train, validation) by a hash of the video id (a video and its mirror stay together)."""
    held = lambda p: (zlib.crc32(p.vid.encode()) % 1000) < share * 1000  # noqa: E731
    return [p for p in pairs if not held(p)], [p for p in pairs if held(p)]


def _batch(model: PoseReader, pairs: list[Pair], noise: float = 0.0, rng=None):
    kps = [p.keypoints for p in pairs]
    if noise > 0:
        kps = [k + np.concatenate([rng.normal(0, noise, k[..., :2].shape), np.zeros_like(k[..., 2:])], -1)
               .astype(np.float32) * (k[..., 2:] > 0) for k in kps]
    return model.build_batch(kps, [p.duration for p in pairs], [len(p.codes) for p in pairs],
                             [p.codes for p in pairs])


@torch.no_grad()
def evaluate(model: PoseReader, pairs: list[Pair], batch_size: int = 64) -> dict:
    """Mean per-token cross-entropy and top-1 code accuracy over ``pairs``."""
    model.eval()
    tot, acc, n = 0.0, 0.0, 0
    for s in range(0, len(pairs), batch_size):
        b = _batch(model, pairs[s:s + batch_size])
        logits = model(b)
        m = b.targets != -100
        k = int(m.sum())
        tot += float(torch.nn.functional.cross_entropy(logits[m], b.targets[m], reduction="sum"))
        acc += float((logits[m].argmax(-1) == b.targets[m]).sum())
        n += k
    return {"loss": tot / max(n, 1), "acc": acc / max(n, 1)}


def train_pose_reader(pairs: list[Pair], workdir: Path, model_cfg: PoseReaderConfig | None = None,
                      cfg: ReaderTrainConfig | None = None, resume: bool = True) -> PoseReader:
    cfg = cfg or ReaderTrainConfig()
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    train, val = split_pairs(pairs, cfg.val_share)
    if not train or not val:
        raise ValueError(f"need training and validation videos, got {len(train)} and {len(val)}")
    torch.manual_seed(cfg.seed)
    model = PoseReader(model_cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = lambda s: min(1.0, (s + 1) / cfg.warmup) * 0.5 * (1 + math.cos(math.pi * min(s, cfg.steps) / cfg.steps))  # noqa: E731
    state_f, log_f = workdir / "state.pt", workdir / "train_log.jsonl"
    step, best, bad = 0, float("inf"), 0
    if resume and state_f.is_file():
        st = torch.load(state_f, weights_only=True)
        model.load_state_dict(st["model"])
        opt.load_state_dict(st["opt"])
        step, best, bad = int(st["step"]), float(st["best"]), int(st["bad"])
    elif log_f.exists():
        log_f.unlink()
    rng = np.random.default_rng(cfg.seed + step)
    print(f"pose reader: {len(train)} training pairs, {len(val)} validation pairs, "
          f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters")
    bar = tqdm(total=cfg.steps, initial=step, desc="pose reader")
    t0 = time.time()
    while step < cfg.steps and bad < cfg.patience:
        model.train()
        idx = rng.choice(len(train), size=min(cfg.batch_size, len(train)), replace=False)
        for g in opt.param_groups:
            g["lr"] = cfg.lr * sched(step)
        loss = model.loss(_batch(model, [train[i] for i in idx], cfg.noise, rng))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        bar.update(1)
        with log_f.open("a") as fh:
            fh.write(json.dumps({"step": step, "loss": loss.item(), "lr": opt.param_groups[0]["lr"]}) + "\n")
        if step % cfg.val_every == 0 or step == cfg.steps:
            v = evaluate(model, val)
            tr = evaluate(model, train[:len(val)])
            score = -v["acc"] if cfg.select == "acc" else v["loss"]
            if score < best:
                best, bad = score, 0
                model.save_pretrained(workdir / "model")
            else:
                bad += 1
            with log_f.open("a") as fh:
                fh.write(json.dumps({"kind": "val", "step": step, "val_loss": v["loss"], "val_acc": v["acc"],
                                     "train_loss": tr["loss"], "train_acc": tr["acc"],
                                     "minutes": (time.time() - t0) / 60}) + "\n")
            bar.set_postfix(val=f"{v['loss']:.3f}", acc=f"{v['acc']:.3f}", best=f"{abs(best):.3f}")
            state = {"model": model.state_dict(), "opt": opt.state_dict(), "step": step, "best": best, "bad": bad}
            atomic_write(state_f, lambda fh: torch.save(state, fh))
    bar.close()
    if not (workdir / "model" / "model.safetensors").is_file():
        model.save_pretrained(workdir / "model")
    return PoseReader.from_pretrained(workdir / "model")


__all__ = ["Pair", "ReaderTrainConfig", "evaluate", "reader_pairs", "split_pairs", "stretched_codes", "train_pose_reader"]
