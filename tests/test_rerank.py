"""Cue re-ranking: the words' exact side, direction, speed and count against the videos' captions."""
from __future__ import annotations

import numpy as np

from backend.retrieval.evaluate import reranked_scores
from backend.retrieval.rerank import (agreement, attribute_cues, merge_cues, rerank, stated_cues, text_cues,
                                     video_cues)


def test_text_cues_read_side_direction_speed_and_count():
    assert text_cues("a man kicks with his left leg").tolist() == [1, 0, 0, 1]
    assert text_cues("someone spins clockwise quickly twice").tolist() == [2, 2, 2, 2]
    assert text_cues("a person walks backwards slowly").tolist() == [0, 1, 1, 1]
    assert text_cues("a figure jumps forward thrice").tolist() == [0, 3, 0, 3]
    assert text_cues("she punches with the left and the right hand").tolist()[0] == 3
    assert attribute_cues([]).shape == (0, 4)


def test_video_cues_take_the_captions_majority_and_mark_unknown_videos():
    caps = [["a man kicks with the left leg twice", "a woman kicks twice with her left foot",
             "someone does a left kick"], []]
    v = video_cues(caps)
    assert v[0].tolist() == [1, 0, 0, 2]            # two of three captions say twice
    assert v[1].tolist() == [-1, -1, -1, -1]


def test_agreement_counts_named_cues_and_once_by_default():
    q = attribute_cues(["someone does a backflip", "a man kicks with his left leg twice"])
    v = video_cues([["a man does a backflip"], ["a man does a backflip three times"],
                    ["a woman kicks with her right leg twice"], []])
    a = agreement(q, v)
    # a backflip prompt names no side, speed or direction: only the count (once) is judged
    assert a[0].tolist() == [1.0, -1.0, -1.0, 0.0]
    # left + twice: the right-leg video agrees on the count, not the side
    assert a[1, 2] == 0.0 and a[1, 3] == 0.0


def test_rerank_raises_an_agreeing_video_over_a_slightly_better_score():
    assert rerank(np.array([0.80, 0.78, 0.70]), np.array([-1.0, 1.0, 4.0]), 0.02).tolist() == [1, 0, 2]
    assert rerank(np.array([0.80, 0.78]), np.array([-1.0, 1.0]), 0.0).tolist() == [0, 1]
    assert rerank(np.array([0.5, 0.5]), np.array([0.0, 0.0])).tolist() == [0, 1]      # stable


def test_reranked_scores_touch_only_the_best_videos():
    fused = np.array([[0.9, 0.8, 0.1]])
    caps = [["a man kicks twice"], ["a man kicks"], ["a man kicks"]]
    out = reranked_scores(fused, ["a man kicks"], caps, weight=0.2, depth=2)
    assert out.argmax(1).tolist() == [1]                  # the once-kick video wins
    assert out[0, 2] == 0.1                               # beyond the depth: unchanged


def test_stated_cues_fill_only_what_the_words_name_nothing_in():
    assert stated_cues().tolist() == [-1, -1, -1, -1]
    assert stated_cues("slow", 2).tolist() == [-1, -1, 1, 2]
    assert stated_cues("fast", 5).tolist() == [-1, -1, 2, 3] and stated_cues("normal", None).tolist() == [-1] * 4
    words = attribute_cues(["a man crawls unhurriedly a couple of times.",    # no cue word the lists know
                            "a man crawls quickly twice.",                    # the words name both
                            "a man does a cartwheel once."])                  # "once" reads as no count word
    stated = np.stack([stated_cues("slow", 2), stated_cues("slow", 3), stated_cues(None, 2)])
    merged = merge_cues(words, stated)
    assert merged[0].tolist() == [0, 0, 1, 2]
    assert merged[1].tolist() == words[1].tolist() == [0, 0, 2, 2]            # the words win
    assert merged[2].tolist() == [0, 0, 0, 2]
    assert merge_cues(words, np.full((3, 4), -1)).tolist() == words.tolist()
