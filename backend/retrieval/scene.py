"""What a database video looks like, in words: the clothes' colour, the wall behind the person and
the floor, as real video captions say it ("a man in a red shirt dances in front of a white wall").

Why: the object channel (I3D features, ``model.py``) sees appearance, not only motion. A linear
probe on the embedded database's I3D features predicts a held-out video's background colour (R^2
0.7 per RGB channel) and whether it has a checkered floor (99.5 %), yet no caption said either,
so the channel could only tell motions apart, which the keypoints do better, and the router
learned to ignore it (docs/lab-notebook.md, *Scene words*). Every embedded video is rendered with a random
body colour, background colour and floor (``videos/synth.py``); ``describe_scene`` names them.

    describe_scene(spec, variant=0) -> "dressed in purple, in front of a dark green wall, on a checkered floor"
    with_scene("a man jumps twice.", spec) -> "a man jumps twice, dressed in purple, in front of ..."
    strip_scene(that) -> "a man jumps twice."

The words avoid every cue word (sides, directions, speeds, counts: ``cues.py``), so a described
caption asks for the same motion as the plain one. ``strip_scene`` removes a clause in any of
the phrasings made here, which keeps the action channel's predicate on the motion
(``model.extract_predicate``); a user's own phrasing ("in a red shirt") is left to the object
channel's whole-sentence text side.
"""
from __future__ import annotations

import colorsys
import re
import zlib

import numpy as np

# hue bins (HLS hue in [0, 1)), upper edges; the last wraps to red
_HUES = ((0.04, "red"), (0.11, "orange"), (0.19, "yellow"), (0.45, "green"), (0.54, "teal"),
         (0.72, "blue"), (0.85, "purple"), (0.95, "pink"), (1.01, "red"))
GREY_SATURATION = 0.12      # below this a colour reads as grey
COLOUR_WORDS = tuple(dict.fromkeys(["grey", "white", "black"] + [n for _, n in _HUES]))

_CLOTHES = ("dressed in {c}", "wearing {c}", "in {c} clothes")
_WALL = ("in front of a {c} wall", "against a {c} background", "in a {c} room")
_FLOOR = ("on a checkered floor", "on a chequered floor", "on a tiled floor")


def colour_name(rgb, shade: bool = False) -> str:
    """A plain English name of an RGB colour in [0, 1]^3: a hue ("green"), or grey / white /
    black for unsaturated ones; ``shade`` prefixes "dark " or "light " by lightness."""
    r, g, b = (float(x) for x in rgb)
    h, light, sat = colorsys.rgb_to_hls(r, g, b)
    if sat < GREY_SATURATION or light < 0.04 or light > 0.97:
        if light > 0.85:
            return "white"
        if light < 0.12:
            return "black"
        name = "grey"
    else:
        name = next(n for edge, n in _HUES if h < edge)
    if shade and name not in ("white", "black"):
        name = ("dark " if light < 0.45 else "light " if light > 0.55 else "") + name
    return name


def describe_scene(spec: dict, variant: int = 0) -> str:
    """The appearance clause of a video's render spec (``body_color``, ``background``,
    ``floor``); ``variant`` picks one of the phrasings (any int). Empty when the spec has no
    appearance (a user's own video)."""
    if not spec or "background" not in spec or "body_color" not in spec:
        return ""
    v = abs(int(variant))
    bits = [_CLOTHES[v % 3].format(c=colour_name(spec["body_color"])),
            _WALL[(v // 3) % 3].format(c=colour_name(spec["background"], shade=True))]
    if spec.get("floor"):
        bits.append(_FLOOR[(v // 9) % 3])
    return ", ".join(bits)


def scene_variant(video_id: str, caption_index: int) -> int:
    """A fixed phrasing choice per (video, caption), the same on every machine."""
    return zlib.crc32(f"{video_id}:{caption_index}".encode())


def with_scene(caption: str, spec: dict, variant: int = 0) -> str:
    """``caption`` with the video's appearance clause appended before its full stop."""
    clause = describe_scene(spec, variant)
    if not clause:
        return caption
    body = caption.strip().rstrip(".!").rstrip()
    return f"{body}, {clause}."


_COLOUR = r"(?:(?:dark|light)\s+)?(?:" + "|".join(COLOUR_WORDS) + r")"
_CLAUSE = (r",\s*(?:dressed\s+in\s+{c}|wearing\s+{c}|in\s+{c}\s+clothes|in\s+front\s+of\s+an?\s+{c}\s+wall"
           r"|against\s+an?\s+{c}\s+background|in\s+an?\s+{c}\s+room|on\s+an?\s+(?:checkered|chequered|tiled)\s+floor)"
           ).format(c=_COLOUR)
_SCENE_TAIL = re.compile(rf"(?:{_CLAUSE})+\s*([.!]?)\s*$", re.IGNORECASE)


def strip_scene(text: str) -> str:
    """``text`` without a trailing appearance clause in ``describe_scene``'s phrasings (the
    full stop kept); unchanged when it has none."""
    return _SCENE_TAIL.sub(lambda m: m.group(1), text)


def has_scene(text: str) -> bool:
    return strip_scene(text) != text


def split_scene(text: str) -> tuple[str, str]:
    """(``text`` without its appearance clause, the clause: ", dressed in red, in front of a
    white wall" or ""). What a motion is written from is the first, what a video is searched
    by the first with ``add_scene``."""
    m = _SCENE_TAIL.search(text)
    if m is None:
        return text, ""
    return text[:m.start()] + m.group(1), text[m.start():m.start(1)].strip()


def add_scene(text: str, clause: str) -> str:
    """``text`` with an appearance clause from ``split_scene`` put back before its full stop."""
    if not clause:
        return text
    return f"{text.strip().rstrip('.!').rstrip()}{clause}."


SCENE_CUE_NAMES = ("colour", "setting")
N_SCENE_CUES = len(SCENE_CUE_NAMES)
_COLOUR_WORD = re.compile(r"\b(" + "|".join(COLOUR_WORDS) + r"|gray)\b")
_SETTING_WORD = re.compile(r"\b(walls?|background|room|checkered|chequered|tiled|clothes|clothing|"
                           r"wearing|dressed|shirt|outfit|jacket|suit)\b")


def scene_cues(texts: list[str]) -> np.ndarray:
    """(N, N_SCENE_CUES) float32 indicators: the text names a colour; it names clothes, a wall,
    a room or a patterned floor. None of these words occurs in the embedded corpus's or
    database's motion captions, so they say that the words describe how a video looks, which
    MiniLM's sentence embedding blurs with the motion (``model.QueryGate`` reads them)."""
    out = np.zeros((len(texts), N_SCENE_CUES), np.float32)
    for i, text in enumerate(texts):
        t = text.lower()
        out[i, 0] = bool(_COLOUR_WORD.search(t))
        out[i, 1] = bool(_SETTING_WORD.search(t))
    return out


__all__ = ["COLOUR_WORDS", "N_SCENE_CUES", "SCENE_CUE_NAMES", "add_scene", "colour_name", "describe_scene",
           "has_scene", "scene_cues", "scene_variant", "split_scene", "strip_scene", "with_scene"]
