"""Checking and tidying a user's text prompt, and cutting one that chains motions into parts
(shared by retrieval, generation and the app).

``split_prompt`` cuts a prompt at the connectors that mean *after that* (", then", "and then",
"before", "followed by", "after that", "afterwards", "next", "subsequently", "prior to", "after
which", "finally") and gives every part the prompt's subject, so each reads as a prompt of its
own ("a man first walks forward, then jumps twice" -> "a man walks forward." + "a man jumps
twice."). A bare "and" is never a cut: it joins two motions ("walks and jumps") as often as it
describes one ("spins and kicks" is a spin kick, "sits up and stands up" one get-up). Why the
generator and the retriever want parts: ``backend/generation/compose.py``.

    split_prompt("someone starts by walking, and afterwards jumps twice.")
        -> ["someone walking.", "someone jumps twice."]
"""
from __future__ import annotations

import re
import unicodedata

import numpy as np

MAX_PROMPT_CHARS = 500      # longer prompts are cut at a word boundary (motion captions are short)


class PromptError(ValueError):
    """The prompt cannot be used (empty, not text)."""


def clean_prompt(text, max_chars: int | None = MAX_PROMPT_CHARS) -> str:
    """Unicode NFC, whitespace collapsed, control characters removed, cut to ``max_chars``
    (None: no cut) at a word boundary. Any script and emoji are kept. Raises PromptError for
    non-strings and for prompts with no visible character."""
    if not isinstance(text, str):
        raise PromptError(f"the prompt must be text, got {type(text).__name__}")
    text = unicodedata.normalize("NFC", text)
    # drop control characters (Cc) only: format characters such as the zero-width joiner hold
    # emoji sequences (🤸‍♀️) together
    text = "".join(ch for ch in text if unicodedata.category(ch) != "Cc" or ch in "\t\n")
    text = re.sub(r"\s+", " ", text).strip()
    if not any(unicodedata.category(ch)[0] not in "CZ" for ch in text):   # only invisible ones
        text = ""
    if not text:
        raise PromptError("the prompt is empty: describe a motion, e.g. \"a person does a cartwheel\"")
    if max_chars is not None and len(text) > max_chars:
        cut = text[:max_chars]
        space = cut.rfind(" ")
        text = (cut[:space] if space > max_chars // 2 else cut).rstrip()
    return text


def is_truncated(original: str, cleaned: str) -> bool:
    """Whether ``clean_prompt`` cut the text (not merely tidied whitespace/control chars)."""
    try:
        return clean_prompt(original, max_chars=None) != cleaned
    except PromptError:
        return False


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


def as_sentence(text: str) -> str:
    """``text`` ending with sentence punctuation (a full stop added where it has none), as every
    training caption ends: the embedded motion LLM wrote two jumps for "a person jumps three
    times" in 4 of 4 samples and three for the same words with a full stop (session 19)."""
    text = text.rstrip()
    return text if not text or text[-1] in ".!?" else text + "."


__all__ = ["MAX_PARTS", "MAX_PROMPT_CHARS", "PromptError", "as_sentence", "clean_prompt", "is_truncated", "split_agreement",
           "split_prompt", "split_prompts"]
