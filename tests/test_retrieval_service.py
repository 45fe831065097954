"""The retrieval service on a small fabricated database: FAISS ranking == the paper's fused
score (brute force), every mode, persistence, incremental adds and clear errors."""
import json
import shutil

import numpy as np
import pytest
import torch

from backend.retrieval.embcache import EmbeddingCache
from backend.retrieval.model import GeminiMVR, RetrieverConfig
from backend.retrieval.service import VideoRetriever
from backend.retrieval.videos.database import DatabaseError, VideoDatabase, writer_lock

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
    a, o, w = (np.asarray(r.emb[k]) for k in ("a", "o", "w"))
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
    assert EmbeddingCache.open(root / "index").count == 20
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


# ------------------------------------------------------------ the append-only embedding cache
def make_sharded_db(root, n, seed=0, start=0, shard_rows=8):
    rng = np.random.default_rng(seed)
    recs = [{"id": f"v{start + i:03d}", "key": f"k{start + i}", "kind": "file", "source": f"/nowhere/{i}.mp4"}
            for i in range(n)]
    db = VideoDatabase.open(root)
    db.extend(recs, rng.normal(size=(n, 16, 17, 3)).astype(np.float32), rng.normal(size=(n, 1024)))
    with writer_lock(root):
        db.save(root, shard_rows=shard_rows)
    return VideoDatabase.load(root)


def count_encoded(monkeypatch, model) -> list[int]:
    """Rows of database videos the model encodes from now on (the probe of one blank video
    for the output shapes is not counted)."""
    seen: list[int] = []
    real = model.encode_video

    def counting(kp, ob):
        if not (len(kp) == 1 and not kp.abs().sum()):
            seen.append(len(kp))
        return real(kp, ob)
    monkeypatch.setattr(model, "encode_video", counting)
    return seen


def stamp(path):
    st = path.stat()
    return st.st_ino, st.st_mtime_ns, st.st_size


QUERIES = ("a person kicks", "someone waves both arms", "jumping")


def test_adding_videos_embeds_only_the_new_rows(tmp_path, model, monkeypatch):
    root = tmp_path / "db"
    VideoRetriever(model, make_sharded_db(root, 20))          # shards of 8: 8 + 8 + 4
    cache = EmbeddingCache.open(root / "index")
    assert cache.count == 20 and cache.manifest["shard_rows"] == 8
    full = [cache.folder / f"{k}-{s}.npy" for s in ("000000", "000001") for k in ("a", "o", "w", "frames", "rows")]
    before = {p: stamp(p) for p in full}
    make_sharded_db(root, 7, seed=3, start=20)                # seven new videos arrive (an append)
    seen = count_encoded(monkeypatch, model)
    r = VideoRetriever(model, VideoDatabase.load(root))
    assert sum(seen) == 7                                     # only the new rows went through the model
    assert EmbeddingCache.open(root / "index").folder == cache.folder and r.cache.count == 27
    assert {p: stamp(p) for p in full} == before             # full shards of the cache untouched
    assert not (cache.snapshot_dir).exists()                 # a flat index is never saved
    # the same answers as a retriever built from scratch
    fresh_root = tmp_path / "fresh"
    shutil.copytree(root, fresh_root, ignore=shutil.ignore_patterns("index"))
    seen.clear()
    scratch = VideoRetriever(model, VideoDatabase.load(fresh_root))
    assert sum(seen) == 27
    for mode in ("gemini", "action", "fixed"):
        for text in QUERIES:
            got, want = r.search(text, k=27, mode=mode), scratch.search(text, k=27, mode=mode)
            assert [h.to_json() for h in got] == [h.to_json() for h in want]
    np.testing.assert_array_equal(r.video_features("v024")[0], scratch.video_features("v024")[0])
    # nothing new: nothing embedded, nothing written
    seen.clear()
    manifest = stamp(r.cache.folder / "manifest.json")
    VideoRetriever(model, VideoDatabase.load(root))
    assert seen == [] and stamp(r.cache.folder / "manifest.json") == manifest


def test_add_videos_through_the_retriever_extends_its_index(tmp_path, model, monkeypatch):
    root = tmp_path / "db"
    r = VideoRetriever(model, make_sharded_db(root, 10))
    seen = count_encoded(monkeypatch, model)
    make_sharded_db(root, 3, seed=5, start=10)
    r.db = VideoDatabase.load(root)
    r.refresh()
    assert sum(seen) == 3 and len(r.index) == 13 and r.has_video("v012")
    s = brute_force(r, "a person kicks")
    assert [h.id for h in r.search("a person kicks", k=13)] == [r.db.ids[i] for i in np.argsort(-s, kind="stable")]


def test_a_new_model_or_a_rewritten_database_embeds_everything_again(tmp_path, model, monkeypatch):
    root = tmp_path / "db"
    VideoRetriever(model, make_sharded_db(root, 12))
    old = EmbeddingCache.open(root / "index").folder
    other = GeminiMVR(TINY).eval()                            # another fingerprint
    seen = count_encoded(monkeypatch, other)
    r = VideoRetriever(other, VideoDatabase.load(root))
    assert sum(seen) == 12 and r.cache.folder != old and not old.exists()
    s = brute_force(r, "a person walks")
    assert [h.id for h in r.search("a person walks", k=12)] == [r.db.ids[i] for i in np.argsort(-s, kind="stable")]
    # a database that is not an extension of the cached rows (same ids, other videos, one row fewer)
    db = VideoDatabase.load(root)
    recs = db.records[:11]
    rewritten = VideoDatabase(root, recs, np.asarray(db.keypoints[:11])[::-1].copy(), db.object[:11])
    with writer_lock(root):
        rewritten.save(root)
    seen.clear()
    r2 = VideoRetriever(other, VideoDatabase.load(root))
    assert sum(seen) == 11 and len(r2.index) == 11
    # same ids and length, but rows swapped: keys differ at those rows
    db = VideoDatabase.load(root)
    recs = db.records
    swapped = VideoDatabase(root, [recs[1], recs[0]] + recs[2:], db.keypoints[[1, 0] + list(range(2, 11))],
                            db.object[[1, 0] + list(range(2, 11))])
    with writer_lock(root):
        swapped.save(root)
    seen.clear()
    r3 = VideoRetriever(other, VideoDatabase.load(root))
    assert sum(seen) == 11
    np.testing.assert_allclose(np.asarray(r3.emb["a"])[0], np.asarray(r2.emb["a"])[1], atol=1e-6)


def test_hnsw_snapshot_is_extended_and_saved_again_only_when_it_lags(tmp_path, model, monkeypatch):
    root = tmp_path / "db"
    r = VideoRetriever(model, make_sharded_db(root, 40), kind="hnsw")
    snap = r.cache.snapshot_dir
    assert r.index.kind == "hnsw" and json.loads((snap / "config.json").read_text())["count"] == 40
    saved = stamp(snap / "index.faiss")
    make_sharded_db(root, 3, seed=7, start=40)                # 3 < 10% of 40: the snapshot stays
    seen = count_encoded(monkeypatch, model)
    r2 = VideoRetriever(model, VideoDatabase.load(root), kind="hnsw")
    assert sum(seen) == 3 and len(r2.index) == 43 and stamp(snap / "index.faiss") == saved
    s = brute_force(r2, "a person kicks")
    assert [h.id for h in r2.search("a person kicks", k=5)] == [r2.db.ids[i] for i in np.argsort(-s, kind="stable")[:5]]
    make_sharded_db(root, 2, seed=8, start=43)                # 5 rows past the snapshot of 40: saved again
    r3 = VideoRetriever(model, VideoDatabase.load(root), kind="hnsw")
    assert sum(seen) == 5 and json.loads((snap / "config.json").read_text())["count"] == 45
    flat = VideoRetriever(model, VideoDatabase.load(root), kind="flat")   # another kind: built, not saved
    assert sum(seen) == 5 and flat.index.kind == "flat" and not snap.exists()
    assert [h.id for h in flat.search("jumping", k=3)] == [h.id for h in r3.search("jumping", k=3)]


def test_the_whole_file_cache_of_earlier_versions_is_replaced(tmp_path, model):
    root = tmp_path / "db"
    db = make_sharded_db(root, 5)
    (root / "index" / "faiss").mkdir(parents=True)
    (root / "index" / "embeddings.npz").write_bytes(b"old")
    (root / "index" / "state.json").write_text("{}")
    r = VideoRetriever(model, db)
    assert sorted(p.name for p in (root / "index").iterdir()) == sorted([".write.lock", "CURRENT", r.cache.folder.name])


def test_shipped_database_retrieves_as_the_whole_file_cache_did(tmp_path):
    """checkpoints/videodb (flat, float16) + the shipped retriever: the embeddings and the flat
    index equal what the earlier whole-file cache computed (float32, one flat add)."""
    from pathlib import Path

    from backend.retrieval.index import FusedIndex, fuse_videos

    repo = Path(__file__).resolve().parents[1]
    src, ret = repo / "checkpoints" / "videodb", repo / "checkpoints" / "retriever"
    assert (src / "videos.jsonl").is_file() and (ret / "model.safetensors").is_file(), \
        "the shipped database or retriever (tracked) is missing"
    stamp_src = {p.name: p.stat().st_mtime_ns for p in src.iterdir()}
    for f in ("keypoints.npy", "object.npy", "videos.jsonl"):    # a legacy flat folder, as shipped
        shutil.copy(src / f, tmp_path / f)
    model = GeminiMVR.from_pretrained(ret)
    db = VideoDatabase.load(tmp_path)
    assert not db.sharded
    r = VideoRetriever(model, db, kind="flat", gpu=False)
    assert {p.name: p.stat().st_mtime_ns for p in src.iterdir()} == stamp_src
    with torch.no_grad():                                     # the earlier cache's computation
        out = [model.encode_video(torch.from_numpy(db.keypoints[s:s + 256]), torch.from_numpy(db.object[s:s + 256]))
               for s in range(0, len(db), 256)]
    ref = {k: np.concatenate([o[k].numpy() for o in out]).astype(np.float32) for k in ("a", "o", "w")}
    for k in ("a", "o", "w"):
        np.testing.assert_array_equal(np.asarray(r.emb[k]), ref[k])
    old = FusedIndex(ref["a"].shape[1] + ref["o"].shape[1], kind="flat", gpu=False)
    old.add(db.ids, fuse_videos(ref["a"], ref["o"], ref["w"]))
    q = np.random.default_rng(0).normal(size=(8, old.dim)).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    s_new, ids_new = r.index.search(q, 10)
    s_old, ids_old = old.search(q, 10)
    assert ids_new == ids_old
    np.testing.assert_array_equal(s_new, s_old)


def test_a_kept_reader_gives_the_llm_its_features_while_the_new_retriever_ranks(tmp_path, model):
    """Ranking and reading split: search is the retriever's alone; every prior the motion LLM
    reads (stored, mirrored, uploaded) comes from the reader's encoder, equal to what the reader
    alone would give."""
    torch.manual_seed(1)
    reader = GeminiMVR(TINY).eval()
    root = tmp_path / "db"
    alone = VideoRetriever(model, make_db(root, 12))
    split = VideoRetriever(model, VideoDatabase.load(root), reader=reader)
    as_reader = VideoRetriever(reader, make_db(tmp_path / "db2", 12))     # same rows (same seed)
    for text in ("a person kicks with the left leg", "someone walks backwards"):
        assert [h.id for h in split.search(text, k=5)] == [h.id for h in alone.search(text, k=5)]
    vid = split.video_ids[3]
    f_split, o_split = split.video_features(vid)
    f_read, o_read = as_reader.video_features(vid)
    np.testing.assert_allclose(f_split, f_read, atol=1e-5)
    np.testing.assert_allclose(o_split, o_read, atol=1e-5)
    assert not np.allclose(f_split, alone.video_features(vid)[0], atol=1e-3)   # really another encoder
    np.testing.assert_allclose(split.mirrored_prior(vid).frames, as_reader.mirrored_prior(vid).frames, atol=1e-5)
    kp, ob = np.asarray(split.db.keypoints[5], np.float32), np.asarray(split.db.object[5])
    up = split.prior_arrays(kp, ob)
    np.testing.assert_allclose(up.frames, as_reader.video_features(split.video_ids[5])[0],
                               rtol=2e-3, atol=2e-3)                # stored at float16
    np.testing.assert_array_equal(up.keypoints, kp)
    # the scores shown beside an upload stay the searching retriever's
    np.testing.assert_allclose(split.encode_arrays(kp, ob)["a"], alone.emb["a"][5], atol=1e-5)


def test_open_takes_the_shipped_reader_only_beside_the_shipped_retriever(tmp_path, model, monkeypatch):
    ck = tmp_path / "ck"
    model.save_pretrained(ck / "retriever")
    monkeypatch.setenv("VIMORAG_CHECKPOINTS", str(ck))
    make_db(tmp_path / "data" / "videodb" / "mine", 4)
    monkeypatch.setenv("VIMORAG_DATA", str(tmp_path / "data"))
    assert VideoRetriever.open("mine").reader is None                  # no reader shipped
    torch.manual_seed(2)
    GeminiMVR(TINY).save_pretrained(ck / "video-reader")
    assert VideoRetriever.open("mine").reader is not None
    assert VideoRetriever.open("mine", retriever_dir=ck / "retriever").reader is None
    with pytest.raises(FileNotFoundError, match="video reader"):
        VideoRetriever.open("mine", reader_dir=tmp_path / "nowhere")


def test_stated_cues_rerank_what_the_words_cue_lists_miss(tmp_path, model):
    """"unhurriedly" is no slow word the cue lists know, and without a count word they read
    once; a reading that states slow and twice re-ranks as the words "slowly twice" would."""
    from backend.retrieval.rerank import stated_cues

    rng = np.random.default_rng(0)
    caps = ["a person crawls quickly.", "a person crawls slowly twice.", "a person crawls."] * 4
    recs = [{"id": f"v{i:03d}", "key": f"k{i}", "kind": "file", "source": f"/nowhere/{i}.mp4",
             "captions": [c]} for i, c in enumerate(caps)]
    db = VideoDatabase.open(tmp_path / "db")
    db.extend(recs, rng.normal(size=(12, 16, 17, 3)).astype(np.float32), rng.normal(size=(12, 1024)))
    db.save(tmp_path / "db")
    r = VideoRetriever(model, VideoDatabase.load(tmp_path / "db"))
    r.rerank_weight = 10.0                              # the cues decide among the tiny model's ties
    text = "a person crawls unhurriedly."
    plain = r.search(text, k=12)
    cued = r.search(text, k=12, cues=stated_cues("slow", 2))
    slow_twice = {f"v{i:03d}" for i in range(1, 12, 3)}
    assert {h.id for h in cued[:4]} == slow_twice
    assert {h.id for h in plain[:4]} != slow_twice       # the words alone: once, no speed
    assert [h.id for h in r.search(text, k=12, cues=np.full(4, -1))] == [h.id for h in plain]
    with pytest.raises(ValueError, match="cues must be"):
        r.search_many([text, text], k=3, cues=np.zeros((1, 4)))
