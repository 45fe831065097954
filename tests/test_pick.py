"""Best-of-N with the picker (backend/evaluation/pick.py): scores, choices and the pipeline's use."""
from types import SimpleNamespace

import numpy as np
import pytest

from backend.evaluation.checker import KINDS, InstructionChecker
from backend.evaluation.pick import Picker


class _Fixed(InstructionChecker):
    """A checker whose probabilities are set by hand: motion i (features filled with i) is a
    jump done i + 1 times for sure, at presence 0.9 (a walk: presence 0)."""

    def probabilities(self, features, batch=64):
        out = []
        for f in features:
            i = int(round(float(np.asarray(f)[0, 0])))
            p = {"presence": np.zeros(len(KINDS)), "reps": np.zeros((len(KINDS), 5)),
                 "speed": np.full((len(KINDS), 3), 1 / 3), "side": np.full((len(KINDS), 2), 0.5),
                 "turn": np.full((len(KINDS), 3), 1 / 3)}
            p["presence"][KINDS.index("jump")] = 0.9
            p["reps"][KINDS.index("jump"), min(i, 4)] = 1.0
            out.append(p)
        return out


def _motion(i):
    return np.full((8, 263), float(i), np.float32)


def test_scores_are_the_expected_share_of_what_is_asked():
    picker = Picker(_Fixed(), sees="decoded")
    jump2 = picker.asked([{"action": "jump", "reps": 2, "speed": "normal", "side": None, "turn": None}])[0]
    assert ("count", "jump", 2) in jump2 and ("kind", "jump", True) in jump2
    s = picker.scores([_motion(0), _motion(1)], [jump2, jump2])
    assert s[0] == pytest.approx((0.9 + 0.0) / 2) and s[1] == pytest.approx((0.9 + 0.9) / 2)
    walk = picker.asked([{"action": "walk", "reps": 1, "speed": "normal", "side": None, "turn": None}])[0]
    assert picker.scores([_motion(1)], [walk])[0] == pytest.approx(0.0)    # no walk, so no straight walk
    assert np.isnan(picker.scores([_motion(1)], [[]])[0])                  # nothing asked
    assert picker.asked([None]) == [[]]
    unsure = {"action": "jump", "reps": 2, "speed": "normal", "side": None, "turn": None, "confidence": 0.6}
    assert Picker(_Fixed(), sees="decoded", gate=0.9).asked([unsure]) == [[]] and Picker(_Fixed(), sees="decoded", gate=0.5).asked([unsure]) == [jump2]


def test_choose_keeps_the_best_sample_per_part_and_the_first_of_equals():
    picker = Picker(_Fixed(), sees="decoded", samples=3)
    jump3 = picker.asked([{"action": "jump", "reps": 3, "speed": "normal", "side": None, "turn": None}])[0]
    asked = [jump3, [], jump3]
    owners = picker.rows(asked)
    assert owners == [0, 0, 0, 1, 2, 2, 2]
    assert picker.rows(asked, greedy=True) == [0, 1, 2]
    codes = [np.array([c]) for c in (0, 2, 1, 7, 4, 4, 0)]     # a code c decodes to motion c
    chosen, info = picker.choose(codes, owners, asked, lambda c: _motion(int(c[0])))
    assert [int(c[0]) for c in chosen] == [2, 7, 4]              # 3 jumps; the only one; the first of two 4+
    assert info[0] == {"samples": 3, "chosen": 1, "score": pytest.approx(0.9)}
    assert info[1] is None and info[2]["chosen"] == 0
    with pytest.raises(ValueError, match="samples"):
        Picker(_Fixed(), sees="decoded", samples=0)


def test_picker_round_trip_and_missing(tmp_path):
    InstructionChecker().save_pretrained(tmp_path / "picker")
    assert Picker.from_pretrained(tmp_path / "picker", samples=2).samples == 2
    assert Picker.from_pretrained(tmp_path / "none") is None


def test_the_pipeline_samples_read_parts_n_times_and_keeps_the_picked_one(monkeypatch):
    import backend.pipeline as pl
    from test_compose import _stub_pipeline      # pytest puts tests/ on sys.path

    monkeypatch.setattr(pl, "clean_motion", lambda f, plant_feet=True: SimpleNamespace(joints=np.zeros((len(f), 22, 3))))
    seen: dict = {}
    pipe = _stub_pipeline(seen)
    read = {}

    def understood(texts, skip=None, known_too=True, gate=None):
        read["known_too"], read["gate"] = known_too, gate
        return [{"action": "jump", "reps": 2, "speed": "normal", "side": None, "turn": None}
                if "jumps" in t else None for t in texts]

    pipe.restater = SimpleNamespace(understood=understood, restated=lambda t, r, skip=None: [None] * len(t),
                                    keeps=lambda lead: False, serves=lambda llm: True,
                                    config=SimpleNamespace(gate=0.9))
    pipe.picker = Picker(_Fixed(), sees="decoded", samples=3, gate=0.7)
    # the stub LLM writes codes 10*i + (0..words-1) for row i; decode makes motion (first code)
    pipe.decode = lambda codes, model=None: np.full((4 * len(codes), 263), float(codes[0] // 10 - 1), np.float32)
    res = pipe.generate("a person walks forward, then jumps twice")
    texts = seen["calls"][0][0]
    assert texts == ["a person walks forward."] + ["a person jumps twice."] * 3   # one batch
    assert read["known_too"] is True and read["gate"] == 0.7     # read as far as the picker needs
    # rows 1, 2, 3 are the jump's samples, decoded as motions 0, 1, 2: the second (2 jumps) wins
    assert res.picks == [None, {"samples": 3, "chosen": 1, "score": pytest.approx(0.9)}]
    assert res.codes.tolist() == [0, 1, 2, 3, 20, 21, 22, 23]
    assert res.parts[1]["pick"]["chosen"] == 1 and "picking" in res.timing
    for kw in ({"pick": False}, {"greedy": True}):
        seen.clear()
        res = pipe.generate("a person walks forward, then jumps twice", **kw)
        assert len(seen["calls"][0][0]) == 2 and res.picks == [None, None]
    seen.clear()                                  # exact lengths: every row in one batch, each its part's
    res = pipe.generate("a person walks forward, then jumps twice", length_s=2.0)
    assert [len(c[0]) for c in seen["calls"]] == [4] and seen["calls"][0][2]["max_tokens"] == [5, 5, 5, 5]
    assert len(res.codes) == 10


def test_eval_rows_pick_among_samples_of_read_parts(monkeypatch):
    from backend.evaluation import rows as rw

    row = rw.LLMRow.__new__(rw.LLMRow)
    calls = []

    def generate(texts, videos, **kw):
        calls.append(list(texts))
        return [np.array([i]) for i in range(len(texts))]       # row i -> motion i (i + 1 jumps)

    row.llm = SimpleNamespace(generate=generate)
    row.compose, row.batch, row.guidance, row.temperature, row.top_k = True, 32, 0.0, 1.0, 0
    row.name = "McDPO (stub)"
    row.video_lead, row.mode, row._lead, row._read = None, "none", {}, {}
    row.videos = lambda texts, rng: [None] * len(texts)
    row.restate_words = False
    row.restater = SimpleNamespace(
        keeps=lambda w: False, config=SimpleNamespace(gate=0.9),
        understood=lambda texts, skip=None, gate=None: [{"action": "jump", "reps": 3, "speed": "normal", "side": None,
                                              "turn": None} if "jumps" in t else None for t in texts])
    row.picker = Picker(_Fixed(), sees="decoded", samples=4)
    row._decode = lambda c: _motion(int(c[0]))
    items = [SimpleNamespace(caption=SimpleNamespace(text="a person jumps three times"))]
    out = row.generate(items, np.random.default_rng(0))
    assert calls == [["a person jumps three times"] * 4]
    assert out[0][0, 0] == 2.0                    # the third sample: three jumps


def test_checker_curves_are_drawn_from_the_training_log(tmp_path):
    import json

    from backend.curves import plot_checker_curves

    log = tmp_path / "train_log.jsonl"
    log.write_text("".join(json.dumps(r) + "\n" for r in [
        {"step": 100, "loss": 2.0}, {"step": 200, "loss": 1.0},
        {"step": 200, "val_followed": 0.6, "val": {"kind": 0.9, "count": None}}]))
    out = plot_checker_curves(log, tmp_path / "c.png", "picker")
    assert out.read_bytes()[:4] == b"\x89PNG"
    log.write_text(json.dumps({"step": 1, "val_followed": 0.5, "val": {}}) + "\n")
    with pytest.raises(ValueError, match="no training rows"):
        plot_checker_curves(log, tmp_path / "d.png")


def _manner(reps=2, speed="normal", turn=None, sure=0.9):
    return {"reps": reps, "speed": speed, "turn": turn, "sure": {"count": sure, "speed": sure, "turn": sure}}


def test_led_parts_ask_the_kind_their_video_shows_and_the_manner_their_words_state():
    from backend.evaluation.pick import video_kind

    known = {"walk", "jump", "spin"}
    rec = lambda *kinds: {"spec": {"kinds": list(kinds)}}
    assert video_kind(rec("walk", "cartwheel"), known) == "cartwheel"     # the kind the words' reader lacks
    assert video_kind(rec("cartwheel", "cartwheel"), known) == "cartwheel"
    assert video_kind(rec("jump"), known) == "jump"                        # all known: the one kind
    assert video_kind(rec("cartwheel", "roll"), known) is None             # two unknown: no guess
    assert video_kind(rec("walk", "jump"), known) is None
    assert video_kind({"source": "upload"}, known) is None and video_kind(None, known) is None
    picker = Picker(_Fixed(), sees="decoded", gate=0.5)
    asked = picker.asked_led("cartwheel", _manner(reps=3, speed="fast", turn="left"))
    assert asked == [("kind", "cartwheel", True), ("count", "cartwheel", 3),
                     ("direction", "cartwheel", "left"), ("speed", "cartwheel", "fast")]
    assert picker.asked_led("crawl", _manner(turn=None)) == [("kind", "crawl", True),     # counted by distance
                                                             ("direction", "crawl", "none")]
    assert picker.asked_led("cartwheel", _manner(reps=1, turn=None)) == [("kind", "cartwheel", True),   # always turns:
                                                                        ("count", "cartwheel", 1)]   # no "none"
    assert picker.asked_led("backflip", _manner(sure=0.4)) == [("kind", "backflip", True)]   # unsure: the kind only
    assert picker.asked_led(None, _manner()) == [] and picker.asked_led("moonwalk", _manner()) == []
    read = []
    restater = SimpleNamespace(config=SimpleNamespace(classes={"action": sorted(known)}),
                               manner=lambda texts: read.extend(texts) or [_manner(reps=2)] * len(texts))
    before = [[("kind", "jump", True)], [], []]
    out = picker.with_led(before, [False, True, True], ["a person jumps.", "she cartwheels twice.", "x."],
                          [None, rec("cartwheel"), None], restater)
    assert out[0] == before[0] and out[2] == []                 # not led; led without a database video
    assert out[1] == [("kind", "cartwheel", True), ("count", "cartwheel", 2)]   # no side read: no direction
    assert read == ["she cartwheels twice."] and before[1] == []  # only led parts read; input untouched


def test_eval_rows_pick_led_parts_for_their_videos_kind(monkeypatch):
    from backend.evaluation import rows as rw

    row = rw.LLMRow.__new__(rw.LLMRow)
    calls = []

    shown, searched, temps, guides = [], [], [], []

    def generate(texts, videos, **kw):
        calls.append(list(texts))
        shown.extend(videos)
        temps.append(kw["temperature"])
        guides.append(kw["guidance"])
        return [np.array([i]) for i in range(len(texts))]

    def search_many(texts, k, mode, cues):           # the led part searched again with its reading
        searched.append((list(texts), cues.tolist()))
        return [[SimpleNamespace(id="emb-cw2")] for _ in texts]

    row.llm = SimpleNamespace(generate=generate)
    row.compose, row.batch, row.guidance, row.temperature, row.top_k = True, 32, 0.0, 1.0, 0
    row.name, row.mode, row._read, row.restate_words = "McDPO (stub)", "gemini", {}, False
    row.led_cues, row._cued, row.led_temperature = True, set(), 0.25
    row._cache = {"she does two cartwheels": "emb-cw"}
    row.videos = lambda texts, rng: [("prior", row._cache[t]) for t in texts]
    row.lead_weights = lambda texts: np.full(len(texts), 0.7)      # the video leads every part
    row.retriever = SimpleNamespace(db=SimpleNamespace(record=lambda v: {"spec": {"kinds": ["cartwheel"]}}),
                                    search_many=search_many)
    row.restater = SimpleNamespace(keeps=lambda w: w > 0.5, config=SimpleNamespace(gate=0.9, classes={"action": ["jump"]}),
                                   understood=lambda texts, skip=None, gate=None: [None] * len(texts),
                                   manner=lambda texts: [_manner(reps=2)] * len(texts),
                                   stated_cues=lambda texts: np.array([[-1, -1, -1, 2]] * len(texts)))
    cart = KINDS.index("cartwheel")

    class Cartwheels(_Fixed):             # motion i: i + 1 cartwheels, no turn, for sure
        def probabilities(self, features, batch=64):
            out = super().probabilities(features, batch)
            for f, p in zip(features, out):
                p["presence"][cart] = 1.0
                p["reps"][cart, min(int(np.asarray(f)[0, 0]), 4)] = 1.0
                p["turn"][cart] = [1.0, 0.0, 0.0]
            return out

    row.picker = Picker(Cartwheels(), samples=3, sees="decoded")
    row._decode = lambda c: _motion(int(c[0]))
    out = row.generate([SimpleNamespace(caption=SimpleNamespace(text="she does two cartwheels"))],
                       np.random.default_rng(0))
    assert calls == [["she does two cartwheels"] * 3]       # a led part is sampled 3 times
    assert out[0][0, 0] == 1.0                                # the second sample: two cartwheels
    assert searched == [(["she does two cartwheels"], [[-1, -1, -1, 2]])]
    assert temps == [0.25]                                    # a led part: closer to the mode
    assert guides == [[-1.0] * 3]                             # and written from its video alone
    assert shown == [("prior", "emb-cw2")] * 3                # with the video its reading chose
    row.generate([SimpleNamespace(caption=SimpleNamespace(text="she does two cartwheels"))], np.random.default_rng(0))
    assert len(searched) == 1                                 # searched again once per text


def test_database_motions_are_the_train_videos_with_their_programs():
    from backend.data.video_motions import database_motions, record_motion, video_motion

    joints, segments = video_motion(3, False)
    rec = lambda split, **kw: {"source": "synthetic", "spec": {"index": 3, "ood": False, "split": split, **kw}}
    got = record_motion(rec("train"))
    np.testing.assert_allclose(got[0], joints)
    assert got[1] == segments
    window = record_motion(rec("train", start=2, end=len(joints) - 3))
    assert len(window[0]) == len(joints) - 5 and window[1] == []       # a window: its program unknown
    assert record_motion({"source": "upload", "spec": {}}) is None
    out = database_motions([rec("train"), rec("test"), rec("train", start=2), {"source": "upload"}])
    assert len(out) == 1 and out[0][0].shape == (len(joints) - 1, 263) and out[0][1] == segments


def test_the_pipeline_searches_led_parts_again_and_samples_them_closer_to_the_mode(monkeypatch):
    import backend.pipeline as pl
    from test_compose import _Hit, _stub_pipeline

    monkeypatch.setattr(pl, "clean_motion", lambda f, plant_feet=True: SimpleNamespace(joints=np.zeros((len(f), 22, 3))))
    seen: dict = {}
    pipe = _stub_pipeline(seen)
    base, searched = pipe.retriever.search, []

    def search(t, k=5, mode="gemini", rng=None, cues=None):
        searched.append((t, None if cues is None else np.asarray(cues).tolist()))
        return [_Hit(base(t, k, mode, rng)[0].id + ("" if cues is None else "-cued"))]

    pipe.retriever.search = search
    pipe.retriever.db = SimpleNamespace(record=lambda v: {"captions": ["someone rolls."]})
    pipe.video_lead = SimpleNamespace(config=SimpleNamespace(k=5), weights=lambda parts, caps: np.array(
        [1.0 if "cartwheel" in p else 0.0 for p in parts]))              # the video leads the cartwheel
    pipe.restater = SimpleNamespace(keeps=lambda w: w > 0.5, serves=lambda llm: True, config=SimpleNamespace(gate=0.9),
                                    stated_cues=lambda texts: np.array([[-1, -1, 1, 2]] * len(texts)),
                                    understood=lambda texts, skip=None, known_too=True, gate=None: [None] * len(texts),
                                    restated=lambda texts, readings, skip=None: [None] * len(texts))
    pipe.picker = None
    prompt = "a person walks forward, then does a cartwheel unhurriedly twice"
    res = pipe.generate(prompt, temperature=0.7, led_cues=True)
    (texts, videos, kw), = seen["calls"]
    cued = [s for s in searched if s[1] is not None]
    assert len(cued) == 1 and "cartwheel" in cued[0][0] and cued[0][1] == [-1, -1, 1, 2]
    assert videos == [("prior", "v-walks"), ("prior", "v-does-cued")]    # the led part: its reading's video
    assert res.parts[1]["video_id"] == "v-does-cued" and res.parts[1]["video_lead"] == 1.0
    assert kw["temperature"] == [0.7, 0.25]                            # the led part closer to the mode
    seen.clear()
    searched.clear()
    pipe.generate(prompt, temperature=0.7, led_cues=False, led_temperature=False)
    (texts, videos, kw), = seen["calls"]
    assert all(c is None for _, c in searched) and videos[1] == ("prior", "v-does")
    assert kw["temperature"] == 0.7


def test_a_side_the_words_name_is_the_turn_a_led_part_asks():
    """"a cartwheel to the right": the restater's heads (trained on the training kinds' words)
    may read no turn or the other one; the side the words name is what a turning kind asks."""
    picker = Picker(_Fixed(), sees="decoded", gate=0.5)
    right = frozenset({"right"})
    for manner in (_manner(turn=None), _manner(turn="left"), _manner(turn="left", sure=0.3)):
        asked = picker.asked_led("cartwheel", manner, right)
        assert ("direction", "cartwheel", "right") in asked
        assert not any(a == "direction" and v != "right" for a, _, v in asked)
    # two sides named, or none: the heads' reading as before
    assert ("direction", "crawl", "left") in picker.asked_led("crawl", _manner(turn="left"), frozenset({"left", "right"}))
    assert ("direction", "crawl", "left") in picker.asked_led("crawl", _manner(turn="left"))
    # a kind with a limb side: "kicks with the right leg" names the leg, not a turn (and a spin
    # kick always turns, so with no turn read it asks none)
    assert not any(a == "direction" for a, _, _ in picker.asked_led("spinkick", _manner(turn=None), right))
    assert ("direction", "spinkick", "left") in picker.asked_led("spinkick", _manner(turn="left"), right)
    assert picker.asked_led("jump", _manner(), right) == [("kind", "jump", True), ("count", "jump", 2)]
    restater = SimpleNamespace(config=SimpleNamespace(classes={"action": ["walk"]}),
                               manner=lambda texts: [_manner(turn=None)] * len(texts))
    out = picker.with_led([[]], [True], ["a man cartwheels to the left."], [{"spec": {"kinds": ["cartwheel"]}}],
                          restater)
    assert ("direction", "cartwheel", "left") in out[0]


def test_the_picker_reads_what_the_joints_show_not_only_the_decoded_channels():
    from backend.data.mocap import load_base_clips
    from backend.evaluation.pick import seen_as
    from motioncore.features import joints_to_features

    feats = joints_to_features(load_base_clips()[0].clip.joints()[:40])
    decoded = feats.copy()
    decoded[:, 67:] += np.random.default_rng(0).normal(0, 0.5, decoded[:, 67:].shape)  # channels the joints ignore
    assert np.array_equal(seen_as(decoded, "decoded"), decoded)
    seen = seen_as(decoded, "joints")
    assert seen.shape == (len(feats) - 1, feats.shape[1])
    assert np.abs(seen[:-1] - feats[:-2]).max() < 1e-2       # the noise (sd 0.5) is gone: what the body shows
    clean = seen_as(decoded, "clean")
    assert clean.shape == seen.shape and np.isfinite(clean).all()
    with pytest.raises(ValueError, match="sees"):
        Picker(_Fixed(), sees="pixels")
    with pytest.raises(ValueError, match="sees"):
        seen_as(decoded, "both")                             # a picker's mix, not one view

    given = []

    class Recording(_Fixed):                                  # motion 0 if it was read from the joints, else 1
        def probabilities(self, features, batch=64):
            given.extend(features)
            return super().probabilities([_motion(0 if len(f) < len(decoded) else 1) for f in features])

    jump1 = [("kind", "jump", True), ("count", "jump", 1)]
    codes, owners = [np.array([0]), np.array([1])], [0, 0]
    for sees, n_read, p_count in (("joints", 2, 1.0), ("decoded", 2, 0.0), ("both", 4, 0.5)):
        given.clear()
        _, info = Picker(Recording(), samples=2, sees=sees).choose(codes, owners, [jump1], lambda c: decoded)
        assert len(given) == n_read and info[0]["score"] == pytest.approx((0.9 + 0.9 * p_count) / 2)
    assert all(np.abs(g[:-1] - feats[:-2]).max() < 1e-2 for g in given if len(g) < len(decoded))

