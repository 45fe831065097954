"""Re-ranking the top videos by what the words and the videos' captions say exactly.

Why: the learned scores rank videos of the right *kind* well (93 % of one-kind prompts), but the
exact attributes the words ask are decided by small score differences: "someone does a backflip"
put videos of two and three backflips first, "kicks with the left leg" sometimes the right one
(docs/lab-notebook.md, *Gemini-MVR retrieval*). The database's own videos come with captions, and a caption's
words say those attributes exactly: side (left / right; clockwise = right), direction (backward,
turning, forward), speed (slow / fast) and count (once, twice, three or more; no count word =
once). So among the ``depth`` best videos each cue the query names adds ``weight`` to a video
whose captions agree and takes it from one whose captions disagree; the order of the rest is the
learned one. A video without captions (a user's own) is neither raised nor lowered.

    cues = attribute_cues(["a man kicks twice with his left leg"])   # (N, 4) int codes
    bonus = agreement(query_cues, video_cues)                        # (Q, N) in [-4, 4]

Chained prompts ("A, then B"; ``motioncore.prompt.split_prompt``) ask for a video that shows
every motion they name, and the learned scores find one for only 31 % of them (one-motion
prompts: 93 %; docs/lab-notebook.md, *Chain re-ranking*): the sentence embedding of a chain is dominated by one of
its motions. Each part alone is ranked well, so each part's kind is read off its own best videos
(``part_kind``: a vote over their kinds, as the database records them) and the chain's
``CHAIN_DEPTH`` best videos are re-ranked by the share of those kinds each one shows
(``kind_agreement``, in [-1, 1]; 0 for a video whose kinds are not recorded).
"""
from __future__ import annotations

from collections import Counter

import numpy as np

from backend.retrieval.cues import CUE_NAMES, word_cues

GROUPS = ("side", "direction", "speed", "count")
RERANK_DEPTH = 20           # the best videos re-ranked (the rest keep the learned order)
RERANK_WEIGHT = 0.06        # score added per agreeing cue (chosen on the training queries: README)
CHAIN_DEPTH = 50            # a chained prompt's best videos re-ranked by the kinds of its parts
CHAIN_WEIGHT = 0.2          # score added to a video showing every part's kind (chosen on the training queries)
PART_VOTES = 5              # a part's best videos that vote on its kind
KIND_TEXT_WEIGHT = 1.0      # a kind reader's probabilities beside the videos' votes (equal weight, not tuned)
READ_WEIGHT = 0.5           # CHAIN_WEIGHT when kinds are read from the words too (kind_reader.py; chosen on the training queries)
_C = {name: i for i, name in enumerate(CUE_NAMES)}


def attribute_cues(texts: list[str]) -> np.ndarray:
    """(N, 4) codes per text, read off ``word_cues``: side (0 none, 1 left, 2 right, 3 both),
    direction (0 none, 1 backward, 2 turning, 3 forward), speed (0 normal or both words, 1 slow,
    2 fast), count (1 = no count word, 2 = twice, 3 = three or more)."""
    w = word_cues(list(texts)).astype(np.int64).reshape(len(texts), len(CUE_NAMES))
    side = w[:, _C["left"]] + 2 * w[:, _C["right"]]
    direction = np.select([w[:, _C["backward"]] == 1, w[:, _C["turning"]] == 1, w[:, _C["forward"]] == 1],
                          [1, 2, 3], 0)
    slow, fast = w[:, _C["slow"]], w[:, _C["fast"]]
    speed = np.where(slow == fast, 0, np.where(slow == 1, 1, 2))
    count = np.where(w[:, _C["three+"]] == 1, 3, np.where(w[:, _C["twice"]] == 1, 2, 1))
    return np.stack([side, direction, speed, count], 1).astype(np.int64)


def text_cues(text: str) -> np.ndarray:
    """(4,) ``attribute_cues`` of one text."""
    return attribute_cues([text])[0]


def video_cues(captions: list[list[str]]) -> np.ndarray:
    """(N, 4) codes of videos from their captions: each group's most common code among the
    captions; -1 (unknown) for a video without captions."""
    out = np.full((len(captions), 4), -1, np.int64)
    for i, caps in enumerate(captions):
        if caps:
            c = attribute_cues(list(caps))
            out[i] = [Counter(c[:, g].tolist()).most_common(1)[0][0] for g in range(4)]
    return out


def stated_cues(speed: str | None = None, reps: int | None = None) -> np.ndarray:
    """(4,) codes of what a reading of the words states (``attribute_cues``' codes; -1 where it
    states nothing): ``speed`` "slow"/"fast" ("normal" or None: nothing), ``reps`` 1, 2 or 3+."""
    out = np.full(4, -1, np.int64)
    if speed in ("slow", "fast"):
        out[2] = 1 if speed == "slow" else 2
    if reps is not None and int(reps) >= 1:
        out[3] = min(int(reps), 3)
    return out


def merge_cues(words: np.ndarray, stated: np.ndarray) -> np.ndarray:
    """``words`` (Q, 4) codes from the words' cue words, with each group they name nothing in
    (side, direction, speed: 0; count: 1, no count word) taken from ``stated`` (Q, 4; -1: nothing
    stated), e.g. a reading of words the cue lists miss ("unhurriedly", "a couple of times")."""
    words, stated = np.asarray(words, np.int64), np.asarray(stated, np.int64)
    silent = words == 0
    silent[:, 3] = words[:, 3] == 1
    return np.where(silent & (stated >= 0), stated, words)


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


def part_kind(kind_sets: list, read: dict | None = None, read_weight: float = KIND_TEXT_WEIGHT) -> str | None:
    """The motion kind a part asks for, from its best videos (best first; each a set of kinds,
    or None / empty when not recorded) and, given, ``read``: {kind: probability} of its words
    (``kind_reader.KindReader.read``). Each video votes 1 / rank, shared evenly among its kinds;
    the votes are scaled to sum to 1 and ``read_weight`` x ``read`` is added. None when nothing
    votes. Ties go to the kind of the better-ranked video, then alphabetically."""
    votes: dict[str, float] = {}
    first: dict[str, int] = {}
    for rank, kinds in enumerate(kind_sets, 1):
        for k in kinds or ():
            votes[k] = votes.get(k, 0.0) + 1.0 / (rank * len(kinds))
            first.setdefault(k, rank)
    total = sum(votes.values())
    votes = {k: v / total for k, v in votes.items()}
    for k, p in (read or {}).items():
        if p > 0:
            votes[k] = votes.get(k, 0.0) + read_weight * float(p)
    return min(votes, key=lambda k: (-round(votes[k], 9), first.get(k, len(kind_sets) + 1), k)) if votes else None


def kind_agreement(part_kinds: list, video_kinds: list) -> np.ndarray:
    """(N,) per video: 2 x the share of ``part_kinds`` (one per part; None = unread, skipped)
    that its kinds contain, minus 1, so a video showing every part's kind scores +1 and one
    showing none -1; 0 for a video whose kinds are not recorded (None or empty) or when no part
    kind was read."""
    asked = {k for k in part_kinds if k}
    out = np.zeros(len(video_kinds))
    if not asked:
        return out
    for i, kinds in enumerate(video_kinds):
        if kinds:
            out[i] = 2.0 * len(asked & set(kinds)) / len(asked) - 1.0
    return out


__all__ = ["CHAIN_DEPTH", "CHAIN_WEIGHT", "GROUPS", "KIND_TEXT_WEIGHT", "READ_WEIGHT", "PART_VOTES", "RERANK_DEPTH", "RERANK_WEIGHT",
           "agreement", "kind_agreement", "part_kind", "attribute_cues", "merge_cues",
           "rerank", "stated_cues", "text_cues", "video_cues"]
