"""Text-to-motion metrics of the Guo et al. (CVPR 2022) evaluation protocol, on embeddings.

These are the numbers reported by T2M-GPT, MoMask, MotionGPT and most later work:
R-precision (top 1/2/3), MM-Dist (a.k.a. matching score), FID, Diversity and MultiModality,
each repeated over several evaluations and reported as ``mean ± 1.96·std/sqrt(repeats)``.
Everything here works on plain numpy arrays of evaluator embeddings (text and motion
encoders of the protocol's evaluator, or any other pair of co-embedding encoders); the
module depends on numpy and scipy only and imports nothing else from the project.

Protocol facts this module follows (checked against the reference evaluation code):

* R-precision / MM-Dist are computed per batch of 32 (text, motion) pairs: inside a batch
  every text is compared with the 32 motions of that batch (its own + 31 others), by
  Euclidean distance. The data loader shuffles and drops the last incomplete batch; the
  counts are summed over batches and divided by the number of pairs seen, which equals the
  mean over the full batches since they all have the same size.
* MM-Dist is the mean Euclidean distance between each text and its own motion.
* FID compares the Gaussian statistics (mean, ``np.cov`` covariance, i.e. ddof=1) of the
  real-motion embeddings with those of the generated-motion embeddings.
* Diversity draws two index sets of 300 samples (each without replacement, but independent
  of each other) and averages the distances between the paired rows. A row can therefore be
  paired with itself, contributing 0 (negligible for a test split of thousands of motions).
* MultiModality does the same inside each text's set of generations (30 per text, 10
  pairs); the *same* two index sets are used for every text, and a generation can again be
  paired with itself, which biases the value low by about 1/n_generations (~3%).
* The confidence interval uses ``np.std`` with ddof=0 (population std), times 1.96, divided
  by sqrt(number of repeats).

Tie rule for R-precision (the reference code sorts with ``np.argsort``, whose tie order is
unspecified): by default ties count *against* the true pair, i.e. the true pair is within
the top k only if fewer than k *other* entries of its row are smaller than **or equal** to
its distance. With this rule a collapsed generator (identical embedding for every motion)
scores 0 instead of a perfect 1. ``ties="optimistic"`` counts only strictly smaller entries.
Ties have probability zero for continuous embeddings, so the rule only matters for
degenerate outputs.

Random numbers: every function taking ``rng`` accepts a ``numpy.random.Generator``, an int
seed or None (fresh unseeded generator), through ``np.random.default_rng``.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import linalg

__all__ = [
    "MetricResult",
    "batched_r_precision_and_mm_dist",
    "diversity",
    "euclidean_distance_matrix",
    "evaluate_embeddings",
    "fid",
    "frechet_distance",
    "gaussian_stats",
    "matching_score",
    "mean_and_interval",
    "mean_paired_distance",
    "multimodality",
    "r_precision",
    "sample_pair_indices",
    "summarize",
    "top_k_matches",
]

Z_95 = 1.96
_TIES = ("pessimistic", "optimistic")


def _matrix(x, name: str) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (rows, dim), got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr


def _square(dist) -> np.ndarray:
    d = np.asarray(dist, dtype=np.float64)
    if d.ndim != 2 or d.shape[0] != d.shape[1] or d.shape[0] == 0:
        raise ValueError(f"distance matrix must be square and non-empty, got shape {d.shape}")
    if np.isnan(d).any():
        raise ValueError("distance matrix contains NaN")
    return d


# --- distances ---------------------------------------------------------------------


def euclidean_distance_matrix(a, b) -> np.ndarray:
    """(N, M) matrix of Euclidean distances between the rows of ``a`` (N, D) and ``b`` (M, D).

    Uses ``|x|^2 + |y|^2 - 2 x.y`` (one matrix product); the squared distances are clipped
    at 0 before the square root so rounding can never produce NaN.
    """
    a = _matrix(a, "a")
    b = _matrix(b, "b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"dimension mismatch: {a.shape[1]} vs {b.shape[1]}")
    sq = (a * a).sum(axis=1)[:, None] + (b * b).sum(axis=1)[None, :] - 2.0 * (a @ b.T)
    return np.sqrt(np.maximum(sq, 0.0))


# --- FID -----------------------------------------------------------------------------


def gaussian_stats(emb) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and covariance (D, D) of the rows of ``emb`` (N, D); ``np.cov`` (ddof=1)."""
    emb = _matrix(emb, "emb")
    if emb.shape[0] < 2:
        raise ValueError(f"need at least 2 rows to estimate a covariance, got {emb.shape[0]}")
    mu = emb.mean(axis=0)
    sigma = np.atleast_2d(np.cov(emb, rowvar=False))
    return mu, sigma


def frechet_distance(mu1, sigma1, mu2, sigma2, eps: float = 1e-6) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2):
    ``|mu1 - mu2|^2 + Tr(sigma1 + sigma2 - 2 (sigma1 sigma2)^(1/2))``.

    If the matrix square root is not finite (singular product) it is recomputed with
    ``eps * I`` added to both covariances. Rounding can leave a small imaginary part in
    the square root; it is dropped, unless its diagonal exceeds 1e-3 (ValueError). The
    result is clipped at 0 (a tiny negative value is rounding error).
    """
    mu1 = np.atleast_1d(np.asarray(mu1, dtype=np.float64))
    mu2 = np.atleast_1d(np.asarray(mu2, dtype=np.float64))
    sigma1 = np.atleast_2d(np.asarray(sigma1, dtype=np.float64))
    sigma2 = np.atleast_2d(np.asarray(sigma2, dtype=np.float64))
    if mu1.ndim != 1 or mu1.shape != mu2.shape:
        raise ValueError(f"means must be vectors of the same length, got {mu1.shape} and {mu2.shape}")
    dim = mu1.shape[0]
    if sigma1.shape != (dim, dim) or sigma2.shape != (dim, dim):
        raise ValueError(f"covariances must be ({dim}, {dim}), got {sigma1.shape} and {sigma2.shape}")

    covmean = linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        offset = eps * np.eye(dim)
        covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
        if not np.isfinite(covmean).all():
            raise ValueError("matrix square root of the covariance product is not finite, even with eps")
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0.0, atol=1e-3):
            raise ValueError(f"matrix square root has a large imaginary part: {np.abs(covmean.imag).max():.3g}")
        covmean = covmean.real

    diff = mu1 - mu2
    value = float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean))
    return max(value, 0.0)


def fid(real, gen) -> float:
    """FID between two sets of embeddings (N, D) and (M, D)."""
    mu1, s1 = gaussian_stats(real)
    mu2, s2 = gaussian_stats(gen)
    return frechet_distance(mu1, s1, mu2, s2)


# --- R-precision and MM-Dist -------------------------------------------------------------


def top_k_matches(dist, k: int = 3, ties: str = "pessimistic") -> np.ndarray:
    """(N, k) bool: entry [i, j] says the true pair of row i (the diagonal entry) is among
    the j+1 nearest entries of row i. Monotone in j. See the module docstring for ties."""
    d = _square(dist)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if ties not in _TIES:
        raise ValueError(f"ties must be one of {_TIES}, got {ties!r}")
    diag = np.diagonal(d)[:, None]
    if ties == "pessimistic":
        rank = (d <= diag).sum(axis=1) - 1   # other entries not farther than the true pair
    else:
        rank = (d < diag).sum(axis=1)        # other entries strictly nearer
    return rank[:, None] < np.arange(1, k + 1)[None, :]


def r_precision(dist, k: int = 3, ties: str = "pessimistic") -> np.ndarray:
    """(k,) fraction of rows whose true pair (diagonal) is within the top 1..k."""
    return top_k_matches(dist, k, ties).mean(axis=0)


def matching_score(dist) -> float:
    """MM-Dist: mean of the diagonal (distance between each text and its own motion)."""
    return float(np.diagonal(_square(dist)).mean())


def batched_r_precision_and_mm_dist(text_emb, motion_emb, batch_size: int = 32, rng=None,
                                    top_k: int = 3, ties: str = "pessimistic"
                                    ) -> tuple[np.ndarray, float]:
    """R-precision (top_k,) and MM-Dist the way the protocol computes them.

    Row i of ``text_emb`` and of ``motion_emb`` (N, D) form a true pair. The pairs are
    shuffled with ``rng`` (one permutation), cut into batches of ``batch_size``, the last
    incomplete batch is dropped, and within each batch every text is ranked against the
    batch's motions. Both numbers are averaged over all pairs of the full batches.
    """
    text_emb = _matrix(text_emb, "text_emb")
    motion_emb = _matrix(motion_emb, "motion_emb")
    if text_emb.shape != motion_emb.shape:
        raise ValueError(f"text and motion embeddings must have the same shape, "
                         f"got {text_emb.shape} and {motion_emb.shape}")
    if batch_size < 2:
        raise ValueError(f"batch_size must be >= 2, got {batch_size}")
    n = text_emb.shape[0]
    if n < batch_size:
        raise ValueError(f"R-precision needs at least one full batch: {n} pairs < batch_size {batch_size}")
    rng = np.random.default_rng(rng)
    order = rng.permutation(n)
    n_batches = n // batch_size
    hits = np.zeros(top_k, dtype=np.float64)
    diag_sum = 0.0
    for b in range(n_batches):
        idx = order[b * batch_size:(b + 1) * batch_size]
        dist = euclidean_distance_matrix(text_emb[idx], motion_emb[idx])
        hits += top_k_matches(dist, top_k, ties).sum(axis=0)
        diag_sum += float(np.trace(dist))
    used = n_batches * batch_size
    return hits / used, diag_sum / used


# --- Diversity and MultiModality -------------------------------------------------------


def sample_pair_indices(n: int, n_pairs: int, rng=None) -> tuple[np.ndarray, np.ndarray]:
    """Two independent index sets of size ``n_pairs`` from ``range(n)``, each drawn without
    replacement (so first[i] == second[i] may happen, as in the protocol)."""
    if n_pairs < 1:
        raise ValueError(f"n_pairs must be >= 1, got {n_pairs}")
    if n < n_pairs:
        raise ValueError(f"cannot draw {n_pairs} distinct indices from {n} items")
    rng = np.random.default_rng(rng)
    first = rng.choice(n, n_pairs, replace=False)
    second = rng.choice(n, n_pairs, replace=False)
    return first, second


def mean_paired_distance(emb, first, second) -> float:
    """Mean Euclidean distance between ``emb[..., first[i], :]`` and ``emb[..., second[i], :]``
    (over i and any leading axes); ``emb`` is (N, D) or (T, N, D)."""
    emb = np.asarray(emb, dtype=np.float64)
    diff = emb[..., first, :] - emb[..., second, :]
    return float(np.linalg.norm(diff, axis=-1).mean())


def diversity(emb, n_pairs: int = 300, rng=None) -> float:
    """Mean distance between ``n_pairs`` random pairs of rows of ``emb`` (N, D)."""
    emb = _matrix(emb, "emb")
    if emb.shape[0] < n_pairs:
        raise ValueError(f"diversity needs at least n_pairs={n_pairs} rows, got {emb.shape[0]}")
    first, second = sample_pair_indices(emb.shape[0], n_pairs, rng)
    return mean_paired_distance(emb, first, second)


def multimodality(emb, n_pairs: int = 10, rng=None) -> float:
    """Mean distance between ``n_pairs`` random pairs of generations of the same text;
    ``emb`` is (n_texts, n_gens, D). One pair of index sets is drawn and shared by all texts."""
    emb = np.asarray(emb, dtype=np.float64)
    if emb.ndim != 3 or emb.shape[0] == 0:
        raise ValueError(f"multimodality expects (n_texts, n_gens, dim) with n_texts >= 1, got {emb.shape}")
    if not np.isfinite(emb).all():
        raise ValueError("emb contains NaN or infinite values")
    if emb.shape[1] < n_pairs:
        raise ValueError(f"multimodality needs at least n_pairs={n_pairs} generations per text, "
                         f"got {emb.shape[1]}")
    first, second = sample_pair_indices(emb.shape[1], n_pairs, rng)
    return mean_paired_distance(emb, first, second)


# --- one evaluation and repeated evaluations ----------------------------------------------


def evaluate_embeddings(text_emb, motion_emb, real_motion_emb, rng, mm_emb=None,
                        batch_size: int = 32, diversity_pairs: int = 300,
                        mm_pairs: int = 10) -> dict[str, float]:
    """One repeat of the protocol on embeddings.

    ``text_emb``/``motion_emb`` (N, D): the test texts and the motions generated for them
    (row i is generated from text i); ``real_motion_emb`` (R, D): ground-truth motions;
    ``mm_emb`` (n_texts, n_gens, D): several generations per text, optional.

    Returns ``fid`` (real vs generated), ``r_top1..r_top{3}`` and ``mm_dist`` (texts vs
    generated, batched), ``diversity`` (generated) and, with ``mm_emb``, ``multimodality``.
    Diversity uses ``min(diversity_pairs, N)`` pairs, so small sets still get a value (the
    protocol itself asserts N > 300). ``rng`` is consumed in the order: batch shuffle,
    diversity pairs, multimodality pairs.
    """
    rng = np.random.default_rng(rng)
    text_emb = _matrix(text_emb, "text_emb")
    motion_emb = _matrix(motion_emb, "motion_emb")
    real_motion_emb = _matrix(real_motion_emb, "real_motion_emb")
    if real_motion_emb.shape[1] != motion_emb.shape[1]:
        raise ValueError(f"real and generated motion embeddings differ in dimension: "
                         f"{real_motion_emb.shape[1]} vs {motion_emb.shape[1]}")
    r_prec, mm_dist = batched_r_precision_and_mm_dist(text_emb, motion_emb, batch_size, rng)
    out = {"fid": fid(real_motion_emb, motion_emb)}
    for j, value in enumerate(r_prec):
        out[f"r_top{j + 1}"] = float(value)
    out["mm_dist"] = mm_dist
    out["diversity"] = diversity(motion_emb, min(diversity_pairs, motion_emb.shape[0]), rng)
    if mm_emb is not None:
        out["multimodality"] = multimodality(mm_emb, mm_pairs, rng)
    return out


def mean_and_interval(values: Sequence[float]) -> tuple[float, float]:
    """Mean and 95% half-width ``1.96 * std / sqrt(n)`` of repeated measurements; std is
    ``np.std`` with ddof=0, as in the protocol's reference code."""
    arr = np.asarray(values, dtype=np.float64).reshape(-1)
    if arr.size == 0:
        raise ValueError("no values")
    return float(arr.mean()), float(Z_95 * arr.std() / np.sqrt(arr.size))


@dataclass(frozen=True)
class MetricResult:
    name: str
    mean: float
    interval: float

    def format(self, digits: int = 3) -> str:
        return f"{self.mean:.{digits}f}±{self.interval:.{digits}f}"

    def __str__(self) -> str:
        return self.format()


def summarize(runs: Sequence[Mapping[str, float]]) -> dict[str, MetricResult]:
    """Repeated evaluations (one dict of metric -> value per repeat, all with the same keys)
    -> mean ± interval per metric, in the order of the first run's keys."""
    if len(runs) == 0:
        raise ValueError("no runs to summarize")
    names = list(runs[0])
    for i, run in enumerate(runs):
        if set(run) != set(names):
            raise ValueError(f"run {i} has metrics {sorted(run)}, run 0 has {sorted(names)}")
    out = {}
    for name in names:
        mean, interval = mean_and_interval([run[name] for run in runs])
        out[name] = MetricResult(name, mean, interval)
    return out
