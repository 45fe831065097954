"""Fused Gemini-MVR index: exactness against the score formula, HNSW/IVF, persistence, validation."""

import logging

import numpy as np
import pytest

faiss = pytest.importorskip("faiss")

from backend.retrieval.index import FusedIndex, brute_force_fused, fuse_queries, fuse_videos  # noqa: E402
from backend.retrieval import index as index_mod  # noqa: E402


@pytest.fixture(autouse=True)
def _one_thread():
    old = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(old)


def _unit(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _data(rng, n, m, da=24, do=40):
    a, o = _unit(rng.standard_normal((n, da))), _unit(rng.standard_normal((n, do)))
    w0 = rng.uniform(0.0, 1.0, n)
    w = np.stack([w0, 1.0 - w0], axis=1)
    p, g = _unit(rng.standard_normal((m, da))), _unit(rng.standard_normal((m, do)))
    return a, o, w, p, g


def _clustered(rng, n, dim=64, clusters=20, noise=1.0):
    """Mixture of Gaussians on the sphere; the same centres on every call (data and queries match)."""
    centres = _unit(np.random.default_rng(1234).standard_normal((clusters, dim)))
    return _unit(centres[rng.integers(0, clusters, n)] + noise * rng.standard_normal((n, dim)) / np.sqrt(dim))


def _ids(n, prefix="v"):
    return [f"{prefix}{i}" for i in range(n)]


def test_flat_index_equals_formula_ranking():
    rng = np.random.default_rng(0)
    a, o, w, p, g = _data(rng, 500, 30)
    assert len(np.unique(w[:, 0])) == 500  # distinct router weights
    index = FusedIndex(64, kind="flat", gpu=False)
    index.add(_ids(500), fuse_videos(a, o, w))
    k = 25
    scores, ids = index.search(fuse_queries(p, g), k)
    ref = brute_force_fused(p, g, a, o, w)
    assert scores.shape == (30, k) and scores.dtype == np.float32
    for i in range(30):
        order = np.argsort(-ref[i], kind="stable")[:k]
        assert ids[i] == [f"v{j}" for j in order]
        np.testing.assert_allclose(scores[i], ref[i, order], atol=1e-5, rtol=0)


def test_fused_vector_inner_product_is_the_score():
    rng = np.random.default_rng(1)
    a, o, w, p, g = _data(rng, 50, 7)
    np.testing.assert_allclose(fuse_queries(p, g) @ fuse_videos(a, o, w).T, brute_force_fused(p, g, a, o, w),
                               atol=1e-5)


def test_hnsw_agrees_with_flat_on_clustered_data():
    rng = np.random.default_rng(2)
    x, q = _clustered(rng, 3000), _clustered(rng, 100)
    flat = FusedIndex(64, kind="flat", gpu=False)
    hnsw = FusedIndex(64, kind="hnsw", gpu=False, hnsw_m=16, ef_construction=40, ef_search=32)
    for idx in (flat, hnsw):
        idx.add(_ids(3000), x)
    _, exact = flat.search(q, 1)
    _, approx = hnsw.search(q, 1)
    assert hnsw.kind == "hnsw"
    assert np.mean([a[0] == e[0] for a, e in zip(approx, exact)]) >= 0.9


def test_hnsw_on_fused_vectors_of_unequal_norms_keeps_exact_scores():
    """Fused vectors have norms sqrt(w0^2 + w1^2) in [0.71, 1]; HNSW must still find and score them exactly."""
    rng = np.random.default_rng(12)
    n, m = 3000, 60
    a, o = _clustered(rng, n, dim=24), _clustered(rng, n, dim=40)
    w0 = rng.uniform(0.0, 1.0, n)
    w = np.stack([w0, 1.0 - w0], axis=1)
    p, g = _clustered(rng, m, dim=24), _clustered(rng, m, dim=40)
    x, q = fuse_videos(a, o, w), fuse_queries(p, g)
    assert np.linalg.norm(x, axis=1).min() < 0.75
    hnsw = FusedIndex(64, kind="hnsw", gpu=False, hnsw_m=16, ef_construction=40, ef_search=32)
    hnsw.add(_ids(n), x)
    scores, ids = hnsw.search(q, 5)
    ref = brute_force_fused(p, g, a, o, w)
    top1 = [f"v{j}" for j in ref.argmax(axis=1)]
    assert np.mean([r[0] == t for r, t in zip(ids, top1)]) >= 0.9
    for i in range(m):
        np.testing.assert_allclose(scores[i], ref[i, [int(s[1:]) for s in ids[i]]], atol=1e-5)


def test_ivf_with_all_lists_probed_is_exact_and_small_ivf_falls_back(caplog):
    rng = np.random.default_rng(3)
    x, q = _clustered(rng, 400), _clustered(rng, 20)
    flat = FusedIndex(64, kind="flat", gpu=False)
    flat.add(_ids(400), x)
    ivf = FusedIndex(64, kind="ivf", gpu=False, nlist=4, nprobe=4)
    ivf.add(_ids(400), x)
    assert ivf.kind == "ivf"
    s1, i1 = flat.search(q, 5)
    s2, i2 = ivf.search(q, 5)
    assert i1 == i2
    np.testing.assert_allclose(s1, s2, atol=1e-5)
    small = FusedIndex(64, kind="ivf", gpu=False)  # default nlist ~ 4 sqrt(N) needs 40 * nlist vectors
    with caplog.at_level(logging.WARNING, logger=index_mod.__name__):
        small.add(_ids(400), x)
    assert small.kind == "flat" and "flat" in caplog.text
    assert small.search(q, 5)[1] == i1


def test_auto_becomes_hnsw_past_threshold(monkeypatch):
    monkeypatch.setattr(index_mod, "AUTO_HNSW_THRESHOLD", 300)
    rng = np.random.default_rng(4)
    x = _clustered(rng, 400)
    index = FusedIndex(64, gpu=False)
    index.add(_ids(200), x[:200])
    assert index.kind == "flat"
    index.add(_ids(200, "w"), x[200:])
    assert index.kind == "hnsw" and len(index) == 400
    _, ids = index.search(x[[5, 250]], 1)
    assert ids == [["v5"], ["w50"]]


def test_incremental_add_then_search_finds_new_items():
    rng = np.random.default_rng(5)
    for kind in ("flat", "hnsw"):
        index = FusedIndex(64, kind=kind, gpu=False)
        index.add(_ids(300), _clustered(rng, 300))
        new = _clustered(rng, 3)
        index.add(["new0", "new1", "new2"], new)
        assert len(index) == 303 and index.contains("new1") and "new2" in index
        assert index.ids[-3:] == ["new0", "new1", "new2"]
        scores, ids = index.search(new, 1)
        assert [r[0] for r in ids] == ["new0", "new1", "new2"]
        np.testing.assert_allclose(scores[:, 0], 1.0, atol=1e-5)


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivf"])
def test_incremental_adds_match_a_rebuild(kind):
    """A database grown by appends keeps an index grown by adds: the same answers as building it
    from every vector at once (flat and IVF exactly; HNSW's graph depends on the insertion
    batches, so its answers are checked against exact search instead). IVF keeps the centroids
    of its first add: adding never retrains."""
    rng = np.random.default_rng(11)
    x, q = _clustered(rng, 1200), _clustered(rng, 40)
    kw = {"nlist": 6, "nprobe": 6} if kind == "ivf" else {}
    grown = FusedIndex(64, kind=kind, gpu=False, **kw)
    for lo, hi in ((0, 600), (600, 900), (900, 1200)):
        grown.add(_ids(1200)[lo:hi], x[lo:hi])
    whole = FusedIndex(64, kind=kind, gpu=False, **kw)
    whole.add(_ids(1200), x)
    exact = FusedIndex(64, kind="flat", gpu=False)
    exact.add(_ids(1200), x)
    s_g, i_g = grown.search(q, 5)
    s_e, i_e = exact.search(q, 5)
    assert grown.ids == whole.ids == _ids(1200) and grown.kind == kind
    if kind == "hnsw":
        top1 = np.mean([a[0] == b[0] for a, b in zip(i_g, i_e)])
        assert top1 >= 0.95
    else:
        s_w, i_w = whole.search(q, 5)
        assert i_g == i_e
        np.testing.assert_allclose(s_g, s_e, atol=1e-5)
        if kind == "flat":
            assert i_w == i_g
            np.testing.assert_allclose(s_w, s_g, atol=1e-6)


def test_ivf_retrains_only_on_request():
    rng = np.random.default_rng(12)
    x, q = _clustered(rng, 1600), _clustered(rng, 30)
    ivf = FusedIndex(64, kind="ivf", gpu=False, nprobe=1000)
    ivf.add(_ids(100), x[:100])                  # too few to train: an exact flat index for now
    assert ivf.kind == "flat"
    ivf.add(_ids(1600)[100:], x[100:])           # adding does not retrain
    assert ivf.kind == "flat"
    ivf.retrain()                                # 1600 vectors: 4 sqrt(1600) = 160 lists need 6400
    assert ivf.kind == "flat"
    ivf.retrain(nlist=8)                         # 8 lists: trained now, every vector kept in order
    assert ivf.kind == "ivf" and ivf.nlist == 8 and ivf.ids == _ids(1600) and len(ivf) == 1600
    exact = FusedIndex(64, kind="flat", gpu=False)
    exact.add(_ids(1600), x)
    s1, i1 = ivf.search(q, 5)
    s2, i2 = exact.search(q, 5)
    assert i1 == i2
    np.testing.assert_allclose(s1, s2, atol=1e-5)
    ivf.retrain()                                # a trained IVF: trained again, same answers
    assert ivf.kind == "ivf" and ivf.search(q, 5)[1] == i2
    hnsw = FusedIndex(64, kind="hnsw", gpu=False)
    hnsw.add(_ids(10), x[:10])
    hnsw.retrain()                               # nothing to train
    assert hnsw.kind == "hnsw" and len(hnsw) == 10


def test_duplicate_id_raises_and_leaves_index_unchanged():
    rng = np.random.default_rng(6)
    x, q = _clustered(rng, 20), _clustered(rng, 4)
    index = FusedIndex(64, kind="flat", gpu=False)
    index.add(_ids(20), x)
    before = index.search(q, 5)
    with pytest.raises(ValueError, match="already"):
        index.add(["fresh", "v3"], _clustered(rng, 2))
    with pytest.raises(ValueError, match="twice"):
        index.add(["x", "x"], _clustered(rng, 2))
    assert len(index) == 20 and not index.contains("fresh") and not index.contains("x")
    after = index.search(q, 5)
    assert after[1] == before[1]
    np.testing.assert_array_equal(after[0], before[0])


@pytest.mark.parametrize("kind,kw", [("flat", {}), ("hnsw", {"hnsw_m": 8, "ef_search": 20}),
                                     ("ivf", {"nlist": 4, "nprobe": 2})])
def test_save_load_round_trip(tmp_path, kind, kw):
    rng = np.random.default_rng(7)
    x, q = _clustered(rng, 400), _clustered(rng, 10)
    index = FusedIndex(64, kind=kind, gpu=False, **kw)
    index.add(_ids(400), x)
    index.save(tmp_path / "idx")
    assert sorted(p.name for p in (tmp_path / "idx").iterdir()) == ["config.json", "ids.json", "index.faiss"]
    loaded = FusedIndex.load(tmp_path / "idx", gpu=False)
    assert (loaded.kind, loaded.dim, len(loaded), loaded.ids) == (kind, 64, 400, index.ids)
    s1, i1 = index.search(q, 7)
    s2, i2 = loaded.search(q, 7)
    assert i1 == i2
    np.testing.assert_array_equal(s1, s2)
    loaded.add(["later"], q[:1])  # a loaded index keeps growing
    assert loaded.search(q[:1], 1)[1] == [["later"]]
    assert [p.name for p in tmp_path.iterdir()] == ["idx"]  # no temporary folders left behind


def test_interrupted_save_keeps_previous_folder(tmp_path, monkeypatch):
    rng = np.random.default_rng(8)
    x, q = _clustered(rng, 60), _clustered(rng, 5)
    index = FusedIndex(64, kind="flat", gpu=False)
    index.add(_ids(50), x[:50])
    index.save(tmp_path / "idx")
    expected = FusedIndex.load(tmp_path / "idx").search(q, 3)
    index.add(_ids(10, "n"), x[50:])

    real_write = faiss.write_index

    def failing_write(idx, path):
        real_write(idx, path)  # a file is half-way there ...
        with open(path, "r+b") as f:
            f.truncate(100)
        raise OSError("disk full")  # ... when the write fails

    monkeypatch.setattr(faiss, "write_index", failing_write)
    with pytest.raises(OSError, match="disk full"):
        index.save(tmp_path / "idx")
    monkeypatch.setattr(faiss, "write_index", real_write)
    assert [p.name for p in tmp_path.iterdir()] == ["idx"]
    survivor = FusedIndex.load(tmp_path / "idx")
    assert len(survivor) == 50
    got = survivor.search(q, 3)
    assert got[1] == expected[1]
    index.save(tmp_path / "idx")  # a later save replaces it completely
    assert len(FusedIndex.load(tmp_path / "idx")) == 60


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        FusedIndex.load(tmp_path / "nothing")
    index = FusedIndex(8, kind="flat", gpu=False)
    index.add(["a"], _unit(np.ones((1, 8))))
    index.save(tmp_path / "idx")
    (tmp_path / "idx" / "index.faiss").write_bytes(b"not a faiss index")
    with pytest.raises(ValueError, match="corrupt"):
        FusedIndex.load(tmp_path / "idx")
    index.save(tmp_path / "idx")
    (tmp_path / "idx" / "ids.json").write_text('["a", "b"]')
    with pytest.raises(ValueError, match="corrupt"):
        FusedIndex.load(tmp_path / "idx")
    (tmp_path / "idx" / "ids.json").unlink()
    with pytest.raises(FileNotFoundError, match="ids.json"):
        FusedIndex.load(tmp_path / "idx")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError):
        index.save(tmp_path / "other")
    assert (tmp_path / "other" / "notes.txt").read_text() == "mine"


def test_k_larger_than_index():
    rng = np.random.default_rng(9)
    q = _clustered(rng, 3)
    for kind in ("flat", "hnsw"):
        index = FusedIndex(64, kind=kind, gpu=False)
        scores, ids = index.search(q, 5)
        assert scores.shape == (3, 0) and ids == [[], [], []]
        index.add(_ids(4), _clustered(rng, 4))
        scores, ids = index.search(q, 10)
        assert scores.shape == (3, 4) and all(sorted(r) == _ids(4) for r in ids)
        assert np.isfinite(scores).all() and (np.diff(scores, axis=1) <= 1e-6).all()
        scores, ids = index.search(q[0], 2)  # a single 1-D query
        assert scores.shape == (1, 2) and len(ids[0]) == 2


def test_bad_inputs_raise_value_error():
    rng = np.random.default_rng(10)
    a, o, w, p, g = _data(rng, 10, 2)
    bad_nan = a.copy()
    bad_nan[3, 2] = np.nan
    with pytest.raises(ValueError):
        fuse_videos(a, o[:9], w)
    with pytest.raises(ValueError):
        fuse_videos(a, o, w[:, :1])
    with pytest.raises(ValueError, match="non-negative"):
        fuse_videos(a, o, np.tile([1.2, -0.2], (10, 1)))
    with pytest.raises(ValueError, match="sum to 1"):
        fuse_videos(a, o, np.tile([0.5, 0.6], (10, 1)))
    with pytest.raises(ValueError, match="NaN"):
        fuse_videos(bad_nan, o, w)
    with pytest.raises(ValueError):
        fuse_queries(p, g[:1])
    with pytest.raises(ValueError):
        fuse_videos(a[None], o, w)
    index = FusedIndex(64, kind="flat", gpu=False)
    x = fuse_videos(a, o, w)
    with pytest.raises(ValueError, match="dimension"):
        index.add(_ids(10), x[:, :60])
    with pytest.raises(ValueError, match="NaN"):
        index.add(_ids(10), np.where(np.arange(64) == 5, np.nan, x))
    with pytest.raises(ValueError, match="infinite"):
        index.add(["a"], np.full((1, 64), np.inf))
    with pytest.raises(ValueError):
        index.add(_ids(9), x)
    with pytest.raises(ValueError):
        index.add([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], x)
    assert len(index) == 0
    index.add(_ids(10), x)
    with pytest.raises(ValueError):
        index.search(np.zeros((2, 63), np.float32), 3)
    with pytest.raises(ValueError):
        index.search(fuse_queries(p, g), 0)
    with pytest.raises(ValueError):
        index.search(np.full((1, 64), np.nan), 3)
    with pytest.raises(ValueError):
        FusedIndex(64, kind="lsh")
    with pytest.raises(ValueError):
        FusedIndex(0)


@pytest.mark.skipif(faiss.get_num_gpus() > 0, reason="a GPU is present")
def test_gpu_true_without_gpu_is_a_clear_error():
    with pytest.raises(RuntimeError, match="no GPU"):
        FusedIndex(64, kind="flat", gpu=True)
    assert not FusedIndex(64, kind="flat", gpu="auto").on_gpu


def test_gpu_path_moves_flat_and_ivf_and_saves_cpu_index(tmp_path, monkeypatch):
    """Simulated GPU: the index goes through index_cpu_to_all_gpus, files through index_gpu_to_cpu."""
    moved, back = [], []
    monkeypatch.setattr(faiss, "get_num_gpus", lambda: 1)
    monkeypatch.setattr(faiss, "index_cpu_to_all_gpus", lambda idx: moved.append(type(idx).__name__) or idx)
    monkeypatch.setattr(faiss, "index_gpu_to_cpu", lambda idx: back.append(type(idx).__name__) or idx,
                        raising=False)  # faiss-cpu has no index_gpu_to_cpu
    rng = np.random.default_rng(11)
    x = _clustered(rng, 400)
    flat = FusedIndex(64, kind="flat", gpu=True)
    ivf = FusedIndex(64, kind="ivf", gpu="auto", nlist=4, nprobe=4)
    hnsw = FusedIndex(64, kind="hnsw", gpu="auto")
    for idx in (flat, ivf, hnsw):
        idx.add(_ids(400), x)
    assert flat.on_gpu and ivf.on_gpu and not hnsw.on_gpu
    assert "IndexFlatIP" in moved and "IndexIVFFlat" in moved and "IndexHNSWFlat" not in moved
    flat.save(tmp_path / "f")
    assert back == ["IndexFlatIP"]
    assert flat.search(x[:2], 1)[1] == [["v0"], ["v1"]]
