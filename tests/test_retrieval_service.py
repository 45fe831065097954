"""The retrieval service on a small fabricated database: FAISS ranking == the paper's fused
score (brute force), every mode, persistence, incremental adds and clear errors."""
import json

import numpy as np
import pytest
import torch

from backend.retrieval.model import GeminiMVR, RetrieverConfig
from backend.retrieval.service import VideoRetriever
from backend.retrieval.videos.database import DatabaseError, VideoDatabase

TINY = RetrieverConfig(width=32, st_blocks=1, temporal_layers=1, heads=2, embed_dim=16, dropout=0.0)


def make_db(root, n, seed=0, start=0):
    rng = np.random.default_rng(seed)
    recs = [{"id": f"v{start + i:03d}", "key": f"k{start + i}", "kind": "file", "source": f"/nowhere/{i}.mp4"}
            for i in range(n)]
    db = VideoDatabase.open(root)
    db.extend(recs, rng.normal(size=(n, 16, 17, 3)).astype(np.float32), rng.normal(size=(n, 1024)))
    db.save(root)
    return VideoDatabase.load(root)


@pytest.fixture
def model():
    torch.manual_seed(0)
    m = GeminiMVR(TINY).eval()
    with torch.no_grad():
        m.router.linear.weight.normal_(std=3.0)     # clearly different weights per video
    return m


def brute_force(r: VideoRetriever, text: str):
    q = r.encode_query([text])
    p, g = q["p"][0], q["g"][0]
    a, o, w = r.emb["a"], r.emb["o"], r.emb["w"]
    return w[:, 0] * (a @ p) + w[:, 1] * (o @ g)


def test_index_ranks_by_the_fused_score(tmp_path, model):
    r = VideoRetriever(model, make_db(tmp_path / "db", 60))
    assert np.ptp(r.emb["w"][:, 0]) > 0.2                 # the router really varies
    for text in ("a person walks forward", "someone does a cartwheel", "jumping twice"):
        hits = r.search(text, k=10)
        s = brute_force(r, text)
        order = np.argsort(-s, kind="stable")[:10]
        assert [h.id for h in hits] == [r.db.ids[i] for i in order]
        for h, i in zip(hits, order):
            assert h.score == pytest.approx(float(s[i]), abs=1e-5)
            assert h.score == pytest.approx(h.w_action * h.action_score + h.w_object * h.object_score, abs=1e-5)
            assert h.w_action + h.w_object == pytest.approx(1.0, abs=1e-5)


def test_modes(tmp_path, model):
    r = VideoRetriever(model, make_db(tmp_path / "db", 30))
    for mode, key in (("action", "action_score"), ("object", "object_score")):
        hits = r.search("a person runs", k=30, mode=mode)
        vals = [getattr(h, key) for h in hits]
        assert vals == sorted(vals, reverse=True)
    a = r.search("a person runs", k=5, mode="random", rng=np.random.default_rng(1))
    b = r.search("a person runs", k=5, mode="random", rng=np.random.default_rng(1))
    assert [h.id for h in a] == [h.id for h in b] and len({h.id for h in a}) == 5
    assert len(r.search("x", k=100)) == 30                  # k larger than the database
    with pytest.raises(ValueError):
        r.search("x", mode="psychic")
    with pytest.raises(ValueError):
        r.search("x", k=0)


def test_persisted_index_is_reused_and_extended(tmp_path, model):
    root = tmp_path / "db"
    r = VideoRetriever(model, make_db(root, 20))
    before = r.search("a person kicks", k=5)
    state = json.loads((root / "index" / "state.json").read_text())
    assert state["videos"] == 20
    r2 = VideoRetriever(model, VideoDatabase.load(root))    # loads the stored index
    assert [h.id for h in r2.search("a person kicks", k=5)] == [h.id for h in before]
    make_db(root, 5, seed=3, start=20)                      # five new videos arrive
    r3 = VideoRetriever(model, VideoDatabase.load(root))
    assert len(r3.index) == 25
    s = brute_force(r3, "a person kicks")
    assert [h.id for h in r3.search("a person kicks", k=25)] == [r3.db.ids[i] for i in np.argsort(-s, kind="stable")]
    frames, obj = r3.video_features("v022")
    assert frames.shape == (16, 16) and obj.shape == (16,)


def test_changed_retriever_rebuilds_the_index(tmp_path, model):
    root = tmp_path / "db"
    VideoRetriever(model, make_db(root, 10))
    other = GeminiMVR(TINY).eval()
    r = VideoRetriever(other, VideoDatabase.load(root))
    s = brute_force(r, "a person walks")
    assert [h.id for h in r.search("a person walks", k=10)] == [r.db.ids[i] for i in np.argsort(-s, kind="stable")]


def test_empty_database_and_missing_video(tmp_path, model):
    r = VideoRetriever(model, VideoDatabase.empty(tmp_path / "db"))
    with pytest.raises(DatabaseError):
        r.search("a person walks")
    r = VideoRetriever(model, make_db(tmp_path / "db2", 3))
    with pytest.raises(FileNotFoundError):
        r.video_path("v000")                                # its file is gone
    with pytest.raises(KeyError):
        r.video_path("nope")
