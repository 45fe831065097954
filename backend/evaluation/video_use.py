"""Does a motion LLM read its video? Token loss under different videos for the same captions.

For held-out captions, the per-token cross-entropy of the ground-truth motion codes when the
prompt carries: the caption's rank-1 Gemini-MVR video (what users get), a random database video,
no video at all, and, where one exists (training motions, ``videos self``), the video of the
motion itself. A model that reads the video has a clearly lower loss with its own motion's video
than with the retrieved one, and a higher one with a random video; a model that ignores it has
the same loss under all of them. The "caption hidden" rows replace the caption by the neutral
``NEUTRAL_TEXT``: the gap between the motion's own video and a random one there is what the
model reads from the poses alone.
"""
from __future__ import annotations

import random

from backend.generation.motion_llm import NEUTRAL_TEXT
from backend.generation.train_llm import Example, VideoBank, validation_loss

MODES = ("retrieved", "random", "none", "self", "self, caption hidden", "random, caption hidden")


def video_use(model, examples: list[Example], retriever, self_retriever=None, seed: int = 0) -> dict:
    """{mode: {"loss": ..., "captions": n}} over ``examples`` (one caption per motion)."""
    rng = random.Random(seed)
    ids = list(retriever.db.ids)
    bank = VideoBank(retriever, self_retriever)
    out = {}
    variants = {
        "retrieved": [e for e in examples],
        "random": [Example(e.text, e.codes, rng.choice(ids), e.mid, True) for e in examples],
        "none": [Example(e.text, e.codes, None, e.mid) for e in examples],
    }
    if self_retriever is not None:
        own = [Example(e.text, e.codes, f"self-{e.mid}", e.mid) for e in examples
               if self_retriever.has_video(f"self-{e.mid}")]
        if own:
            variants["self"] = own
            mids = {e.mid for e in own}         # the same captions with their retrieved videos
            variants["retrieved (same captions as self)"] = [e for e in examples if e.mid in mids]
            variants["self, caption hidden"] = [Example(NEUTRAL_TEXT, e.codes, e.video_id, e.mid)
                                                for e in own]
            variants["random, caption hidden"] = [Example(NEUTRAL_TEXT, e.codes, rng.choice(ids),
                                                          e.mid, True) for e in own]
    for name, exs in variants.items():
        out[name] = {"loss": validation_loss(model, exs, bank), "captions": len(exs)}
    return out


def format_video_use(res: dict, title: str) -> str:
    lines = [title, f"{'video in the prompt':<36}{'captions':>9}{'token loss':>12}", "-" * 57]
    for name, r in res.items():
        lines.append(f"{name:<36}{r['captions']:>9}{r['loss']:>12.3f}")
    return "\n".join(lines)


__all__ = ["MODES", "format_video_use", "video_use"]
