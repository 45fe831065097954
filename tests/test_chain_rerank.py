"""Chained queries ("A, then B") re-ranked by the kinds their parts' own best videos show:
the vote, the agreement, the evaluation's re-ranking and the service's, on hand-made cases."""
import numpy as np
import pytest
import torch

from backend.retrieval.evaluate import chain_reranked, reranked_scores
from backend.retrieval.model import GeminiMVR, RetrieverConfig
from backend.retrieval.rerank import kind_agreement, part_kind
from backend.retrieval.service import VideoRetriever
from backend.retrieval.videos.database import VideoDatabase

W, J, WJ = frozenset({"walk"}), frozenset({"jump"}), frozenset({"walk", "jump"})


def test_part_kind_votes_by_rank_and_shares_a_videos_vote_among_its_kinds():
    assert part_kind([W, J, J]) == "walk"                  # 1 against 1/2 + 1/3
    assert part_kind([W, J, J, J]) == "jump"               # 1 against 1/2 + 1/3 + 1/4
    assert part_kind([WJ, J]) == "jump"                    # walk 1/2, jump 1/2 + 1/2
    assert part_kind([None, frozenset(), J]) == "jump"     # unrecorded videos do not vote
    assert part_kind([None, frozenset()]) is None
    assert part_kind([WJ]) == "jump"                       # a tie: alphabetical, not set order
    assert part_kind([frozenset({"kick"}), frozenset({"crawl", "roll"}), frozenset({"crawl", "roll"})]) == "kick"


def test_kind_agreement_is_the_share_of_part_kinds_shown():
    videos = [WJ, W, frozenset({"kick"}), frozenset(), None, frozenset({"walk", "jump", "spin"})]
    np.testing.assert_allclose(kind_agreement(["walk", "jump"], videos), [1, 0, -1, 0, 0, 1])
    np.testing.assert_allclose(kind_agreement(["walk", None], videos), [1, 1, -1, 0, 0, 1])
    np.testing.assert_allclose(kind_agreement([None, None], videos), np.zeros(6))
    np.testing.assert_allclose(kind_agreement(["walk", "walk"], videos), [1, 1, -1, 0, 0, 1])


def test_chain_reranked_puts_a_video_of_both_parts_first_and_leaves_one_part_queries():
    captions = ["a person walks, then jumps.", "a person walks."]
    v_caps = [["a person walks."], ["a person jumps."], ["a person walks, then jumps."], ["a person kicks."]]
    v_kinds = [W, J, WJ, frozenset({"kick"})]
    scores = np.array([[0.9, 0.8, 0.5, 0.4], [0.3, 0.9, 0.8, 0.1]])
    # parts: "a person walks." (query 0), "a person jumps." (query 0), "a person walks." (query 1)
    part_scores = np.array([[0.9, 0.1, 0.5, 0.2], [0.1, 0.9, 0.6, 0.2], [0.0, 0.0, 0.0, 0.0]])
    parts, owners = ["a person walks.", "a person jumps.", "a person walks."], [0, 0, 1]
    out = chain_reranked(scores, captions, parts, part_scores, owners, v_caps, v_kinds, 0.0, 1.0)
    assert out[0].argmax() == 2                                   # shows walking and jumping
    np.testing.assert_allclose(out[0], scores[0] + [0, 0, 1, -1])  # walk 0, jump 0, both +1, kick -1
    np.testing.assert_allclose(out[1], reranked_scores(scores, captions, v_caps, 0.0)[1])
    none = chain_reranked(scores, captions, parts, part_scores, owners, v_caps, v_kinds, 0.0, 0.0)
    np.testing.assert_allclose(none, scores)
    with pytest.raises(ValueError, match="owners"):
        chain_reranked(scores, captions, parts, part_scores[:2], owners, v_caps, v_kinds, 0.06, 1.0)


def test_the_service_ranks_a_video_of_every_part_first_for_a_chained_query(tmp_path):
    torch.manual_seed(0)
    model = GeminiMVR(RetrieverConfig(width=32, st_blocks=1, temporal_layers=1, heads=2, embed_dim=16,
                                      dropout=0.0)).eval()
    specs = [("a person walks slowly.", ["walk"])] * 5 + [("a person jumps twice.", ["jump"])] * 5 + [
        ("a person walks, then jumps.", ["walk", "jump"])]
    recs = [{"id": f"v{i:03d}", "key": f"k{i}", "kind": "file", "source": f"/nowhere/{i}.mp4",
             "spec": {"captions": [c], "kinds": k}} for i, (c, k) in enumerate(specs)]
    recs.append({"id": "own", "key": "own", "kind": "file", "source": "/nowhere/own.mp4"})   # a user's
    rng = np.random.default_rng(0)
    db = VideoDatabase.open(tmp_path / "db")
    db.extend(recs, rng.normal(size=(12, 16, 17, 3)).astype(np.float32), rng.normal(size=(12, 1024)))
    db.save(tmp_path / "db")
    r = VideoRetriever(model, VideoDatabase.load(tmp_path / "db"))
    r.rerank_weight, r.chain_weight = 10.0, 100.0   # the cues pick each part's videos; the kinds decide
    text = "a person walks slowly, then jumps twice."
    hits = r.search(text, k=12)
    assert hits[0].id == "v010" and hits[0].kinds == 1.0
    assert {h.kinds for h in hits if h.id in {f"v{i:03d}" for i in range(10)}} == {0.0}   # one of two
    assert [h.kinds for h in hits if h.id == "own"] == [0.0]                               # not recorded
    # without the chain re-ranking the words' cues (slow, twice) put the both-kinds video last of the recorded
    plain = r.search_many([text], k=12, chain=False)[0]
    assert plain[0].id != "v010" and all(h.kinds == 0.0 for h in plain)
    r.chain_weight = 0.0
    assert [h.id for h in r.search(text, k=12)] == [h.id for h in plain]
    r.chain_weight = 100.0
    one = r.search("a person walks slowly.", k=5)              # one part: no chain re-ranking
    assert {h.id for h in one} == {f"v{i:03d}" for i in range(5)} and all(h.kinds == 0.0 for h in one)
