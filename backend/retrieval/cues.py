"""Word cues: what a caption says about side, direction, speed and repetitions, as a few exact
numbers beside its sentence embedding.

Why: MiniLM hardly separates the words retrieval is judged on. "kicks with the left leg" and
"kicks with the right leg" embed at cosine 0.98, "hops on the left foot three times" and its
right-foot twin at 0.99 (docs/lab-notebook.md, *Gemini-MVR retrieval*), so the predicate head sees nearly the
same input for a caption and its mirror image, while the keypoint encoder tells a video from its
mirror image easily (cosine 0.86 between them against about 0 between different videos). With
``RetrieverConfig.text_cues`` the predicate head also reads these cues, and mirrored training
pairs (``train retriever --mirror``) can teach it what they mean.

    word_cues(["a man turns left twice."]) -> (1, N_CUES) float32
    CUE_NAMES: left, right, backward, turning, forward, slow, fast, twice, three or more times
"""
from __future__ import annotations

import re

import numpy as np

from backend.retrieval.sides import direction_of, sides_of

CUE_NAMES = ("left", "right", "backward", "turning", "forward", "slow", "fast", "twice", "three+")
N_CUES = len(CUE_NAMES)

_SLOW = re.compile(r"\b(slow\w*|gentl\w*|careful\w*|leisurel\w*|stroll\w*)\b")
_FAST = re.compile(r"\b(fast\w*|quick\w*|rapid\w*|brisk\w*|hurr\w*|sprint\w*)\b")
_TWICE = re.compile(r"\b(twice|two times|2 times|a couple of times|double)\b")
_MORE = re.compile(r"\b(thrice|(three|four|five|six|seven|eight|nine|ten|several|multiple|many|\d+) times)\b")


def word_cues(texts: list[str]) -> np.ndarray:
    """(N, N_CUES) float32 indicators (0 or 1) of ``CUE_NAMES`` for each text."""
    out = np.zeros((len(texts), N_CUES), np.float32)
    for i, text in enumerate(texts):
        t = text.lower()
        sides = sides_of(t)
        out[i, 0] = "left" in sides
        out[i, 1] = "right" in sides
        d = direction_of(t)
        if d is not None:
            out[i, 2 + ("backward", "turning", "forward").index(d)] = 1.0
        out[i, 5] = bool(_SLOW.search(t))
        out[i, 6] = bool(_FAST.search(t))
        more = bool(_MORE.search(t))
        out[i, 8] = more
        out[i, 7] = bool(_TWICE.search(t)) and not more
    return out


__all__ = ["CUE_NAMES", "N_CUES", "word_cues"]
