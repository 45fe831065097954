"""A turn "around" with no side named is written as a left turn (backend.generation.open_turn;
the pipeline side: tests/test_compose.py)."""
from __future__ import annotations

import pytest

from backend.generation.open_turn import open_turn_request


@pytest.mark.parametrize("text, opened", [
    ("a person turns around.", "a person turns left."),
    ("a person walks and turns around", "a person walks and turns left"),
    ("someone is turning around while walking.", "someone is turning left while walking."),
    ("a man walks and pivots around.", "a man walks and pivots left."),
    ("The person Turned Around slowly.", "The person Turned left slowly."),
])
def test_a_turn_around_with_no_side_becomes_a_left_turn(text, opened):
    assert open_turn_request(text) == opened
    assert open_turn_request(text, side="right") == opened.replace("left", "right")


@pytest.mark.parametrize("text", [
    "a person turns around to the right.",           # a side is named: as typed
    "someone turns around clockwise",
    "a person turns around in a circle.",            # the corpus's spins
    "a person turns around in place",
    "a dancer spins and turns around",
    "a person walks forward.",                       # no turn at all
    "a person swings his arms around while dancing",  # "around" is not a turn
    "a person turns left.",
])
def test_other_words_are_left_as_typed(text):
    assert open_turn_request(text) is None


def test_a_side_must_be_left_or_right():
    with pytest.raises(ValueError):
        open_turn_request("a person turns around", side="back")

