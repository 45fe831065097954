"""eval video-reading (backend/evaluation/video_reading.py): database videos as questions with answers."""
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from backend.checkpoints import checkpoints_dir
from backend.data.video_motions import N_IN_DIST, video_motion
from backend.evaluation.checker import InstructionChecker
from backend.evaluation.video_reading import database_questions, format_video_reading, video_reading
from backend.generation.motion_llm import NEUTRAL_TEXT
from motioncore.features import joints_to_features


def _record(i, split, ood):
    return {"id": f"v{i}", "source": "synthetic", "spec": {"index": i, "ood": ood, "split": split}}


class _Retriever:
    """Six database videos: three OOD-kind test videos, one in-distribution test video, one
    train video and an upload (no known motion)."""

    def __init__(self):
        recs = [_record(N_IN_DIST + 1, "test", True), _record(N_IN_DIST + 2, "test", True),
                _record(N_IN_DIST + 3, "test", True), _record(5, "test", False), _record(6, "train", False),
                {"id": "up", "source": "upload", "spec": {"split": "test"}}]
        self.db = SimpleNamespace(ids=[r["id"] for r in recs], record={r["id"]: r for r in recs}.__getitem__)

    def video_prior(self, vid):
        return SimpleNamespace(vid=vid)


class _LLM:
    """Writes "code" = the database index of the video it is shown (``echo``), or always the
    first question's (a model that ignores its video)."""

    def __init__(self, echo: bool):
        self.echo, self.texts = echo, []

    def generate(self, texts, videos, **kw):
        self.texts += list(texts)
        first = N_IN_DIST + 1
        return [np.array([int(v.vid[1:]) if self.echo else first]) for v in videos]


class _VQ:
    """Decodes code i to the features of database motion i (normalizer: identity)."""

    def decode(self, codes):
        i = int(codes[0, 0])
        f = joints_to_features(video_motion(i, i >= N_IN_DIST)[0])
        return torch.from_numpy(f)[None]


def test_database_questions_are_the_videos_of_a_split_with_known_motions():
    r = _Retriever()
    assert [q[0] for q in database_questions(r, "test")] == [f"v{N_IN_DIST + k}" for k in (1, 2, 3)] + ["v5"]
    assert [q[0] for q in database_questions(r, "test", ood_only=True)] == [f"v{N_IN_DIST + k}" for k in (1, 2, 3)]
    vid, feats, segs = database_questions(r, "train")[0]
    assert vid == "v6" and feats.shape[1] == 263 and segs == video_motion(6, False)[1]
    with pytest.raises(ValueError, match="samples must be >= 1"):
        video_reading(_LLM(True), _VQ(), None, r, None, samples=0)
    with pytest.raises(ValueError, match="no database video"):
        video_reading(_LLM(True), _VQ(), SimpleNamespace(denormalize=lambda x: x), SimpleNamespace(
            db=SimpleNamespace(ids=[], record=None)), None)


def test_a_model_that_writes_what_it_sees_scores_as_the_database_and_one_that_ignores_it_lower():
    checker = InstructionChecker.from_pretrained(checkpoints_dir() / "checker")
    norm = SimpleNamespace(denormalize=lambda x: x)
    echo = _LLM(True)
    good = video_reading(echo, _VQ(), norm, _Retriever(), checker, "test", ood_only=True, samples=2)
    assert set(echo.texts) == {NEUTRAL_TEXT} and len(echo.texts) == 6     # 3 videos x 2 samples
    assert good["questions"] == 3 and good["samples"] == 2
    db, gen = good["database motion"], good["generated"]
    assert gen["attributes"] == 2 * db["attributes"]
    assert abs(gen["followed"] - db["followed"]) <= 0.2        # only the clean-up step differs
    blind = video_reading(_LLM(False), _VQ(), norm, _Retriever(), checker, "test", ood_only=True)
    kinds = {video_motion(N_IN_DIST + k, True)[1][0]["action"] for k in (1, 2, 3)}
    assert kinds == {"roll", "crawl"}                           # the blind model writes the roll only
    assert blind["generated"]["kind/crawl"]["share"] < db["kind/crawl"]["share"]
    table = format_video_reading(good, "t")
    assert "database motion" in table and all(k in table for k in kinds)
