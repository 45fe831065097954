"""Text -> video retrieval quality on held-out captions: R@1, R@5, R@10 and median rank, and
whether the rank-1 video gets right what the words ask.

Every held-out caption is a query; its own video is the only correct answer among all
held-out videos. Four scorers share the trained embeddings: the object channel alone, the
action channel alone, a fixed 0.5/0.5 mix, and the trained router (Gemini-MVR's score).

Beside exact-video recall (harsh: many held-out videos show the same kind of motion):

- ``kind@1``: every motion kind of the query's own video (``spec.kinds``) is in the rank-1 video;
- ``side@1``: over queries naming left/right (a limb or a turn; clockwise = right), the rank-1
  video's captions name the same sides;
- ``direction@1``: over queries with a direction (backward, turning, else forward), the rank-1
  video's captions have the same one (``direction_of``);
- the same three over the queries whose video contains an OOD kind (``ood kind@1`` ...);
- ``kind@1`` apart for queries whose video shows one kind and two or more (``kind@1 one kind``,
  ``kind@1 several kinds``): "A, then B" needs a video with both, which few held-out videos are;
- ``video-side kind@1``: how far the action channel's *video* embeddings alone can take kind@1:
  each query is replaced by the mean embedding of the training videos with its video's kinds
  (queries whose kind combination no training video has fall back to the sum over its single
  kinds), so a miss there is the video side's, and the gap to the router is the text side's.
"""
from __future__ import annotations


import numpy as np
import torch

from backend.data.corpus import OOD_KINDS
from motioncore.prompt import split_prompts
from backend.retrieval.model import GeminiMVR, encode_captions
from backend.retrieval.rerank import (CHAIN_DEPTH, CHAIN_WEIGHT, PART_VOTES, READ_WEIGHT, RERANK_DEPTH, RERANK_WEIGHT,
                                      agreement, attribute_cues, kind_agreement, part_kind, video_cues)
from backend.retrieval.scene import strip_scene
from backend.retrieval.sides import direction_of, sides_of, video_sides_and_direction
from backend.retrieval.train import CaptionedVideos, captions_of
from backend.retrieval.videos.database import VideoDatabase

ROUTER = "Gemini-MVR (router)"
RERANKED = "router + cue re-rank"
ACTION_RERANKED = "action + cue re-rank"
CHAINED = "router + cue + chain re-rank"
ACTION_CHAINED = "action + cue + chain re-rank"
READ = "router + cue + read-kind re-rank"
ACTION_READ = "action + cue + read-kind re-rank"
VARIANTS = ("object only", "action only", "fixed 0.5/0.5", ROUTER, ACTION_RERANKED, RERANKED,
            ACTION_CHAINED, CHAINED, ACTION_READ, READ)
RERANKED_ROWS = (RERANKED, ACTION_RERANKED, CHAINED, ACTION_CHAINED, READ, ACTION_READ)


def ranks_of(scores: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """1-based rank of the true column of every row (ties count against the truth)."""
    true = scores[np.arange(len(scores)), truth][:, None]
    return (scores >= true).sum(1)


def attribute_hits(query_captions: list[str], query_kinds: list[frozenset], rank1: np.ndarray,
                   video_captions: list[list[str]], video_kinds: list[frozenset]) -> dict:
    """{"kind@1", "side@1", "direction@1"} (share, queries counted) of rank-1 videos ``rank1``
    (video index per query). A video's sides are those its captions name (union); its direction
    the most common one of its captions."""
    v_sides, v_dir = zip(*map(video_sides_and_direction, video_captions)) if video_captions else ((), ())
    kind, side, direction = [], [], []
    for q, (cap, kinds) in enumerate(zip(query_captions, query_kinds)):
        r = int(rank1[q])
        if kinds:
            kind.append(kinds <= video_kinds[r])
        qs = sides_of(cap)
        if qs:
            side.append(qs == v_sides[r])
        qd = direction_of(cap)
        if qd:
            direction.append(qd == v_dir[r])
    share = lambda xs: {"share": float(np.mean(xs)) if xs else float("nan"), "queries": len(xs)}
    n_kinds = [len(k) for k in query_kinds if k]
    return {"kind@1": share(kind), "side@1": share(side), "direction@1": share(direction),
            "kind@1 one kind": share([h for h, n in zip(kind, n_kinds) if n == 1]),
            "kind@1 several kinds": share([h for h, n in zip(kind, n_kinds) if n > 1])}


def kind_prototypes(train_a: torch.Tensor, train_kinds: list[frozenset],
                    query_kinds: list[frozenset]) -> torch.Tensor | None:
    """(Q, D) unit query vectors: the mean training-video embedding of each query's kind set
    (``video-side kind@1``, module docstring); None when a query's kinds have no training video."""
    import torch.nn.functional as F

    groups: dict[frozenset, list[int]] = {}
    for i, k in enumerate(train_kinds):
        if k:
            groups.setdefault(k, []).append(i)
    proto = {k: F.normalize(train_a[ix].mean(0), dim=-1) for k, ix in groups.items()}
    out = []
    for k in query_kinds:
        if k in proto:
            out.append(proto[k])
        elif all(frozenset([x]) in proto for x in k) and k:
            out.append(F.normalize(sum(proto[frozenset([x])] for x in k), dim=-1))
        else:
            return None
    return torch.stack(out)


def recall_table(ranks: np.ndarray) -> dict:
    return {"R@1": float(np.mean(ranks <= 1)), "R@5": float(np.mean(ranks <= 5)),
            "R@10": float(np.mean(ranks <= 10)), "MedR": float(np.median(ranks)),
            "queries": int(len(ranks))}


def r1_interval(ranks: np.ndarray, groups: np.ndarray, other: np.ndarray | None = None,
                draws: int = 2000, seed: int = 0) -> dict:
    """R@1 of ``ranks`` (or, with ``other``, R@1(ranks) - R@1(other) on the same queries) with a
    95 % percentile bootstrap interval that resamples whole *videos* (``groups``: the true video
    of each query), since the captions of one video are not independent draws."""
    hit = (np.asarray(ranks) <= 1).astype(np.float64)
    if other is not None:
        hit = hit - (np.asarray(other) <= 1)
    ids, inv = np.unique(np.asarray(groups), return_inverse=True)
    per_sum, per_n = np.bincount(inv, hit, len(ids)), np.bincount(inv, minlength=len(ids))
    pick = np.random.default_rng(seed).integers(len(ids), size=(draws, len(ids)))
    boot = per_sum[pick].sum(1) / per_n[pick].sum(1)
    lo, hi = np.percentile(boot, [2.5, 97.5])
    return {"value": float(hit.mean()), "low": float(lo), "high": float(hi)}


def reranked_scores(fused: np.ndarray, query_captions: list[str], video_captions: list[list[str]],
                    weight: float = RERANK_WEIGHT, depth: int = RERANK_DEPTH) -> np.ndarray:
    """``fused`` (Q, N) with ``weight`` x the cue agreement (``backend.retrieval.rerank``) added
    to each query's ``depth`` best videos, as ``VideoRetriever.search`` re-ranks them."""
    bonus = agreement(attribute_cues(query_captions), video_cues(video_captions))
    top = np.argsort(-fused, axis=1, kind="stable")[:, :depth]
    out = fused.astype(np.float64).copy()
    rows = np.arange(len(fused))[:, None]
    out[rows, top] += weight * bonus[rows, top]
    return out


def chain_reranked(scores: np.ndarray, query_captions: list[str], parts: list[str], part_scores: np.ndarray,
                   owners: list[int], video_captions: list[list[str]], video_kinds: list[frozenset],
                   rerank_weight: float = RERANK_WEIGHT, chain_weight: float = CHAIN_WEIGHT,
                   depth: int = RERANK_DEPTH, chain_depth: int = CHAIN_DEPTH,
                   part_reads: list[dict] | None = None) -> np.ndarray:
    """``scores`` (Q, N) re-ranked as ``VideoRetriever.search`` does: every query's ``depth``
    best videos by its cues; a query cut into several ``parts`` (``split_prompts``: ``owners``
    is the query of each part, ``part_scores`` the parts' (P, N) learned scores) instead has its
    ``chain_depth`` best videos re-ranked by its cues and, with ``chain_weight``, by the share of
    its parts' kinds each video shows (``rerank.part_kind`` over each part's cue-re-ranked
    ``PART_VOTES`` best videos; ``rerank.kind_agreement``). With ``part_reads`` (per part,
    {kind: probability} of its words, ``KindReader.read``) each part's kind is read from its
    videos and its words together, and one-part queries are re-ranked by their kind too."""
    if not len(parts) == len(owners) == len(part_scores):
        raise ValueError(f"{len(parts)} parts, {len(owners)} owners and {len(part_scores)} rows of part scores")
    if part_reads is not None and len(part_reads) != len(parts):
        raise ValueError(f"{len(part_reads)} kind readings for {len(parts)} parts")
    parts_cued = reranked_scores(part_scores, parts, video_captions, rerank_weight, depth)
    out = reranked_scores(scores, query_captions, video_captions, rerank_weight, depth)
    owners = np.asarray(owners, np.int64)
    counts = np.bincount(owners, minlength=len(scores))
    kinded = np.flatnonzero(counts > (0 if part_reads is not None else 1))
    if not len(kinded):
        return out
    cues = agreement(attribute_cues([query_captions[q] for q in kinded]), video_cues(video_captions))
    for row, q in enumerate(kinded):
        kinds = [part_kind([video_kinds[v] for v in np.argsort(-parts_cued[j], kind="stable")[:PART_VOTES]],
                           None if part_reads is None else part_reads[j])
                 for j in np.flatnonzero(owners == q)]
        top = np.argsort(-scores[q], kind="stable")[:chain_depth]
        out[q] = scores[q].astype(np.float64)
        out[q, top] += rerank_weight * cues[row, top] + chain_weight * kind_agreement(
            kinds, [video_kinds[v] for v in top])
    return out


@torch.no_grad()
def evaluate_retrieval(model: GeminiMVR, db: VideoDatabase, split: str = "test", minilm=None,
                       rerank_weight: float = RERANK_WEIGHT, chain_weight: float = CHAIN_WEIGHT,
                       kind_reader=None, read_weight: float = READ_WEIGHT, scene: bool = False) -> dict:
    """Every held-out caption as a query against the split's videos (``scene``: each caption
    followed by its video's appearance clause, ``scene.py``)."""
    data = CaptionedVideos.from_database(db, split, minilm, scene=scene)
    model.eval()
    video = model.encode_video(data.keypoints, data.object)
    text = model.encode_text(data.pred_emb, data.cap_emb)
    s = model.fused_scores(text, video)
    truth = data.cap_video.numpy()
    act, obj = s["action"].numpy(), s["object"].numpy()
    records = {r["id"]: r for r in db.records}
    v_caps = [captions_of(records[i]) for i in data.ids]
    fused = s["fused"].numpy()
    v_kinds = [frozenset(records[i].get("spec", {}).get("kinds") or []) for i in data.ids]
    parts, owners = split_prompts(data.captions)
    parts = [strip_scene(p) for p in parts]     # a part's kind is read from its motion words
    sp = model.fused_scores(model.encode_text(*encode_captions(parts, minilm)), video)
    reads = kind_reader.read(parts) if kind_reader is not None else None
    chain = lambda sc, part_sc, rd=None: chain_reranked(sc, data.captions, parts, part_sc, owners, v_caps, v_kinds,
                                                        rerank_weight, chain_weight if rd is None else read_weight,
                                                        part_reads=rd)
    scorers = {"object only": obj, "action only": act, "fixed 0.5/0.5": 0.5 * act + 0.5 * obj,
               ROUTER: fused, ACTION_RERANKED: reranked_scores(act, data.captions, v_caps, rerank_weight),
               RERANKED: reranked_scores(fused, data.captions, v_caps, rerank_weight),
               ACTION_CHAINED: chain(act, sp["action"].numpy()), CHAINED: chain(fused, sp["fused"].numpy())}
    if reads is not None:
        scorers[ACTION_READ] = chain(act, sp["action"].numpy(), reads)
        scorers[READ] = chain(fused, sp["fused"].numpy(), reads)
    ranks = {name: ranks_of(sc, truth) for name, sc in scorers.items()}
    out = {name: recall_table(r) for name, r in ranks.items()}
    router = ROUTER
    rows = [name for name in VARIANTS if name in scorers]
    for name in rows:
        out[name]["R@1 interval"] = r1_interval(ranks[name], truth)
        if name not in (router, *RERANKED_ROWS):
            out[router][f"R@1 minus {name}"] = r1_interval(ranks[router], truth, ranks[name])
        if name not in (RERANKED, CHAINED, ACTION_CHAINED, READ, ACTION_READ):
            out[RERANKED][f"R@1 minus {name}"] = r1_interval(ranks[RERANKED], truth, ranks[name])
        if name not in (CHAINED, READ, ACTION_READ):
            out[CHAINED][f"R@1 minus {name}"] = r1_interval(ranks[CHAINED], truth, ranks[name])
        if READ in scorers and name != READ:
            out[READ][f"R@1 minus {name}"] = r1_interval(ranks[READ], truth, ranks[name])
    q_kinds = [v_kinds[t] for t in truth]
    ood_q = np.array([bool(k & set(OOD_KINDS)) for k in q_kinds])
    for name, sc in scorers.items():
        rank1 = sc.argmax(1)
        out[name].update(attribute_hits(data.captions, q_kinds, rank1, v_caps, v_kinds))
        if ood_q.any():
            sub = attribute_hits([c for c, o in zip(data.captions, ood_q) if o],
                                 [k for k, o in zip(q_kinds, ood_q) if o], rank1[ood_q], v_caps, v_kinds)
            out[name].update({f"ood {k}": v for k, v in sub.items()})
    train = CaptionedVideos.from_database(db, "train", minilm) if split != "train" else data
    train_a = model.encode_video(train.keypoints, train.object)["a"]
    protos = kind_prototypes(train_a, [frozenset(records[i].get("spec", {}).get("kinds") or [])
                                       for i in train.ids], q_kinds)
    if protos is not None:
        hits = attribute_hits(data.captions, q_kinds, (protos @ video["a"].T).numpy().argmax(1),
                              v_caps, v_kinds)
        out["video-side kind@1"] = {k: hits[k] for k in ("kind@1", "kind@1 one kind", "kind@1 several kinds")}
    out["composed kind@1"] = composed_kind_hits(model, video, data.captions, [
        list(dict.fromkeys(records[data.ids[t]].get("spec", {}).get("kinds") or [])) for t in truth],
        v_kinds, minilm, scorers[READ if READ in scorers else RERANKED].argmax(1), v_caps, rerank_weight,
        kind_reader, read_weight)
    w = video["w"].numpy()
    out["_meta"] = {"videos": len(data.ids), "captions": len(data.captions), "split": split,
                    "router_action_weight": {"mean": float(w[:, 0].mean()), "min": float(w[:, 0].min()),
                                             "max": float(w[:, 0].max())}}
    return out


@torch.no_grad()
def composed_kind_hits(model: GeminiMVR, video: dict, captions: list[str], ordered_kinds: list[list[str]],
                       video_kinds: list[frozenset], minilm, whole_rank1: np.ndarray,
                       video_captions: list[list[str]] | None = None,
                       rerank_weight: float = 0.0, kind_reader=None, read_weight: float = READ_WEIGHT) -> dict:
    """``composed kind@1`` (module docstring): {"kind@1", "parts", and with ``video_captions``
    "side@1", "direction@1"} as {"share", "queries"}; side and direction are judged per query
    the pipeline sends (each part of a split caption, else the whole caption). ``rerank_weight``:
    the parts' videos re-ranked by their cues as the pipeline's retriever does (needs
    ``video_captions``; ``whole_rank1`` should then be the re-ranked one too); with ``kind_reader``
    each part (a query of its own) is also re-ranked by its read kind (``chain_reranked``)."""
    parts, owners = split_prompts(captions)
    n_parts = np.bincount(owners, minlength=len(captions))
    pred, whole = encode_captions(parts, minilm)
    t = model.encode_text(pred, whole)
    fused = model.fused_scores(t, video)["fused"].numpy()
    if video_captions is not None and kind_reader is not None:
        fused = chain_reranked(fused, parts, parts, fused, list(range(len(parts))), video_captions, video_kinds,
                               rerank_weight, read_weight, part_reads=kind_reader.read(parts))
    elif video_captions is not None and rerank_weight:
        fused = reranked_scores(fused, parts, video_captions, rerank_weight)
    rank1 = fused.argmax(1)
    by_caption: dict[int, list[int]] = {}
    for j, o in enumerate(owners):
        by_caption.setdefault(o, []).append(j)
    hits, part_hits = [], []
    for q, kinds in enumerate(ordered_kinds):
        if not kinds:
            continue
        if n_parts[q] > 1 and n_parts[q] == len(kinds):
            ok = [kind in video_kinds[rank1[j]] for kind, j in zip(kinds, by_caption[q])]
            part_hits += ok
            hits.append(all(ok))
        else:
            hits.append(frozenset(kinds) <= video_kinds[int(whole_rank1[q])])
    share = lambda xs: {"share": float(np.mean(xs)) if xs else float("nan"), "queries": len(xs)}
    out = {"kind@1": share(hits), "parts": share(part_hits)}
    if video_captions is not None:
        sent = list(zip(parts, rank1.tolist()))
        sub = attribute_hits([p for p, _ in sent], [frozenset()] * len(sent),
                             np.array([r for _, r in sent]), video_captions, video_kinds)
        out.update({"side@1": sub["side@1"], "direction@1": sub["direction@1"]})
    return out


def format_retrieval(res: dict) -> str:
    meta = res["_meta"]
    lines = [f"text -> video retrieval, {meta['captions']} held-out captions over "
             f"{meta['videos']} held-out videos",
             f"{'scorer':<33}{'R@1':>8}{'R@5':>8}{'R@10':>8}{'MedR':>8}{'kind@1':>8}{'side@1':>8}"
             f"{'dir@1':>8}", "-" * 89]
    pct = lambda r, k: f"{100 * r[k]['share']:>7.1f}%" if k in r else f"{'-':>8}"
    for name in (n for n in VARIANTS if n in res):
        r = res[name]
        lines.append(f"{name:<33}{100 * r['R@1']:>7.1f}%{100 * r['R@5']:>7.1f}%"
                     f"{100 * r['R@10']:>7.1f}%{r['MedR']:>8.0f}"
                     + "".join(pct(r, k) for k in ("kind@1", "side@1", "direction@1")))
    first = res[ROUTER]
    counts = ", ".join(f"{k} over {first[k]['queries']}" for k in ("kind@1", "side@1", "direction@1")
                       if k in first)
    lines.append(f"queries: {counts}")
    pk = lambda r, k: f"{100 * r[k]['share']:.1f}% of {r[k]['queries']}"
    lines.append(f"router kind@1: one-kind queries {pk(first, 'kind@1 one kind')}, several kinds "
                 f"{pk(first, 'kind@1 several kinds')}")
    if "video-side kind@1" in res:
        v = res["video-side kind@1"]
        lines.append(f"video side alone (training videos' mean embedding per kind set as the query): "
                     f"kind@1 {100 * v['kind@1']['share']:.1f}% (one kind {100 * v['kind@1 one kind']['share']:.1f}%, "
                     f"several {100 * v['kind@1 several kinds']['share']:.1f}%)")
    if "composed kind@1" in res:
        c = res["composed kind@1"]
        lines.append(f"as the pipeline retrieves (chained captions part by part): router kind@1 "
                     f"{pk(c, 'kind@1')}; per part of the split captions {pk(c, 'parts')}"
                     + (f"; side@1 {pk(c, 'side@1')}, direction@1 {pk(c, 'direction@1')} (per query sent)"
                        if "side@1" in c else ""))
    if "ood kind@1" in first:
        lines.append("OOD-kind queries: " + ", ".join(
            f"{name} kind {100 * res[name]['ood kind@1']['share']:.0f}% / side "
            f"{100 * res[name]['ood side@1']['share']:.0f}% / dir {100 * res[name]['ood direction@1']['share']:.0f}%"
            for name in VARIANTS if name in res) + f" ({first['ood kind@1']['queries']} queries)")
    diffs = [(k[len("R@1 minus "):], v) for k, v in first.items() if k.startswith("R@1 minus ")]
    if diffs:
        lines.append("router R@1 minus: " + ", ".join(
            f"{name} {100 * d['value']:+.1f} points [{100 * d['low']:+.1f}, {100 * d['high']:+.1f}]"
            for name, d in diffs) + " (95 % bootstrap over videos)")
    for name, label in ((RERANKED, "re-ranked router"), (CHAINED, "chain re-ranked router"),
                        (READ, "read-kind re-ranked router")):
        if name not in res:
            continue
        diffs = [(k[len("R@1 minus "):], v) for k, v in res[name].items() if k.startswith("R@1 minus ")]
        if diffs:
            lines.append(f"{label} R@1 minus: " + ", ".join(
                f"{other} {100 * d['value']:+.1f} [{100 * d['low']:+.1f}, {100 * d['high']:+.1f}]"
                for other, d in diffs))
    for name, label in ((CHAINED, "chain re-ranked router"), (READ, "read-kind re-ranked router")):
        if name in res and "kind@1 several kinds" in res[name]:
            c = res[name]
            lines.append(f"{label} kind@1: one-kind queries {pk(c, 'kind@1 one kind')}, "
                         f"several kinds {pk(c, 'kind@1 several kinds')}")
    w = meta["router_action_weight"]
    lines.append(f"router action weight: mean {w['mean']:.2f} (min {w['min']:.2f}, max {w['max']:.2f})")
    return "\n".join(lines)


__all__ = ["ACTION_CHAINED", "ACTION_READ", "ACTION_RERANKED", "CHAINED", "READ", "RERANKED", "chain_reranked", "ROUTER", "VARIANTS", "reranked_scores", "attribute_hits", "composed_kind_hits", "direction_of", "evaluate_retrieval", "format_retrieval", "kind_prototypes",
           "r1_interval", "ranks_of", "recall_table", "sides_of"]
