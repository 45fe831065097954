"""Prompts that ask for one motion after another: split them, write each part, join the parts.

Why: the motion LLM follows a prompt that names one motion far better than one that chains two
or three ("a person walks forward, then jumps twice, and finally kicks"). Measured on 250 test
prompts (README, *Composed prompts*): the kinds of one-motion prompts come out 85 % of the
time, the second motion of a two-motion prompt 64 %, the second of three 53 %; whatever a
prompt asks of a motion that is not there (its count, side, turn, speed) is lost with it. The
retrieved video has the same problem: the rank-1 video shows the asked kind for 93 % of
one-kind prompts and 31 % of "A, then B" prompts (*Where the kind is lost*).

So a prompt whose words say "then" is written part by part: ``split_prompt`` cuts it at the
connectors that mean *after that* (", then", "and then", "before", "followed by", "after
that", "afterwards", "next", "subsequently", "prior to", "after which", "finally") and gives
every part the prompt's subject, so each reads as a prompt of its own ("a man first walks
forward, then jumps twice" -> "a man walks forward." + "a man jumps twice."). Each part gets its
own retrieved video and is written by the LLM in one batch; the parts' motion tokens are joined
and decoded once, so the tokenizer's decoder blends the seams (its features are root velocities,
so the path continues where the previous part ended).

A bare "and" is never a cut: it joins two motions ("walks and jumps") as often as it describes
one ("spins and kicks" is a spin kick, "sits up and stands up" one get-up). Such prompts are
written whole, as before.

    split_prompt("someone starts by walking, and afterwards jumps twice.")
        -> ["someone walking.", "someone jumps twice."]
"""
from __future__ import annotations

import re

import numpy as np

MAX_PARTS = 4           # a longer chain is written as 4 parts (the rest joins the last one)
MIN_PART_WORDS = 1      # a part needs at least a verb

# connectors meaning "after that", longest first (a comma before any of them is part of it)
_CONNECTORS = [
    r",?\s+and\s+then\s+", r",\s*then\s*,?\s+", r"\s+then\s+",
    r",?\s+and\s+afterwards?\s*,?\s+", r",\s*afterwards?\s*,?\s+",
    r",?\s+and\s+next\s*,?\s+", r",\s*next\s*,?\s+",
    r",?\s+and\s+subsequently\s+", r",\s*subsequently\s+",
    r",?\s+and\s+finally\s*,?\s+", r",\s*finally\s*,?\s+",
    r",?\s+and\s+after\s+that\s*,?\s+", r",\s*after\s+that\s*,?\s+",
    r",\s*after\s+which\s*,?\s+",
    r",?\s+followed\s+by\s+", r",?\s+before\s+", r",?\s+prior\s+to\s+",
]
_CUT = re.compile("|".join(f"(?:{c})" for c in _CONNECTORS), re.IGNORECASE)

_SUBJECT = re.compile(
    r"^\s*((?:a|an|the|this|that|one|some)\s+(?:(?:young|old|tall|little|small)\s+)?[a-z]+"
    r"|someone|somebody|he|she|they|it|person|man|woman|people|i|you|we)\b", re.IGNORECASE)
_PRONOUN = re.compile(r"^\s*(he|she|they|it)\s+", re.IGNORECASE)
_LEAD_IN = re.compile(r"^(?:(?:is|are)\s+)?(?:(?:first|firstly|initially)\s+|"
                      r"(?:starts|start|begins|begin)\s+(?:off\s+)?(?:by\s+)?)?", re.IGNORECASE)
_TAIL = re.compile(r"[\s.!;,]+$")
DEFAULT_SUBJECT = "a person"


def _tidy(part: str) -> str:
    return _TAIL.sub("", part).strip()


def split_prompt(text: str, max_parts: int = MAX_PARTS) -> list[str]:
    """The prompt's parts, each a prompt of its own ending with a full stop; ``[text]``
    unchanged when it has no "after that" connector (see the module docstring)."""
    body = _tidy(text)
    pieces = [p for p in (_tidy(p) for p in _CUT.split(body)) if p]
    if len(pieces) < 2:
        return [text]
    if len(pieces) > max_parts:
        pieces = pieces[:max_parts - 1] + [", then ".join(pieces[max_parts - 1:])]
    m = _SUBJECT.match(pieces[0])
    subject = m.group(1) if m and m.group(1).lower() not in ("he", "she", "they", "it", "i", "you", "we") \
        else DEFAULT_SUBJECT
    rest0 = pieces[0][m.end():].strip() if m else pieces[0]
    first = _LEAD_IN.sub("", rest0).strip()
    if not first:
        return [text]
    parts = [f"{subject} {first}" if m else first]
    for p in pieces[1:]:
        p = _PRONOUN.sub("", p)
        p = _LEAD_IN.sub("", p).strip()
        if len(p.split()) < MIN_PART_WORDS:
            return [text]
        parts.append(f"{subject} {p}")
    return [p + "." for p in parts]




def split_prompts(texts: list[str], max_parts: int = MAX_PARTS) -> tuple[list[str], list[int]]:
    """Every text's parts in one flat list, and the index of the text each part came from."""
    parts, owners = [], []
    for i, text in enumerate(texts):
        for p in split_prompt(text, max_parts):
            parts.append(p)
            owners.append(i)
    return parts, owners


def join_parts(codes: list, owners: list[int], n: int) -> list[np.ndarray]:
    """The parts' motion codes joined per text, in order (``owners`` from ``split_prompts``)."""
    if len(codes) != len(owners):
        raise ValueError(f"{len(codes)} code sequences for {len(owners)} parts")
    out: list[list[np.ndarray]] = [[] for _ in range(n)]
    for o, c in zip(owners, codes):
        out[o].append(np.asarray(c, np.int64).reshape(-1))
    return [np.concatenate(p) if p else np.zeros(0, np.int64) for p in out]


def split_agreement(captions: list[str], segment_counts: list[int]) -> dict:
    """How often ``split_prompt`` cuts a caption into as many parts as its motion has segments
    (the corpus knows them): {"agree", "captions", "fewer", "more"} (shares but "captions")."""
    if len(captions) != len(segment_counts):
        raise ValueError(f"{len(captions)} captions for {len(segment_counts)} segment counts")
    n = np.array([len(split_prompt(c)) for c in captions])
    want = np.asarray(segment_counts)
    total = max(1, len(n))
    return {"agree": float((n == want).sum() / total), "fewer": float((n < want).sum() / total),
            "more": float((n > want).sum() / total), "captions": int(len(n))}


__all__ = ["MAX_PARTS", "join_parts", "split_agreement", "split_prompt", "split_prompts"]
