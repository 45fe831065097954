import ast
import inspect
import math

import numpy as np
import pytest

import backend.evaluation.metrics as M
from backend.evaluation.metrics import (MetricResult, batched_r_precision_and_mm_dist, diversity,
                                        euclidean_distance_matrix, evaluate_embeddings, fid,
                                        frechet_distance, gaussian_stats, matching_score,
                                        mean_and_interval, multimodality, r_precision,
                                        sample_pair_indices, summarize, top_k_matches)


def random_cov(rng, dim, scale=1.0):
    a = rng.normal(size=(dim, 2 * dim))
    return scale * a @ a.T / (2 * dim) + 0.1 * np.eye(dim)


def sym_sqrt(s):
    w, v = np.linalg.eigh(s)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


# --- distances ----------------------------------------------------------------------


def test_euclidean_distance_matrix_matches_brute_force():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(7, 5)), rng.normal(size=(4, 5))
    brute = np.linalg.norm(a[:, None, :] - b[None, :, :], axis=2)
    d = euclidean_distance_matrix(a, b)
    assert d.shape == (7, 4)
    np.testing.assert_allclose(d, brute, rtol=1e-10, atol=1e-10)


def test_euclidean_distance_matrix_self_distance_never_nan():
    rng = np.random.default_rng(1)
    a = 1e3 * rng.normal(size=(50, 64)) + 1e4
    d = euclidean_distance_matrix(a, a)
    assert np.isfinite(d).all()
    assert np.diagonal(d).max() < 1e-3 * np.linalg.norm(a, axis=1).min()


# --- FID ----------------------------------------------------------------------------


def test_gaussian_stats_uses_unbiased_covariance():
    mu, sigma = gaussian_stats(np.array([[0.0, 1.0], [2.0, 1.0]]))
    np.testing.assert_allclose(mu, [1.0, 1.0])
    np.testing.assert_allclose(sigma, [[2.0, 0.0], [0.0, 0.0]])  # ddof=1: var of {0, 2} is 2


def test_fid_of_a_set_against_itself_is_zero():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(500, 16)) * rng.uniform(0.5, 3.0, size=16) + 5.0
    scale = np.trace(np.cov(x, rowvar=False))
    assert fid(x, x) < 1e-6 * scale


def test_fid_is_never_negative():
    # sqrtm rounding makes Tr(2 s - 2 sqrt(s s)) slightly negative for some seeds
    for seed in range(5):
        rng = np.random.default_rng(seed)
        x = rng.normal(size=(200, 16)) * rng.uniform(0.5, 3.0, size=16)
        assert fid(x, x) >= 0.0


def test_fid_of_shifted_set_is_squared_shift():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(400, 8)) @ rng.normal(size=(8, 8))
    shift = rng.normal(size=8)
    assert fid(x, x + shift) == pytest.approx(shift @ shift, rel=1e-6)


def test_frechet_distance_diagonal_closed_form():
    rng = np.random.default_rng(4)
    dim = 6
    mu1, mu2 = rng.normal(size=dim), rng.normal(size=dim)
    s1, s2 = rng.uniform(0.2, 5.0, size=dim), rng.uniform(0.2, 5.0, size=dim)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum(s1 + s2 - 2 * np.sqrt(s1 * s2))
    got = frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2))
    assert got == pytest.approx(expected, rel=1e-9)


def test_frechet_distance_catches_missing_square_root():
    dim = 5
    # Tr(4I + I - 2 sqrt(4I)) = dim * (4 + 1 - 4); without the root it would be negative
    assert frechet_distance(np.zeros(dim), 4 * np.eye(dim), np.zeros(dim), np.eye(dim)) == pytest.approx(dim)


def test_frechet_distance_commuting_rotated_covariances():
    rng = np.random.default_rng(5)
    dim = 8
    q, _ = np.linalg.qr(rng.normal(size=(dim, dim)))
    a, b = rng.uniform(0.1, 4.0, size=dim), rng.uniform(0.1, 4.0, size=dim)
    s1, s2 = q @ np.diag(a) @ q.T, q @ np.diag(b) @ q.T
    expected = np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert frechet_distance(np.zeros(dim), s1, np.zeros(dim), s2) == pytest.approx(expected, rel=1e-8)


def test_frechet_distance_general_matches_symmetric_form():
    rng = np.random.default_rng(6)
    dim = 10
    s1, s2 = random_cov(rng, dim), random_cov(rng, dim, scale=3.0)
    mu1, mu2 = rng.normal(size=dim), rng.normal(size=dim)
    r1 = sym_sqrt(s1)
    tr_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh(r1 @ s2 @ r1), 0, None)).sum()
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * tr_sqrt
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-8)


def test_frechet_distance_is_symmetric():
    rng = np.random.default_rng(7)
    dim = 12
    s1, s2 = random_cov(rng, dim), random_cov(rng, dim, scale=0.3)
    mu1, mu2 = rng.normal(size=dim), rng.normal(size=dim)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(frechet_distance(mu2, s2, mu1, s1), rel=1e-8)


def test_frechet_distance_one_dimensional():
    assert frechet_distance(1.0, 9.0, 3.0, 1.0) == pytest.approx(4.0 + (3.0 - 1.0) ** 2)


def test_fid_rank_deficient_covariances_are_finite():
    rng = np.random.default_rng(8)
    x, y = rng.normal(size=(8, 32)), rng.normal(size=(10, 32)) + 0.5
    value = fid(x, y)
    assert math.isfinite(value) and value > 0
    assert fid(x, x) < 1e-5 * np.trace(np.cov(x, rowvar=False))


def test_frechet_distance_rejects_large_imaginary_part():
    dim = 3
    with pytest.raises(ValueError, match="imaginary"):
        frechet_distance(np.zeros(dim), -np.eye(dim), np.zeros(dim), np.eye(dim))


def test_frechet_distance_shape_mismatch():
    with pytest.raises(ValueError):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))


# --- R-precision and MM-Dist -----------------------------------------------------------

DIST4 = np.array([
    [0.1, 0.5, 0.9, 0.7],   # true pair nearest
    [0.2, 0.4, 0.9, 0.8],   # true pair 2nd nearest
    [0.1, 0.2, 0.3, 0.9],   # 3rd
    [0.1, 0.2, 0.3, 0.9],   # 4th: outside the top 3
])


def test_top_k_matches_hand_built():
    expected = np.array([[1, 1, 1], [0, 1, 1], [0, 0, 1], [0, 0, 0]], dtype=bool)
    np.testing.assert_array_equal(top_k_matches(DIST4, 3), expected)
    np.testing.assert_allclose(r_precision(DIST4, 3), [0.25, 0.5, 0.75])
    np.testing.assert_allclose(r_precision(DIST4, 1), [0.25])
    assert matching_score(DIST4) == pytest.approx((0.1 + 0.4 + 0.3 + 0.9) / 4)


def test_r_precision_tie_rule():
    dist = np.array([
        [1.0, 1.0, 2.0],   # tie with one other entry
        [0.5, 2.0, 2.0],   # one strictly nearer, one tie
        [0.3, 0.2, 0.1],   # clear nearest
    ])
    np.testing.assert_array_equal(top_k_matches(dist, 3), [[0, 1, 1], [0, 0, 1], [1, 1, 1]])
    np.testing.assert_allclose(r_precision(dist, 3), [1 / 3, 2 / 3, 1.0])
    np.testing.assert_allclose(r_precision(dist, 3, ties="optimistic"), [2 / 3, 1.0, 1.0])
    with pytest.raises(ValueError):
        r_precision(dist, 3, ties="random")


def test_collapsed_embeddings_get_no_credit():
    rng = np.random.default_rng(9)
    text = rng.normal(size=(64, 8))
    motion = np.tile(rng.normal(size=(1, 8)), (64, 1))   # every motion embeds identically
    r, _ = batched_r_precision_and_mm_dist(text, motion, rng=0)
    np.testing.assert_array_equal(r, [0.0, 0.0, 0.0])


def test_top_k_matches_agrees_with_argsort_and_is_monotone():
    rng = np.random.default_rng(10)
    dist = rng.uniform(size=(40, 40))
    k = 10
    got = top_k_matches(dist, k)
    position = np.argmax(np.argsort(dist, axis=1) == np.arange(40)[:, None], axis=1)
    np.testing.assert_array_equal(got, position[:, None] < np.arange(1, k + 1)[None, :])
    assert (np.diff(got.astype(int), axis=1) >= 0).all()
    assert (np.diff(r_precision(dist, k)) >= 0).all()
    assert top_k_matches(dist, 40)[:, -1].all()


def test_r_precision_rejects_non_square():
    with pytest.raises(ValueError):
        r_precision(np.zeros((3, 4)))


def test_batched_aligned_embeddings_are_perfect():
    n = 96
    emb = 10.0 * np.eye(n)
    r, mm = batched_r_precision_and_mm_dist(emb, emb.copy(), rng=np.random.default_rng(0))
    np.testing.assert_array_equal(r, [1.0, 1.0, 1.0])
    assert mm == pytest.approx(0.0, abs=1e-6)


def test_batched_unrelated_embeddings_are_chance_level_per_batch_of_32():
    rng = np.random.default_rng(11)
    text, motion = rng.normal(size=(3200, 16)), rng.normal(size=(3200, 16))
    r, _ = batched_r_precision_and_mm_dist(text, motion, rng=rng)
    assert r[0] == pytest.approx(1 / 32, abs=0.012)
    assert r[1] == pytest.approx(2 / 32, abs=0.016)
    assert r[2] == pytest.approx(3 / 32, abs=0.02)


def test_batched_mm_dist_is_mean_true_pair_distance_when_nothing_dropped():
    rng = np.random.default_rng(12)
    text, motion = rng.normal(size=(64, 5)), rng.normal(size=(64, 5))
    _, mm = batched_r_precision_and_mm_dist(text, motion, rng=rng)
    assert mm == pytest.approx(np.linalg.norm(text - motion, axis=1).mean(), rel=1e-9)


def test_batched_drops_last_incomplete_batch_after_shuffle():
    n = 40
    text = 100.0 * np.eye(n, n + 1)
    motion = text.copy()
    motion[:, n] = np.arange(n)          # true-pair distance of pair i is exactly i
    _, mm = batched_r_precision_and_mm_dist(text, motion, batch_size=32, rng=np.random.default_rng(5))
    kept = np.random.default_rng(5).permutation(n)[:32]
    assert mm == pytest.approx(kept.mean(), rel=1e-9)
    assert mm != pytest.approx(np.arange(n).mean())


def test_batched_needs_one_full_batch():
    rng = np.random.default_rng(13)
    with pytest.raises(ValueError, match="batch"):
        batched_r_precision_and_mm_dist(rng.normal(size=(31, 4)), rng.normal(size=(31, 4)), rng=rng)


# --- Diversity and MultiModality ---------------------------------------------------------


def test_sample_pair_indices_protocol_sampling():
    first, second = sample_pair_indices(50, 20, rng=0)
    assert len(set(first)) == 20 and len(set(second)) == 20
    assert first.min() >= 0 and max(first.max(), second.max()) < 50
    rng = np.random.default_rng(14)
    same = np.mean([np.mean(np.equal(*sample_pair_indices(10, 10, rng))) for _ in range(2000)])
    assert same == pytest.approx(1 / 10, abs=0.02)   # the two sets are independent
    with pytest.raises(ValueError):
        sample_pair_indices(5, 6, rng)


def test_diversity_identical_points_is_zero():
    assert diversity(np.ones((300, 4)), 300, rng=0) == 0.0


def test_diversity_points_on_a_line_exact():
    n = 50
    emb = np.zeros((n, 3))
    emb[:, 1] = 2.0 * np.arange(n)
    first, second = sample_pair_indices(n, 30, rng=7)
    assert diversity(emb, 30, rng=7) == pytest.approx(2.0 * np.abs(first - second).mean())


def test_diversity_of_gaussian_cloud():
    rng = np.random.default_rng(15)
    dim = 64
    x = rng.normal(size=(1000, dim))
    # E|x - y| for x, y ~ N(0, I_dim) is 2 * Gamma((dim+1)/2) / Gamma(dim/2)
    expected = 2 * math.exp(math.lgamma((dim + 1) / 2) - math.lgamma(dim / 2))
    assert diversity(x, 300, rng) == pytest.approx(expected, rel=0.03)


def test_diversity_needs_enough_rows():
    with pytest.raises(ValueError, match="300"):
        diversity(np.zeros((299, 2)), 300, rng=0)
    assert diversity(np.zeros((300, 2)), 300, rng=0) == 0.0


def simplex_generations(n_texts, n_gens, d, scales):
    """Generations of text t: pairwise distance d * scales[t] between distinct ones."""
    base = np.eye(n_gens) * d / math.sqrt(2)
    centers = 50.0 * np.arange(n_texts)[:, None, None]
    return centers + scales[:, None, None] * base[None]


def test_multimodality_identical_generations_is_zero():
    rng = np.random.default_rng(16)
    emb = np.repeat(rng.normal(size=(5, 1, 8)), 30, axis=1)
    assert multimodality(emb, 10, rng) == pytest.approx(0.0, abs=1e-12)


def test_multimodality_exact_with_shared_index_sets():
    scales = np.array([1.0, 2.0, 0.5, 3.0])
    emb = simplex_generations(4, 30, d=1.5, scales=scales)
    first, second = sample_pair_indices(30, 10, rng=3)
    distinct = np.mean(first != second)
    assert multimodality(emb, 10, rng=3) == pytest.approx(1.5 * scales.mean() * distinct, rel=1e-9)


def test_multimodality_one_draw_shared_by_all_texts():
    n_texts, n_gens = 6, 30
    scales = np.arange(1.0, n_texts + 1)
    positions = np.arange(n_gens, dtype=float) ** 2            # uneven gaps
    emb = np.zeros((n_texts, n_gens, 2))
    emb[:, :, 0] = scales[:, None] * positions[None, :]
    first, second = sample_pair_indices(n_gens, 10, rng=11)
    expected = scales.mean() * np.abs(positions[first] - positions[second]).mean()
    assert multimodality(emb, 10, rng=11) == pytest.approx(expected, rel=1e-9)


def test_multimodality_self_pairs_bias_like_protocol():
    emb = simplex_generations(2, 30, d=1.0, scales=np.ones(2))
    rng = np.random.default_rng(17)
    mean = np.mean([multimodality(emb, 10, rng) for _ in range(400)])
    assert mean == pytest.approx(1 - 1 / 30, abs=0.01)


def test_multimodality_needs_enough_generations():
    with pytest.raises(ValueError, match="generations"):
        multimodality(np.zeros((3, 9, 4)), 10, rng=0)
    with pytest.raises(ValueError):
        multimodality(np.zeros((9, 4)), 2, rng=0)


# --- aggregation ------------------------------------------------------------------------


def test_mean_and_interval_uses_population_std():
    mean, hw = mean_and_interval([1.0, 2.0, 3.0, 4.0])
    assert mean == pytest.approx(2.5)
    assert hw == pytest.approx(1.96 * math.sqrt(1.25) / 2)
    assert mean_and_interval([0.7]) == (pytest.approx(0.7), 0.0)
    with pytest.raises(ValueError):
        mean_and_interval([])


def test_metric_result_format():
    assert str(MetricResult("r_top1", 0.5114, 0.0031)) == "0.511±0.003"
    assert MetricResult("fid", 0.14159, 0.0071).format(2) == "0.14±0.01"


def test_summarize():
    runs = [{"fid": 0.5, "r_top1": 0.5}, {"fid": 0.7, "r_top1": 0.5}]
    out = summarize(runs)
    assert list(out) == ["fid", "r_top1"]
    assert out["fid"].name == "fid"
    assert out["fid"].mean == pytest.approx(0.6)
    assert out["fid"].interval == pytest.approx(1.96 * 0.1 / math.sqrt(2))
    assert str(out["fid"]) == "0.600±0.139"
    assert str(out["r_top1"]) == "0.500±0.000"
    with pytest.raises(ValueError):
        summarize([{"fid": 1.0}, {"fid": 1.0, "diversity": 2.0}])
    with pytest.raises(ValueError):
        summarize([])


# --- whole protocol --------------------------------------------------------------------


def test_evaluate_embeddings_aligned():
    n = 64
    emb = 10.0 * np.eye(n)
    mm = np.repeat(emb[:5, None, :], 12, axis=1)
    out = evaluate_embeddings(emb, emb.copy(), emb.copy(), np.random.default_rng(0), mm_emb=mm)
    assert list(out) == ["fid", "r_top1", "r_top2", "r_top3", "mm_dist", "diversity", "multimodality"]
    assert out["fid"] == pytest.approx(0.0, abs=1e-8)
    assert (out["r_top1"], out["r_top2"], out["r_top3"]) == (1.0, 1.0, 1.0)
    assert out["mm_dist"] == pytest.approx(0.0, abs=1e-6)
    # 64 rows < 300 pairs: all 64 rows are used; distinct rows are 10*sqrt(2) apart
    assert 0 < out["diversity"] <= 10 * math.sqrt(2) + 1e-9
    assert out["multimodality"] == 0.0


def test_evaluate_embeddings_reproducible_and_consistent():
    rng = np.random.default_rng(18)
    text, motion, real = (rng.normal(size=(100, 6)) for _ in range(3))
    a = evaluate_embeddings(text, motion, real, 42)
    b = evaluate_embeddings(text, motion, real, np.random.default_rng(42))
    assert a == b and "multimodality" not in a
    assert a["fid"] == pytest.approx(fid(real, motion))
    r, mm = batched_r_precision_and_mm_dist(text, motion, rng=np.random.default_rng(42))
    assert [a["r_top1"], a["r_top2"], a["r_top3"], a["mm_dist"]] == pytest.approx([*r, mm])


# --- independence ----------------------------------------------------------------------


def test_module_depends_on_numpy_scipy_and_stdlib_only():
    tree = ast.parse(inspect.getsource(M))
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "no relative imports"
            roots.add(node.module.split(".")[0])
    assert roots <= {"__future__", "collections", "dataclasses", "math", "typing", "numpy", "scipy"}
