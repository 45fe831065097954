"""Training Gemini-MVR on a captioned video database (the embedded one carries captions for
this purpose only, as the paper's retriever training set does).

Stage 1 (``train_channels``): both channels with a symmetric InfoNCE loss each (text -> video
and video -> text over the batch). Stage 2 (``train_router``): the channels are frozen and only
the router (and the fused temperature) learns, with the same loss on the fused score.
The two stages use disjoint parts of the training videos (3/4 and 1/4): a router fitted on the
channels' own training videos learns to trust whichever channel memorised them best (here the
object channel), which does not carry over to new videos.
Text embeddings come from frozen MiniLM and are computed once per caption.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from backend.retrieval.model import GeminiMVR, RetrieverConfig, encode_captions
from backend.retrieval.scene import scene_variant, with_scene
from backend.retrieval.sides import mirror_caption, mirror_keypoints, video_sides_and_direction
from backend.retrieval.videos.database import VideoDatabase


def captions_of(record: dict) -> list[str]:
    return list(record.get("captions") or record.get("spec", {}).get("captions") or [])


def split_of(record: dict) -> str:
    return record.get("split") or record.get("spec", {}).get("split") or "train"


@dataclass
class CaptionedVideos:
    """Rows of a database with captions, and frozen text embeddings of every caption."""
    keypoints: torch.Tensor        # (N, T, J, 3)
    object: torch.Tensor           # (N, 1024)
    cap_video: torch.Tensor        # (C,) row of each caption
    pred_emb: torch.Tensor         # (C, 384 + N_CUES): MiniLM of the predicate, then the word cues
    cap_emb: torch.Tensor          # (C, 384 + N_SCENE_CUES): MiniLM of the whole caption, then its scene cues
    captions: list[str]
    ids: list[str]
    motions: list[tuple] | None = None   # per video: what it shows (``motion_key``), for soft positives

    @classmethod
    def from_database(cls, db: VideoDatabase, split: str, minilm=None,
                      part: str | None = None, mirror: bool = False,
                      scene: bool = False) -> "CaptionedVideos":
        """``part``: "channels" or "router" picks one of two disjoint parts of the split (every
        fourth video goes to the router), so the router learns how reliable each channel is on
        videos the channels were not fitted to. ``mirror`` adds, for every video whose captions
        name a side, its mirror image with the sides of its captions swapped (id ``ID~mirror``;
        the object feature is kept: I3D's appearance features hardly change under a mirror), so
        "left" and "right" become each other's hard negatives. ``scene``: every caption followed by
        its video's appearance clause (``scene.with_scene``; the described queries of ``eval
        retrieval`` and what ``train_appearance`` learns from)."""
        rows = [i for i, r in enumerate(db.records) if split_of(r) == split and captions_of(r)]
        if part is not None:
            rows = [i for n, i in enumerate(rows) if (n % 4 == 3) == (part == "router")]
        if not rows:
            raise ValueError(f"{db.root}: no captioned videos in split {split!r}")
        keypoints = torch.from_numpy(db.keypoints[rows])
        objects = torch.from_numpy(db.object[rows])
        ids = [db.records[i]["id"] for i in rows]
        per_video = [captions_of(db.records[i]) for i in rows]
        if mirror:
            sided = [j for j, caps in enumerate(per_video) if any(mirror_caption(c) != c for c in caps)]
            keypoints = torch.cat([keypoints, mirror_keypoints(keypoints[sided])])
            objects = torch.cat([objects, objects[sided]])
            ids += [f"{ids[j]}~mirror" for j in sided]
            per_video += [[mirror_caption(c) for c in per_video[j]] for j in sided]
        specs = [db.records[i].get("spec") or {} for i in rows]
        if mirror:
            specs += [specs[j] for j in sided]
        caps, owner = [], []
        for j, vcaps in enumerate(per_video):
            for n, c in enumerate(vcaps):
                caps.append(with_scene(c, specs[j], scene_variant(ids[j].split("~")[0], n)) if scene else c)
                owner.append(j)
        pred, whole = encode_captions(caps, minilm)
        kinds = [tuple(s.get("kinds") or ()) for s in specs]
        motions = [motion_key(k, vcaps) for k, vcaps in zip(kinds, per_video)]
        return cls(keypoints, objects, torch.tensor(owner), pred, whole, caps, ids, motions)


def training_caption_memory(db: VideoDatabase, minilm=None) -> torch.Tensor:
    """Predicate embeddings (with word cues) of every training caption and of its mirror image
    where it names a side: what ``GeminiMVR.attach_caption_memory`` keeps."""
    return CaptionedVideos.from_database(db, "train", minilm, mirror=True).pred_emb


def motion_key(kinds, captions: list[str]) -> tuple | None:
    """What a video shows, as far as retrieval is judged on it (``evaluate.attribute_hits``):
    its motion kinds in order, the sides its captions name and their most common direction.
    None when the kinds are unknown (such a video is only ever its own positive)."""
    if not kinds:
        return None
    return (tuple(kinds), *video_sides_and_direction(captions))


def soft_info_nce(scores: torch.Tensor, scale: torch.Tensor, same: torch.Tensor,
                  share: float) -> torch.Tensor:
    """Symmetric InfoNCE where a video showing the same motion as the caption's own
    (``same``: (B, B) bool, diagonal ignored) is not pushed away: ``share`` of each row's
    target mass is spread evenly over those videos, the rest stays on the diagonal (rows with
    none keep it all). ``share`` 0 is ``info_nce``. Exact-video negatives of the same kind are
    what made plain InfoNCE rank a caption's kind poorly: many training videos show the same
    kind with other phrasings."""
    B = len(scores)
    eye = torch.eye(B, dtype=torch.bool, device=scores.device)
    others = same & ~eye
    n = others.sum(1, keepdim=True)
    target = torch.where(others, share / n.clamp(min=1), torch.zeros((), device=scores.device))
    target = target + torch.where(eye, torch.where(n > 0, 1.0 - share, 1.0), torch.zeros(()))
    logits = scores * scale.exp().clamp(max=100)
    loss_t = -(target * logits.log_softmax(1)).sum(1).mean()
    loss_v = -(target.T * logits.T.log_softmax(1)).sum(1).mean()
    return 0.5 * (loss_t + loss_v)


def same_motion(motions: list[tuple] | None, vids: torch.Tensor) -> torch.Tensor | None:
    """(B, B) bool: videos ``vids`` showing the same motion (``motion_key``; unknown = no)."""
    if motions is None:
        return None
    keys = [motions[int(v)] for v in vids]
    return torch.tensor([[a is not None and a == b for b in keys] for a in keys])


def info_nce(scores: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE on a (B, B) text x video score matrix whose diagonal is positive."""
    logits = scores * scale.exp().clamp(max=100)
    target = torch.arange(len(scores))
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


def augment(kp: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Keypoint noise, scale jitter and dropped joints (what a pose detector does)."""
    B = kp.shape[0]
    xy, conf = kp[..., :2], kp[..., 2:3]
    scale = 1 + 0.1 * (torch.rand(B, 1, 1, 1, generator=gen) * 2 - 1)
    xy = xy * scale + 0.01 * torch.randn(xy.shape, generator=gen)
    drop = (torch.rand(conf.shape, generator=gen) < 0.05).float()
    conf = conf * (1 - drop)
    return torch.cat([xy * (conf > 0.05).float(), conf], -1)


def _batches(data: CaptionedVideos, batch: int, gen: torch.Generator):
    """One caption per video, each batch with distinct videos."""
    n = len(data.ids)
    by_video: list[list[int]] = [[] for _ in range(n)]
    for c, v in enumerate(data.cap_video.tolist()):
        by_video[v].append(c)
    while True:
        order = torch.randperm(n, generator=gen).tolist()
        for s in range(0, n - batch + 1, batch):
            vids = order[s:s + batch]
            caps = [by_video[v][int(torch.randint(len(by_video[v]), (1,), generator=gen))] for v in vids]
            yield torch.tensor(vids), torch.tensor(caps)


def _step(opt, sched, loss: torch.Tensor, params: list) -> None:
    """One clipped optimiser step and one scheduler step."""
    opt.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()
    sched.step()


def _log(path: Path | None, row: dict) -> None:
    if path is not None:
        with open(path, "a") as fh:
            fh.write(json.dumps(row) + "\n")


def train_channels(db: VideoDatabase, steps: int = 1500, batch: int = 64, lr: float = 5e-4,
                   seed: int = 0, cfg: RetrieverConfig | None = None, log: Path | None = None,
                   progress: bool = True, minilm=None, mirror: bool = False,
                   soft_positives: float = 0.0) -> GeminiMVR:
    """Stage 1: both channels, InfoNCE each (``mirror``: with mirrored sided videos, see
    ``CaptionedVideos.from_database``; ``soft_positives``: the share of each caption's target
    given to the batch's other videos of the same motion, ``soft_info_nce``)."""
    if not 0.0 <= soft_positives < 1.0:
        raise ValueError(f"soft_positives must be in [0, 1), got {soft_positives}")
    torch.manual_seed(seed)
    data = CaptionedVideos.from_database(db, "train", minilm, part="channels", mirror=mirror)
    batch = min(batch, len(data.ids))
    model = GeminiMVR(cfg).train()
    params = [p for n, p in model.named_parameters() if not n.startswith("router")]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    gen = torch.Generator().manual_seed(seed)
    it = _batches(data, batch, gen)
    bar = tqdm(range(steps), desc="retriever stage 1", disable=not progress)
    for step in bar:
        v, c = next(it)
        video = model.encode_video(augment(data.keypoints[v], gen), data.object[v])
        text = model.encode_text(data.pred_emb[c], data.cap_emb[c])
        s = model.fused_scores(text, video)
        if soft_positives > 0:
            same = same_motion(data.motions, v)
            l_act = soft_info_nce(s["action"], model.logit_scale[0], same, soft_positives)
            l_obj = soft_info_nce(s["object"], model.logit_scale[1], same, soft_positives)
        else:
            l_act = info_nce(s["action"], model.logit_scale[0])
            l_obj = info_nce(s["object"], model.logit_scale[1])
        loss = l_act + l_obj
        _step(opt, sched, loss, params)
        if step % 50 == 0 or step == steps - 1:
            bar.set_postfix(action=f"{l_act.item():.3f}", object=f"{l_obj.item():.3f}")
            _log(log, {"stage": 1, "step": step, "action": l_act.item(), "object": l_obj.item(),
                       "time": time.time()})
    return model.eval()


def train_appearance(model: GeminiMVR, db: VideoDatabase, steps: int = 1500, batch: int = 64,
                     lr: float = 5e-4, seed: int = 0, log: Path | None = None,
                     progress: bool = True, minilm=None) -> GeminiMVR:
    """Teach a finished retriever what its videos look like in words (``GeminiMVR.add_appearance``):
    only the appearance projections and their scale learn, on the channels' videos with every
    caption followed by its video's appearance clause (``scene.with_scene``); both channels, the
    router and the temperatures stay exactly as they were, so a query that names no colour or
    setting ranks as before. The loss is InfoNCE on the object score and on the fused score (the
    router's weights, frozen, decide how much the appearance can move a ranking)."""
    torch.manual_seed(seed)
    model.add_appearance()
    data = CaptionedVideos.from_database(db, "train", minilm, part="channels", scene=True)
    batch = min(batch, len(data.ids))
    for p in model.parameters():
        p.requires_grad_(False)
    params = (list(model.appearance_video.parameters()) + list(model.appearance_text.parameters())
              + [model.appearance_scale])
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    gen = torch.Generator().manual_seed(seed)
    it = _batches(data, batch, gen)
    model.eval()                                    # frozen parts: no dropout
    with torch.no_grad():                           # the frozen action side, once
        a_all = model.encode_video(data.keypoints, data.object)["a"]
        p_all = model.encode_text(data.pred_emb, data.cap_emb)["p"]
    model.appearance_text.train()
    bar = tqdm(range(steps), desc="retriever appearance", disable=not progress)
    for step in bar:
        v, c = next(it)
        video = {"a": a_all[v], "o": model.encode_object(data.object[v]), "w": model.router(a_all[v])}
        text = {"p": p_all[c], "g": model.encode_text(data.pred_emb[c], data.cap_emb[c])["g"]}
        s = model.fused_scores(text, video)
        l_obj = info_nce(s["object"], model.logit_scale[1])
        l_fused = info_nce(s["fused"], model.logit_scale[2])
        loss = l_obj + l_fused
        _step(opt, sched, loss, params)
        if step % 50 == 0 or step == steps - 1:
            bar.set_postfix(object=f"{l_obj.item():.3f}", fused=f"{l_fused.item():.3f}",
                            scale=f"{model.appearance_scale.exp().item():.2f}")
            _log(log, {"stage": "appearance", "step": step, "object": l_obj.item(), "fused": l_fused.item(),
                       "scale": model.appearance_scale.exp().item(), "time": time.time()})
    for p in model.parameters():
        p.requires_grad_(True)
    return model.eval()


def train_router(model: GeminiMVR, db: VideoDatabase, steps: int = 600, batch: int = 128,
                 lr: float = 1e-2, seed: int = 0, log: Path | None = None, progress: bool = True,
                 minilm=None) -> GeminiMVR:
    """Stage 2: channels frozen; only the router and the fused temperature learn."""
    torch.manual_seed(seed)
    data = CaptionedVideos.from_database(db, "train", minilm, part="router")
    batch = min(batch, len(data.ids))
    for p in model.parameters():
        p.requires_grad_(False)
    for p in model.router.parameters():
        p.requires_grad_(True)
    model.logit_scale.requires_grad_(True)
    model.eval()                                    # frozen channels: no dropout
    with torch.no_grad():
        video = model.encode_video(data.keypoints, data.object)
        text = model.encode_text(data.pred_emb, data.cap_emb)
    opt = torch.optim.Adam(list(model.router.parameters()) + [model.logit_scale], lr=lr)
    gen = torch.Generator().manual_seed(seed)
    it = _batches(data, batch, gen)
    bar = tqdm(range(steps), desc="retriever stage 2 (router)", disable=not progress)
    for step in bar:
        v, c = next(it)
        w = model.router(video["a"][v])
        s_act = text["p"][c] @ video["a"][v].T
        s_obj = text["g"][c] @ video["o"][v].T
        fused = w[:, 0] * s_act + w[:, 1] * s_obj
        loss = info_nce(fused, model.logit_scale[2])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 50 == 0 or step == steps - 1:
            bar.set_postfix(loss=f"{loss.item():.3f}", w_action=f"{w[:, 0].mean().item():.2f}")
            _log(log, {"stage": 2, "step": step, "loss": loss.item(),
                       "w_action": w[:, 0].mean().item(), "time": time.time()})
    for p in model.parameters():
        p.requires_grad_(True)
    return model.eval()


__all__ = ["CaptionedVideos", "augment", "captions_of", "info_nce", "mirror_caption",
           "mirror_keypoints", "split_of", "train_appearance", "train_channels", "train_router",
           "training_caption_memory"]
