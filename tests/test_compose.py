"""Chained prompts ("A, then B") are split, written part by part and joined."""
from __future__ import annotations

import random
from types import SimpleNamespace

import numpy as np
import pytest

from backend.data.captions import caption_motion
from backend.generation.compose import join_parts
from motioncore.prompt import MAX_PARTS, split_prompt, split_prompts


@pytest.mark.parametrize("text, parts", [
    ("a man first walks forward, then jumps twice.", ["a man walks forward.", "a man jumps twice."]),
    ("someone starts by walking, and afterwards jumps.", ["someone walking.", "someone jumps."]),
    ("a person walking forward and then jumping twice.",
     ["a person walking forward.", "a person jumping twice."]),
    ("the person is running forward, followed by kicking with the left leg",
     ["the person running forward.", "the person kicking with the left leg."]),
    ("a woman kicks, after that, she punches with her right hand.",
     ["a woman kicks.", "a woman punches with her right hand."]),
    ("a figure spins to the left before crawling", ["a figure spins to the left.", "a figure crawling."]),
    ("walk forward, then turn around, and finally sit down",
     ["walk forward.", "a person turn around.", "a person sit down."]),
])
def test_chained_prompts_split_into_prompts_of_their_own(text, parts):
    assert split_prompt(text) == parts


@pytest.mark.parametrize("text", [
    "a person does a cartwheel",
    "someone spins and kicks with the right leg.",          # a bare "and" is one motion as often as two
    "a person sits up from lying on his back and stands up",
    "a man walks forward while turning left",
    "then",                                                  # nothing around the connector
    ", then jumps",
])
def test_prompts_without_a_chain_stay_whole_and_unchanged(text):
    assert split_prompt(text) == [text]


def test_a_long_chain_keeps_its_tail_in_the_last_part():
    text = "a person walks, then runs, then jumps, then kicks, then punches, then spins"
    parts = split_prompt(text)
    assert len(parts) == MAX_PARTS
    assert parts[-1] == "a person kicks, then punches, then spins."


def test_the_caption_grammar_splits_into_its_segments():
    """On captions our corpus grammar writes (train and held-out phrasings), the parts are the
    program's segments for most captions; misses are the bare-"and" joins left whole."""
    rng, pyrng = np.random.default_rng(0), random.Random(0)
    kinds = ["walk", "jump", "kick", "punch", "spin", "run", "dance_a", "getup_faceup"]
    hits = total = 0
    for i in range(300):
        segs = [{"action": str(rng.choice(kinds)), "reps": 1, "side": None, "turn": None, "speed": "normal"}
                for _ in range(int(rng.integers(1, 4)))]
        text, _ = caption_motion(segs, pyrng, held_out=bool(i % 2))
        parts = split_prompt(text)
        total += 1
        hits += len(parts) == len(segs)
        assert len(parts) <= len(segs)          # never more parts than motions here
        if len(parts) > 1:
            assert all(p.endswith(".") and len(p.split()) >= 2 for p in parts)
    assert hits / total >= 0.85


def test_as_sentence_ends_a_prompt_as_training_captions_end():
    from motioncore.prompt import as_sentence

    assert as_sentence("a person jumps three times") == "a person jumps three times."
    assert as_sentence("a person jumps!") == "a person jumps!" and as_sentence("walk. ") == "walk."
    assert as_sentence("") == ""


def test_split_prompts_and_join_parts_keep_order_and_owners():
    parts, owners = split_prompts(["a person walks, then jumps", "a man kicks"])
    assert parts == ["a person walks.", "a person jumps.", "a man kicks"] and owners == [0, 0, 1]
    codes = [np.array([1, 2]), np.array([3]), np.array([4, 5, 6])]
    joined = join_parts(codes, owners, 2)
    assert [j.tolist() for j in joined] == [[1, 2, 3], [4, 5, 6]]
    assert join_parts([], [], 1)[0].tolist() == []
    with pytest.raises(ValueError, match="2 code sequences for 3 parts"):
        join_parts(codes[:2], owners, 2)


class _Hit:
    def __init__(self, vid, rank=1):
        self.id, self.rank = vid, rank


def _stub_pipeline(seen: dict):
    """A pipeline whose retriever returns a video named after the part's first verb and whose
    LLM writes as many codes as the part has words."""
    from backend.pipeline import VimoRAGPipeline

    r = SimpleNamespace()
    r.search = lambda t, k=5, mode="gemini", rng=None: [_Hit("v-" + t.split()[2].strip("."))]
    r.mirrors = lambda t, v: False
    r.video_prior = lambda v, t=None: ("prior", v)

    def generate(texts, videos, **kw):
        seen.setdefault("calls", []).append((list(texts), list(videos), kw))
        n = kw.get("max_tokens")
        ns = n if isinstance(n, list) else [n] * len(texts)      # one length per row, or one for all
        return [np.arange(m if m else len(t.split())) + 10 * i for i, (t, m) in enumerate(zip(texts, ns))]

    pipe = VimoRAGPipeline(r, SimpleNamespace(eval=lambda: None), None, {"mcdpo": SimpleNamespace(generate=generate, config=SimpleNamespace(max_motion_tokens=49))})
    pipe.video_lead = None
    pipe.decode = lambda codes, model=None: np.zeros((4 * len(codes), 263), np.float32)
    return pipe


def test_the_pipeline_writes_a_chained_prompt_part_by_part(monkeypatch):
    import backend.pipeline as pl

    monkeypatch.setattr(pl, "clean_motion", lambda f, plant_feet=True: SimpleNamespace(joints=np.zeros((len(f), 22, 3))))
    seen: dict = {}
    pipe = _stub_pipeline(seen)
    res = pipe.generate("a person walks forward, then jumps twice")
    texts, videos, _ = seen["calls"][0]
    assert texts == ["a person walks forward.", "a person jumps twice."]     # one batch, both parts
    assert videos == [("prior", "v-walks"), ("prior", "v-jumps")]          # each part its own video
    assert res.codes.tolist() == [0, 1, 2, 3, 10, 11, 12, 13]             # joined in order
    assert len(res.features) == 4 * 8 and res.video_id == "v-walks"
    assert [p["video_id"] for p in res.parts] == ["v-walks", "v-jumps"]
    assert [p["tokens"] for p in res.parts] == [4, 4]

    seen.clear()                                  # whole: one part, no parts listed
    res = pipe.generate("a person walks forward, then jumps twice", compose=False)
    assert seen["calls"][0][0] == ["a person walks forward, then jumps twice."] and res.parts == []
    assert res.text == "a person walks forward, then jumps twice"      # the words as typed

    seen.clear()                                  # an exact length is shared between the parts
    res = pipe.generate("a person walks forward, then jumps twice", length_s=2.0)
    assert [kw["max_tokens"] for _, _, kw in seen["calls"]] == [[5, 5]] and len(res.codes) == 10   # one batch


def test_composed_kind_at_1_scores_each_part_against_its_kind(monkeypatch):
    """Retrieval as the pipeline does it: a chained caption hits when every part's rank-1 video
    shows that part's kind; a caption sent whole is scored as plain kind@1."""
    import torch

    import backend.retrieval.evaluate as ev

    where = {"a person walks.": 0, "a person jumps.": 2, "a person kicks": 2,
             "a person walks, then kicks": 1}     # rank-1 video per text sent
    monkeypatch.setattr(ev, "encode_captions", lambda texts, minilm=None: (list(texts), None))
    model = SimpleNamespace(
        encode_text=lambda pred, whole: pred,
        fused_scores=lambda texts, video: {"fused": torch.nn.functional.one_hot(
            torch.tensor([where[t] for t in texts]), 3).float()})
    kinds = [frozenset({"walk"}), frozenset({"jump"}), frozenset({"kick"})]
    caps = [["a man walks"], ["a man jumps"], ["a man kicks with the left leg"]]
    res = ev.composed_kind_hits(model, None, ["a person walks, then jumps", "a person kicks"],
                                [["walk", "jump"], ["kick"]], kinds, None, np.array([1, 2]), caps)
    assert res["kind@1"] == {"share": 0.5, "queries": 2}      # the jump part found the kick video
    assert res["parts"] == {"share": 0.5, "queries": 2}
    assert res["side@1"]["queries"] == 0                       # no part names a side
    whole = ev.composed_kind_hits(model, None, ["a person kicks"], [["kick"]], kinds, None, np.array([0]))
    assert whole["kind@1"]["share"] == 0.0 and whole["parts"]["queries"] == 0   # sent whole: its own rank-1


def test_split_agreement_counts_parts_against_segments():
    from motioncore.prompt import split_agreement

    res = split_agreement(["a man walks, then jumps", "a man spins and kicks", "a man walks, then runs"],
                          [2, 2, 1])
    assert res == {"agree": 1 / 3, "fewer": 1 / 3, "more": 1 / 3, "captions": 3}
    with pytest.raises(ValueError):
        split_agreement(["a man walks"], [])


def _searching_pipeline(monkeypatch) -> tuple:
    """``_stub_pipeline`` with the clean-up stubbed and every search's text recorded: (pipeline,
    the LLM calls seen, the texts searched)."""
    import backend.pipeline as pl

    monkeypatch.setattr(pl, "clean_motion", lambda f, plant_feet=True: SimpleNamespace(joints=np.zeros((len(f), 22, 3))))
    seen: dict = {}
    pipe = _stub_pipeline(seen)
    searched: list = []
    search = pipe.retriever.search
    pipe.retriever.search = lambda t, **kw: searched.append(t) or search(t, **kw)
    return pipe, seen, searched


def test_what_the_video_should_look_like_searches_every_part_and_is_not_written(monkeypatch):
    pipe, seen, searched = _searching_pipeline(monkeypatch)
    res = pipe.generate("a person walks forward, then jumps twice, dressed in red, in front of a white wall")
    texts, videos, _ = seen["calls"][0]
    assert texts == ["a person walks forward.", "a person jumps twice."]          # written without it
    assert searched == ["a person walks forward, dressed in red, in front of a white wall.",
                        "a person jumps twice, dressed in red, in front of a white wall."]
    assert videos == [("prior", "v-walks"), ("prior", "v-jumps")]
    assert res.text.endswith("white wall")                                      # the words as typed


def test_the_pipeline_searches_and_writes_the_left_turn_and_says_so(monkeypatch):
    pipe, seen, searched = _searching_pipeline(monkeypatch)
    res = pipe.generate("a person walks forward and then turns around")
    assert searched == ["a person walks forward.", "a person turns left."]
    assert seen["calls"][0][0] == ["a person walks forward.", "a person turns left."]
    assert [p["text"] for p in res.parts] == ["a person walks forward.", "a person turns around."]   # as typed
    assert [p["read_as"] for p in res.parts] == [None, "a person turns left."]                    # and as written
