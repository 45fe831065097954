"""Backward travel: a walk, run or crawl the words ask to go backwards, written forwards and
played in reverse.

No motion the generator learnt from travels backwards: the corpus's programs walk, run and crawl
forward only ("backward" in its captions belongs to backflips and backward somersaults), so "a
person walks backwards" came out as a forward walk (docs/lab-notebook.md, *Session 34's stack*), and the
tokenizer cannot even encode a backward walk (its codes decode as a forward one). A motion
played backwards in time keeps its poses, its path and its facing and travels that path the
other way: a forward walk becomes a walk backwards, its feet still planted where they were.

So a part whose words put a travelling verb before "backward(s)" (``backward_request``: "walks
backwards", "crawling slowly backward") is written with "forward" in its place, as the forward
motion the models know and the words they were trained on say it, and its stretch of the finished motion is then played in reverse
(``reverse_segment``), placed where the part began and facing as it faced, the parts after it
carried along. Its turns run the other way too (a path that curved left, walked backwards,
turns the body right), so a part that also names a left or right turn is mirrored as well
(``names_turn``). ``travel_along_facing`` measures the result: metres travelled along the body's
own facing, frame by frame (< 0 is backwards).
"""
from __future__ import annotations

import re

import numpy as np

from backend.retrieval.sides import direction_of, sides_of
from motioncore.features import facing_direction, mirror_joints
from motioncore.quat import qrot, qyaw

_BACKWARD_TRAVEL = re.compile(
    r"\b(?:walk|run|jog|crawl|creep|stroll|step|march|shuffl|mov|sprint|dash|wander|stagger|tiptoe)\w*"
    r"(?:\s+\w+){0,2}?\s+(backwards?)\b", re.IGNORECASE)


def backward_request(text: str) -> str | None:
    """``text`` with "forward" for its "backward(s)" when it asks a walk, run or crawl to go
    backwards (a travelling verb, then at most two words, then the word), else None."""
    m = _BACKWARD_TRAVEL.search(text)
    if m is None:
        return None
    a, b = m.span(1)
    return text[:a] + "forward" + text[b:]


def names_turn(text: str) -> bool:
    """Whether words name a left or right turn ("in a circle to the left", "turning right")."""
    return bool(sides_of(text)) and direction_of(text) == "turning"


def _yaw(joints: np.ndarray) -> float:
    f = facing_direction(joints)
    return float(np.arctan2(f[0], f[2]))


def _turned(joints: np.ndarray, angle: float, about: np.ndarray, to: np.ndarray) -> np.ndarray:
    """``joints`` turned by ``angle`` (radians, towards +x from +z) about the vertical through
    ``about`` (x, z), then moved so that point lands on ``to``."""
    shift = np.array([about[0], 0.0, about[1]]), np.array([to[0], 0.0, to[1]])
    q = np.broadcast_to(qyaw(angle), np.shape(joints)[:-1] + (4,))
    return qrot(q, np.asarray(joints, np.float64) - shift[0]) + shift[1]


def reverse_segment(joints: np.ndarray, start: int, end: int, mirror: bool = False) -> np.ndarray:
    """``joints`` (T, J, 3) with frames ``start:end`` played from last to first (mirrored too with
    ``mirror``), turned and moved so they begin where and facing as the original stretch began;
    the frames after it are carried along rigidly so that they follow on from its new end."""
    j = np.array(joints, dtype=np.float64, copy=True)
    start, end = max(0, int(start)), min(len(j), int(end))
    if end - start < 2:
        return j
    seg = j[start:end][::-1]
    if mirror:
        seg = mirror_joints(seg)
    seg = _turned(seg, _yaw(j[start]) - _yaw(seg[0]), seg[0, 0, [0, 2]], j[start, 0, [0, 2]])
    if end < len(j):            # what followed the stretch now follows its new last frame
        j[end:] = _turned(j[end:], _yaw(seg[-1]) - _yaw(j[end - 1]), j[end - 1, 0, [0, 2]], seg[-1, 0, [0, 2]])
    j[start:end] = seg
    return j


def travel_along_facing(joints: np.ndarray) -> float:
    """Metres the pelvis travels along the body's own facing, summed frame by frame (< 0:
    backwards; a path that curves still counts by where the body faced at each step)."""
    j = np.asarray(joints, np.float64)
    if len(j) < 2:
        return 0.0
    step = np.diff(j[:, 0], axis=0)
    step[:, 1] = 0.0
    return float(np.sum(step * facing_direction(j[:-1])))


__all__ = ["backward_request", "names_turn", "reverse_segment", "travel_along_facing"]
