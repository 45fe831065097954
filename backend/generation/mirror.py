"""Mirror variants: a part whose words ask left or right, also offered as its mirror image.

The motion LLM and the pose reader often write the asked motion turned the other way: a
cartwheel to the right for "a cartwheel to the left", a crawl that curves right (session 28: OOD
cartwheel direction followed 75 % of the time, crawl 44 %, real motion 88 % and 71 %). The mirror
image of a motion (x negated, left and right joints swapped) is the same motion, as plausible,
with every turn and every limb side swapped, so a part that asks a left/right turn or side gets
each of its samples' mirror images among its choices and the picker (which reads turn and side
too) chooses among all of them (``Picker.with_mirror``).

``mirror_codes`` is the copy: codes -> decoded joints -> mirrored -> features -> the tokenizer's
codes again (``tempo.recode``, the path the tempo copies take).
"""
from __future__ import annotations

import numpy as np

from backend.generation.tempo import recode
from motioncore.features import mirror_joints

LEFT_RIGHT = ("left", "right")


def mirror_codes(codes: np.ndarray, vqvae, normalizer, max_tokens: int | None = None) -> np.ndarray | None:
    """The tokenizer's codes of the mirror image of ``codes``'s motion, as many frames long
    (None when it is too short to encode)."""
    def mirrored(joints):
        return mirror_joints(np.concatenate([joints, joints[-1:]]))   # features lose one frame

    return recode(codes, mirrored, vqvae, normalizer, max_tokens)


def asks_left_or_right(asked: list[tuple[str, str, object]]) -> bool:
    """Whether what a part asks (``follow.asked_attributes`` triples) names a left or right turn
    or limb side: the parts a mirror image can help."""
    return any(a in ("direction", "side") and v in LEFT_RIGHT for a, _, v in asked)


__all__ = ["LEFT_RIGHT", "asks_left_or_right", "mirror_codes"]
