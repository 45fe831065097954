"""Where does left/right get lost between a caption and a video? (``python -m backend eval sides``)

side@1 of every retriever before session 15 was about a coin flip (README, *Where the side is
lost*). Three places could lose the side; each gets one number:

- ``detector_agreement``: the pose detector's left/right labels against the truth. For each
  synthetic database video the true joints are projected with the video's own camera direction;
  a (left, right) joint pair agrees on a frame when the detected pair lies in the same left-right
  order along the image's horizontal axis as the true one (frames where the true pair is less
  than 8 cm apart across the view, or a joint is undetected, are skipped).
- ``mirror_similarity`` on the video side: cosine between the action embedding of a video and of
  its mirror image, against the cosine between different videos.
- ``mirror_similarity`` on the text side: cosine between the predicate embedding of a caption
  naming a side and of its mirror caption ("left" <-> "right"), against different captions.

If the detector agrees and the video side tells mirror images apart while the text side does
not, the words are where the side is lost.
"""
from __future__ import annotations

import numpy as np
import torch

from backend.retrieval.sides import mirror_caption, mirror_keypoints
from backend.retrieval.videos.decode import sample_indices
from backend.retrieval.videos.pose import COCO17_NAMES
from motioncore.skeleton import JOINT_NAMES

# joints named left_X / right_X in both the body skeleton and COCO-17, compared pairwise
PAIRS = ("shoulder", "hip", "wrist", "ankle")
MIN_SPREAD = 0.08        # metres across the view below which a pair's order is not judged
MIN_CONF = 0.3


def image_right(azimuth_deg: float, facing_yaw: float) -> np.ndarray:
    """World direction (3,) of the image's +x axis for a camera at ``azimuth_deg`` from the
    body's initial facing ``facing_yaw`` (the renderer's ``view_direction``: 0 = in front of the
    body). The camera's x axis is horizontal, so its elevation does not matter."""
    from viewer.render import view_direction

    right = np.cross([0.0, 1.0, 0.0], view_direction(azimuth_deg, 0.0, facing_yaw))
    return right / np.linalg.norm(right)


def pair_agreement(joints: np.ndarray, keypoints: np.ndarray, right: np.ndarray) -> dict[str, tuple[int, int]]:
    """{pair: (agreeing frames, judged frames)} for one video: ``joints`` (F, 22, 3) true joints
    at the sampled frames, ``keypoints`` (F, 17, 3) detected (x to the image's right)."""
    out = {}
    for name in PAIRS:
        jl, jr = JOINT_NAMES.index(f"left_{name}"), JOINT_NAMES.index(f"right_{name}")
        cl, cr = COCO17_NAMES.index(f"left_{name}"), COCO17_NAMES.index(f"right_{name}")
        true = (joints[:, jl] - joints[:, jr]) @ right
        det = keypoints[:, cl, 0] - keypoints[:, cr, 0]
        conf = np.minimum(keypoints[:, cl, 2], keypoints[:, cr, 2])
        judged = (np.abs(true) > MIN_SPREAD) & (conf > MIN_CONF) & (det != 0)
        out[name] = (int((np.sign(true[judged]) == np.sign(det[judged])).sum()), int(judged.sum()))
    return out


def detector_agreement(db, limit: int | None = None) -> dict:
    """Share of judged frames whose detected left/right order matches the truth, per joint pair
    and over all, on the database's synthetic videos (see the module docstring)."""
    from backend.retrieval.videos.synth import VideoSpec, spec_joints
    from viewer.render import facing_yaw_of

    totals = {name: [0, 0] for name in PAIRS}
    per_video = []
    rows = [i for i, r in enumerate(db.records) if r.get("kind") == "synthetic" and r.get("spec")]
    for i in rows[:limit]:
        spec = VideoSpec.from_json(db.records[i]["spec"])
        joints = spec_joints(spec)
        kp = np.asarray(db.keypoints[i], np.float32)
        idx = sample_indices(len(joints), len(kp))
        res = pair_agreement(joints[idx], kp, image_right(spec.azimuth, facing_yaw_of(joints)))
        for name, (a, n) in res.items():
            totals[name][0] += a
            totals[name][1] += n
        a, n = sum(v[0] for v in res.values()), sum(v[1] for v in res.values())
        if n:
            per_video.append(a / n)
    pv = np.asarray(per_video)
    agree, judged = sum(v[0] for v in totals.values()), sum(v[1] for v in totals.values())
    return {"videos": len(pv), "frames_judged": judged, "agreement": agree / max(judged, 1),
            "by_pair": {k: a / max(n, 1) for k, (a, n) in totals.items()},
            "videos_below_half": float((pv < 0.5).mean()) if len(pv) else 0.0}


def _off_diagonal_mean(x: torch.Tensor) -> float:
    n = len(x)
    return float((x.sum() - x.trace()) / max(n * n - n, 1))


@torch.no_grad()
def mirror_similarity(model, db, split: str = "test", minilm=None) -> dict:
    """Cosines of a thing and its mirror image against different things, on both sides."""
    from backend.retrieval.model import encode_captions
    from backend.retrieval.train import captions_of, split_of

    model.eval()
    rows = [i for i, r in enumerate(db.records) if split_of(r) == split]
    kp = torch.from_numpy(np.asarray(db.keypoints[rows], np.float32))
    zeros = torch.zeros(len(rows), model.config.object_in)
    a = model.encode_video(kp, zeros)["a"]
    am = model.encode_video(mirror_keypoints(kp), zeros)["a"]
    caps = [c for i in rows for c in captions_of(db.records[i]) if mirror_caption(c) != c]
    out = {"videos": len(rows), "video_vs_mirror": float((a * am).sum(-1).mean()),
           "video_vs_other": _off_diagonal_mean(a @ a.T), "captions": len(caps)}
    if caps:
        pred, whole = encode_captions(caps + [mirror_caption(c) for c in caps], minilm)
        p = model.encode_text(pred, whole)["p"]
        p0, p1 = p[:len(caps)], p[len(caps):]
        d = model.config.text_dim
        m0, m1 = torch.nn.functional.normalize(pred[:len(caps), :d], dim=-1), \
            torch.nn.functional.normalize(pred[len(caps):, :d], dim=-1)
        out.update(text_vs_mirror=float((p0 * p1).sum(-1).mean()), text_vs_other=_off_diagonal_mean(p0 @ p0.T),
                   minilm_vs_mirror=float((m0 * m1).sum(-1).mean()))
    return out


def format_probe(det: dict, sim: dict) -> str:
    lines = [f"pose detector vs rendered truth: left/right order agrees on {det['agreement']:.1%} of "
             f"{det['frames_judged']} judged frames ({det['videos']} videos; "
             + ", ".join(f"{k} {v:.1%}" for k, v in det["by_pair"].items())
             + f"); videos below half: {det['videos_below_half']:.1%}",
             f"video side ({sim['videos']} videos): cos(video, its mirror) {sim['video_vs_mirror']:.3f}, "
             f"cos(different videos) {sim['video_vs_other']:.3f}"]
    if sim.get("captions"):
        lines.append(f"text side ({sim['captions']} captions naming a side): cos(p(caption), "
                     f"p(mirror caption)) {sim['text_vs_mirror']:.3f} (MiniLM alone "
                     f"{sim['minilm_vs_mirror']:.3f}), cos(different captions) {sim['text_vs_other']:.3f}")
    return "\n".join(lines)


__all__ = ["PAIRS", "detector_agreement", "format_probe", "image_right", "mirror_similarity",
           "pair_agreement"]
