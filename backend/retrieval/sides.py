"""Left and right, in words and in keypoints.

A caption names sides with "left"/"right" (a limb or a turn) or "clockwise"/"counterclockwise"
(a turn seen from above: clockwise = right). The horizontal mirror image of a video swaps them:
its keypoints swap left and right joints and negate x (``mirror_keypoints``), its captions swap
the words (``mirror_caption``).

``mirror_for(query, video_captions)`` decides when a retrieved video should reach the motion LLM
as its mirror image: the words name a side, the video's captions name only the other one. The
retriever ranks mirrored videos close together (side@1 was a coin flip until the word cues of
session 15, 76 % since, README), so without
this the prior asked for the wrong leg half the time (a quarter since).

``direction_of(text)`` reads the other attribute retrieval is judged on from words: backward,
turning or forward.
"""
from __future__ import annotations

import re

from backend.retrieval.videos.pose import COCO17_FLIP

_MIRROR_WORDS = {"left": "right", "right": "left", "clockwise": "counterclockwise",
                 "counterclockwise": "clockwise", "counter-clockwise": "clockwise"}
_MIRROR_RE = re.compile(r"\b(left|right|counter-?clockwise|clockwise)\b", re.IGNORECASE)
_SIDE_WORDS = {"clockwise": "right", "counterclockwise": "left", "counter-clockwise": "left"}
_SIDE_RE = re.compile(r"\b(left|right|clockwise|counterclockwise|counter-clockwise)\b")


def sides_of(text: str) -> frozenset:
    """Left/right named by a caption (clockwise = right, counterclockwise = left)."""
    return frozenset(_SIDE_WORDS.get(w, w) for w in _SIDE_RE.findall(text.lower()))


_TURNING = re.compile(r"\b(turn\w*|around|curv\w*|circle\w*|arc|spin\w*|twirl\w*|pirouett\w*|rotat\w*)\b")
_BACKWARD = re.compile(r"\bbackwards?\b")
_FORWARD = re.compile(r"\b(forwards?|ahead|straight)\b")


def direction_of(text: str) -> str | None:
    """"backward", "turning", "forward" or None (no direction in the words)."""
    t = text.lower()
    if _BACKWARD.search(t):
        return "backward"
    if _TURNING.search(t):
        return "turning"
    if _FORWARD.search(t):
        return "forward"
    return None


def video_sides_and_direction(captions: list[str]) -> tuple[frozenset, str | None]:
    """What a video's captions say of it: the sides any of them names (union) and their most
    common direction (None if none names one)."""
    from collections import Counter

    sides = frozenset().union(*(sides_of(c) for c in captions)) if captions else frozenset()
    dirs = Counter(d for d in map(direction_of, captions) if d)
    return sides, (dirs.most_common(1)[0][0] if dirs else None)


def mirror_caption(text: str) -> str:
    """The caption of the mirrored video: left <-> right, clockwise <-> counterclockwise (case
    kept). A caption naming no side comes back unchanged."""
    def swap(m):
        w = m.group(0)
        out = _MIRROR_WORDS[w.lower()]
        return out.capitalize() if w[0].isupper() else out

    return _MIRROR_RE.sub(swap, text)


def mirror_keypoints(kp):
    """Person-centred COCO-17 keypoints (..., 17, 3) of the horizontally mirrored video: left and
    right joints swap and x changes sign (root travel and facing mirror with them)."""
    out = kp[..., list(COCO17_FLIP), :]
    out = out.clone() if hasattr(out, "clone") else out.copy()
    out[..., 0] = -out[..., 0]
    return out


def mirror_for(query: str, video_captions: list[str]) -> bool:
    """True when the words name exactly one side and the video's captions (together) name only
    the other one: its mirror image then shows what was asked. A video whose captions name no
    side, or both, or the asked one, is left as it is; so is every video of a query naming no
    side or both."""
    asked = sides_of(query)
    if len(asked) != 1:
        return False
    shown = frozenset().union(*(sides_of(c) for c in video_captions)) if video_captions else frozenset()
    return len(shown) == 1 and shown != asked


__all__ = ["mirror_caption", "mirror_for", "mirror_keypoints", "sides_of"]
