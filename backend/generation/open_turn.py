"""A turn whose words name no side is written as a turn to one side.

"a person walks forward and then turns around" is cut by ``split_prompt`` into a walk and "a
person turns around.". In the corpus's words a bare "turn around" says nothing the motion LLM can
act on: the walking turns it learnt ("walks and turns around", "turns around while walking") turn
left in some motions and right in others, and the spins say "turns around in a circle". Given
such words it wrote a straight walk or a double spin, and a walking turn in 1 of 3 samples (the
app example "walks forward and then turns around": the turn seen in 0 of 3; session 37). Given
"turns left" it writes a walking turn.

So a part whose words say "turn(s)/pivot(s) around" and name no side, no circle and no spin is
searched and written as "turns left" (``OPEN_TURN_SIDE``): users who say "turns around" rarely mind
which way. That is the corpus's form ("walks forward and then turns left", "turns left while
walking"); written "turns to the left", a form only "walks and turns to the left" uses, the bare
part drew kicks. ``GenerationResult.read_as`` shows the words written, ``open_turns`` why.
"""
from __future__ import annotations

import re

from backend.retrieval.sides import sides_of

OPEN_TURN_SIDE = "left"
_OPEN_TURN = re.compile(r"\b(turns?|turning|turned|pivots?|pivoting|pivoted)\s+around\b", re.IGNORECASE)
_NOT_WALKING = re.compile(r"\b(circles?|spin\w*|twirl\w*|pirouett\w*|rotat\w*|place)\b", re.IGNORECASE)


def open_turn_request(text: str, side: str = OPEN_TURN_SIDE) -> str | None:
    """``text`` with "<turn> ``side``" for its "<turn> around" when it asks a turn and
    names no side (nor a circle, a spin or turning in place), else None."""
    if side not in ("left", "right"):
        raise ValueError(f"side must be left or right, got {side!r}")
    if sides_of(text) or _NOT_WALKING.search(text):
        return None
    m = _OPEN_TURN.search(text)
    if m is None:
        return None
    return f"{text[:m.start()]}{m.group(1)} {side}{text[m.end():]}"


__all__ = ["OPEN_TURN_SIDE", "open_turn_request"]
