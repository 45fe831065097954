"""How well the motion tokenizer reconstructs motions: MPJPE and codebook usage.

MPJPE is the mean Euclidean distance (millimetres) between the joints recovered from the
original features and from the reconstructed ones, over all frames and the 22 joints; the
global figure includes the root trajectory integrated from velocities (as MoMask reports it),
the root-aligned one removes the root position per frame. Codebook usage is measured on the
codes of the whole split: fraction of codes used at least once, and perplexity
(exp of the entropy of the code histogram; the codebook size if all are used evenly).
"""
from __future__ import annotations

import numpy as np
import torch

from backend.data.dataset import MotionCorpus
from backend.generation.vqvae import MotionVQVAE
from motioncore.features import features_to_joints


@torch.no_grad()
def reconstruct(model: MotionVQVAE, corpus: MotionCorpus, feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(reconstructed features, codes) of one motion, cropped to a multiple of the
    model's downsampling factor."""
    step = model.config.downsample
    n = len(feats) // step * step
    norm = corpus.normalizer
    x = torch.from_numpy(norm.normalize(feats[:n]).astype(np.float32))[None]
    codes = model.encode(x)
    recon = model.decode(codes)[0].numpy()
    return norm.denormalize(recon), codes[0].numpy()


def evaluate_split(model: MotionVQVAE, corpus: MotionCorpus, split: str,
                   max_frames: int = 196, progress: bool = False) -> dict:
    model.eval()
    motions = corpus.load_features(split, min_frames=model.config.downsample * 2,
                                   max_frames=max_frames, progress=progress)
    err_sum = aligned_sum = 0.0
    count = 0
    hist = np.zeros(model.config.nb_code, dtype=np.int64)
    for feats in motions.values():
        recon, codes = reconstruct(model, corpus, feats)
        gt = features_to_joints(feats[:len(recon)])
        rj = features_to_joints(recon)
        d = np.linalg.norm(gt - rj, axis=-1)
        da = np.linalg.norm((gt - gt[:, :1]) - (rj - rj[:, :1]), axis=-1)
        err_sum += d.sum()
        aligned_sum += da.sum()
        count += d.size
        np.add.at(hist, codes, 1)
    p = hist / hist.sum()
    nz = p[p > 0]
    return {
        "split": split,
        "motions": len(motions),
        "mpjpe_mm": float(1000.0 * err_sum / count),
        "mpjpe_root_aligned_mm": float(1000.0 * aligned_sum / count),
        "codes_used_fraction": float((hist > 0).mean()),
        "perplexity": float(np.exp(-(nz * np.log(nz)).sum())),
        "codebook_size": int(model.config.nb_code),
    }


def format_table(rows: list[dict]) -> str:
    head = f"{'split':<8}{'motions':>8}{'MPJPE mm':>10}{'root-aligned mm':>17}{'codes used':>12}{'perplexity':>12}"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['split']:<8}{r['motions']:>8}{r['mpjpe_mm']:>10.1f}"
                     f"{r['mpjpe_root_aligned_mm']:>17.1f}"
                     f"{r['codes_used_fraction']:>11.0%} {r['perplexity']:>11.1f}")
    return "\n".join(lines)
