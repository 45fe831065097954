"""kind@1, side@1 and direction@1 of `eval retrieval` on hand-made rankings."""
import numpy as np

from backend.retrieval.evaluate import attribute_hits, direction_of, sides_of


def test_caption_attributes():
    assert sides_of("a man kicks with his left leg, then turns right") == {"left", "right"}
    assert sides_of("someone spins clockwise") == {"right"}
    assert sides_of("a person spins counterclockwise") == {"left"}
    assert sides_of("a person jumps twice") == frozenset()
    assert direction_of("a person walks backwards slowly") == "backward"
    assert direction_of("a person walks forward and then turns around") == "turning"
    assert direction_of("someone jogs straight ahead") == "forward"
    assert direction_of("a person jumps twice") is None


def test_attribute_hits_on_a_hand_made_ranking():
    videos = [["a man kicks with his left leg"], ["a man kicks with his right leg"],
              ["a person walks backwards", "someone walks backward slowly"],
              ["a person walks forward", "a person strolls ahead"],
              ["a person does a cartwheel to the right"]]
    kinds = [frozenset({"kick"}), frozenset({"kick"}), frozenset({"walk"}), frozenset({"walk"}),
             frozenset({"cartwheel"})]
    queries = ["someone kicks with the left leg", "someone kicks with the left leg",
               "a person walks backwards", "a person walks backwards", "a cartwheel to the right"]
    q_kinds = [kinds[0], kinds[0], kinds[2], kinds[2], kinds[4]]
    rank1 = np.array([0, 1, 2, 3, 1])       # right, mirrored, right, forward, wrong kind
    res = attribute_hits(queries, q_kinds, rank1, videos, kinds)
    assert res["kind@1"] == {"share": 0.8, "queries": 5}
    # side: q0 left=left yes, q1 left vs right no, q4 right vs right (a kick, wrong kind) yes
    assert res["side@1"] == {"share": 2 / 3, "queries": 3}
    # direction: q2 backward yes, q3 backward vs forward no, q4 turning? no direction word -> none
    assert res["direction@1"]["queries"] == 2 and res["direction@1"]["share"] == 0.5
    empty = attribute_hits(["a person jumps"], [frozenset()], np.array([0]), videos, kinds)
    assert empty["side@1"]["queries"] == 0 and np.isnan(empty["side@1"]["share"])
