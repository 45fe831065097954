"""Previews made ahead of time: a playable MP4 and a thumbnail per database video, resumable,
one unreadable video reported without stopping the rest."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from backend.retrieval.videos.previews import prepare_previews, thumbnail_path
from viewer.render import write_mp4


class FakeDB:
    def __init__(self, root: Path, records: dict):
        self.root, self.records = root, records

    def record(self, vid):
        return self.records[vid]


class FakeRetriever:
    def __init__(self, root: Path, sources: dict):
        self.db = FakeDB(root, {v: {"kind": "user", "source": str(p)} for v, p in sources.items()})
        self.video_ids = list(sources)

    def video_path(self, vid):
        return Path(self.db.record(vid)["source"])


def test_prepare_previews_makes_keeps_and_reports(tmp_path):
    frames = np.zeros((10, 96, 128, 3), np.uint8)
    frames[:, 20:60, 30:70] = (200, 40, 40)
    (tmp_path / "in").mkdir()
    good = write_mp4(frames, tmp_path / "in" / "good.mp4", fps=10)
    bad = tmp_path / "in" / "bad.mp4"
    bad.write_bytes(b"not a video at all")
    r = FakeRetriever(tmp_path / "db", {"u1": good, "u2": bad})

    res = prepare_previews(r, progress=False)
    assert (res["videos"], res["made"], res["already_there"]) == (2, 1, 0)
    assert list(res["failed"]) == ["u2"]
    mp4, thumb = tmp_path / "db" / "media" / "u1.mp4", thumbnail_path(r, "u1")
    assert mp4.stat().st_size > 0
    with Image.open(thumb) as im:
        assert max(im.size) <= 192 and im.size[0] > im.size[1]      # the 4:3 frame, shrunk
    assert not (tmp_path / "db" / "media" / "u2.mp4").exists()     # nothing half-written
    assert not thumbnail_path(r, "u2").exists()

    before = mp4.stat().st_mtime_ns
    again = prepare_previews(r, ids=["u1"], progress=False)
    assert (again["made"], again["already_there"]) == (0, 1) and mp4.stat().st_mtime_ns == before
