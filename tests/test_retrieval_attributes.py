"""kind@1, side@1 and direction@1 of `eval retrieval` on hand-made rankings; the training set's
mirror images and soft positives."""
import json

import numpy as np
import torch

import torch.nn.functional as F

from backend.retrieval.evaluate import attribute_hits, direction_of, kind_prototypes, r1_interval, sides_of


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


def test_kind_at_1_apart_for_one_and_several_kinds():
    videos = [["a man walks"], ["a man jumps"], ["a man walks, then jumps"]]
    kinds = [frozenset({"walk"}), frozenset({"jump"}), frozenset({"walk", "jump"})]
    queries = ["someone walks", "someone jumps", "walks then jumps", "walks then jumps"]
    q_kinds = [kinds[0], kinds[1], kinds[2], kinds[2]]
    rank1 = np.array([2, 1, 0, 2])           # a walk+jump video holds the walk; one of two combos right
    res = attribute_hits(queries, q_kinds, rank1, videos, kinds)
    assert res["kind@1 one kind"] == {"share": 1.0, "queries": 2}
    assert res["kind@1 several kinds"] == {"share": 0.5, "queries": 2}
    assert res["kind@1"]["share"] == 0.75


def test_kind_prototypes_average_training_videos_and_fall_back_to_single_kinds():
    a = F.normalize(torch.tensor([[1.0, 0, 0], [1.0, 0.2, 0], [0, 1.0, 0], [0, 0, 1.0]]), dim=-1)
    train = [frozenset({"walk"}), frozenset({"walk"}), frozenset({"jump"}), frozenset({"kick"})]
    q = kind_prototypes(a, train, [frozenset({"walk"}), frozenset({"jump", "kick"})])
    assert torch.allclose(q[0], F.normalize(a[0] + a[1], dim=-1), atol=1e-6)
    assert torch.allclose(q[1], F.normalize(a[2] + a[3], dim=-1), atol=1e-6)   # no such combo: sum
    assert kind_prototypes(a, train, [frozenset({"cartwheel"})]) is None


def test_r1_interval_resamples_videos_and_compares_on_the_same_queries():
    """R@1 with a bootstrap interval over videos (3 captions each); the paired difference of two
    scorers is exact when one wins on some queries and ties on the rest, and zero-width for
    identical rankings."""
    videos = np.repeat(np.arange(40), 3)                      # 120 queries, 3 per video
    good = np.where(videos < 20, 1, 4)                        # right at rank 1 for half the videos
    bad = np.where(videos < 10, 1, 7)                         # for a quarter
    r = r1_interval(good, videos)
    assert r["value"] == 0.5 and r["low"] < 0.5 < r["high"]
    assert 0.3 < r["low"] and r["high"] < 0.7                 # 40 clusters: about +-0.16
    d = r1_interval(good, videos, bad)
    assert d["value"] == 0.25 and 0 < d["low"] <= 0.25 <= d["high"]   # never worse on any query
    same = r1_interval(good, videos, good)
    assert same == {"value": 0.0, "low": 0.0, "high": 0.0}
    # whole videos move together: a video's 3 captions all in or all out of a draw
    one = r1_interval(np.where(videos == 0, 1, 9), videos, draws=500)
    assert one["value"] == 1 / 40 and one["high"] <= 5 / 40


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


def test_mirror_for_only_when_the_video_shows_the_other_side():
    from backend.retrieval.sides import mirror_for

    right_kick = ["a man kicks with his right leg", "someone kicks with the right foot"]
    assert mirror_for("a person kicks with the left leg", right_kick)
    assert not mirror_for("a person kicks with the right leg", right_kick)    # already that side
    assert not mirror_for("a person kicks", right_kick)                         # no side asked
    assert not mirror_for("kicks left, then right", right_kick)                 # both sides asked
    assert not mirror_for("someone turns left", ["a person walks forward"])     # video names none
    assert not mirror_for("someone turns left", ["turns left", "then kicks right"])   # video: both
    assert mirror_for("someone spins counterclockwise", ["a person spins clockwise"])
    assert not mirror_for("someone turns left", [])                             # a user's own video


def test_the_prior_of_a_video_showing_the_other_side_is_its_mirror_image(tmp_path):
    from backend.retrieval.model import GeminiMVR, RetrieverConfig
    from backend.retrieval.service import VideoRetriever
    from backend.retrieval.sides import mirror_keypoints
    from backend.retrieval.videos.database import VideoDatabase

    torch.manual_seed(0)
    model = GeminiMVR(RetrieverConfig(width=32, st_blocks=1, temporal_layers=1, heads=2,
                                      embed_dim=16, dropout=0.0)).eval()
    rng = np.random.default_rng(0)
    recs = [{"id": "kick", "key": "k0", "kind": "synthetic", "source": "synthetic",
             "spec": {"captions": ["a man kicks with his right leg"]}},
            {"id": "own", "key": "k1", "kind": "file", "source": "/nowhere/1.mp4"}]
    root = tmp_path / "db"
    db = VideoDatabase.open(root)
    db.extend(recs, rng.normal(size=(2, 16, 17, 3)).astype(np.float32), rng.normal(size=(2, 1024)))
    db.save(root)
    r = VideoRetriever(model, VideoDatabase.load(root))
    kp = np.asarray(r.db.keypoints[0], np.float32)
    plain = r.video_prior("kick")
    same = r.video_prior("kick", "a person kicks with the right leg")
    mirrored = r.video_prior("kick", "a person kicks with the left leg")
    assert r.mirrors("a person kicks with the left leg", "kick")
    assert not r.mirrors("a person kicks with the left leg", "own")          # no captions
    np.testing.assert_array_equal(same.keypoints, plain.keypoints)
    np.testing.assert_array_equal(same.frames, plain.frames)
    np.testing.assert_allclose(mirrored.keypoints, mirror_keypoints(kp), atol=1e-6)
    enc = r.encode_arrays(mirror_keypoints(kp), r.db.object[0])
    np.testing.assert_allclose(mirrored.frames, enc["frames"], atol=1e-5)
    assert np.abs(mirrored.frames - plain.frames).max() > 1e-3     # the model sees a different video
    np.testing.assert_allclose(mirrored.object, plain.object, atol=1e-5)
    # SFT --mirror asks for the mirror image of any video, captions or not
    own = r.mirrored_prior("own")
    np.testing.assert_allclose(own.keypoints, mirror_keypoints(np.asarray(r.db.keypoints[1], np.float32)),
                               atol=1e-6)
    assert own.frames.shape == plain.frames.shape


def test_soft_info_nce_shares_the_target_with_videos_of_the_same_motion():
    """share 0 (or no same-motion video in the batch) is plain InfoNCE; with a same-motion pair,
    ranking that pair's other video high costs less than under plain InfoNCE, and a different
    motion ranked high costs as much as before."""
    import torch

    from backend.retrieval.train import info_nce, same_motion, soft_info_nce

    torch.manual_seed(0)
    scale = torch.tensor(2.0)
    scores = torch.randn(4, 4)
    none = torch.eye(4, dtype=torch.bool)
    torch.testing.assert_close(soft_info_nce(scores, scale, none, 0.5), info_nce(scores, scale))
    motions = [(("kick",), frozenset({"left"}), None), (("jump",), frozenset(), None),
               (("kick",), frozenset({"left"}), None), None]
    same = same_motion(motions, torch.tensor([0, 1, 2, 3]))
    assert same.tolist() == [[True, False, True, False], [False, True, False, False],
                             [True, False, True, False], [False, False, False, False]]
    torch.testing.assert_close(soft_info_nce(scores, scale, same, 0.0), info_nce(scores, scale))
    def grad(loss_fn):
        x = torch.eye(4).requires_grad_()
        with torch.no_grad():
            x[0, 2] = x[2, 0] = 0.5                 # a same-motion video, ranked a little lower
            x[1, 3] = x[3, 1] = 0.5                 # a different motion, ranked a little lower
        loss_fn(x).backward()
        return x.grad

    plain, soft = grad(lambda x: info_nce(x, scale)), grad(lambda x: soft_info_nce(x, scale, same, 0.5))
    assert plain[0, 2] > 0 and soft[0, 2] < 0       # plain pushes the same-motion video away, soft pulls it up
    assert plain[1, 3] > 0 and soft[1, 3] > 0       # a different motion is pushed away by both
    torch.testing.assert_close(plain[1, 3], soft[1, 3])


def test_motion_key_names_kinds_sides_and_direction():
    from backend.retrieval.train import motion_key

    k = motion_key(["kick"], ["a man kicks with his left leg", "someone kicks forward with the left foot"])
    assert k == (("kick",), frozenset({"left"}), "forward")
    assert motion_key(["walk"], ["a person walks backwards"])[2] == "backward"
    assert motion_key([], ["anything"]) is None
    assert motion_key(["kick"], ["a left kick"]) != motion_key(["kick"], ["a right kick"])


def test_stage_one_trains_with_soft_positives(tmp_path):
    """A few stage-1 steps with soft positives on a tiny database whose videos share kinds; an
    out-of-range share is refused before any work."""
    import pytest
    import torch

    from backend.retrieval.train import CaptionedVideos, train_channels
    from backend.retrieval.videos.database import NUM_FRAMES, NUM_JOINTS, OBJECT_DIM, VideoDatabase

    class Encoder:
        def encode(self, texts):
            return torch.stack([torch.full((384,), float(len(t))) for t in texts])

    caps = ["a man kicks with his left leg", "a person jumps twice", "someone kicks with the left foot",
            "a woman jumps two times"]
    kinds = [["kick"], ["jump"], ["kick"], ["jump"]]
    records = [{"id": f"v{i}", "split": "train", "captions": [c], "spec": {"kinds": k}}
               for i, (c, k) in enumerate(zip(caps * 2, kinds * 2))]
    rng = np.random.default_rng(2)
    db = VideoDatabase(tmp_path, records,
                       rng.normal(size=(8, NUM_FRAMES, NUM_JOINTS, 3)).astype(np.float32),
                       rng.normal(size=(8, OBJECT_DIM)).astype(np.float32))
    data = CaptionedVideos.from_database(db, "train", Encoder(), part="channels")
    assert data.motions[0] == data.motions[2] != data.motions[1]
    with pytest.raises(ValueError, match="soft_positives"):
        train_channels(db, steps=1, soft_positives=1.0, minilm=Encoder(), progress=False)
    log = tmp_path / "log.jsonl"
    model = train_channels(db, steps=3, batch=4, soft_positives=0.5, minilm=Encoder(), progress=False, log=log)
    assert not model.training
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    assert rows and all(np.isfinite(r["action"]) and np.isfinite(r["object"]) for r in rows)
