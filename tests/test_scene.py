"""Scene words: a database video's appearance in words (backend/retrieval/scene.py), the object
channel taught them with the action channel kept (train_object_channel), the router's optional
query gate, and the described queries of eval retrieval."""
import numpy as np
import pytest
import torch

from backend.retrieval.cues import word_cues
from backend.retrieval.model import GeminiMVR, RetrieverConfig, extract_predicate
from backend.retrieval.scene import (colour_name, describe_scene, has_scene, scene_cues, scene_variant,
                                     strip_scene, with_scene)

SPEC = {"body_color": [0.8, 0.1, 0.1], "background": [0.1, 0.25, 0.1], "floor": True}


class Encoder:                                   # a stand-in for MiniLM: one vector a text
    def encode(self, texts):
        return torch.stack([torch.full((384,), float(len(t)) / 50) + 0.01 * torch.arange(384) * (hash(t) % 7)
                            for t in texts])


@pytest.mark.parametrize("rgb, shade, name", [
    ((1.0, 0.0, 0.0), False, "red"), ((0.0, 0.0, 1.0), False, "blue"), ((0.1, 0.7, 0.1), False, "green"),
    ((0.6, 0.2, 0.8), False, "purple"), ((0.5, 0.5, 0.5), False, "grey"), ((0.95, 0.95, 0.95), False, "white"),
    ((0.05, 0.05, 0.05), True, "black"), ((0.1, 0.25, 0.1), True, "dark green"),
    ((0.8, 0.9, 1.0), True, "light blue"), ((0.3, 0.3, 0.3), True, "dark grey")])
def test_colour_names(rgb, shade, name):
    assert colour_name(rgb, shade=shade) == name


def test_describe_scene_names_clothes_wall_and_floor_only_when_there():
    text = describe_scene(SPEC, 0)
    assert text == "dressed in red, in front of a dark green wall, on a checkered floor"
    assert "floor" not in describe_scene({**SPEC, "floor": False}, 0)
    assert describe_scene({}, 0) == "" and describe_scene({"kinds": ["walk"]}) == ""
    assert with_scene("a man jumps.", {}) == "a man jumps."          # a user's own video: nothing to say
    assert len({describe_scene(SPEC, v) for v in range(27)}) == 27     # every phrasing differs
    assert scene_variant("emb00001", 2) == scene_variant("emb00001", 2) != scene_variant("emb00001", 1)


@pytest.mark.parametrize("caption", [
    "a man jumps twice.", "a person walks forward, then turns left and kicks with the right leg.",
    "someone crawls backwards slowly three times", "the person is tumbling forward across the floor."])
def test_a_described_caption_strips_back_and_asks_the_same_motion(caption):
    for v in range(27):
        told = with_scene(caption, SPEC, v)
        assert told != caption and has_scene(told)
        assert strip_scene(told) == caption.rstrip(".") + "."
        assert extract_predicate(told) == extract_predicate(caption)   # the action channel reads the motion
        np.testing.assert_array_equal(word_cues([told]), word_cues([caption]))   # sides, speed, counts kept
    assert strip_scene(caption) == caption and not has_scene(caption)


def test_split_scene_gives_the_motion_and_the_clause_to_put_back():
    from backend.retrieval.scene import add_scene, split_scene

    told = with_scene("a man walks, then jumps twice.", SPEC, 4)
    body, clause = split_scene(told)
    assert body == "a man walks, then jumps twice." and clause.startswith(", ") and "red" in clause
    assert add_scene(body, clause) == told
    assert split_scene("a man jumps") == ("a man jumps", "") and add_scene("a man jumps.", "") == "a man jumps."


def test_scene_cues_flag_colours_and_settings():
    cues = scene_cues(["a man jumps.", "a man in a red shirt jumps.", "a woman dances in a bright room.",
                       "the person is tumbling forward across the floor."])
    np.testing.assert_array_equal(cues, [[0, 0], [1, 1], [0, 1], [0, 0]])


def _db(tmp_path, n=8):
    from backend.retrieval.videos.database import NUM_FRAMES, NUM_JOINTS, OBJECT_DIM, VideoDatabase

    rng = np.random.default_rng(3)
    caps = ["a man kicks with his left leg", "a person jumps twice", "someone kicks", "a woman jumps"]
    records = [{"id": f"v{i}", "key": f"v{i}-key", "split": "train", "captions": [caps[i % 4]],
                "spec": {"kinds": [["kick"], ["jump"]][i % 2], "body_color": rng.uniform(0, 1, 3).tolist(),
                         "background": rng.uniform(0, 1, 3).tolist(), "floor": bool(i % 3)}}
               for i in range(n)]
    records.append({"id": "own", "key": "own-key", "split": "train", "captions": ["a person waves"]})     # no appearance
    return VideoDatabase(tmp_path, records,
                         rng.normal(size=(n + 1, NUM_FRAMES, NUM_JOINTS, 3)).astype(np.float32),
                         rng.normal(size=(n + 1, OBJECT_DIM)).astype(np.float32))


def test_training_captions_with_scene_words(tmp_path):
    from backend.retrieval.train import CaptionedVideos

    db = _db(tmp_path)
    plain = CaptionedVideos.from_database(db, "train", Encoder())
    told = CaptionedVideos.from_database(db, "train", Encoder(), scene=True)
    assert len(plain.captions) == len(told.captions) == 9
    assert sum(has_scene(c) for c in told.captions) == 8                  # "own" has no appearance
    assert [strip_scene(c) for c in told.captions] == [c + "." for c in plain.captions[:8]] + ["a person waves"]
    assert told.cap_emb.shape[1] == 384 + 2
    np.testing.assert_array_equal(told.cap_emb[:8, -2:].numpy(), np.ones((8, 2)))   # colour and setting named
    assert not plain.cap_emb[:, -2:].any()


def test_appearance_training_keeps_everything_else_and_plain_queries_score_as_before(tmp_path):
    from backend.retrieval.model import encode_captions
    from backend.retrieval.train import CaptionedVideos, train_appearance

    db = _db(tmp_path)
    torch.manual_seed(0)
    model = GeminiMVR(RetrieverConfig(text_cues=True)).eval()
    with torch.no_grad():
        model.router.linear.bias.copy_(torch.tensor([0.5, -0.5]))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    plain = CaptionedVideos.from_database(db, "train", Encoder())
    with torch.no_grad():
        old = model.fused_scores(model.encode_text(plain.pred_emb, plain.cap_emb),
                                 model.encode_video(plain.keypoints, plain.object))
    log = tmp_path / "log.jsonl"
    train_appearance(model, db, steps=6, batch=4, minilm=Encoder(), progress=False, log=log)
    after = model.state_dict()
    for k in before:                                   # channels, router, temperatures: untouched
        assert torch.equal(before[k], after[k]), k
    assert model.config.appearance and not model.training
    assert all(p.requires_grad for p in model.parameters())
    with torch.no_grad():
        video = model.encode_video(plain.keypoints, plain.object)
        new = model.fused_scores(model.encode_text(plain.pred_emb, plain.cap_emb), video)
        assert video["o"].shape[1] == 2 * model.config.embed_dim
        for key in ("action", "object", "fused"):      # no colour or setting named: the same ranking
            torch.testing.assert_close(new[key], old[key])
        told = ["a man kicks with his left leg, dressed in red, in front of a white wall."]
        g = model.encode_text(*encode_captions(told, Encoder()))["g"]
        assert g[0, model.config.embed_dim:].norm() > 0   # a described query uses the appearance half
    rows = log.read_text().splitlines()
    assert rows and '"appearance"' in rows[0]
    # saved and loaded with its appearance projections
    model.save_pretrained(tmp_path / "m")
    again = GeminiMVR.from_pretrained(tmp_path / "m")
    assert again.config.appearance
    torch.testing.assert_close(again.encode_object(plain.object), video["o"])


def test_the_motion_llm_reads_the_object_embedding_without_its_appearance_half(tmp_path):
    from backend.retrieval.service import VideoRetriever

    db = _db(tmp_path)
    model = GeminiMVR(RetrieverConfig()).add_appearance().eval()
    db.save(tmp_path / "db")
    r = VideoRetriever(model, type(db).load(tmp_path / "db"), minilm=Encoder())
    frames, obj = r.video_features("v0")
    assert obj.shape == (model.config.embed_dim,)
    prior = r.prior_arrays(db.keypoints[0], db.object[0])
    assert prior.object.shape == (model.config.embed_dim,)
    hits = r.search("a man kicks with his left leg, dressed in red, in front of a white wall", k=3)
    assert len(hits) == 3 and all(np.isfinite(h.score) for h in hits)


def test_the_shipped_retriever_finds_the_described_video_sooner():
    """On 60 held-out database captions: the shipped retriever's scores of plain captions are those
    of its channels alone (appearance half of ``g`` zero), and with the video's appearance words
    the exact video ranks higher on average by the fused score."""
    from backend.checkpoints import checkpoints_dir
    from backend.retrieval.service import open_database
    from backend.retrieval.train import CaptionedVideos

    model = GeminiMVR.from_pretrained(checkpoints_dir() / "retriever")
    assert model.config.appearance
    db = open_database("embedded")
    d = model.config.embed_dim
    ranks = {}
    with torch.no_grad():
        for scene in (False, True):
            data = CaptionedVideos.from_database(db, "test", scene=scene)
            keep = torch.arange(0, len(data.captions), max(1, len(data.captions) // 60))[:60]
            video = model.encode_video(data.keypoints, data.object)
            text = model.encode_text(data.pred_emb[keep], data.cap_emb[keep])
            if not scene:
                assert text["g"][:, d:].abs().max() == 0
            fused = model.fused_scores(text, video)["fused"]
            truth = data.cap_video[keep]
            ranks[scene] = (fused > fused[torch.arange(len(keep)), truth][:, None]).sum(1).float() + 1
    assert ranks[True].mean() < 0.8 * ranks[False].mean()
