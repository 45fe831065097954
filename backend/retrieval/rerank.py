"""Re-ranking the top videos by what the words and the videos' captions say exactly.

Why: the learned scores rank videos of the right *kind* well (93 % of one-kind prompts), but the
exact attributes the words ask are decided by small score differences: "someone does a backflip"
put videos of two and three backflips first, "kicks with the left leg" sometimes the right one
(README, *Gemini-MVR retrieval*). The database's own videos come with captions, and a caption's
words say those attributes exactly: side (left / right; clockwise = right), direction (backward,
turning, forward), speed (slow / fast) and count (once, twice, three or more; no count word =
once). So among the ``depth`` best videos each cue the query names adds ``weight`` to a video
whose captions agree and takes it from one whose captions disagree; the order of the rest is the
learned one. A video without captions (a user's own) is neither raised nor lowered.

    cues = attribute_cues(["a man kicks twice with his left leg"])   # (N, 4) int codes
    bonus = agreement(query_cues, video_cues)                        # (Q, N) in [-4, 4]
"""
from __future__ import annotations

import re
from collections import Counter

import numpy as np

from backend.retrieval.cues import _FAST, _MORE, _SLOW, _TWICE
from backend.retrieval.sides import direction_of, sides_of

GROUPS = ("side", "direction", "speed", "count")
RERANK_DEPTH = 20           # the best videos re-ranked (the rest keep the learned order)
RERANK_WEIGHT = 0.06        # score added per agreeing cue (chosen on the training queries: README)
_ONCE = re.compile(r"\b(once|one time|a single)\b")

_SIDES = {frozenset(): 0, frozenset({"left"}): 1, frozenset({"right"}): 2, frozenset({"left", "right"}): 3}
_DIRS = {None: 0, "backward": 1, "turning": 2, "forward": 3}


def _speed(t: str) -> int:
    slow, fast = bool(_SLOW.search(t)), bool(_FAST.search(t))
    return 0 if slow == fast else 1 if slow else 2


def _count(t: str) -> int:
    """1 (no count word or "once"), 2, or 3 (three or more)."""
    if _MORE.search(t):
        return 3
    if _TWICE.search(t):
        return 2
    return 1


def text_cues(text: str) -> np.ndarray:
    """(4,) codes of one text: side (0 none, 1 left, 2 right, 3 both), direction (0 none, 1
    backward, 2 turning, 3 forward), speed (0 normal, 1 slow, 2 fast), count (1, 2, 3+)."""
    t = text.lower()
    return np.array([_SIDES[sides_of(t)], _DIRS[direction_of(t)], _speed(t), _count(t)], np.int64)


def attribute_cues(texts: list[str]) -> np.ndarray:
    """(N, 4) ``text_cues`` of each text."""
    return np.stack([text_cues(t) for t in texts]) if texts else np.zeros((0, 4), np.int64)


def video_cues(captions: list[list[str]]) -> np.ndarray:
    """(N, 4) codes of videos from their captions: each group's most common code among the
    captions; -1 (unknown) for a video without captions."""
    out = np.full((len(captions), 4), -1, np.int64)
    for i, caps in enumerate(captions):
        if caps:
            c = attribute_cues(list(caps))
            out[i] = [Counter(c[:, g].tolist()).most_common(1)[0][0] for g in range(4)]
    return out


def agreement(query: np.ndarray, videos: np.ndarray) -> np.ndarray:
    """(Q, N): over the groups a query names (side, direction, speed: a non-zero code; count:
    always, since no count word means once), +1 where the video's code is the same, -1 where it
    differs; 0 for unknown videos (-1 codes)."""
    q, v = query[:, None, :], videos[None, :, :]
    named = q != 0
    named[..., 3] = True
    known = v >= 0
    return np.where(named & known, np.where(q == v, 1.0, -1.0), 0.0).sum(-1)


def rerank(scores: np.ndarray, bonus: np.ndarray, weight: float = RERANK_WEIGHT) -> np.ndarray:
    """Order (best first) of candidates with learned ``scores`` after adding ``weight`` x
    ``bonus`` (both (N,)); stable for ties."""
    return np.argsort(-(np.asarray(scores, np.float64) + weight * np.asarray(bonus)), kind="stable")


__all__ = ["GROUPS", "RERANK_DEPTH", "RERANK_WEIGHT", "agreement", "attribute_cues", "rerank",
           "text_cues", "video_cues"]
