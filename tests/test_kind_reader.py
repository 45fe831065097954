"""The kind reader (backend/generation/kind_reader.py): its training pairs, its vote beside the
videos', save/load, and every query re-ranked by its read kind in the evaluation and the service.
The base LM's states are replaced by word counts here (the real reader is checked in
test_shipped_quality.py's spirit by `eval retrieval`; these tests need no LM)."""
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import backend.generation.kind_reader as kr
from backend.retrieval.evaluate import chain_reranked, reranked_scores
from backend.generation.kind_reader import (KindReader, KindReaderConfig, labelled_parts, train_kind_reader,
                                            with_kind_reader)
from backend.retrieval.model import GeminiMVR, RetrieverConfig
from backend.retrieval.rerank import CHAIN_WEIGHT, READ_WEIGHT, part_kind
from backend.retrieval.service import VideoRetriever
from backend.retrieval.videos.database import VideoDatabase

WORDS = ("walks", "strolls", "runs", "sprints", "jumps", "hops", "then")


def _bag(texts, config, progress=False):
    """Stand-in for the base LM's states: counts of a few words (+ a constant)."""
    return np.array([[t.lower().count(w) for w in WORDS] + [1.0] for t in texts], np.float32)


def _rec(i, caps, kinds, split="train"):
    return {"id": f"v{i:03d}", "key": f"k{i}", "kind": "file", "source": f"/nowhere/{i}.mp4",
            "spec": {"captions": caps, "kinds": kinds, "split": split}}


RECORDS = [_rec(0, ["a person walks.", "someone strolls."], ["walk"]),
           _rec(1, ["a person runs.", "a man sprints."], ["run"]),
           _rec(2, ["a person jumps.", "a woman hops."], ["jump"]),
           _rec(3, ["a person walks, then jumps.", "a person strolls and hops"], ["walk", "jump"]),
           _rec(4, ["a person sprints."], ["run"], split="test"),
           {"id": "own", "key": "own", "kind": "file", "source": "/nowhere/own.mp4"}]


def test_labelled_parts_give_each_part_its_kind_in_order_and_skip_what_does_not_fit():
    texts, kinds = labelled_parts(RECORDS, "train")
    assert list(zip(texts, kinds)) == [
        ("a person walks.", "walk"), ("someone strolls.", "walk"), ("a person runs.", "run"),
        ("a man sprints.", "run"), ("a person jumps.", "jump"), ("a woman hops.", "jump"),
        ("a person walks.", "walk"), ("a person jumps.", "jump")]    # the uncut two-kind caption is left out
    assert labelled_parts(RECORDS, "test") == (["a person sprints."], ["run"])


def test_part_kind_adds_the_reading_to_the_videos_scaled_votes():
    W, R = frozenset({"walk"}), frozenset({"run"})
    votes = [W, W, R]                                      # walk 1.5 / 1.83, run 0.33 / 1.83
    assert part_kind(votes) == "walk"
    assert part_kind(votes, {"run": 0.9, "walk": 0.1}) == "run"       # 0.18 + 0.9 against 0.82 + 0.1
    assert part_kind(votes, {"run": 0.6, "walk": 0.4}) == "walk"      # 0.78 against 1.22
    assert part_kind(votes, {"run": 0.9, "walk": 0.1}, read_weight=0.0) == "walk"
    assert part_kind([None, frozenset()], {"crawl": 0.7, "walk": 0.3}) == "crawl"   # no video votes
    assert part_kind([None], None) is None


def test_the_reader_trains_reads_and_round_trips(tmp_path, monkeypatch):
    monkeypatch.setattr(kr, "_features", _bag)
    reader = train_kind_reader(RECORDS, KindReaderConfig(c=10.0), progress=False)
    assert reader.kinds == ["jump", "run", "walk"] and reader.config.train_parts == 8
    assert reader.config.train_accuracy == 1.0
    p = reader.probabilities(["a man sprints.", "a person hops.", "someone strolls."])
    assert p.shape == (3, 3) and np.allclose(p.sum(1), 1)
    assert [reader.kinds[i] for i in p.argmax(1)] == ["run", "jump", "walk"]
    assert reader.probabilities([]).shape == (0, 3)
    back = KindReader.from_pretrained(reader.save_pretrained(tmp_path / "kr"))
    np.testing.assert_allclose(back.probabilities(["a man sprints."]), p[:1], rtol=1e-6)
    assert back.read(["a man sprints."])[0].keys() == {"jump", "run", "walk"}
    assert KindReader.from_pretrained(tmp_path / "absent") is None
    got = SimpleNamespace(kind_reader=None)
    got.use_kind_reader = lambda r: (setattr(got, "kind_reader", r), got)[1]
    assert with_kind_reader(got, tmp_path / "kr").kind_reader.kinds == reader.kinds     # attached
    with pytest.raises(FileNotFoundError, match="kind-reader"):
        with_kind_reader(got, tmp_path / "absent")
    calls = []
    monkeypatch.setattr(kr, "_features", lambda texts, cfg, progress=False: calls.append(list(texts)) or _bag(texts, cfg))
    first = back.read(["a man sprints.", "a person hops.", "a man sprints."])
    assert back.read(["a person hops."]) == [first[1]] and first[0] == first[2]
    assert calls == [["a person hops."]]            # each text read once ("sprints" above), then kept
    with pytest.raises(ValueError, match="two"):
        train_kind_reader([RECORDS[0]], progress=False)
    with pytest.raises(ValueError, match="c must be positive"):
        KindReaderConfig(c=0)


def test_chain_reranked_with_readings_reranks_one_part_queries_by_their_read_kind():
    captions = ["a man sprints.", "a man walks."]
    v_caps = [["a person walks."], ["a person runs."], ["a person jumps."]]
    v_kinds = [frozenset({"walk"}), frozenset({"run"}), frozenset({"jump"})]
    scores = np.array([[0.9, 0.8, 0.1], [0.9, 0.8, 0.1]])
    parts, owners = list(captions), [0, 1]
    plain = chain_reranked(scores, captions, parts, scores, owners, v_caps, v_kinds, 0.0, 0.5)
    np.testing.assert_allclose(plain, reranked_scores(scores, captions, v_caps, 0.0))   # no readings: as before
    reads = [{"run": 0.95, "walk": 0.05}, {"walk": 0.9, "run": 0.1}]
    out = chain_reranked(scores, captions, parts, scores, owners, v_caps, v_kinds, 0.0, 0.5, part_reads=reads)
    assert out[0].argmax() == 1 and out[1].argmax() == 0          # the sprint finds the run video
    np.testing.assert_allclose(out[0], scores[0] + 0.5 * np.array([-1, 1, -1]))
    with pytest.raises(ValueError, match="readings"):
        chain_reranked(scores, captions, parts, scores, owners, v_caps, v_kinds, part_reads=reads[:1])


class _Reader:
    """A kind reader that reads "sprints" as a run and anything else as a walk."""
    kinds = ["run", "walk"]

    def read(self, texts):
        return [{"run": 0.95, "walk": 0.05} if "sprint" in t else {"run": 0.05, "walk": 0.95} for t in texts]


def test_the_service_reranks_every_query_by_its_read_kind(tmp_path):
    torch.manual_seed(0)
    model = GeminiMVR(RetrieverConfig(width=32, st_blocks=1, temporal_layers=1, heads=2, embed_dim=16,
                                      dropout=0.0)).eval()
    recs = [_rec(i, ["a person walks."], ["walk"]) for i in range(4)] + \
           [_rec(4 + i, ["a person runs."], ["run"]) for i in range(4)]
    rng = np.random.default_rng(0)
    db = VideoDatabase.open(tmp_path / "db")
    db.extend(recs, rng.normal(size=(8, 16, 17, 3)).astype(np.float32), rng.normal(size=(8, 1024)))
    db.save(tmp_path / "db")
    plain = VideoRetriever(model, VideoDatabase.load(tmp_path / "db"))
    assert plain.kind_reader is None
    base = plain.search("a man sprints.", k=8)
    assert all(h.kinds == 0.0 for h in base)                       # one part, no reader: not re-ranked
    read = VideoRetriever(model, VideoDatabase.load(tmp_path / "db"), kind_reader=_Reader())
    read.chain_weight = 100.0                                      # the read kind decides
    runs = {f"v{i:03d}" for i in range(4, 8)}
    hits = read.search("a man sprints.", k=8)
    assert {h.id for h in hits[:4]} == runs and all(h.kinds == 1.0 for h in hits[:4])
    assert {h.id for h in read.search("a man strolls.", k=8)[:4]} == {f"v{i:03d}" for i in range(4)}
    read.chain_weight = 0.0
    assert [h.id for h in read.search("a man sprints.", k=8)] == [h.id for h in base]
    assert read.use_kind_reader(None).chain_weight == CHAIN_WEIGHT and read.kind_reader is None
    assert read.use_kind_reader(_Reader()).chain_weight == READ_WEIGHT
    # a wanted kind: its videos first whatever the reading says, the rest after, each in order
    wanted = read.search_many(["a man strolls."], k=8, want=["run"])[0]
    assert {h.id for h in wanted[:4]} == runs and len(wanted) == 8
    assert [h.id for h in plain.search_many(["a man sprints."], k=8, want=[None])[0]] == [h.id for h in base]
    with pytest.raises(ValueError, match="wanted kinds"):
        read.search_many(["a", "b"], k=2, want=["run"])
