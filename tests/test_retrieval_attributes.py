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


def test_mirror_caption_swaps_sides_and_keeps_the_rest():
    from backend.retrieval.train import mirror_caption

    c = "A person kicks with the Left leg, then turns clockwise to the right"
    m = mirror_caption(c)
    assert m == "A person kicks with the Right leg, then turns counterclockwise to the left"
    assert mirror_caption(m) == c
    assert mirror_caption("someone spins counter-clockwise") == "someone spins clockwise"
    assert mirror_caption("a person jumps twice, brightly") == "a person jumps twice, brightly"
    for caption in (c, "a man waves his right hand", "someone spins clockwise"):
        swapped = {"left": "right", "right": "left"}
        assert sides_of(mirror_caption(caption)) == {swapped[s] for s in sides_of(caption)}


def test_mirrored_keypoints_swap_limbs_and_negate_x():
    import torch

    from backend.retrieval.train import mirror_keypoints
    from backend.retrieval.videos.pose import COCO17_NAMES

    rng = np.random.default_rng(0)
    kp = rng.normal(size=(4, 17, 3)).astype(np.float32)
    m = mirror_keypoints(kp)
    lw, rw = COCO17_NAMES.index("left_wrist"), COCO17_NAMES.index("right_wrist")
    np.testing.assert_array_equal(m[:, rw, 0], -kp[:, lw, 0])
    np.testing.assert_array_equal(m[:, rw, 1:], kp[:, lw, 1:])      # y and confidence kept
    np.testing.assert_array_equal(mirror_keypoints(m), kp)
    t = torch.from_numpy(kp)
    torch.testing.assert_close(mirror_keypoints(t), torch.from_numpy(m))
    assert torch.equal(t, torch.from_numpy(kp))                        # the input is not changed


def test_training_set_adds_a_mirror_of_each_sided_video_with_swapped_captions(tmp_path):
    import torch

    from backend.retrieval.train import CaptionedVideos, mirror_keypoints
    from backend.retrieval.videos.database import NUM_FRAMES, NUM_JOINTS, OBJECT_DIM, VideoDatabase

    class Encoder:                                   # a stand-in for MiniLM: one vector a text
        def encode(self, texts):
            return torch.stack([torch.full((384,), float(len(t))) for t in texts])

    records = [{"id": "kick", "split": "train", "captions": ["a man kicks with his left leg"]},
               {"id": "jump", "split": "train", "captions": ["a person jumps twice"]},
               {"id": "spin", "split": "train", "captions": ["someone spins clockwise", "a spin"]}]
    rng = np.random.default_rng(1)
    db = VideoDatabase(tmp_path, records,
                       rng.normal(size=(3, NUM_FRAMES, NUM_JOINTS, 3)).astype(np.float32),
                       rng.normal(size=(3, OBJECT_DIM)).astype(np.float32))
    plain = CaptionedVideos.from_database(db, "train", Encoder())
    data = CaptionedVideos.from_database(db, "train", Encoder(), mirror=True)
    assert plain.ids == ["kick", "jump", "spin"]
    assert data.ids == ["kick", "jump", "spin", "kick~mirror", "spin~mirror"]   # not the jump
    caps = {data.ids[v]: [] for v in range(len(data.ids))}
    for c, v in zip(data.captions, data.cap_video.tolist()):
        caps[data.ids[v]].append(c)
    assert caps["kick~mirror"] == ["a man kicks with his right leg"]
    assert caps["spin~mirror"] == ["someone spins counterclockwise", "a spin"]
    torch.testing.assert_close(data.keypoints[3], mirror_keypoints(data.keypoints[0]))
    torch.testing.assert_close(data.object[4], data.object[2])
    assert len(data.pred_emb) == len(data.captions) == 7
