"""Prompts that ask for one motion after another: split them, write each part, join the parts.

Why: the motion LLM follows a prompt that names one motion far better than one that chains two
or three ("a person walks forward, then jumps twice, and finally kicks"). Measured on 250 test
prompts (docs/lab-notebook.md, *Composed prompts*): the kinds of one-motion prompts come out 85 % of the
time, the second motion of a two-motion prompt 64 %, the second of three 53 %; whatever a
prompt asks of a motion that is not there (its count, side, turn, speed) is lost with it. The
retrieved video has the same problem: the rank-1 video shows the asked kind for 93 % of
one-kind prompts and 31 % of "A, then B" prompts (*Where the kind is lost*).

So a prompt whose words say "then" is written part by part: ``motioncore.prompt.split_prompt``
cuts it into parts that each read as a prompt of its own (a bare "and" is never a cut: such
prompts are written whole, as before). Each part gets its own retrieved video and is written by
the LLM in one batch; ``join_parts`` joins the parts' motion codes, which are decoded once, so
the tokenizer's decoder blends the seams (its features are root velocities, so the path
continues where the previous part ended).

    parts, owners = split_prompts(texts)          # motioncore.prompt
    codes = llm.generate(parts, videos_of(parts))
    joined = join_parts(codes, owners, len(texts))
"""
from __future__ import annotations

import numpy as np


def join_parts(codes: list, owners: list[int], n: int) -> list[np.ndarray]:
    """The parts' motion codes joined per text, in order (``owners`` from ``split_prompts``)."""
    if len(codes) != len(owners):
        raise ValueError(f"{len(codes)} code sequences for {len(owners)} parts")
    out: list[list[np.ndarray]] = [[] for _ in range(n)]
    for o, c in zip(owners, codes):
        out[o].append(np.asarray(c, np.int64).reshape(-1))
    return [np.concatenate(p) if p else np.zeros(0, np.int64) for p in out]


__all__ = ["join_parts"]
