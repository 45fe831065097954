"""Deterministic HumanML3D-style caption grammar for synthetic motions.

A motion is a list of 1-3 *segments*; each segment is a dict with keys

* ``action`` -- one of :data:`ACTIONS`;
* ``reps``   -- int 1..4 (repetitions; for locomotion this is rendered as a
  distance phrase such as "for a few steps", for dances as a duration such as
  "for a while", for discrete actions as a count such as "twice");
* ``side``   -- ``'left' | 'right' | None``: the limb used (kick, punch, spinkick);
* ``turn``   -- ``'left' | 'right' | None``: direction the body turns or the path
  curves (turn, spin, spinkick, walk/run/crawl along a curve, cartwheel and
  roll direction; for the other actions a "while turning to the left" modifier
  is appended).  ``'left'`` is counterclockwise seen from above, so the words
  "counterclockwise"/"clockwise" are used consistently with left/right;
* ``speed``  -- ``'slow' | 'normal' | 'fast'``.

Captions are lowercase, start with a subject ("a person", "someone", "a man",
...), end with ``"."`` and come with a HumanML3D-style token list
(``['a/DET', 'person/NOUN', 'walk/VERB', 'forward/ADV']``: lemma/universal POS,
punctuation omitted, one token per word of the caption).

Sentence forms
--------------
``simple``       "a person walks forward, then jumps twice."
                 (connectors ", then", " and then", " and", " before <-ing>",
                 ", followed by <-ing>", ", after that, he/she/they <verb>")
``participle``   "a person walking forward and then jumping twice."
``first``        "a person first walks forward, then jumps, and finally kicks."
``progressive``  "a man is spinning to the left before kicking."   (held out)
``startsby``     "someone starts by walking, and afterwards jumps." (held out)

Train / held-out phrasing split
-------------------------------
Every phrasing pool -- subjects, verb phrases of every action, connectors,
speed adverbs, counts / distances / durations, turn modifiers and sentence
forms -- is a dict ``{'train': [...], 'held_out': [...]}`` whose held-out part
is smaller and disjoint from the train part.  With ``held_out=False`` only the
train parts are ever used, so training captions never contain a held-out
phrasing.  With ``held_out=True`` every draw from a pool that has held-out
entries takes a held-out entry with probability :data:`HELD_OUT_PROB` (0.75)
and a train entry otherwise, so test captions *mostly* (but not only) use
phrasings never seen during training while staying understandable (held-out
phrasings are synonyms of train phrasings: "ambles forward", "twirls
clockwise", "a couple of times", "an individual", ...).
:func:`split_vocabulary` exposes the pools plus ``held_out_markers``: the
rendered surface strings that only held-out entries can produce (used by the
tests to verify the separation).

Determinism and mirror symmetry
-------------------------------
All randomness comes from the ``random.Random`` passed in.  The number and
kind of draws depends only on whether ``side``/``turn`` are ``None``, never on
their value, and left/right phrase variants are produced by the same
templates; hence ``caption_motion(mirror_segments(s), Random(k))`` equals
``caption_motion(s, Random(k))`` with left<->right and
clockwise<->counterclockwise swapped (see :func:`swap_sides_text`).
"""

from __future__ import annotations

import copy
import itertools
import random
import re
from functools import lru_cache

__all__ = [
    "ACTIONS",
    "POS_TAGS",
    "HELD_OUT_PROB",
    "caption_motion",
    "caption_set",
    "mirror_segments",
    "split_vocabulary",
    "swap_sides_text",
    "normalize_text",
]

ACTIONS: tuple[str, ...] = (
    "walk", "turn", "run", "jump", "kick", "punch", "spin", "spinkick",
    "dance_a", "dance_b", "getup_facedown", "getup_faceup",
    "cartwheel", "backflip", "crawl", "roll",
)

POS_TAGS = frozenset(
    {"DET", "NOUN", "VERB", "ADV", "ADJ", "ADP", "NUM", "PRON", "CCONJ", "SCONJ", "PART"})

HELD_OUT_PROB = 0.75

SIDE_ACTIONS = frozenset({"kick", "punch", "spinkick"})
TURN_ACTIONS = frozenset({"walk", "turn", "run", "spin", "spinkick", "cartwheel", "roll", "crawl"})
LOCOMOTION = frozenset({"walk", "turn", "run", "crawl"})
# Kinds whose every motion turns one way or the other (``mocap._infer_turn`` labels each clip
# left or right): words naming no side ask for a turn to either side, never for none.
ALWAYS_TURNING = frozenset({"turn", "spin", "spinkick", "cartwheel"})

_STYLE = {
    "walk": "distance", "turn": "distance", "run": "distance", "crawl": "distance",
    "dance_a": "duration", "dance_b": "duration",
    "getup_facedown": "count_noonce", "getup_faceup": "count_noonce",
    "jump": "count", "kick": "count", "punch": "count", "spin": "count",
    "spinkick": "count", "cartwheel": "count", "backflip": "count", "roll": "count",
}
# Actions whose repetitions a caption states as a count ("twice", "three times").
COUNTED_ACTIONS = frozenset(a for a, style in _STYLE.items() if style == "count")

# ----------------------------------------------------------------------------
# lexicon: surface word -> (lemma, universal POS).  Words marked with '*' in
# templates are verbs conjugated on the fly; 'word/POS' or 'word/lemma/POS'
# overrides the lexicon for one occurrence.
# ----------------------------------------------------------------------------

_LEX: dict[str, tuple[str, str]] = {}


def _lex(pos: str, words: str) -> None:
    for w in words.split():
        if ":" in w:
            surf, lemma = w.split(":")
        else:
            surf, lemma = w, w
        _LEX[surf] = (lemma, pos)


_lex("DET", "a an the all")
_lex("NOUN", "person man woman figure guy individual character human "
             "leg foot hand fist arm arms:arm legs:leg hands:hand knees:knee feet:foot hips:hip "
             "body stomach belly back face ground floor air place line curve path arc circle "
             "kick punch spin turn dance cartwheel handspring flip somersault roll roundhouse "
             "swings:swing side position distance steps:step times:time time moment bit row "
             "couple pace manner speed fours:four")
_lex("PRON", "someone he she they his her their that which")
_lex("VERB", "walking:walk turning:turn curving:curve pivoting:pivot swaying:sway "
             "swinging:swing dancing:dance lying:lie using:use followed:follow curved:curve "
             "starts:start is:be")
_lex("ADV", "forward straight ahead around sideways backward down then afterwards next "
            "subsequently finally first energetically twice once thrice slowly carefully "
            "quickly fast rapidly swiftly hastily unhurriedly sluggishly leisurely quite "
            "clockwise counterclockwise prior")
_lex("ADJ", "full spinning energetic big lively vigorous gentle rhythmic prone supine "
            "few short long little slow brisk high consecutive")
_lex("ADP", "in into to toward with from on off up out over along across after by of for at")
_lex("CCONJ", "and")
_lex("SCONJ", "while as if before")
_lex("NUM", "one two three four")

_DOUBLING = frozenset({"run", "jog", "hop", "jab", "spin", "flip", "sit", "get", "stop", "skip", "step"})
_ING_IRREGULAR = {"lie": "lying", "be": "being", "die": "dying"}


def _conj(base: str, form: str) -> str:
    """Conjugate a (regular-ish) verb: form in {'base', '3sg', 'ing'}."""
    if form == "base":
        return base
    if form == "3sg":
        if base.endswith(("s", "sh", "ch", "x", "z", "o")):
            return base + "es"
        if base.endswith("y") and base[-2] not in "aeiou":
            return base[:-1] + "ies"
        return base + "s"
    if form == "ing":
        if base in _ING_IRREGULAR:
            return _ING_IRREGULAR[base]
        if base in _DOUBLING:
            return base + base[-1] + "ing"
        if base.endswith("e") and not base.endswith("ee"):
            return base[:-1] + "ing"
        return base + "ing"
    raise ValueError(f"unknown verb form {form!r}")


# ----------------------------------------------------------------------------
# phrasing pools
# ----------------------------------------------------------------------------

def _pool(train, held_out=()):
    return {"train": list(train), "held_out": list(held_out)}


# subject -> (possessive, pronoun)
_SUBJECT_INFO = {
    "a person": ("their", "they"), "someone": ("their", "they"), "the person": ("their", "they"),
    "a man": ("his", "he"), "a woman": ("her", "she"), "a figure": ("their", "they"),
    "a guy": ("his", "he"), "an individual": ("their", "they"), "the man": ("his", "he"),
    "a character": ("their", "they"),
}
SUBJECTS = _pool(["a person", "someone", "the person", "a man", "a woman", "a figure"],
                 ["a guy", "an individual", "the man", "a character"])

# sentence forms (train list repeats 'simple' to weight it)
FORMS = _pool(["simple", "simple", "participle", "first"], ["progressive", "startsby"])
_FORM_MIN_SEGMENTS = {"simple": 1, "participle": 1, "first": 2, "progressive": 1, "startsby": 2}
_FORM_MARKERS = {"progressive": ["is"], "startsby": ["starts by"]}

# connectors between finite verb phrases: "type:text"
#   vp     -> next segment as finite verb phrase ("walks, then jumps")
#   ing    -> next segment as -ing form, later joins stay in -ing form
#   clause -> pronoun + finite verb ("..., after that, he jumps")
CONNECTORS = _pool(
    ["vp:, then", "vp: and then", "vp:, and then", "vp: then", "vp: and",
     "ing: before", "ing:, followed by", "clause:, after that,"],
    ["vp:, and afterwards", "vp:, and next", "vp: and subsequently",
     "ing: prior to", "clause:, after which"])
# connectors inside a chain of -ing phrases
ING_CONNECTORS = _pool([" and then", ", then", " then", " and", " before"],
                       [" and afterwards", " prior to", " and subsequently"])

# speed adverbs: "text|flags", p = may precede the verb, l = locomotion only
ADVERBS = {
    "slow": _pool(["slowly|p", "carefully|p", "in a slow manner|", "at a slow pace|l"],
                  ["unhurriedly|p", "sluggishly|p", "leisurely|l"]),
    "fast": _pool(["quickly|p", "fast|", "rapidly|p", "at a brisk pace|l", "at a fast pace|l"],
                  ["swiftly|p", "hastily|p", "at high speed|l"]),
}

_COUNTS_TRAIN = {2: ["twice", "two times", "twice in a row"],
                 3: ["three times", "three times in a row"],
                 4: ["four times", "four times in a row"]}
_COUNTS_HELD = {2: ["a couple of times"], 3: ["thrice"], 4: ["four consecutive times"]}
REPS_PHRASES = {
    "count": {1: _pool(["", "once"]),
              **{r: _pool(_COUNTS_TRAIN[r], _COUNTS_HELD[r]) for r in (2, 3, 4)}},
    "count_noonce": {1: _pool([""]),
                     **{r: _pool(_COUNTS_TRAIN[r], _COUNTS_HELD[r]) for r in (2, 3, 4)}},
    "distance": {1: _pool(["", "for a few steps"], ["for a couple of steps"]),
                 2: _pool(["", "for a short distance"], ["for a little while/NOUN"]),
                 3: _pool(["", "for a while/NOUN"], ["for quite a while/NOUN"]),
                 4: _pool(["", "for a long distance", "for a while/NOUN"], ["for quite a while/NOUN"])},
    "duration": {1: _pool([""]),
                 2: _pool(["", "for a bit"], ["for a little while/NOUN"]),
                 3: _pool(["", "for a while/NOUN"], ["for quite a while/NOUN"]),
                 4: _pool(["", "for a while/NOUN", "for a long time"], ["for quite a while/NOUN"])},
}

# appended when a non-turning action carries a turn direction (the "while"
# variants are skipped when the phrase already contains "while")
TURN_MODIFIERS = _pool(["while turning to the {dirn}", "while turning {dir}", "and *turn to the {dirn}"],
                       ["while pivoting to the {dirn}", "and *pivot to the {dirn}"])

# Verb phrases (base form).  '*verb' = conjugated head verb.  Placeholders:
#   {side} limb side (ADJ)        {dir} turn dir (ADV: "turns left")
#   {dirn} turn dir (NOUN: "to the left")   {dira} turn dir (ADJ: "a left turn")
#   {rot}/{rota} clockwise / counterclockwise (ADV / ADJ)
#   {poss} subject possessive or "the"      {pron} subject possessive
# A template is used only when the placeholders it needs (side / turn) match
# exactly what the segment provides.
VERBS = {
    "walk": _pool(
        ["*walk forward", "*walk straight forward", "*stroll forward", "*pace forward",
         "*walk in a straight line", "*walk ahead",
         "*walk in a curve to the {dirn}", "*walk forward and *curve to the {dirn}",
         "*walk forward while curving {dir}", "*walk along a curved path to the {dirn}"],
        ["*amble forward", "*march ahead", "*saunter forward",
         "*veer {dir} while walking", "*walk in an arc to the {dirn}"]),
    "turn": _pool(
        ["*walk and *turn around", "*turn around while walking", "*walk forward and *turn around",
         "*walk and *turn to the {dirn}", "*turn {dir} while walking",
         "*walk forward and then *turn {dir}", "*make a {dira} turn while walking",
         "*walk forward while turning {rot}"],
        ["*walk and *pivot around", "*pivot {dir} while walking", "*walk and *pivot to the {dirn}"]),
    "run": _pool(
        ["*run forward", "*run", "*run straight ahead", "*jog forward", "*run in a straight line",
         "*run in a curve to the {dirn}", "*run forward while curving {dir}",
         "*jog in a curve to the {dirn}"],
        ["*dash forward", "*sprint ahead", "*dash in an arc to the {dirn}"]),
    "jump": _pool(
        ["*jump", "*jump up", "*hop up", "*leap into the air", "*jump in place", "*jump up and down"],
        ["*spring into the air", "*bounce up"]),
    "kick": _pool(
        ["*kick with {poss} {side} leg", "*kick with {poss} {side} foot",
         "*kick {poss} {side} leg forward", "*kick out with {poss} {side} leg",
         "*do a kick with {poss} {side} leg", "*kick forward using {poss} {side} leg",
         "*kick", "*kick forward", "*kick out with one leg", "*do a kick"],
        ["*strike with {poss} {side} foot", "*thrust {poss} {side} leg out in a kick",
         "*deliver a kick", "*deliver a forward kick"]),
    "punch": _pool(
        ["*punch with {poss} {side} hand", "*punch with {poss} {side} fist",
         "*punch forward with {poss} {side} arm", "*throw a punch with {poss} {side} hand",
         "*punch using {poss} {side} arm", "*throw a {side} punch",
         "*punch", "*punch forward", "*throw a punch", "*punch straight ahead"],
        ["*jab with {poss} {side} fist", "*strike forward with {poss} {side} hand",
         "*jab forward", "*deliver a punch"]),
    "spin": _pool(
        ["*spin around to the {dirn}", "*spin {rot}", "*turn around in a circle to the {dirn}",
         "*spin to the {dirn}", "*do a {rota} spin", "*spin in place {rot}",
         "*spin around", "*spin in place", "*turn around in a full circle", "*do a full spin"],
        ["*twirl {rot}", "*rotate in place to the {dirn}", "*pirouette to the {dirn}",
         "*twirl around", "*pirouette in place"]),
    "spinkick": _pool(
        ["*do a spinning kick", "*spin and *kick", "*do a spin kick", "*spin around and *kick",
         "*do a spinning kick with {poss} {side} leg", "*spin and *kick with {poss} {side} foot",
         "*spin around and *kick with {poss} {side} leg",
         "*spin to the {dirn} and *kick", "*do a spinning kick to the {dirn}", "*spin {rot} and *kick",
         "*spin to the {dirn} and *kick with {poss} {side} leg",
         "*do a spinning kick to the {dirn} with {poss} {side} leg",
         "*spin {rot} and *kick with {poss} {side} foot"],
        ["*perform a roundhouse kick",
         "*whirl and *kick with {poss} {side} leg",
         "*perform a roundhouse kick with {poss} {side} leg",
         "*whirl to the {dirn} and *kick",
         "*whirl {rot} and *kick with {poss} {side} leg",
         "*perform a roundhouse kick to the {dirn} with {poss} {side} foot"]),
    "dance_a": _pool(
        ["*dance energetically with arm swings", "*dance energetically while swinging {pron} arms",
         "*do an energetic dance with big arm swings", "*dance with lively arm swings",
         "*swing {pron} arms around while dancing energetically"],
        ["*groove energetically with {pron} arms swinging", "*do a vigorous dance swinging {pron} arms"]),
    "dance_b": _pool(
        ["*do a swaying dance", "*dance while swaying from side to side",
         "*sway from side to side as if dancing", "*dance by swaying {pron} hips",
         "*do a gentle swaying dance"],
        ["*rock from side to side in a rhythmic dance", "*do a rhythmic swaying dance"]),
    "getup_facedown": _pool(
        ["*get up from lying face down", "*rise from the ground after lying on {pron} stomach",
         "*stand up after lying face down", "*get up off the ground from lying on {pron} stomach",
         "*get up after lying face down on the ground"],
        ["*rise from a prone position", "*climb to {pron} feet from lying on {pron} belly"]),
    "getup_faceup": _pool(
        ["*get up from lying on {pron} back", "*rise from the ground after lying face up",
         "*stand up after lying on {pron} back", "*sit up from lying on {pron} back and *stand up",
         "*get up after lying face up on the ground"],
        ["*rise from a supine position", "*climb to {pron} feet from lying face up"]),
    "cartwheel": _pool(
        ["*do a cartwheel to the {dirn}", "*cartwheel to the {dirn}", "*turn a cartwheel to the {dirn}",
         "*do a cartwheel toward the {dirn}",
         "*do a cartwheel", "*cartwheel sideways", "*turn a cartwheel"],
        ["*do a sideways handspring to the {dirn}", "*wheel sideways to the {dirn} on {pron} hands",
         "*do a sideways handspring"]),
    "backflip": _pool(
        ["*do a backflip", "*flip backward", "*do a back flip", "*jump and *flip backward",
         "*do a backward flip"],
        ["*do a backward somersault", "*somersault backward"]),
    "crawl": _pool(
        ["*crawl forward on all fours", "*crawl on {pron} hands and knees", "*crawl forward",
         "*crawl along the ground",
         "*crawl forward while curving to the {dirn}", "*crawl in a curve to the {dirn}",
         "*crawl on all fours toward the {dirn}"],
        ["*creep forward on all fours", "*creep along the floor", "*creep in an arc to the {dirn}"]),
    "roll": _pool(
        ["*roll to the {dirn} on the ground", "*roll over to the {dirn}", "*roll sideways to the {dirn}",
         "*lie down and *roll to the {dirn}",
         "*do a forward roll", "*roll forward on the ground", "*roll forward", "*roll over on the ground"],
        ["*tumble to the {dirn} across the floor", "*tumble forward across the floor"]),
}
_LEX["backflip"] = ("backflip", "NOUN")
_LEX["toward"] = ("toward", "ADP")

# fixed words of the sentence forms (train side)
_FORM_FIXED_TRAIN = ["first", ", then", ", and finally"]

_SIDE_PH = {"side"}
_TURN_PH = {"dir", "dirn", "dira", "rot", "rota"}
_PH_POS = {"side": "ADJ", "dir": "ADV", "dirn": "NOUN", "dira": "ADJ", "rot": "ADV", "rota": "ADJ"}
_ROT = {"left": "counterclockwise", "right": "clockwise"}
_SWAP = {"left": "right", "right": "left",
         "clockwise": "counterclockwise", "counterclockwise": "clockwise"}

# ----------------------------------------------------------------------------
# template parsing / rendering
# ----------------------------------------------------------------------------

# a token: (surface, lemma, pos); punctuation has pos 'PUNCT'
_Token = tuple[str, str, str]


@lru_cache(maxsize=None)
def _parse(template: str) -> tuple:
    """Template -> tuple of items ('verb', base) | ('ph', name) | ('tok', surf, lemma, pos)."""
    items = []
    for piece in template.replace(",", " , ").split():
        if piece == ",":
            items.append(("tok", ",", ",", "PUNCT"))
        elif piece.startswith("*"):
            items.append(("verb", piece[1:]))
        elif piece.startswith("{") and piece.endswith("}"):
            items.append(("ph", piece[1:-1]))
        elif "/" in piece:
            parts = piece.split("/")
            if len(parts) == 2:
                surf, pos = parts
                lemma = _LEX.get(surf, (surf, pos))[0]
            else:
                surf, lemma, pos = parts
            items.append(("tok", surf, lemma, pos))
        else:
            if piece not in _LEX:
                raise KeyError(f"word {piece!r} of template {template!r} missing from lexicon")
            lemma, pos = _LEX[piece]
            items.append(("tok", piece, lemma, pos))
    return tuple(items)


def _keys(template: str) -> frozenset:
    names = {it[1] for it in _parse(template) if it[0] == "ph"}
    out = set()
    if names & _SIDE_PH:
        out.add("side")
    if names & _TURN_PH:
        out.add("turn")
    return frozenset(out)


def _render(template: str, form: str, fills: dict) -> list[_Token]:
    toks: list[_Token] = []
    for it in _parse(template):
        if it[0] == "tok":
            toks.append(it[1:])
        elif it[0] == "verb":
            toks.append((_conj(it[1], form), it[1], "VERB"))
        else:
            toks.append(fills[it[1]])
    return toks


def _fills(side, turn, poss: str, use_the: bool) -> dict:
    f = {"pron": (poss, poss, "PRON"),
         "poss": ("the", "the", "DET") if use_the else (poss, poss, "PRON")}
    if side is not None:
        f["side"] = (side, side, "ADJ")
    if turn is not None:
        for name in ("dir", "dirn", "dira"):
            f[name] = (turn, turn, _PH_POS[name])
        for name in ("rot", "rota"):
            f[name] = (_ROT[turn], _ROT[turn], _PH_POS[name])
    return f


def _pick(rng: random.Random, pool: dict, held_out: bool):
    """Draw from a pool: held-out entries with prob HELD_OUT_PROB when held_out."""
    if held_out and pool["held_out"] and rng.random() < HELD_OUT_PROB:
        return rng.choice(pool["held_out"])
    if not pool["train"]:
        return rng.choice(pool["held_out"])
    return rng.choice(pool["train"])


@lru_cache(maxsize=None)
def _verb_pool(action: str, keys: frozenset) -> dict:
    p = VERBS[action]
    return {part: [t for t in p[part] if _keys(t) == keys] for part in ("train", "held_out")}


@lru_cache(maxsize=None)
def _adverb_pool(speed: str, loco: bool) -> dict:
    p = ADVERBS[speed]
    return {part: [a for a in p[part] if loco or "l" not in a.split("|")[1]]
            for part in ("train", "held_out")}


@lru_cache(maxsize=None)
def _type_pool(pool_id: str, typ: str) -> dict:
    p = {"connectors": CONNECTORS}[pool_id]
    return {part: [c for c in p[part] if c.split(":", 1)[0] == typ] for part in ("train", "held_out")}


@lru_cache(maxsize=None)
def _turnmod_pool(has_while: bool) -> dict:
    return {part: [t for t in TURN_MODIFIERS[part] if not (has_while and t.startswith("while"))]
            for part in ("train", "held_out")}


@lru_cache(maxsize=None)
def _form_pool(n: int) -> dict:
    return {part: [f for f in FORMS[part] if _FORM_MIN_SEGMENTS[f] <= n]
            for part in ("train", "held_out")}


# ----------------------------------------------------------------------------
# segments
# ----------------------------------------------------------------------------

def _normalize(seg: dict) -> dict:
    action = seg.get("action")
    if action not in ACTIONS:
        raise ValueError(f"unknown action {action!r}")
    reps = int(seg.get("reps", 1) or 1)
    reps = min(max(reps, 1), 4)
    side = seg.get("side")
    turn = seg.get("turn")
    speed = seg.get("speed", "normal") or "normal"
    for name, v in (("side", side), ("turn", turn)):
        if v not in (None, "left", "right"):
            raise ValueError(f"bad {name} {v!r}")
    if speed not in ("slow", "normal", "fast"):
        raise ValueError(f"bad speed {speed!r}")
    return {"action": action, "reps": reps, "side": side if action in SIDE_ACTIONS else None,
            "turn": turn, "speed": speed}


def _segment_tokens(seg: dict, rng: random.Random, held_out: bool, form: str,
                    poss: str, pron: str) -> list[_Token]:
    action = seg["action"]
    keys = set()
    if seg["side"] is not None:
        keys.add("side")
    if seg["turn"] is not None and action in TURN_ACTIONS:
        keys.add("turn")
    template = _pick(rng, _verb_pool(action, frozenset(keys)), held_out)
    use_the = rng.random() < 0.4
    fills = _fills(seg["side"], seg["turn"], poss, use_the)
    core = _render(template, form, fills)

    pre: list[_Token] = []
    post: list[_Token] = []
    if seg["speed"] != "normal":
        text, flags = _pick(rng, _adverb_pool(seg["speed"], action in LOCOMOTION), held_out).split("|")
        adv = _render(text, form, fills)
        if "p" in flags and rng.random() < 0.4:
            pre = adv
        else:
            post = adv

    count_text = _pick(rng, REPS_PHRASES[_STYLE[action]][seg["reps"]], held_out)
    count = _render(count_text, form, fills) if count_text else []

    turnmod: list[_Token] = []
    if seg["turn"] is not None and action not in TURN_ACTIONS:
        has_while = any(t[0] == "while" for t in core + post + count)
        turnmod = _render(_pick(rng, _turnmod_pool(has_while), held_out), form, fills)
    return pre + core + post + count + turnmod


def _words(text: str) -> list[_Token]:
    return _render(text, "base", {})


# ----------------------------------------------------------------------------
# composition
# ----------------------------------------------------------------------------

def _compose(segments, rng: random.Random, held_out: bool,
             force_subject: str | None = None, force_form: str | None = None):
    if not 1 <= len(segments) <= 3:
        raise ValueError("a motion has 1-3 segments")
    segs = [_normalize(s) for s in segments]
    n = len(segs)

    subject = force_subject if force_subject is not None else _pick(rng, SUBJECTS, held_out)
    poss, pron = _SUBJECT_INFO[subject]
    form = force_form if force_form is not None else _pick(rng, _form_pool(n), held_out)

    def seg(i, vform):
        return _segment_tokens(segs[i], rng, held_out, vform, poss, pron)

    def ing_chain(start):
        out = []
        for i in range(start, n):
            out += _words(_pick(rng, ING_CONNECTORS, held_out)) + seg(i, "ing")
        return out

    toks = _words(subject)
    if form == "simple":
        toks += seg(0, "3sg")
        i = 1
        while i < n:
            typ, text = _pick(rng, CONNECTORS, held_out).split(":", 1)
            if typ == "vp":
                toks += _words(text) + seg(i, "3sg")
            elif typ == "clause":
                toks += _words(text) + [(pron, pron, "PRON")] + seg(i, "base" if pron == "they" else "3sg")
            else:  # ing: the rest of the sentence stays in -ing form
                toks += _words(text) + seg(i, "ing") + ing_chain(i + 1)
                break
            i += 1
    elif form == "participle":
        toks += seg(0, "ing") + ing_chain(1)
    elif form == "progressive":
        toks += _words("is") + seg(0, "ing") + ing_chain(1)
    elif form == "first":
        toks += _words("first") + seg(0, "3sg")
        for i in range(1, n):
            toks += _words(", then" if i == 1 else ", and finally") + seg(i, "3sg")
    elif form == "startsby":
        toks += _words("starts/start/VERB by") + seg(0, "ing")
        for i in range(1, n):
            toks += _words(_pick(rng, _type_pool("connectors", "vp"), held_out)[3:]) + seg(i, "3sg")
    else:  # pragma: no cover
        raise ValueError(form)

    text = ""
    for surf, _, pos in toks:
        if pos == "PUNCT":
            text += surf
        else:
            text += (" " if text else "") + surf
    text += "."
    tokens = [f"{lemma}/{pos}" for _, lemma, pos in toks if pos != "PUNCT"]
    return text, tokens


# ----------------------------------------------------------------------------
# public API
# ----------------------------------------------------------------------------

def caption_motion(segments: list[dict], rng: random.Random, held_out: bool = False
                   ) -> tuple[str, list[str]]:
    """One caption and its HumanML3D-style token list ['a/DET', 'person/NOUN', 'walk/VERB', ...].

    Tokens are ``lemma/POS`` (universal POS tags), one per word of the caption,
    punctuation omitted.  ``held_out=True`` draws mostly from held-out phrasings.
    """
    return _compose(segments, rng, held_out)


def plain_caption(segment: dict, seed: int = 0) -> str:
    """One segment in training phrasing, always the same words for the same segment and seed:
    subject "a person", the simple form, templates drawn by ``random.Random(seed)`` (what
    ``Restater`` hands the motion LLM)."""
    return _compose([segment], random.Random(seed), False, "a person", "simple")[0]


def caption_set(segments: list[dict], rng: random.Random, n: int = 3, held_out: bool = False
                ) -> list[tuple[str, list[str]]]:
    """``n`` distinct captions for one motion (retries, then forces different subjects/forms)."""
    out: list[tuple[str, list[str]]] = []
    seen: set[str] = set()
    for _ in range(20 * n):
        if len(out) >= n:
            break
        cap = _compose(segments, rng, held_out)
        if cap[0] not in seen:
            seen.add(cap[0])
            out.append(cap)
    if len(out) < n:
        parts = ("train", "held_out") if held_out else ("train",)
        subjects = list(dict.fromkeys(s for p in parts for s in SUBJECTS[p]))
        forms = list(dict.fromkeys(f for p in parts for f in _form_pool(len(segments))[p]))
        for subject, form in itertools.product(subjects, forms):
            cap = _compose(segments, rng, held_out, subject, form)
            if cap[0] not in seen:
                seen.add(cap[0])
                out.append(cap)
                if len(out) >= n:
                    break
    if len(out) < n:
        raise ValueError(f"could not produce {n} distinct captions")
    return out


def mirror_segments(segments) -> list[dict]:
    """Copy of the segments with left<->right swapped in ``side`` and ``turn``."""
    out = []
    for s in segments:
        m = copy.deepcopy(dict(s))
        for key in ("side", "turn"):
            if m.get(key) in ("left", "right"):
                m[key] = _SWAP[m[key]]
        out.append(m)
    return out


def swap_sides_text(text: str) -> str:
    """Swap left<->right and clockwise<->counterclockwise words in a caption or token."""
    return re.sub(r"[a-z]+", lambda m: _SWAP.get(m.group(0), m.group(0)), text)


# ----------------------------------------------------------------------------
# vocabulary / train-test separation
# ----------------------------------------------------------------------------

def _surfaces(template: str) -> set[str]:
    """All rendered surface strings (normalized) of one template."""
    names = {it[1] for it in _parse(template) if it[0] == "ph"}
    has_verb = any(it[0] == "verb" for it in _parse(template))
    out = set()
    for form in (("base", "3sg", "ing") if has_verb else ("base",)):
        for side, turn, poss, use_the in itertools.product(
                ("left", "right"), ("left", "right"), ("his", "her", "their"), (False, True)):
            fills = _fills(side, turn, poss, use_the)
            toks = _render(template, form, {k: v for k, v in fills.items() if k in names})
            out.add(normalize_text(" ".join(t[0] for t in toks)))
    return {s for s in out if s.strip()}


def normalize_text(text: str) -> str:
    """Lowercase words only, single-spaced and padded with spaces (for phrase containment)."""
    return " " + " ".join(re.findall(r"[a-z]+", text.lower())) + " "


def _all_pools() -> dict[str, dict]:
    pools = {
        "subjects": SUBJECTS,
        "connectors": {p: [c.split(":", 1)[1] for c in CONNECTORS[p]] for p in ("train", "held_out")},
        "ing_connectors": ING_CONNECTORS,
        "adverbs_slow": {p: [a.split("|")[0] for a in ADVERBS["slow"][p]] for p in ("train", "held_out")},
        "adverbs_fast": {p: [a.split("|")[0] for a in ADVERBS["fast"][p]] for p in ("train", "held_out")},
        "turn_modifiers": TURN_MODIFIERS,
    }
    for style, by_reps in REPS_PHRASES.items():
        for reps, pool in by_reps.items():
            pools[f"{style}_{reps}"] = pool
    for action, pool in VERBS.items():
        pools[f"verbs_{action}"] = pool
    return pools


@lru_cache(maxsize=None)
def _vocabulary() -> dict:
    pools = _all_pools()
    train_surf: set[str] = set()
    held_surf: set[str] = set()
    for pool in pools.values():
        for t in pool["train"]:
            train_surf |= _surfaces(t)
        for t in pool["held_out"]:
            held_surf |= _surfaces(t)
    for t in _FORM_FIXED_TRAIN:
        train_surf |= _surfaces(t)
    for f in FORMS["held_out"]:
        for m in _FORM_MARKERS[f]:
            held_surf.add(normalize_text(m))
    markers = sorted(s.strip() for s in held_surf - train_surf)
    return {
        **{name: {"train": list(dict.fromkeys(p["train"])), "held_out": list(dict.fromkeys(p["held_out"]))}
           for name, p in pools.items()},
        "forms": {"train": list(dict.fromkeys(FORMS["train"])), "held_out": list(FORMS["held_out"])},
        "train_surfaces": sorted(s.strip() for s in train_surf),
        "held_out_markers": markers,
    }


def split_vocabulary() -> dict:
    """The phrasing pools, each ``{'train': [...], 'held_out': [...]}``.

    Keys: ``subjects``, ``forms``, ``connectors``, ``ing_connectors``,
    ``adverbs_slow``, ``adverbs_fast``, ``turn_modifiers``, ``count_<r>``,
    ``count_noonce_<r>``, ``distance_<r>``, ``duration_<r>`` (r = reps),
    ``verbs_<action>`` (templates: '*' marks conjugated verbs, ``{...}``
    placeholders); plus ``train_surfaces`` (every rendered train phrase) and
    ``held_out_markers`` (rendered phrases only held-out entries produce: a
    train caption never contains one, most held-out captions contain one).
    """
    return copy.deepcopy(_vocabulary())
