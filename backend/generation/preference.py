"""McDPO preference losses (VimoRAG stage-2 generator training).

For each prompt, kappa candidate motions are sampled from the SFT model and scored by

    r_i = -( w_l * l_i / sum_j l_j  +  w_d * d_i / sum_j d_j )

with l_i the distance of candidate i to the ground-truth motion (motion-feature space) and d_i
its text-motion distance (text-motion embedding space). The best candidate is "chosen", the
worst "rejected", and the policy is trained with the standard DPO sigmoid loss against the
frozen SFT model as reference.

Public API:
    mcdpo_reward(l, d, w_l=0.9, w_d=0.1) -> np.ndarray (kappa,)
    pick_pair(rewards) -> (chosen_idx, rejected_idx) | None
    dpo_loss(pol_chosen, pol_rejected, ref_chosen, ref_rejected, beta=0.1) -> (loss, metrics)
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def _distances(x, name: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} must be finite, got {a.tolist()}")
    if np.any(a < 0):
        raise ValueError(f"{name} are distances and must be >= 0, got {a.tolist()}")
    return a


def _share(a: np.ndarray) -> np.ndarray:
    """a_i / sum_j a_j; all zeros when the sum is zero (every candidate equally good)."""
    s = a.sum()
    return a / s if s > 0 else np.zeros_like(a)


def mcdpo_reward(l, d, w_l: float = 0.9, w_d: float = 0.1) -> np.ndarray:
    """McDPO reward of each candidate (higher is better; always <= 0)."""
    l = _distances(l, "l (motion distances to the ground truth)")
    d = _distances(d, "d (text-motion distances)")
    if l.shape != d.shape:
        raise ValueError(f"l and d must have the same length, got {l.shape[0]} and {d.shape[0]}")
    if l.size == 0:
        raise ValueError("need at least one candidate")
    return -(w_l * _share(l) + w_d * _share(d))


def pick_pair(rewards) -> tuple[int, int] | None:
    """(index of the best, index of the worst) reward; None when fewer than two candidates or
    all rewards are equal (no preference to learn). Ties go to the lowest index."""
    r = np.asarray(rewards, dtype=np.float64).reshape(-1)
    if np.any(np.isnan(r)):
        raise ValueError(f"rewards contain NaN: {r.tolist()}")
    if r.size < 2 or r.max() == r.min():
        return None
    return int(np.argmax(r)), int(np.argmin(r))


def dpo_loss(pol_chosen: torch.Tensor, pol_rejected: torch.Tensor, ref_chosen: torch.Tensor,
             ref_rejected: torch.Tensor, beta: float = 0.1) -> tuple[torch.Tensor, dict]:
    """Standard DPO sigmoid loss on summed sequence log-probs, each of shape (B,).

    loss = mean_b -log sigmoid( beta * [(pi_c - ref_c) - (pi_r - ref_r)] ). The reference
    log-probs are treated as constants. Metrics (floats): loss, reward_chosen, reward_rejected
    (beta * policy-minus-reference log-prob), margin and accuracy (share of pairs with a
    positive margin)."""
    if beta <= 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    shapes = {tuple(t.shape) for t in (pol_chosen, pol_rejected, ref_chosen, ref_rejected)}
    if len(shapes) != 1:
        raise ValueError(f"all four log-prob tensors must have the same shape, got {sorted(shapes)}")
    chosen = beta * (pol_chosen - ref_chosen.detach())
    rejected = beta * (pol_rejected - ref_rejected.detach())
    margin = chosen - rejected
    loss = -F.logsigmoid(margin).mean()
    metrics = {
        "loss": float(loss.detach()),
        "reward_chosen": float(chosen.detach().mean()),
        "reward_rejected": float(rejected.detach().mean()),
        "margin": float(margin.detach().mean()),
        "accuracy": float((margin.detach() > 0).float().mean()),
    }
    return loss, metrics
