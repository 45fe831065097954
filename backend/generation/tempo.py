"""Tempo variants: a motion the words ask to be slow or fast, also played slower or faster.

The motion LLM and the pose reader write each kind at the pace they learned; words such as
"slowly" or "hastily" change that pace less often than they change anything else (session 23:
the speed asked was followed 44 % of the time on the OOD prompts, real motion 71 %). Playing a
sampled motion ``factor`` times as long keeps its poses, path and count and changes only its
pace, so a part that asks a speed gets such a copy of each of its samples and the picker (which
reads the speed too) chooses among all of them (``Picker.with_tempo``).

``stretch_codes`` is the copy: codes -> decoded features -> joints resampled in time -> features
-> the tokenizer's codes again (the same path ``train_pose_reader.stretched_codes`` takes for the
database's motions).
"""
from __future__ import annotations

import numpy as np
import torch

from motioncore.features import features_to_joints, joints_to_features, resample
from motioncore.skeleton import FPS

TEMPO = {"slow": 1.33, "fast": 0.75}
"""How many times as long a part's motion plays for the speed its words ask (the pose reader's
tempo drafts use the same factors)."""


@torch.no_grad()
def recode(codes: np.ndarray, edit, vqvae, normalizer, max_tokens: int | None = None) -> np.ndarray | None:
    """``codes`` decoded to joints, ``edit(joints) -> joints`` (None: no copy), features again
    and the tokenizer's codes again (the copies ``stretch_codes`` and
    ``backend.generation.mirror.mirror_codes`` make); None when there is nothing to encode or the
    result is shorter than 2 tokens' worth of frames. ``max_tokens``: longer results are cut."""
    codes = np.asarray(codes, np.int64)
    if len(codes) < 1:
        return None
    feats = normalizer.denormalize(vqvae.decode(torch.from_numpy(codes)[None])[0].numpy())
    joints = features_to_joints(feats)
    if len(joints) < 2:
        return None
    edited = edit(joints)
    if edited is None:
        return None
    g = joints_to_features(np.asarray(edited, np.float32))
    down = vqvae.config.downsample
    g = g[: len(g) // down * down]
    if len(g) < 2 * down:
        return None
    x = torch.from_numpy(normalizer.normalize(g).astype(np.float32))[None]
    out = vqvae.encode(x)[0].numpy().astype(np.int64)
    return out[:max_tokens] if max_tokens else out


def stretch_codes(codes: np.ndarray, factor: float, vqvae, normalizer,
                  max_tokens: int | None = None) -> np.ndarray | None:
    """``codes`` decoded, played ``factor`` times as long and encoded again; None when the
    result is too short to encode (fewer than 2 tokens' worth of frames) or ``factor`` is 1.
    ``max_tokens``: longer results are cut to that many tokens."""
    factor = float(factor)
    if not factor > 0:
        raise ValueError(f"factor must be positive, got {factor}")
    if factor == 1.0:
        return None
    return recode(codes, lambda j: resample(j, FPS / factor, FPS), vqvae, normalizer, max_tokens)


__all__ = ["TEMPO", "recode", "stretch_codes"]
