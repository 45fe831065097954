"""VideoLead: the retrieved video leads words the generator only saw in videos."""
from __future__ import annotations

import re
import zlib

import numpy as np
from types import SimpleNamespace
import pytest

from backend.generation.video_lead import VideoLead, VideoLeadConfig, calibrate, retrieved_captions


class BagOfWords:
    """A stand-in sentence encoder: unit-length sums of fixed random word vectors."""

    def encode(self, texts, batch_size=64):
        out = np.zeros((len(texts), 64), np.float32)
        for i, t in enumerate(texts):
            for w in re.findall(r"[a-z]+", t.lower()):
                out[i] += np.random.default_rng(zlib.crc32(w.encode())).standard_normal(64)
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)


TRAIN = ["a person walks forward", "someone jumps twice", "a man kicks with the left leg",
         "a person turns around", "someone runs forward quickly"]


def _lead(low=0.05, high=0.2):
    enc = BagOfWords()
    return VideoLead(VideoLeadConfig(low=low, high=high), enc.encode(TRAIN), enc)


def test_novelty_and_weights():
    lead = _lead()
    texts = ["someone jumps twice", "a person does a cartwheel"]
    caps = [["a man jumps twice"], ["a person does a cartwheel to the right"]]
    nov = lead.novelty(texts, caps)
    assert nov[0] <= 0.0 < 0.2 < nov[1]         # a training caption says it best / only a video does
    w = lead.weights(texts, caps)
    assert w[0] == 0.0 and w[1] == 1.0
    # the ramp between low and high, and nothing to compare without captions
    assert lead.weights_from_novelty(np.array([0.125])) == pytest.approx([0.5])
    assert lead.novelty(["a person does a cartwheel"], [[]])[0] == -np.inf
    assert lead.weights(["a person does a cartwheel"], [[]])[0] == 0.0
    with pytest.raises(ValueError, match="caption lists"):
        lead.novelty(texts, caps[:1])
    with pytest.raises(ValueError, match="must exceed"):
        VideoLead(VideoLeadConfig(low=0.3, high=0.2), np.zeros((1, 64)))


def test_save_and_load_round_trip(tmp_path):
    lead = _lead(0.01, 0.15)
    lead.save_pretrained(tmp_path / "video-lead")
    back = VideoLead.from_pretrained(tmp_path / "video-lead")
    assert back.config == lead.config
    assert np.allclose(back.train, lead.train, atol=1e-3)       # stored as float16
    assert VideoLead.from_pretrained(tmp_path / "nowhere") is None


class _Hit:
    def __init__(self, vid):
        self.id = vid


class _DB:
    def __init__(self, records):
        self.records = records
        self._by = {r["id"]: r for r in records}

    def record(self, vid):
        return self._by[vid]


class FakeRetriever:
    """Ranks videos by caption overlap with the query (bag of words), best first."""

    def __init__(self, records):
        self.db = _DB(records)
        self.enc = BagOfWords()

    kind_reader = None

    def search_many(self, texts, k=5, mode="gemini", rng=None, cues=None, want=None, chain=True):
        q = self.enc.encode(texts)
        vids = [r["id"] for r in self.db.records]
        v = np.stack([self.enc.encode(r["spec"]["captions"]).mean(0) for r in self.db.records])
        out = []
        for i, qi in enumerate(q):
            order = list(np.argsort(-(v @ qi)))
            if want is not None and want[i]:        # videos of the wanted kind first
                shows = [want[i] in (self.db.records[j]["spec"].get("kinds") or []) for j in order]
                order = [j for j, s in zip(order, shows) if s] + [j for j, s in zip(order, shows) if not s]
            out.append([_Hit(vids[j]) for j in order[:k]])
        return out

    def _video_kinds(self, ids):
        return [frozenset(self.db.record(v)["spec"].get("kinds") or []) for v in ids]

    def backed_reads(self, texts, mode="gemini"):          # the real rule over this ranking
        from backend.retrieval.service import VideoRetriever

        return VideoRetriever.backed_reads(self, texts, mode)


def _rec(i, caps, ood, split="train"):
    return {"id": f"v{i}", "spec": {"captions": caps, "ood": ood, "split": split}}


def test_retrieved_captions_leave_the_own_video_out():
    r = FakeRetriever([_rec(0, ["a person does a cartwheel"], True), _rec(1, ["someone jumps twice"], False)])
    with_own = retrieved_captions(r, ["a person does a cartwheel"], k=1)
    assert with_own == [["a person does a cartwheel"]]
    without = retrieved_captions(r, ["a person does a cartwheel"], k=1, exclude=["v0"])
    assert without == [["someone jumps twice"]]


def test_calibrate_separates_video_only_kinds():
    recs = [_rec(0, ["a person does a cartwheel", "someone turns a cartwheel"], True),
            _rec(1, ["a man does a cartwheel to the left", "a cartwheel"], True),
            _rec(2, ["someone does a backflip", "a person flips backward"], True),
            _rec(3, ["a person does a backflip twice"], True),
            _rec(4, ["a person walks forward", "someone walks forward slowly"], False),
            _rec(5, ["someone jumps twice", "a man jumps twice"], False),
            _rec(6, ["a man kicks with the left leg"], False),
            _rec(7, ["a person turns around"], False),
            _rec(8, ["a video of a held-out split"], False, split="test")]
    lead, report = calibrate(TRAIN, FakeRetriever(recs), k=2, known_miss=0.0, encoder=BagOfWords())
    assert report["unknown"] == 7 and report["known"] == 6           # the test-split video is not used
    assert lead.config.low < lead.config.high
    assert report["novelty_unknown_median"] > report["novelty_known_median"]
    assert lead.config.known_led == 0.0 and lead.config.unknown_led >= 0.5
    with pytest.raises(ValueError, match="both known"):
        calibrate(TRAIN, FakeRetriever(recs[4:8]), encoder=BagOfWords())


class _Stop(Exception):
    pass


def _pipeline_guidance(lead, text, retrieval="gemini", video_lead=True, guidance=0.0, kinds=None,
                       restater=None, **kw):
    """The guidance the pipeline hands the LLM for ``text`` (the LLM stops the request there);
    ``kinds``: what the cartwheel video's record says it shows; ``restater``: the words' reader."""
    from types import SimpleNamespace

    from backend.pipeline import VimoRAGPipeline

    recs = [_rec(0, ["a person does a cartwheel", "someone turns a cartwheel"], True),
            _rec(1, ["someone jumps twice"], False)]
    if kinds is not None:
        recs[0]["spec"]["kinds"], recs[1]["spec"]["kinds"] = kinds, ["jump"]
    r = FakeRetriever(recs)
    r.search = lambda t, k=5, mode="gemini", rng=None, want=None: \
        r.search_many([t], k, want=None if want is None else [want])[0]
    r.mirrors = lambda t, v: False
    r.video_prior = lambda v, t=None: ("prior", v)
    seen = {}

    def generate(texts, videos, **kw):
        seen.update(kw, videos=videos)
        raise _Stop

    llm = SimpleNamespace(generate=generate, config=SimpleNamespace(max_motion_tokens=49))
    vq = SimpleNamespace(eval=lambda: vq)
    pipe = VimoRAGPipeline(r, vq, None, {"mcdpo": llm})
    pipe.video_lead = lead
    pipe.restater = restater
    with pytest.raises(_Stop):
        pipe.generate(text, retrieval=retrieval, video_lead=video_lead, guidance=guidance, **kw)
    return seen["guidance"], seen["videos"]


def test_pipeline_lets_the_video_lead_unknown_words():
    lead = _lead()
    g, videos = _pipeline_guidance(lead, "a person does a cartwheel")
    assert g == -1.0 and videos == [("prior", "v0")]           # the video alone
    assert _pipeline_guidance(lead, "someone jumps twice", guidance=2.0)[0] == 2.0   # words lead
    assert _pipeline_guidance(lead, "a person does a cartwheel", video_lead=False)[0] == 0.0
    assert _pipeline_guidance(None, "a person does a cartwheel")[0] == 0.0    # not calibrated
    assert _pipeline_guidance(lead, "a person does a cartwheel", retrieval="random")[0] == 0.0
    partly = SimpleNamespace(config=SimpleNamespace(k=5), weights=lambda parts, caps: np.array([0.7]))
    assert _pipeline_guidance(partly, "a person does a cartwheel")[0] == -1.0          # led: the video alone
    assert _pipeline_guidance(partly, "a person does a cartwheel", led_alone=False)[0] == pytest.approx(-0.7)


def test_lead_guidance_replaces_text_guidance_only_where_the_video_leads():
    from backend.generation.video_lead import lead_guidance

    assert lead_guidance(0.0, 2.0) == 2.0 and lead_guidance(0.4, 2.0) == -0.4
    assert lead_guidance(np.array([0.0, 1.0, 0.5]), 1.5).tolist() == [1.5, -1.0, -0.5]
    # a led part (weight above LED_ABOVE) is written from its video alone; below, the weight mixes
    assert lead_guidance(np.array([0.0, 0.4, 0.6, 1.0]), 1.5, alone_above=0.5).tolist() == [1.5, -0.4, -1.0, -1.0]
    assert lead_guidance(0.6, 2.0, alone_above=0.5) == -1.0 and lead_guidance(0.4, 2.0, alone_above=0.5) == -0.4


class SpaceRetriever(FakeRetriever):
    """FakeRetriever with a text side of its own: ``encode_query`` embeds with a word table that
    maps every wording of a kind to one vector (what a retriever trained on videos learns), and a
    ``model`` whose predicate weights are that table (for the lead's fingerprint)."""

    SYNONYMS = {"creeping": "crawls", "creeps": "crawls", "crawling": "crawls", "fours": "crawls"}

    def __init__(self, records, seed=0):
        import torch

        super().__init__(records)
        self.model = torch.nn.Module()
        self.model.predicate = torch.nn.Linear(2, 2)
        with torch.no_grad():
            self.model.predicate.weight.fill_(float(seed))
            self.model.predicate.bias.fill_(0.0)

    def encode_query(self, texts):
        canon = [" ".join(self.SYNONYMS.get(w, w) for w in re.findall(r"[a-z]+", t.lower())
                          if w not in ("a", "guy", "is", "on", "all", "someone", "person")) for t in texts]
        return {"p": self.enc.encode(canon)}


def test_a_retriever_space_lead_reads_unseen_words_of_a_video_only_kind():
    from backend.generation.video_lead import RetrieverText

    recs = [_rec(0, ["a person crawls forward", "someone crawls"], True),
            _rec(1, ["a person crawls slowly"], True),
            _rec(2, ["a person walks forward", "someone walks forward slowly"], False),
            _rec(3, ["someone jumps twice", "a man jumps twice"], False),
            _rec(4, ["a person turns around"], False)]
    r = SpaceRetriever(recs)
    lead, _ = calibrate(TRAIN, r, k=2, known_miss=0.0, space="retriever")
    assert lead.config.space == "retriever" and lead.config.retriever
    caps = retrieved_captions(r, ["a guy is creeping forward"], k=2)
    minilm_like = VideoLead(VideoLeadConfig(), BagOfWords().encode(TRAIN), BagOfWords())
    # in the retriever's space the unseen verb is a crawl, far from every training caption
    assert lead.novelty(["a guy is creeping forward"], caps)[0] > minilm_like.novelty(["a guy is creeping forward"], caps)[0]
    assert isinstance(lead.encoder, RetrieverText)


def test_a_retriever_space_lead_refuses_another_retriever_and_needs_one(tmp_path):
    recs = [_rec(0, ["a person crawls forward"], True), _rec(1, ["someone jumps twice"], False)]
    lead, _ = calibrate(TRAIN, SpaceRetriever(recs, seed=0), k=1, known_miss=0.0, space="retriever")
    lead.save_pretrained(tmp_path / "lead")
    back = VideoLead.from_pretrained(tmp_path / "lead")
    with pytest.raises(RuntimeError, match="bind"):
        back.weights(["a person crawls"], [["a person crawls forward"]])
    with pytest.raises(ValueError, match="recalibrate"):
        back.bind(SpaceRetriever(recs, seed=1))
    back.bind(SpaceRetriever(recs, seed=0))
    assert back.weights(["a person crawls"], [["a person crawls forward"]]).shape == (1,)
    with pytest.raises(ValueError, match="space"):
        VideoLead(VideoLeadConfig(space="clip"), np.zeros((1, 64)))


def test_firm_lead_leads_fully_where_the_video_shows_a_video_only_kind():
    from backend.generation.video_lead import firm_lead, shows_video_only_kind

    known = {"walk", "jump"}
    cart = {"spec": {"kinds": ["cartwheel"]}}
    walk_cart = {"spec": {"kinds": ["walk", "cartwheel"]}}
    jump = {"spec": {"kinds": ["jump"]}}
    assert shows_video_only_kind(cart, known) and shows_video_only_kind(walk_cart, known)
    assert not shows_video_only_kind(jump, known)
    assert not shows_video_only_kind({"spec": {}}, known) and not shows_video_only_kind(None, known)  # own footage
    w = firm_lead([0.0, 0.3, 0.3, 0.3, 0.8], [cart, cart, jump, None, walk_cart], known)
    # weight 0 stays (the words alone judged it known); > 0 with a video-only kind's video -> 1
    assert w.tolist() == [0.0, 1.0, 0.3, 0.3, 1.0]


def test_pipeline_firms_a_partial_lead_only_for_a_video_only_kind():
    partly = SimpleNamespace(config=SimpleNamespace(k=5), weights=lambda parts, caps: np.array([0.3]))
    restater = SimpleNamespace(config=SimpleNamespace(classes={"action": ["walk", "jump"]}),
                               serves=lambda llm: True, keeps=lambda w: w > 0.5)

    def guidance(kinds, **kw):
        return _pipeline_guidance(partly, "a person does a cartwheel", restate=False, pick=False,
                                  kinds=kinds, restater=restater, **kw)[0]

    # the rank-1 video shows a kind only videos taught: led fully (the video alone)
    assert guidance(["cartwheel"]) == -1.0
    assert guidance(["walk"]) == pytest.approx(-0.3)          # a known kind: the weight mixes
    assert guidance(["cartwheel"], firm=False) == pytest.approx(-0.3)
    assert _pipeline_guidance(partly, "a person does a cartwheel", kinds=["cartwheel"])[0] == \
        pytest.approx(-0.3)                                    # no restater: no kinds to judge by


def test_firm_lead_with_readings_leads_words_read_as_a_video_only_kind_its_video_shows():
    from backend.generation.video_lead import firm_lead, video_only_reading

    known = {"walk", "jump"}
    cart, jump = {"spec": {"kinds": ["cartwheel"]}}, {"spec": {"kinds": ["jump"]}}
    sure, unsure = {"cartwheel": 0.8, "walk": 0.2}, {"cartwheel": 0.4, "walk": 0.35, "jump": 0.25}
    assert video_only_reading(sure, known) == "cartwheel" and video_only_reading(unsure, known) is None
    assert video_only_reading({"walk": 0.9, "cartwheel": 0.1}, known) is None      # a known kind
    assert video_only_reading(None, known) is None and video_only_reading(unsure, known, gate=0.3) == "cartwheel"
    w = firm_lead([0.0, 0.0, 0.0, 0.0, 0.3], [cart, cart, jump, None, jump], known,
                  [sure, unsure, sure, sure, {"walk": 1.0}])
    # read as a cartwheel over a cartwheel video -> 1; unsure, another kind's video, unknown video: kept
    assert w.tolist() == [1.0, 0.0, 0.0, 0.0, 0.3]
    assert firm_lead([0.0], [cart], known).tolist() == [0.0]                 # no readings: as before


class _Reads:
    """A kind reader that reads every text as a cartwheel (at ``p``)."""
    kinds = ["cartwheel", "jump"]

    def __init__(self, p=0.9):
        self.p = p

    def read(self, texts):
        return [{"cartwheel": self.p, "jump": round(1 - self.p, 6)} for _ in texts]


def test_pipeline_finds_a_video_of_a_read_video_only_kind_and_lets_it_lead():
    none = SimpleNamespace(config=SimpleNamespace(k=5), weights=lambda parts, caps: np.array([0.0]))
    restater = SimpleNamespace(config=SimpleNamespace(classes={"action": ["walk", "jump"]}),
                               serves=lambda llm: True, keeps=lambda w: w > 0.5)

    def run(reader, **kw):
        FakeRetriever.kind_reader = reader
        try:
            return _pipeline_guidance(none, "someone jumps twice", restate=False, pick=False,
                                      kinds=["cartwheel"], restater=restater, **kw)
        finally:
            FakeRetriever.kind_reader = None

    # the words' own video is the jump (v1); read as a cartwheel, the cartwheel video (v0) leads alone
    assert run(_Reads()) == (-1.0, [("prior", "v0")])
    assert run(None) == (0.0, [("prior", "v1")])                       # no kind reader: the words lead
    assert run(_Reads(), read_lead=False) == (0.0, [("prior", "v1")])
    assert run(_Reads(), firm=False) == (0.0, [("prior", "v1")])


def test_backed_reads_keep_the_readings_retrieval_agrees_with():
    from backend.retrieval.service import VideoRetriever

    recs = [_rec(0, ["a person does a cartwheel"], True), _rec(1, ["someone jumps twice"], False),
            _rec(2, ["a person jumps twice"], False)]
    recs[0]["spec"]["kinds"], recs[1]["spec"]["kinds"], recs[2]["spec"]["kinds"] = ["cartwheel"], ["jump"], ["jump"]
    r = FakeRetriever(recs)
    assert r.backed_reads(["someone jumps twice"]) == [None]               # no reader: nothing read
    r.kind_reader = _Reads(0.9)
    # "jumps twice": jump videos 1 and 2 vote 1 + 1/2, the cartwheel 1/3 -> jump 0.82 + 0.1 vs
    # cartwheel 0.18 + 0.9: the reading wins; at 0.6 it does not (0.82 + 0.4 > 0.18 + 0.6)
    assert r.backed_reads(["someone jumps twice", "a person does a cartwheel"]) == \
        [{"cartwheel": 0.9, "jump": 0.1}] * 2
    r.kind_reader = _Reads(0.6)
    assert r.backed_reads(["someone jumps twice", "a person does a cartwheel"]) == \
        [None, {"cartwheel": 0.6, "jump": 0.4}]
    assert r.backed_reads(["a person does a cartwheel"], mode="random") == [None]
    assert r.backed_reads([]) == []


def test_evaluation_rows_search_again_for_a_read_video_only_kind():
    from backend.evaluation.rows import LLMRow

    recs = [_rec(0, ["a person does a cartwheel"], True), _rec(1, ["someone jumps twice"], False)]
    recs[0]["spec"]["kinds"], recs[1]["spec"]["kinds"] = ["cartwheel"], ["jump"]
    row = object.__new__(LLMRow)
    row.retriever, row.mode, row._wanted = FakeRetriever(recs), "gemini", set()
    row._cache = {"someone jumps twice": "v1", "a person jumps": "v1"}
    reads = [{"cartwheel": 0.9, "jump": 0.1}, {"jump": 0.9, "cartwheel": 0.1}]
    assert row.want_read(["someone jumps twice", "a person jumps"], reads, {"jump", "walk"})
    assert row._cache == {"someone jumps twice": "v0", "a person jumps": "v1"}
    assert not row.want_read(["someone jumps twice"], reads[:1], {"jump", "walk"})   # searched once


def test_lead_gates_count_right_and_wrong_leads_per_gate():
    from backend.generation.video_lead import lead_gates

    known = {"walk", "jump"}
    reads = [{"crawl": 0.9, "walk": 0.1},        # a crawl read surely: led right at every gate
             {"crawl": 0.35, "walk": 0.3, "roll": 0.35},   # ties: the first of the two, crawl
             {"roll": 0.4, "walk": 0.35, "jump": 0.25},    # a walk read as a roll below 0.5: wrong
             {"walk": 0.8, "crawl": 0.2},        # a walk read as a walk: never led
             {"cartwheel": 0.3, "roll": 0.25, "walk": 0.45}]   # a cartwheel the reader misses
    kinds = ["crawl", "crawl", "walk", "walk", "cartwheel"]
    rows = {r["gate"]: r for r in lead_gates(reads, kinds, known, gates=(0.0, 0.3, 0.38, 0.5))}
    assert rows[0.0] == {"gate": 0.0, "led": 3, "right": 2, "wrong": 1, "known_led": 1, "net": 1,
                         "caught": pytest.approx(2 / 3)}
    assert rows[0.38]["led"] == 2 and rows[0.38]["right"] == 1 and rows[0.38]["wrong"] == 1
    assert rows[0.5] == {"gate": 0.5, "led": 1, "right": 1, "wrong": 0, "known_led": 0, "net": 1,
                         "caught": pytest.approx(1 / 3)}
    with pytest.raises(ValueError, match="readings"):
        lead_gates(reads[:2], kinds, known)
