"""The restater: reading prompt parts in words the motion LLM never saw (backend/generation/restate.py)."""
import numpy as np
import pytest

from backend.data.captions import plain_caption, split_vocabulary
from backend.generation import restate as rs
from backend.generation.restate import HEADS, Restater, RestaterConfig, fit_softmax, words


def test_fit_softmax_separates_separable_classes_and_c_shrinks_weights():
    rng = np.random.default_rng(0)
    centers = np.array([[4.0, 0.0], [-4.0, 0.0], [0.0, 4.0]])
    y = rng.integers(3, size=300)
    x = centers[y] + rng.normal(size=(300, 2))
    w, b = fit_softmax(x, y, 3, c=1.0)
    assert ((x @ w.T + b).argmax(1) == y).mean() > 0.97
    w_small, _ = fit_softmax(x, y, 3, c=1e-3)
    assert np.linalg.norm(w_small) < 0.5 * np.linalg.norm(w)


def test_plain_caption_is_fixed_and_in_training_words_only():
    seg = {"action": "jump", "reps": 3, "speed": "fast", "side": None, "turn": None}
    text = plain_caption(seg)
    assert text == plain_caption(dict(seg))
    assert "three times" in text and text.startswith("a person ")
    train = " ".join(split_vocabulary()["train_surfaces"]).lower()
    held = split_vocabulary()["held_out_markers"]
    assert not any(m in text for m in held)
    assert plain_caption({**seg, "reps": 2}) != text
    kick = plain_caption({"action": "kick", "reps": 1, "speed": "normal", "side": "left", "turn": None})
    assert "left" in kick and all(w in train for w in words(kick))


def _toy(gate=0.9, single_gate=0.5):
    """A restater whose features are two numbers: kind (0 jump / 1 walk) and confidence."""
    classes = {"action": ["jump", "walk"], "reps": ["1", "3"], "extent": ["1"], "speed": ["normal"], "side": ["None"],
               "turn": ["None"], "single": ["0", "1"]}
    cfg = RestaterConfig(layers=(1,), gate=gate, single_gate=single_gate, classes=classes,
                         vocabulary=["a", "person", "jumps", "walks", "once", "three", "times"])
    heads = {"action": (np.array([[10.0, 0.0], [-10.0, 0.0]]), np.zeros(2)),
             "reps": (np.array([[0.0, -10.0], [0.0, 10.0]]), np.zeros(2)),
             "extent": (np.zeros((1, 2)), np.zeros(1)),
             "speed": (np.zeros((1, 2)), np.zeros(1)), "side": (np.zeros((1, 2)), np.zeros(1)),
             "turn": (np.zeros((1, 2)), np.zeros(1)),
             "single": (np.array([[0.0, 0.0], [0.0, 0.0]]), np.array([0.0, 1.0]))}
    return Restater(cfg, np.zeros(2), np.ones(2), heads)


def _fake_features(monkeypatch, feats: dict) -> list:
    """The base LM's features replaced by ``feats`` (text -> 2 numbers); returns the texts read."""
    seen = []

    def fake(texts, config, batch_size=64, progress=False):
        seen.extend(texts)
        return np.array([feats[t] for t in texts], np.float32)

    monkeypatch.setattr(rs, "raw_features", fake)
    return seen


def test_restate_keeps_known_words_skipped_and_unsure_parts(monkeypatch):
    seen = _fake_features(monkeypatch, {"a person jumps thrice": [1.0, 1.0], "a person leaps": [1.0, -1.0],
                                        "a person hops about": [0.01, 0.0], "a person jumps": [1.0, 1.0]})
    r = _toy()
    out = r.restate(["a person jumps thrice", "a person jumps", "a person leaps", "a person hops about",
                     "a person jumps thrice"], skip=[False, False, False, False, True])
    assert out[0] == r.render({"action": "jump", "reps": 3, "speed": "normal", "side": None, "turn": None})
    assert out[1] is None                       # every word known: never read
    assert out[2] == r.render({"action": "jump", "reps": 1, "speed": "normal", "side": None, "turn": None})
    assert out[3] is None                       # kind probability ~0.5 < gate 0.9
    assert out[4] is None                       # the video leads this part
    assert "a person jumps" not in seen         # known words cost no reading
    reading = r.read(["a person jumps thrice"])[0]
    assert reading["action"] == "jump" and reading["reps"] == 3 and reading["confidence"] > 0.99
    assert r.unknown_words("A person JUMPS thrice!") == ["thrice"]
    assert _toy(single_gate=0.99).restate(["a person jumps thrice"]) == [None]   # one motion? unsure
    from types import SimpleNamespace

    assert r.serves(SimpleNamespace(config=SimpleNamespace(base="embedded")))
    assert not r.serves(SimpleNamespace(config=SimpleNamespace(base="/models/phi-3-mini")))


def test_a_side_the_words_name_is_the_turn_read(monkeypatch):
    """The turn head read "twirls clockwise" as no turn and "pirouettes to the right" as a left
    one: a turning kind without a limb side turns the one side its words name, in the reading
    the picker asks and in the words the LLM is given."""
    classes = {"action": ["spin", "kick"], "reps": ["1"], "extent": ["1"], "speed": ["normal"],
               "side": ["None", "left"], "turn": ["None", "left"], "single": ["0", "1"]}
    cfg = RestaterConfig(layers=(1,), classes=classes, vocabulary=["a", "person", "spins", "kicks"])
    heads = {"action": (np.array([[10.0, 0.0], [-10.0, 0.0]]), np.zeros(2)),   # x0 > 0: spin
             "turn": (np.array([[0.0, 10.0], [0.0, -10.0]]), np.zeros(2)),     # x1 < 0: left
             "side": (np.array([[0.0, 10.0], [0.0, -10.0]]), np.zeros(2)),
             "single": (np.zeros((2, 2)), np.array([0.0, 1.0]))}
    heads.update({k: (np.zeros((1, 2)), np.zeros(1)) for k in ("reps", "extent", "speed")})
    r = Restater(cfg, np.zeros(2), np.ones(2), heads)
    feats = {"someone twirls clockwise.": [1.0, 1.0], "a man pirouettes to the right.": [1.0, -1.0],
             "a man spins to the left, then to the right.": [1.0, -1.0],
             "a man kicks with the right leg.": [-1.0, -1.0], "a person twirls.": [1.0, -1.0]}
    monkeypatch.setattr(rs, "raw_features", lambda texts, *a, **k: np.array([feats[t] for t in texts], np.float32))
    texts = list(feats)
    got = r.understood(texts)
    assert [g["turn"] for g in got] == ["right", "right", "left", "left", "left"]   # two sides: the head's
    assert got[3]["action"] == "kick" and got[3]["side"] == "left"   # a limb side is not a turn: the heads'
    said = r.restated(texts, got)
    assert said[0] == r.render({"action": "spin", "reps": 1, "speed": "normal", "side": None, "turn": "right"})
    assert rs.named_turn("walk", frozenset({"right"})) == "right"
    assert rs.named_turn("jump", frozenset({"right"})) is None
    assert rs.named_turn("spin", frozenset({"left", "right"})) is None


@pytest.mark.parametrize("text, read", [
    ("A guy is dashing forward.", "a person dashing forward."),
    ("an individual unhurriedly ambles forward.", "a person unhurriedly ambles forward."),
    ("the man sprints ahead.", "a person sprints ahead."),
    ("someone is jumping twice.", "a person jumping twice."),
    ("she kicked with her left leg.", "a person kicked with her left leg."),
    ("a person walks.", "a person walks."),
    ("a tall man runs.", "a tall man runs."),                  # two words before the verb: left alone
    ("dashes forward for a while.", "dashes forward for a while."),   # a later part: no subject
    ("the left hand punches.", "the left hand punches."),
])
def test_plain_subjects_say_the_subject_as_training_does(text, read):
    r = _toy()
    assert r.reading_text(text) == text                        # off: as typed
    r.plain_subjects = True
    assert r.reading_text(text) == read


def test_plain_subjects_change_the_reading_only(monkeypatch):
    """A subject word the heads never met can keep a part's reading under the gate; read with the
    training subject the part is read, and it still reaches the LLM restated from the words typed."""
    seen = _fake_features(monkeypatch, {"a guy is leaping thrice": [1.0, 0.01], "a person leaping thrice": [1.0, 1.0]})
    r = _toy()
    r.heads["action"] = (np.array([[0.0, 10.0], [0.0, -10.0]]), np.zeros(2))   # x1: how sure of a jump
    assert r.restate(["a guy is leaping thrice"]) == [None]                     # 0.55 < gate 0.9
    r.plain_subjects = True
    got = r.understood(["a guy is leaping thrice"])[0]
    assert got["action"] == "jump" and got["reps"] == 3 and got["confidence"] > 0.99
    assert r.restate(["a guy is leaping thrice"]) == [r.render({k: got[k] for k in ("action", "reps", "speed", "side", "turn")})]
    assert seen[-1] == "a person leaping thrice"
    assert r.restate(["a person jumps"]) == [None]             # every word known: never read


def test_restater_round_trip(tmp_path, monkeypatch):
    r = _toy()
    r.save_pretrained(tmp_path / "restater")
    back = Restater.from_pretrained(tmp_path / "restater")
    assert back.config == r.config
    for k in (*HEADS, "single"):
        np.testing.assert_array_equal(back.heads[k][0], r.heads[k][0])
    assert Restater.from_pretrained(tmp_path / "nothing") is None
    with pytest.raises(ValueError, match="heads missing"):
        Restater(r.config, r.mean, r.std, {"action": r.heads["action"]})


def test_training_parts_pair_each_cut_part_with_its_segment():
    from fake_stack import TinyCaptionedCorpus

    corpus = TinyCaptionedCorpus(
        {"m1": [{"action": "walk"}, {"action": "jump"}], "m2": [{"action": "kick"}]},
        {"m1": ["a person walks forward, then jumps.", "a person walks forward and jumps."],
         "m2": ["someone kicks."], "m3": ["no program"]})
    parts, segs, multi = rs.training_parts(corpus)
    assert [s["action"] for s in segs] == ["walk", "jump", "kick"]
    assert len(parts) == 3 and parts[2].startswith("someone kicks")
    assert multi == ["a person walks forward and jumps."]


@pytest.fixture(scope="module")
def shipped():
    r = Restater.from_pretrained()
    if r is None:
        pytest.fail("checkpoints/restater is missing: python -m backend train restater --ship")
    return r


def test_shipped_restater_reads_unseen_count_and_speed_words(shipped):
    said = shipped.restate(["a character leaps into the air thrice.", "a guy twirls clockwise swiftly.",
                            "a person walks forward."])
    jump3 = {"action": "jump", "reps": 3, "speed": "normal", "side": None, "turn": None}
    assert said[0] == shipped.render(jump3) and "three times" in said[0]
    assert said[1] is None or ("spin" in said[1] and any(w in said[1] for w in ("quickly", "fast", "rapidly")))
    assert said[2] is None
    read = shipped.read(["a guy twirls clockwise swiftly.", "someone springs into the air a couple of times."])
    assert (read[0]["action"], read[0]["speed"]) == ("spin", "fast")
    assert (read[1]["action"], read[1]["reps"]) == ("jump", 2)
    assert all(w in shipped.vocabulary for s in said if s for w in words(s))


def test_the_pipeline_hands_the_llm_restated_parts_and_retrieval_the_words(monkeypatch):
    """Retrieval sees the user's words, the LLM the restated part; a part the video leads and a
    part in known words are kept; the result says what was read."""
    from types import SimpleNamespace

    import backend.pipeline as pl
    from test_compose import _stub_pipeline      # pytest puts tests/ on sys.path

    monkeypatch.setattr(pl, "clean_motion", lambda f, plant_feet=True: SimpleNamespace(joints=np.zeros((len(f), 22, 3))))
    seen: dict = {}
    pipe = _stub_pipeline(seen)
    searched = []
    search = pipe.retriever.search
    pipe.retriever.search = lambda t, **kw: searched.append(t) or search(t, **kw)
    asked = {}

    def understood(texts, skip=None, known_too=True, gate=None):
        asked["texts"], asked["skip"] = list(texts), list(skip)
        return [{"action": "jump", "reps": 3} if "thrice" in t else None for t in texts]

    def restated(texts, readings, skip=None):
        asked["restated_skip"] = list(skip)
        return ["a person jumps three times." if r else None for r in readings]

    pipe.restater = SimpleNamespace(understood=understood, restated=restated, keeps=lambda lead: lead > 0,
                                    serves=lambda llm: True)
    res = pipe.generate("a person walks forward, then hops thrice")
    assert searched == ["a person walks forward.", "a person hops thrice."]
    assert seen["calls"][0][0] == ["a person walks forward.", "a person jumps three times."]
    assert res.read_as == [None, "a person jumps three times."]
    assert [p["read_as"] for p in res.parts] == res.read_as
    assert asked["skip"] == [False, False] and asked["restated_skip"] == [False, False]
    seen.clear()
    res = pipe.generate("a person hops thrice", restate=False)
    assert seen["calls"][0][0] == ["a person hops thrice."] and res.read_as == [None]   # a sentence, as captions


def _speedy(word_speed=0.95):
    """A restater whose second feature is the speed (large positive: fast, large negative: slow)."""
    classes = {"action": ["jump", "walk"], "reps": ["1", "3"], "extent": ["1"],
               "speed": ["fast", "normal", "slow"], "side": ["None"], "turn": ["None"], "single": ["0", "1"]}
    cfg = RestaterConfig(layers=(1,), classes=classes,
                         vocabulary=["a", "person", "jumps", "walks", "forward", "once", "three", "times"])
    heads = {"action": (np.array([[10.0, 0.0], [-10.0, 0.0]]), np.zeros(2)),
             "reps": (np.zeros((2, 2)), np.array([1.0, 0.0])), "extent": (np.zeros((1, 2)), np.zeros(1)),
             "speed": (np.array([[0.0, 1.0], [0.0, 0.0], [0.0, -1.0]]), np.array([0.0, 0.5, 0.0])),
             "side": (np.zeros((1, 2)), np.zeros(1)), "turn": (np.zeros((1, 2)), np.zeros(1)),
             "single": (np.zeros((2, 2)), np.array([0.0, 1.0]))}
    r = Restater(cfg, np.zeros(2), np.ones(2), heads)
    r.word_speed = word_speed
    return r


def test_an_unseen_speed_word_is_read_alone(monkeypatch):
    alone = {"hastily": 8.0, "sluggishly": -8.0, "quite": 1.5, "leaps": 0.0, "then": 0.0}   # read alone
    parts = {"a person leaps hastily": -8.0,         # read within the part: misread as slow
             "a person leaps quite hastily": -8.0, "a person leaps quite": 0.0,
             "a person leaps hastily then sluggishly": 0.0, "a person jumps once": 8.0}
    seen = []

    def fake(texts, config, batch_size=64, progress=False):
        seen.extend(texts)
        out = []
        for t in texts:
            word = t[len("a person walks forward "):-1] if t.startswith("a person walks forward ") else None
            out.append([1.0, alone[word] if word is not None else parts[t]])
        return np.array(out, np.float32)

    monkeypatch.setattr(rs, "raw_features", fake)
    r = _speedy()
    texts = ["a person leaps hastily", "a person leaps quite hastily", "a person leaps quite",
             "a person leaps hastily then sluggishly", "a person jumps once"]
    assert r.word_speeds(texts)[0][0] == "fast" and r.word_speeds(texts)[0][1] > 0.95
    read = r.read(texts)
    assert read[0]["speed"] == "fast"                # the word alone wins over the misread part
    assert read[1]["speed"] == "fast"                # "quite" alone is unsure: it says nothing
    assert read[2]["speed"] == "normal"              # nothing sure: the part's own reading
    assert read[3]["speed"] == "normal"              # two words that disagree: the part's own
    assert read[4]["speed"] == "fast"                # every word known: the part's own reading
    assert [m["speed"] for m in r.manner(texts)] == [x["speed"] for x in read]
    assert sum(t.startswith("a person walks forward ") for t in seen) == 5   # each unseen word read once
    off = _speedy(word_speed=0.0)
    assert off.read(["a person leaps hastily"])[0]["speed"] == "slow"
    assert off.word_speeds(["a person leaps hastily"]) == [None]


def test_shipped_restater_reads_held_out_speed_words_inside_unseen_parts(shipped):
    m = shipped.manner(["a guy is hastily doing a sideways handspring to the left a couple of times.",
                        "a character is turning a cartwheel to the right sluggishly once.",
                        "an individual is creeping forward on all fours leisurely for a couple of steps.",
                        "someone tumbles forward lazily."])
    assert [x["speed"] for x in m] == ["fast", "slow", "slow", "slow"]
    assert shipped.word_speeds(["a person walks forward quickly."]) == [None]    # known words: as before


def test_a_kept_part_gets_its_unseen_speed_adverbs_in_training_words(monkeypatch):
    alone = {"hastily": 8.0, "sluggishly": -8.0, "quite": 1.5, "leaps": 0.0, "then": 0.0, "speedy": 8.0}
    monkeypatch.setattr(rs, "raw_features", lambda texts, config, batch_size=64, progress=False: np.array(
        [[1.0, alone[t[len("a person walks forward "):-1]] if t.startswith("a person walks forward ") else 0.0]
         for t in texts], np.float32))
    r = _speedy()
    texts = ["A person leaps Hastily", "a person leaps quite hastily", "a person leaps quite",
             "a person leaps hastily then sluggishly", "a person leaps speedy", "a person jumps once"]
    assert r.said_speeds(texts) == ["A person leaps quickly", "a person leaps quite quickly", None,
                                    None,        # two words that disagree: kept as typed
                                    None,        # not an adverb: a swap would break the sentence
                                    None]        # every word known
    assert r.restated(texts[:2], [None, None]) == [None, None]        # off by default (defaults.SAY_SPEEDS)
    r.say_speeds = True
    assert r.restated(texts[:2], [None, None], skip=[True, False]) == [None, "a person leaps quite quickly"]
    sure = {"action": "jump", "reps": 3, "speed": "fast", "side": None, "turn": None, "confidence": 0.99}
    assert r.restated(["a person leaps hastily"], [sure]) == [r.render(sure)]    # restated whole, as before
    r.say_speeds = False
    assert r.restated(texts[:1], [None]) == [None]
    assert _speedy(word_speed=0.0).said_speeds(texts[:1]) == [None]     # speed words not read alone: nothing


def test_shipped_restater_says_held_out_speed_adverbs_in_training_words(shipped):
    said = shipped.said_speeds(["a man is jabbing with his right fist sluggishly three times in a row.",
                                "the man is hastily crawling on all fours.",
                                "a figure sprints ahead at high speed for quite a while.",
                                "a person walks forward slowly."])
    assert said[:2] == ["a man is jabbing with his right fist slowly three times in a row.",
                        "the man is quickly crawling on all fours."]
    assert said[2:] == [None, None]


def test_shipped_restater_reads_held_out_subjects_plainly(shipped):
    """Session 42's cases: a held-out subject ("an individual", "a guy") and the progressive "is"
    kept these walks under the gate (0.69, 0.77); read with the training subject they are walks."""
    texts = ["an individual marching ahead for quite a while.",
             "a guy is sauntering forward leisurely for a little while."]
    before = shipped.plain_subjects
    try:
        shipped.plain_subjects = False
        assert shipped.understood(texts) == [None, None]
        shipped.plain_subjects = True
        got = shipped.understood(texts)
        assert [g and g["action"] for g in got] == ["walk", "walk"] and got[1]["speed"] == "slow"
        assert shipped.reading_text("A guy saunters forward.") == "a person saunters forward."
        assert shipped.reading_text("the man saunters forward.") == "the man saunters forward."
    finally:
        shipped.plain_subjects = before
