import random
import re

import pytest

from backend.data.captions import (ACTIONS, POS_TAGS, caption_motion, caption_set, mirror_segments,
                                   normalize_text, split_vocabulary, swap_sides_text)

SIDES = ("left", "right", None)
SPEEDS = ("slow", "normal", "fast")
SUBJECT_STARTS = ("a person", "someone", "the person", "a man", "a woman", "a figure",
                  "a guy", "an individual", "the man", "a character")


def rand_segments(rng, n=None, action=None):
    n = rng.randint(1, 3) if n is None else n
    return [dict(action=action or rng.choice(ACTIONS), reps=rng.randint(1, 4), side=rng.choice(SIDES),
                 turn=rng.choice(SIDES), speed=rng.choice(SPEEDS)) for _ in range(n)]


def words(caption):
    return re.findall(r"[a-z]+", caption)


def check_caption(caption, tokens):
    assert caption.endswith("."), caption
    assert caption == caption.lower(), caption
    assert "  " not in caption and caption == caption.strip(), caption
    assert ".." not in caption and ",," not in caption and " ," not in caption, caption
    assert caption.count(".") == 1, caption
    assert re.fullmatch(r"[a-z ,.]+", caption), caption
    assert caption.startswith(SUBJECT_STARTS), caption
    ws = words(caption)
    assert len(tokens) == len(ws), (caption, tokens)
    for w, tok in zip(ws, tokens):
        lemma, pos = tok.split("/")
        assert pos in POS_TAGS, tok
        assert lemma and lemma == lemma.lower(), tok
    # no immediately repeated word ("while while", "the the")
    assert all(a != b for a, b in zip(ws, ws[1:])), caption


@pytest.mark.parametrize("held_out", [False, True])
def test_every_action_many_combos(held_out):
    rng = random.Random(1)
    for action in ACTIONS:
        for _ in range(120):
            segs = rand_segments(rng, action=action, n=1) + rand_segments(rng, n=rng.randint(0, 2))
            rng.shuffle(segs)
            cap, toks = caption_motion(segs, rng, held_out=held_out)
            check_caption(cap, toks)


def test_single_segment_all_combinations():
    rng = random.Random(2)
    for action in ACTIONS:
        for side in SIDES:
            for turn in SIDES:
                for speed in SPEEDS:
                    for reps in range(1, 5):
                        seg = [dict(action=action, reps=reps, side=side, turn=turn, speed=speed)]
                        for held in (False, True):
                            check_caption(*caption_motion(seg, rng, held_out=held))


def test_verb_agreement_and_forms():
    rng = random.Random(12)
    seen_they = seen_he = seen_ing = 0
    for _ in range(1500):
        segs = rand_segments(rng, n=rng.randint(2, 3))
        cap, toks = caption_motion(segs, rng, held_out=rng.random() < 0.5)
        ws = words(cap)
        lemmas = [t.split("/")[0] for t in toks]
        pos = [t.split("/")[1] for t in toks]
        for i, w in enumerate(ws[:-1]):
            if w in ("they", "he", "she") and pos[i] == "PRON":
                j = i + 1
                while pos[j] == "ADV":
                    j += 1
                assert pos[j] == "VERB", cap
                if w == "they":
                    seen_they += 1
                    assert ws[j] == lemmas[j], cap  # "they jump"
                else:
                    seen_he += 1
                    assert ws[j] != lemmas[j] and ws[j].endswith("s"), cap  # "he jumps"
        # the first verb agrees with the singular subject or is an -ing participle
        first_verb = next(i for i, p in enumerate(pos) if p == "VERB")
        v = ws[first_verb]
        if v == "is":
            nxt = next(i for i in range(first_verb + 1, len(pos)) if pos[i] == "VERB")
            assert ws[nxt].endswith("ing"), cap
        elif v.endswith("ing") and lemmas[first_verb] != v:
            seen_ing += 1
            assert "then" in ws or "and" in ws or "before" in ws or "prior" in ws \
                or "afterwards" in ws or "subsequently" in ws, cap
        else:
            assert v.endswith("s"), cap
    assert seen_they and seen_he and seen_ing


def test_known_example():
    segs = [dict(action="walk", reps=1), dict(action="jump", reps=2)]
    caps = {caption_motion(segs, random.Random(s))[0] for s in range(2000)}
    assert any(re.fullmatch(r"(a person|someone|a man) walks forward(, then| and then) "
                            r"(jumps|hops up|leaps into the air) twice\.", c) for c in caps)
    assert any(re.fullmatch(r"(a person|someone|a man) walking forward (and then|then) "
                            r"(jumping|hopping up)( twice)?\.", c) for c in caps)


def test_minimal_segment_dict_defaults():
    cap, toks = caption_motion([{"action": "backflip"}], random.Random(0))
    check_caption(cap, toks)
    with pytest.raises(ValueError):
        caption_motion([{"action": "fly"}], random.Random(0))
    with pytest.raises(ValueError):
        caption_motion([], random.Random(0))


@pytest.mark.parametrize("held_out", [False, True])
@pytest.mark.parametrize("n", [1, 3, 5])
def test_caption_set_distinct(held_out, n):
    rng = random.Random(3)
    for _ in range(60):
        segs = rand_segments(rng)
        caps = caption_set(segs, rng, n=n, held_out=held_out)
        assert len(caps) == n
        assert len({c for c, _ in caps}) == n
        for c, t in caps:
            check_caption(c, t)


def test_caption_set_degenerate_motion_still_distinct():
    seg = [dict(action="backflip", reps=1, side=None, turn=None, speed="normal")]
    caps = caption_set(seg, random.Random(0), n=8)
    assert len({c for c, _ in caps}) == 8


@pytest.mark.parametrize("action,key", [("kick", "side"), ("punch", "side"), ("spinkick", "side"),
                                        ("spinkick", "turn"), ("spin", "turn"), ("turn", "turn"),
                                        ("cartwheel", "turn"), ("roll", "turn"), ("walk", "turn"),
                                        ("run", "turn"), ("crawl", "turn"), ("jump", "turn"),
                                        ("dance_b", "turn")])
def test_side_and_turn_words(action, key):
    rng = random.Random(4)
    for held in (False, True):
        for _ in range(100):
            for value, other in (("left", "right"), ("right", "left")):
                seg = dict(action=action, reps=rng.randint(1, 4), side=None, turn=None,
                           speed=rng.choice(SPEEDS))
                seg[key] = value
                cap, toks = caption_motion([seg], rng, held_out=held)
                ws = set(words(cap))
                rot = {"left": "counterclockwise", "right": "clockwise"}
                assert value in ws or rot[value] in ws, cap
                assert other not in ws and rot[other] not in ws, cap


def test_spinkick_mentions_both_side_and_turn():
    rng = random.Random(5)
    for _ in range(200):
        seg = dict(action="spinkick", reps=1, side="left", turn="right", speed="normal")
        ws = words(caption_motion([seg], rng, held_out=rng.random() < 0.5)[0])
        assert "left" in ws and ("right" in ws or "clockwise" in ws), ws


def test_side_ignored_for_non_limb_actions():
    rng = random.Random(6)
    for _ in range(100):
        ws = words(caption_motion([dict(action="jump", side="left")], rng)[0])
        assert "left" not in ws and "right" not in ws


@pytest.mark.parametrize("held_out", [False, True])
def test_mirror_swaps_left_right(held_out):
    rng = random.Random(7)
    for _ in range(300):
        segs = rand_segments(rng)
        seed = rng.randrange(10**9)
        cap, toks = caption_motion(segs, random.Random(seed), held_out=held_out)
        mcap, mtoks = caption_motion(mirror_segments(segs), random.Random(seed), held_out=held_out)
        assert mcap == swap_sides_text(cap)
        assert mtoks == [swap_sides_text(t) for t in toks]
        sets = caption_set(segs, random.Random(seed), n=3, held_out=held_out)
        msets = caption_set(mirror_segments(segs), random.Random(seed), n=3, held_out=held_out)
        assert [c for c, _ in msets] == [swap_sides_text(c) for c, _ in sets]


def test_mirror_segments_does_not_mutate():
    segs = [dict(action="kick", side="left", turn="right", reps=2, speed="fast")]
    m = mirror_segments(segs)
    assert segs[0]["side"] == "left" and segs[0]["turn"] == "right"
    assert m[0]["side"] == "right" and m[0]["turn"] == "left" and m[0]["reps"] == 2
    assert mirror_segments(m) == segs


def test_determinism():
    segs = rand_segments(random.Random(8), n=3)
    for held in (False, True):
        a = [caption_motion(segs, random.Random(42), held_out=held) for _ in range(3)]
        assert a[0] == a[1] == a[2]
        b = caption_set(segs, random.Random(42), n=4, held_out=held)
        assert b == caption_set(segs, random.Random(42), n=4, held_out=held)
    assert len({caption_motion(segs, random.Random(s))[0] for s in range(30)}) > 20


# --- train / held-out split -------------------------------------------------------


def contains_any(caption, markers):
    text = normalize_text(caption)
    return [m for m in markers if f" {m} " in text]


def test_vocabulary_pools_split():
    voc = split_vocabulary()
    pools = {k: v for k, v in voc.items() if isinstance(v, dict)}
    assert {"subjects", "forms", "connectors", "ing_connectors", "adverbs_slow", "adverbs_fast",
            "turn_modifiers"} <= set(pools)
    for action in ACTIONS:
        assert f"verbs_{action}" in pools
        assert len(pools[f"verbs_{action}"]["train"]) >= 4
        assert len(pools[f"verbs_{action}"]["held_out"]) >= 1
    for name, pool in pools.items():
        assert not set(pool["train"]) & set(pool["held_out"]), name
        assert len(pool["held_out"]) <= len(pool["train"]), name
    # no held-out-only phrase occurs inside any train phrase
    train = [f" {s} " for s in voc["train_surfaces"]]
    markers = voc["held_out_markers"]
    assert len(markers) > 50
    for m in markers:
        assert not any(f" {m} " in t for t in train), m


def test_train_captions_never_contain_held_out_phrases():
    markers = split_vocabulary()["held_out_markers"]
    rng = random.Random(9)
    for _ in range(600):
        segs = rand_segments(rng)
        for cap, _ in caption_set(segs, rng, n=2):
            assert not contains_any(cap, markers), (cap, contains_any(cap, markers))


def test_held_out_captions_mostly_contain_held_out_phrases():
    markers = split_vocabulary()["held_out_markers"]
    rng = random.Random(10)
    hits = 0
    for _ in range(200):
        segs = rand_segments(rng)
        cap, _ = caption_motion(segs, rng, held_out=True)
        hits += bool(contains_any(cap, markers))
    assert hits > 0.8 * 200, hits
    # ... but not only held-out phrasings: train subjects still appear sometimes
    subs = split_vocabulary()["subjects"]["train"]
    caps = [caption_motion(rand_segments(rng), rng, held_out=True)[0] for _ in range(200)]
    assert any(c.startswith(tuple(s + " " for s in subs)) for c in caps)


def test_dance_styles_distinguishable():
    rng = random.Random(11)
    for _ in range(100):
        a = caption_motion([dict(action="dance_a")], rng)[0]
        b = caption_motion([dict(action="dance_b")], rng)[0]
        assert re.search(r"energetic|swing|vigorous", a), a
        assert re.search(r"sway|side to side", b), b
        assert not re.search(r"sway|side to side", a), a
        assert not re.search(r"energetic|swing", b), b
