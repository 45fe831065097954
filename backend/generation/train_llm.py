"""Training the motion LLM: stage 1 SFT and stage 2 McDPO, both through ``accelerate``.

Data. Every training caption is paired with the ground-truth VQ tokens of its motion (first
196 frames, the protocol's length) and, for the video modes, with its rank-1 video from the
embedded database (retrieval results cached in ``<workdir>/retrieval-<mode>.json``).

SFT: autoregressive cross-entropy on the motion tokens. McDPO: for each prompt, ``kappa``
candidates sampled from the SFT model; ``l`` = distance between candidate and ground truth in
the evaluator's motion-embedding space, ``d`` = distance between candidate and text in the
evaluator's joint text-motion space; reward r = -(w_l l/sum l + w_d d/sum d); best = chosen,
worst = rejected; DPO loss against the frozen SFT model. A share of the prompts are paired
with *random* videos so the model learns to ignore a bad prior.

The loop is plain PyTorch wrapped by ``accelerate.Accelerator`` (``prepare`` / ``backward`` /
``save``), so the same command runs on several GPUs or DeepSpeed by configuration
(``accelerate launch ... -m backend train sft --config phi3 --base DIR``). TRL's DPOTrainer is
not used: it expects a text tokenizer pipeline, while our sequences mix text, video prefix
embeddings and a separate motion vocabulary; the DPO loss itself is 10 lines
(``backend.generation.preference``).
"""
from __future__ import annotations

import hashlib
import json
import math
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from backend.checkpoints import load_folder
from backend.generation.motion_llm import NEUTRAL_TEXT, MotionLLM, MotionLLMConfig, VideoFeatures
from backend.generation.preference import dpo_loss, mcdpo_reward, pick_pair
from backend.retrieval.sides import mirror_caption
from motioncore.features import mirror_features
from motioncore.io import atomic_write, atomic_write_json

MAX_FRAMES = 196
VIDEO_MID = "video-"      # motion id prefix of a video-only pair: VIDEO_MID + the database video's id


@dataclass
class Example:
    text: str
    codes: np.ndarray                   # ground-truth motion codes
    video_id: str | None = None
    mid: str = ""
    random_video: bool = False          # the video is a random one (McDPO's bad priors)
    mirror_codes: np.ndarray | None = None  # codes of the motion's mirror image (SFT --mirror)


@dataclass
class LLMTrainConfig:
    steps: int = 1000
    batch_size: int = 8
    lr: float = 2e-4
    warmup: int = 50
    ckpt_every: int = 100
    seed: int = 0
    threads: int = 2
    grad_clip: float = 1.0
    val_every: int = 0                  # steps between validation passes (0: none)
    patience: int = 0                   # stop after this many validations without a new best (0: never)
    self_video: float = 0.0             # SFT: share of captions shown the video of their own motion
    caption_drop: float = 0.0           # SFT: share of those self-video pairs whose caption is hidden
    random_video: float = 0.0           # SFT: share of captions shown a random database video
    drop_video: float = 0.0             # SFT: share of captions shown no video at all
    mirror: float = 0.0                 # SFT: share of examples shown as their mirror image
    video_only: float = 0.0             # SFT: share of examples that are a database video + its motion, no words
    log_every: int = 10                 # training-loss rows in log.jsonl (McDPO: 1, its batches are noisy)


# ---------------------------------------------------------------------------------- data


@torch.no_grad()
def motion_codes(corpus, vqvae, split: str = "train", mirrored: bool = False) -> dict[str, np.ndarray]:
    """Ground-truth VQ codes of every motion of ``split`` (first 196 frames); ``mirrored``: of
    each motion's mirror image (left and right swapped, ``mirror_features``)."""
    norm = corpus.normalizer
    down = vqvae.config.downsample
    out = {}
    feats = corpus.load_features(split, min_frames=down * 2 + int(mirrored))
    desc = f"tokenizing {split} motions" + (" (mirrored)" if mirrored else "")
    for mid, f in tqdm(feats.items(), desc=desc, leave=False):
        f = mirror_features(f[:MAX_FRAMES + 1]) if mirrored else f[:MAX_FRAMES]
        f = f[: len(f) // down * down]
        x = torch.from_numpy(norm.normalize(f).astype(np.float32))[None]
        out[mid] = vqvae.encode(x)[0].numpy().astype(np.int64)
    return out


def tokenizer_fingerprint(vqvae) -> str:
    h = hashlib.sha1()
    for k, v in sorted(vqvae.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().numpy().tobytes())
    return h.hexdigest()[:10]


def retrieval_cache(retriever, texts: list[str], mode: str, path: Path, seed: int = 0) -> dict[str, str]:
    """text -> rank-1 video id under ``mode`` (cached to ``path``; computed for missing texts)."""
    cache = json.loads(path.read_text()) if path.is_file() else {}
    todo = sorted({t for t in texts if t not in cache})
    rng = np.random.default_rng(seed)
    for s in tqdm(range(0, len(todo), 256), desc=f"retrieving ({mode})", disable=not todo):
        chunk = todo[s:s + 256]
        for t, hits in zip(chunk, retriever.search_many(chunk, k=1, mode=mode, rng=rng)):
            cache[t] = hits[0].id
    if todo:
        atomic_write_json(path, cache, sort_keys=True)
    return cache


def _cached_codes(corpus, vqvae, split: str, workdir: Path, mirrored: bool = False) -> dict[str, np.ndarray]:
    tag = "-mirror" if mirrored else ""
    cache = workdir / f"codes-{split}{tag}-{tokenizer_fingerprint(vqvae)}.npz"
    if cache.is_file():
        with np.load(cache, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    codes = motion_codes(corpus, vqvae, split, mirrored=mirrored)
    workdir.mkdir(parents=True, exist_ok=True)
    atomic_write(cache, lambda fh: np.savez(fh, **codes))
    return codes


def build_examples(corpus, vqvae, retriever, mode: str, workdir: Path, split: str = "train",
                   mirror: bool = False) -> list[Example]:
    """One example per (motion, caption) of ``split``; ``mode`` in gemini / random / none.
    Codes are cached in ``workdir`` per split and tokenizer (a hash of its weights); ``mirror``
    also tokenizes each motion's mirror image (``Example.mirror_codes``, for ``--mirror``)."""
    codes = _cached_codes(corpus, vqvae, split, workdir)
    mirrored = _cached_codes(corpus, vqvae, split, workdir, mirrored=True) if mirror else {}
    pairs = [(mid, c.text) for mid in codes for c in corpus.captions(mid)]
    videos = {}
    if mode != "none":
        fp = getattr(retriever, "fingerprint", None) if mode == "gemini" else None
        tag = f"-{fp[:10]}" if fp else ""           # rank-1 videos belong to one searching retriever
        videos = retrieval_cache(retriever, [t for _, t in pairs], mode,
                                 workdir / f"retrieval-{mode}-{split}{tag}.json")
    return [Example(t, codes[mid], videos.get(t), mid, mirror_codes=mirrored.get(mid))
            for mid, t in pairs]


def _database_motion_features(record: dict) -> np.ndarray | None:
    """(T, 263) features of the motion a synthetic database video shows (its window), or None
    for a video without a known motion (a user's own footage)."""
    from backend.data.video_motions import record_motion
    from motioncore.features import joints_to_features

    motion = record_motion(record)
    return None if motion is None else joints_to_features(motion[0])


@torch.no_grad()
def plain_and_mirrored_codes(features: np.ndarray, vqvae, normalizer) -> tuple[np.ndarray, np.ndarray]:
    """VQ codes of a motion's first ``MAX_FRAMES`` frames and of its mirror image (at least
    ``2 * downsample + 1`` frames of 263-d features)."""
    down = vqvae.config.downsample
    out = []
    for g in (features[:MAX_FRAMES], mirror_features(features[:MAX_FRAMES + 1])):
        g = g[: len(g) // down * down]
        x = torch.from_numpy(normalizer.normalize(g).astype(np.float32))[None]
        out.append(vqvae.encode(x)[0].numpy().astype(np.int64))
    return out[0], out[1]


@torch.no_grad()
def video_only_examples(retriever, vqvae, normalizer, workdir: Path, split: str = "train") -> list[Example]:
    """*Video-only pairs*: every synthetic database video of ``split`` (the database's own
    split: ``train`` for training, ``test`` held out) with the neutral caption (``NEUTRAL_TEXT``)
    and the VQ codes of the motion it shows, plain and mirrored. Their captions are never
    used, so kinds that no text-motion pair contains (the OOD kinds) reach the generator only
    as video -> motion, never with their words. Codes cached in ``workdir`` per split, database
    and tokenizer. ``retriever``: a retriever (its database) or a ``VideoDatabase``."""
    db = getattr(retriever, "db", retriever)
    rows = [r for r in db.records if (r.get("spec") or {}).get("split") == split]
    key = hashlib.sha1(json.dumps(sorted(r.get("key", r["id"]) for r in rows)).encode()).hexdigest()[:8]
    cache = workdir / f"codes-videodb-{split}-{key}-{tokenizer_fingerprint(vqvae)}.npz"
    if cache.is_file():
        with np.load(cache, allow_pickle=False) as z:
            codes = {k: z[k] for k in z.files}
    else:
        down = vqvae.config.downsample
        codes = {}
        for r in tqdm(rows, desc=f"tokenizing database motions ({split})", leave=False):
            f = _database_motion_features(r)
            if f is None or len(f) < down * 2 + 1:
                continue
            codes[r["id"]], codes[r["id"] + "~m"] = plain_and_mirrored_codes(f, vqvae, normalizer)
        workdir.mkdir(parents=True, exist_ok=True)
        atomic_write(cache, lambda fh: np.savez(fh, **codes))
    return [Example(NEUTRAL_TEXT, c, vid, f"{VIDEO_MID}{vid}", mirror_codes=codes.get(vid + "~m"))
            for vid, c in codes.items() if not vid.endswith("~m")]


def video_of(retriever, video_id: str | None, mirrored: bool = False) -> VideoFeatures | None:
    """The prior the LLM reads for ``video_id`` (None: no video); ``mirrored``: its mirror image."""
    if video_id is None:
        return None
    if mirrored:
        return retriever.mirrored_prior(video_id)
    if hasattr(retriever, "video_prior"):
        return retriever.video_prior(video_id)
    frames, obj = retriever.video_features(video_id)
    return VideoFeatures(frames, obj)


# ---------------------------------------------------------------------------- utilities
def _lr_lambda(cfg: LLMTrainConfig):
    def f(step):
        if step < cfg.warmup:
            return (step + 1) / cfg.warmup
        p = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(p, 1.0)))
    return f


def _atomic_torch_save(obj, path: Path) -> None:
    atomic_write(path, lambda fh: torch.save(obj, fh))


def _save_state(workdir: Path, model: MotionLLM, opt, sched, step: int, extra: dict | None = None) -> None:
    workdir.mkdir(parents=True, exist_ok=True)
    _atomic_torch_save({"model": model.trainable_state_dict(), "opt": opt.state_dict(),
                        "sched": sched.state_dict(), "step": step, "rng": torch.get_rng_state(),
                        **(extra or {})}, workdir / "state.pt")


def _load_state(workdir: Path, model: MotionLLM, opt, sched) -> tuple[int, dict]:
    """(step, best-validation record) of a resumed run."""
    f = workdir / "state.pt"
    if not f.is_file():
        return 0, {}
    st = torch.load(f, map_location="cpu", weights_only=True)
    model.load_trainable_state_dict(st["model"])
    opt.load_state_dict(st["opt"])
    sched.load_state_dict(st["sched"])
    torch.set_rng_state(st["rng"])
    return int(st["step"]), json.loads(st.get("best", "{}"))


def _log(workdir: Path, row: dict) -> None:
    with open(workdir / "log.jsonl", "a") as fh:
        fh.write(json.dumps(row) + "\n")


def _loop(model: MotionLLM, cfg: LLMTrainConfig, workdir: Path, resume: bool, desc: str, step_fn,
          validate=None) -> MotionLLM:
    """Shared optimiser / schedule / checkpoint / progress loop; ``step_fn(core, step) -> (loss,
    logs)``. With ``validate(core) -> {"val_loss": ...}`` and ``cfg.val_every``, validation rows
    (kind "val") go to the log, the best weights to ``best.pt``; training stops early after
    ``cfg.patience`` validations without a new best, and the best weights are the result."""
    from accelerate import Accelerator

    torch.set_num_threads(cfg.threads)
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "train_config.json").write_text(json.dumps(asdict(cfg), indent=2))
    acc = Accelerator(cpu=not torch.cuda.is_available())
    params = model.trainable_parameters()
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(cfg))
    start, best = (_load_state(workdir, model, opt, sched) if resume else (0, {}))
    if cfg.patience and best.get("bad", 0) >= cfg.patience:
        print(f"this run already stopped early at step {start} (best {best['val_loss']:.4f} at step "
              f"{best['step']}): not training further")
        start = cfg.steps
    model, opt = acc.prepare(model, opt)
    core = acc.unwrap_model(model)
    model.train()
    bar = tqdm(range(start, cfg.steps), desc=desc, initial=start, total=cfg.steps)
    t0 = time.time()
    for step in bar:
        loss, logs = step_fn(core, step)
        opt.zero_grad(set_to_none=True)
        acc.backward(loss)
        acc.clip_grad_norm_(params, cfg.grad_clip)
        opt.step()
        sched.step()
        bar.set_postfix(loss=f"{loss.item():.3f}", best_val=best.get("val_loss"))
        if step % cfg.log_every == 0 or step == cfg.steps - 1:
            _log(workdir, {"step": step, "loss": loss.item(), "lr": sched.get_last_lr()[0],
                           "elapsed_s": round(time.time() - t0, 1), **logs})
        stop = False
        if validate is not None and cfg.val_every and ((step + 1) % cfg.val_every == 0
                                                       or step == cfg.steps - 1):
            core.eval()
            with torch.no_grad():
                val = validate(core)
            core.train()
            _log(workdir, {"kind": "val", "step": step + 1, **val})
            if not best or val["val_loss"] < best["val_loss"]:
                best = {"val_loss": val["val_loss"], "step": step + 1, "bad": 0}
                _atomic_torch_save(core.trainable_state_dict(), workdir / "best.pt")
            else:
                best["bad"] += 1
                stop = bool(cfg.patience) and best["bad"] >= cfg.patience
        if stop or (step + 1) % cfg.ckpt_every == 0 or step == cfg.steps - 1:
            _save_state(workdir, core, opt, sched, step + 1, {"best": json.dumps(best)})
        if stop:
            print(f"early stop at step {step + 1}: no better validation loss for {cfg.patience} "
                  f"checks (best {best['val_loss']:.4f} at step {best['step']})")
            break
    if best and (workdir / "best.pt").is_file():
        best_state = torch.load(workdir / "best.pt", map_location="cpu", weights_only=True)
        core.load_trainable_state_dict(best_state)
        print(f"best validation loss {best['val_loss']:.4f} at step {best['step']}")
    core.eval()
    return core


def _epoch_sampler(n: int, cfg: LLMTrainConfig):
    """``draw(step)``: the indices of batch ``step`` (``cfg.batch_size`` of them) of shuffled
    passes over ``n`` items. A resumed run asks for its first step after the checkpoint; the
    batches before it are drawn and skipped, so it continues the order an uninterrupted run
    would have had instead of replaying the first batches."""
    rng = random.Random(cfg.seed)
    order: list[int] = []
    drawn = 0

    def batch() -> list[int]:
        nonlocal order
        idx = []
        while len(idx) < cfg.batch_size:
            if not order:
                order = list(range(n))
                rng.shuffle(order)
            idx.append(order.pop())
        return idx

    def draw(step: int) -> list[int]:
        nonlocal drawn
        if step < drawn:
            raise ValueError(f"batch {step} was already drawn (next is {drawn})")
        while drawn < step:                      # fast-forward after a resume
            batch()
            drawn += 1
        drawn += 1
        return batch()

    return draw


# ------------------------------------------------------------------------------------ SFT
class VideoBank:
    """Video features by id from several retrievers (the database, the self-video database)."""

    def __init__(self, *retrievers):
        self.retrievers = [r for r in retrievers if r is not None]

    def video_features(self, video_id: str):
        for r in self.retrievers:
            if r.has_video(video_id):
                return r.video_features(video_id)
        raise KeyError(f"video {video_id!r} is in none of the databases")

    def video_prior(self, video_id: str):
        for r in self.retrievers:
            if r.has_video(video_id):
                return r.video_prior(video_id) if hasattr(r, "video_prior") else \
                    VideoFeatures(*r.video_features(video_id))
        raise KeyError(f"video {video_id!r} is in none of the databases")

    def mirrored_prior(self, video_id: str):
        for r in self.retrievers:
            if r.has_video(video_id):
                return r.mirrored_prior(video_id)
        raise KeyError(f"video {video_id!r} is in none of the databases")


def self_video_ids(retriever, mids) -> dict[str, str]:
    """motion id -> id of the video showing that motion (``videos self``), where there is one."""
    return {m: f"self-{m}" for m in mids if retriever is not None and retriever.has_video(f"self-{m}")}


@torch.no_grad()
def validation_loss(model: MotionLLM, examples: list[Example], videos, batch_size: int = 16) -> float:
    """Mean per-token cross-entropy of the motion targets over ``examples``."""
    total, count = 0.0, 0
    for s in range(0, len(examples), batch_size):
        ex = examples[s:s + batch_size]
        batch = model.build_batch([e.text for e in ex], [video_of(videos, e.video_id) for e in ex],
                                  [e.codes for e in ex], padding="right").to(model.device)
        n = int((batch.targets != -100).sum())
        total += float(model.loss(batch)) * n
        count += n
    return total / max(count, 1)


def train_sft(model: MotionLLM, examples: list[Example], retriever, cfg: LLMTrainConfig,
              workdir: Path, resume: bool = True, val_examples: list[Example] | None = None,
              self_videos: dict[str, str] | None = None, random_pool: list[str] | None = None,
              video_only: list[Example] | None = None, val_video: list[Example] | None = None) -> MotionLLM:
    """Cross-entropy on the motion tokens of shuffled passes over ``examples``. Each drawn caption
    with a video is shown, instead of its rank-1 video:
    - with probability ``cfg.self_video`` the video of its own motion (``self_videos``: motion id ->
      video id), so the model learns to read motion from a pose sequence; ``cfg.caption_drop``
      hides the caption of such a pair (``NEUTRAL_TEXT``), so the video is all it has to go by;
    - a random video of ``random_pool`` (share ``cfg.random_video`` of all captions) or no video
      (share ``cfg.drop_video``): rank-1 videos of *training* captions agree with
      them more often than those of new prompts do, and these teach the model that the words
      come first when the prior disagrees.
    With probability ``cfg.mirror`` an example (with ``mirror_codes``) is shown as its mirror
    image: the mirrored motion's codes, the caption with left and right swapped
    (``mirror_caption``) and the mirror image of whatever video was picked. Every side-naming
    caption then comes with its counterpart, which differs only in the side.
    ``retriever`` is anything with ``video_features(id)`` (a ``VideoBank`` for several databases)."""
    draw = _epoch_sampler(len(examples), cfg)
    self_videos = self_videos or {}
    if cfg.random_video > 0 and not random_pool:
        raise ValueError("random_video > 0 needs a random_pool of video ids")
    if cfg.self_video + cfg.random_video + cfg.drop_video > 1 + 1e-9:
        raise ValueError("self_video + random_video + drop_video must not exceed 1")
    if cfg.video_only > 0 and not video_only:
        raise ValueError("video_only > 0 needs video-only examples (video_only_examples)")

    def pick(rng, e):
        """(video id or None, kind) shown with example ``e``."""
        if e.video_id is None:
            return None, "none"
        if e.mid in self_videos and rng.random() < cfg.self_video:
            return self_videos[e.mid], "self"
        if cfg.random_video or cfg.drop_video:
            u = rng.random() * (1 - cfg.self_video)      # the remaining share, rescaled
            if u < cfg.random_video:
                return rng.choice(random_pool), "random"
            if u < cfg.random_video + cfg.drop_video:
                return None, "dropped"
        return e.video_id, "rank1"

    def step_fn(core, step):
        rng = random.Random(cfg.seed * 1_000_003 + step)
        ex = [examples[i] for i in draw(step)]
        picks = [pick(rng, e) for e in ex]
        if cfg.video_only > 0:                   # its own generator: video_only 0 draws as before
            vrng = random.Random(cfg.seed * 9_000_011 + step)
            for i in range(len(ex)):
                if vrng.random() < cfg.video_only:
                    ex[i] = vrng.choice(video_only)
                    picks[i] = (ex[i].video_id, "video-only")
        vids = [v for v, _ in picks]
        texts = [NEUTRAL_TEXT if kind == "self" and rng.random() < cfg.caption_drop else e.text
                 for (_, kind), e in zip(picks, ex)]
        flips = [False] * len(ex)
        if cfg.mirror > 0:                       # its own generator: mirror 0 draws as before
            mrng = random.Random(cfg.seed * 7_000_003 + step)
            flips = [e.mirror_codes is not None and mrng.random() < cfg.mirror for e in ex]
        texts = [mirror_caption(t) if f else t for t, f in zip(texts, flips)]
        codes = [e.mirror_codes if f else e.codes for e, f in zip(ex, flips)]
        batch = core.build_batch(texts, [video_of(retriever, v, f) for v, f in zip(vids, flips)],
                                 codes, padding="right").to(core.device)
        kinds = [k for _, k in picks]
        return core.loss(batch), {"self_videos": kinds.count("self"), "mirrored": sum(flips),
                                  "random_videos": kinds.count("random"),
                                  "no_videos": kinds.count("dropped"),
                                  "video_only": kinds.count("video-only"),
                                  "captions_hidden": sum(t == NEUTRAL_TEXT for t in texts)}

    validate = None
    if val_examples:
        def validate(core):
            cap = validation_loss(core, val_examples, retriever)
            if not val_video:
                return {"val_loss": cap}
            vid = validation_loss(core, val_video, retriever)
            return {"val_loss": (cap + vid) / 2, "val_caption_loss": cap, "val_video_loss": vid}

    return _loop(model, cfg, workdir, resume, "SFT", step_fn, validate)


def warm_start(model, folder: Path) -> None:
    """Start from a trained model's tensors (same base, vocabulary and prefix); LoRA modules
    the new model adds start at zero, so training continues from the same function."""
    config, state = load_folder(folder, MotionLLMConfig, "MotionLLM")
    for name in ("base", "codebook_size", "num_prefix", "lora_r", "lora_alpha", "tokenizer"):
        if getattr(config, name) != getattr(model.config, name):
            raise ValueError(f"--init-from {folder}: its {name} is {getattr(config, name)!r}, "
                             f"this model's {getattr(model.config, name)!r}")
    fresh = model.load_trainable_state_dict(state, partial=True)
    print(f"warm start from {folder}: {len(state)} tensors loaded, {len(fresh)} new (zero-start LoRA)")


# --------------------------------------------------------------------------------- McDPO
@dataclass
class Preference:
    text: str
    video_id: str | None
    chosen: np.ndarray
    rejected: np.ndarray
    reward_gap: float
    random_video: bool


def decode_codes(vqvae, normalizer, codes: np.ndarray) -> np.ndarray:
    """Motion codes -> un-normalised (T, 263) features."""
    with torch.no_grad():
        x = vqvae.decode(torch.as_tensor(np.asarray(codes, np.int64))[None])[0].numpy()
    return normalizer.denormalize(x)


def make_preferences(sft: MotionLLM, examples: list[Example], retriever, evaluator, vqvae, normalizer,
                     gt_features: dict[str, np.ndarray], kappa: int = 4, w_l: float = 0.9,
                     w_d: float = 0.1, temperature: float = 1.0, top_k: int = 0, seed: int = 0,
                     batch: int = 16, follow=None, w_f: float = 0.0) -> list[Preference]:
    """Sample ``kappa`` candidates per example from the SFT model and keep (best, worst) under
    the paper's reward (``mcdpo_reward``). With ``follow`` (a function (motion ids, features) ->
    share of what each motion's prompt asks that the features do, NaN where nothing is
    checkable) and ``w_f`` > 0, ``w_f`` x that share is added: among candidates equally close to
    the ground truth, the one that does what the words say wins. A video-only example (the
    neutral caption ``NEUTRAL_TEXT``: no words) has its ground truth stand in for the words in
    the text term."""
    prefs: list[Preference] = []
    for s in tqdm(range(0, len(examples), batch), desc="McDPO: sampling candidates"):
        ex = examples[s:s + batch]
        texts = [e.text for e in ex for _ in range(kappa)]
        vids = [video_of(retriever, e.video_id) for e in ex for _ in range(kappa)]
        cands = sft.generate(texts, vids, greedy=False, top_k=top_k, temperature=temperature,
                             seed=seed * 1_000_003 + s, min_tokens=4)
        feats = [decode_codes(vqvae, normalizer, c) for c in cands]
        m_emb = evaluator.encode_features(feats)
        t_emb = evaluator.encode_captions([e.text for e in ex])
        gt_emb = evaluator.encode_features([gt_features[e.mid][:MAX_FRAMES] for e in ex])
        shares = np.zeros(len(feats))
        if follow is not None and w_f:
            shares = np.nan_to_num(np.asarray(follow([e.mid for e in ex for _ in range(kappa)], feats),
                                              np.float64), nan=0.0)
        for j, e in enumerate(ex):
            rows = slice(j * kappa, (j + 1) * kappa)
            l = np.linalg.norm(m_emb[rows] - gt_emb[j], axis=1)
            d = np.linalg.norm(m_emb[rows] - (gt_emb[j] if e.text == NEUTRAL_TEXT else t_emb[j]), axis=1)
            r = mcdpo_reward(l, d, w_l, w_d) + w_f * shares[rows]
            pair = pick_pair(r)
            if pair is None:
                continue
            c, w = pair
            prefs.append(Preference(e.text, e.video_id, cands[j * kappa + c], cands[j * kappa + w],
                                    float(r[c] - r[w]), e.random_video))
    return prefs


def train_mcdpo(policy: MotionLLM, reference: MotionLLM, prefs: list[Preference], retriever,
                cfg: LLMTrainConfig, workdir: Path, beta: float = 0.1, resume: bool = True,
                val_prefs: list[Preference] | None = None) -> MotionLLM:
    """DPO on preference pairs. With ``val_prefs`` (pairs of prompts never trained on) and
    ``cfg.val_every``, the DPO loss, margin and accuracy on them are logged (``kind: "val"``), the
    weights with the lowest held-out loss are the result, and ``cfg.patience`` stops early: a
    margin that rises on the training pairs only is memorisation, not preference learning."""
    draw = _epoch_sampler(len(prefs), cfg)
    reference.eval()
    for p in reference.parameters():
        p.requires_grad_(False)

    def logps(model, ps, which):
        codes = [getattr(p, which) for p in ps]
        batch = model.build_batch([p.text for p in ps], [video_of(retriever, p.video_id) for p in ps],
                                  codes, padding="right").to(model.device)
        return model.sequence_logprob(batch)

    validate = None
    if val_prefs:
        chunks = [val_prefs[i:i + cfg.batch_size] for i in range(0, len(val_prefs), cfg.batch_size)]
        with torch.no_grad():   # the reference never changes: its log-probs once
            ref = [(logps(reference, c, "chosen"), logps(reference, c, "rejected")) for c in chunks]

        def validate(core):
            pol_c = torch.cat([logps(core, c, "chosen") for c in chunks])
            pol_r = torch.cat([logps(core, c, "rejected") for c in chunks])
            _, m = dpo_loss(pol_c, pol_r, torch.cat([r[0] for r in ref]), torch.cat([r[1] for r in ref]),
                            beta=beta)
            return {"val_loss": m["loss"], "val_margin": m["margin"], "val_accuracy": m["accuracy"]}

    def step_fn(core, step):
        ps = [prefs[i] for i in draw(step)]
        with torch.no_grad():
            ref_c, ref_r = logps(reference, ps, "chosen"), logps(reference, ps, "rejected")
        pol_c, pol_r = logps(core, ps, "chosen"), logps(core, ps, "rejected")
        loss, metrics = dpo_loss(pol_c, pol_r, ref_c, ref_r, beta=beta)
        return loss, {k: float(v) for k, v in metrics.items()}

    return _loop(policy, cfg, workdir, resume, "McDPO", step_fn, validate)


__all__ = ["Example", "LLMTrainConfig", "Preference", "VideoBank", "build_examples", "decode_codes",
           "make_preferences", "motion_codes", "VIDEO_MID", "video_only_examples", "retrieval_cache", "self_video_ids", "train_mcdpo",
           "train_sft", "validation_loss", "video_of", "warm_start"]
