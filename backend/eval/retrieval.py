"""Text -> video retrieval quality on held-out captions: R@1, R@5, R@10 and median rank.

Every held-out caption is a query; its own video is the only correct answer among all
held-out videos. Four scorers share the trained embeddings: the object channel alone, the
action channel alone, a fixed 0.5/0.5 mix, and the trained router (Gemini-MVR's score).
"""
from __future__ import annotations

import numpy as np
import torch

from backend.models.retriever import GeminiMVR
from backend.train.retriever import CaptionedVideos
from backend.video.database import VideoDatabase

VARIANTS = ("object only", "action only", "fixed 0.5/0.5", "Gemini-MVR (router)")


def ranks_of(scores: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """1-based rank of the true column of every row (ties count against the truth)."""
    true = scores[np.arange(len(scores)), truth][:, None]
    return (scores >= true).sum(1)


def recall_table(ranks: np.ndarray) -> dict:
    return {"R@1": float(np.mean(ranks <= 1)), "R@5": float(np.mean(ranks <= 5)),
            "R@10": float(np.mean(ranks <= 10)), "MedR": float(np.median(ranks)),
            "queries": int(len(ranks))}


@torch.no_grad()
def evaluate_retrieval(model: GeminiMVR, db: VideoDatabase, split: str = "test", minilm=None) -> dict:
    data = CaptionedVideos.from_database(db, split, minilm)
    model.eval()
    video = model.encode_video(data.keypoints, data.object)
    text = model.encode_text(data.pred_emb, data.cap_emb)
    s = model.fused_scores(text, video)
    truth = data.cap_video.numpy()
    act, obj = s["action"].numpy(), s["object"].numpy()
    scorers = {"object only": obj, "action only": act, "fixed 0.5/0.5": 0.5 * act + 0.5 * obj,
               "Gemini-MVR (router)": s["fused"].numpy()}
    out = {name: recall_table(ranks_of(sc, truth)) for name, sc in scorers.items()}
    w = video["w"].numpy()
    out["_meta"] = {"videos": len(data.ids), "captions": len(data.captions), "split": split,
                    "router_action_weight": {"mean": float(w[:, 0].mean()), "min": float(w[:, 0].min()),
                                             "max": float(w[:, 0].max())}}
    return out


def format_retrieval(res: dict) -> str:
    meta = res["_meta"]
    lines = [f"text -> video retrieval, {meta['captions']} held-out captions over "
             f"{meta['videos']} held-out videos",
             f"{'scorer':<22}{'R@1':>8}{'R@5':>8}{'R@10':>8}{'MedR':>8}", "-" * 54]
    for name in VARIANTS:
        r = res[name]
        lines.append(f"{name:<22}{100 * r['R@1']:>7.1f}%{100 * r['R@5']:>7.1f}%"
                     f"{100 * r['R@10']:>7.1f}%{r['MedR']:>8.0f}")
    w = meta["router_action_weight"]
    lines.append(f"router action weight: mean {w['mean']:.2f} (min {w['min']:.2f}, max {w['max']:.2f})")
    return "\n".join(lines)


__all__ = ["VARIANTS", "evaluate_retrieval", "format_retrieval", "ranks_of", "recall_table"]
