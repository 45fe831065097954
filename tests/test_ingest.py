"""Video ingestion: bad files are skipped and reported, an interrupted run resumes without
duplicates, identical files are stored once, and the database files stay consistent.

The pose/video models are replaced by a cheap stand-in (``fake_analyse``) so these tests
exercise our code (decode, map, shards, merge, atomic writes); the real models are covered in
``test_video_perception.py`` and by the end-to-end test at the bottom."""
import json
import os
from functools import partial

import imageio.v3 as iio
import numpy as np
import pytest

from backend.retrieval.videos.database import DatabaseError, VideoDatabase
from backend.retrieval.videos.ingest import (IngestConfig, find_videos, index_folder, ingest_file,
                                             merge, run_ingestion)


def fake_analyse(frames, cfg):
    """Keypoints/features derived from pixels; dark videos have 'no person'."""
    m = frames.reshape(len(frames), -1).mean(1) / 255.0
    kp = np.repeat(m[:, None, None], 17, 1).repeat(3, 2).astype(np.float32)
    obj = np.full(1024, m.mean(), np.float32)
    return kp, obj, 1.0 if m.mean() > 0.1 else 0.0


def write_video(path, shade: int, n: int = 24, size=(48, 64)):
    frames = np.full((n, *size, 3), shade, np.uint8)
    frames[:, :8, :8] = np.arange(n)[:, None, None, None] * 5 % 255   # moving content
    iio.imwrite(path, frames, fps=20, codec="libx264", macro_block_size=1)


@pytest.fixture
def video_folder(tmp_path):
    d = tmp_path / "videos"
    (d / "sub").mkdir(parents=True)
    for i, shade in enumerate((120, 160, 200)):
        write_video(d / f"clip{i}.mp4", shade)
    write_video(d / "sub" / "dark.mp4", 5)                       # no person
    (d / "broken.mp4").write_bytes(os.urandom(3000))             # corrupt
    (d / "empty.avi").write_bytes(b"")                           # empty
    (d / "notes.txt").write_text("not a video")                  # ignored (not a video name)
    return d


def test_find_videos(video_folder):
    names = sorted(p.name for p in find_videos(video_folder))
    assert names == ["broken.mp4", "clip0.mp4", "clip1.mp4", "clip2.mp4", "dark.mp4", "empty.avi"]
    with pytest.raises(FileNotFoundError):
        find_videos(video_folder / "nope")


def test_bad_videos_are_skipped_and_reported(video_folder, tmp_path):
    db_dir = tmp_path / "db"
    rep = index_folder(video_folder, db_dir, progress=False, analyse=fake_analyse)
    assert rep.added == 3 and rep.total == 3
    reasons = {os.path.basename(s["source"]): s["reason"] for s in rep.skipped}
    assert set(reasons) == {"broken.mp4", "empty.avi", "dark.mp4"}
    assert "unreadable" in reasons["broken.mp4"] and "no person" in reasons["dark.mp4"]
    db = VideoDatabase.load(db_dir)
    assert db.keypoints.shape == (3, 16, 17, 3) and db.object.shape == (3, 1024)
    assert [r["id"].split("-")[0] for r in db.records] == ["clip0", "clip1", "clip2"]
    assert all(r["n_frames"] == 24 for r in db.records)
    assert not list((db_dir / "shards").glob("*"))              # merged and cleaned up
    skipped = [json.loads(x) for x in (db_dir / "skipped.jsonl").read_text().splitlines()]
    assert len(skipped) == 3
    # a second run adds nothing and does not retry the bad files
    rep2 = index_folder(video_folder, db_dir, progress=False, analyse=fake_analyse)
    assert rep2.added == 0 and rep2.already == 6 and len(VideoDatabase.load(db_dir)) == 3


def test_duplicate_files_are_stored_once(video_folder, tmp_path):
    (video_folder / "copy.mp4").write_bytes((video_folder / "clip1.mp4").read_bytes())
    rep = index_folder(video_folder, tmp_path / "db", progress=False, analyse=fake_analyse)
    assert rep.total == 3


class Interrupt(Exception):
    pass


def test_interrupted_run_resumes_without_duplicates(video_folder, tmp_path):
    db_dir = tmp_path / "db"
    calls = {"n": 0}

    def flaky(frames, cfg):
        calls["n"] += 1
        if calls["n"] == 3:
            raise Interrupt("power cut")
        return fake_analyse(frames, cfg)

    with pytest.raises(Interrupt):
        index_folder(video_folder, db_dir, progress=False, analyse=flaky)
    # broken.mp4 (skipped), clip0 and clip1 were finished before the cut (in sorted order) and
    # wait as shards; nothing is merged yet
    assert len(list((db_dir / "shards").glob("*.npz"))) == 3
    assert len(VideoDatabase.open(db_dir)) == 0
    calls["n"] = -100
    rep = index_folder(video_folder, db_dir, progress=False, analyse=flaky)
    db = VideoDatabase.load(db_dir)
    assert len(db) == 3 and len({r["key"] for r in db.records}) == 3
    assert rep.total == 3
    # only clip2 and dark.mp4 were analysed again (empty.avi fails in decoding)
    assert calls["n"] == -100 + 2


def test_torn_shard_is_redone(video_folder, tmp_path):
    db_dir = tmp_path / "db"
    (db_dir / "shards").mkdir(parents=True)
    (db_dir / "shards" / "deadbeef.npz").write_bytes(b"PK\x03\x04 torn")
    rep = index_folder(video_folder, db_dir, progress=False, analyse=fake_analyse)
    assert rep.total == 3 and not (db_dir / "shards" / "deadbeef.npz").exists()


def test_ingest_file_never_raises_on_bad_input(tmp_path):
    res = ingest_file(str(tmp_path / "missing.mp4"), analyse=fake_analyse)
    assert not res.ok and "cannot read" in res.skipped


def test_database_load_errors(tmp_path):
    with pytest.raises(DatabaseError):
        VideoDatabase.load(tmp_path)
    (tmp_path / "videos.jsonl").write_text('{"id": "a", "key": "k"}\n')
    np.save(tmp_path / "keypoints.npy", np.zeros((2, 16, 17, 3), np.float16))
    np.save(tmp_path / "object.npy", np.zeros((2, 1024), np.float16))
    with pytest.raises(DatabaseError, match="inconsistent"):
        VideoDatabase.load(tmp_path)


def test_map_is_pure_and_merge_is_separate(video_folder, tmp_path):
    """The per-video map returns results without touching the database; run_ingestion with
    any map (here a list comprehension stand-in for a distributed engine) then merges."""
    paths = [str(p) for p in find_videos(video_folder)]
    fn = partial(ingest_file, cfg=IngestConfig(), analyse=fake_analyse)
    results = [fn(p, order=i) for i, p in enumerate(paths)]
    assert not (tmp_path / "db").exists()
    assert sum(r.ok for r in results) == 3
    rep = run_ingestion(tmp_path / "db", paths, fn, progress=False)
    assert rep.total == 3
    assert merge(tmp_path / "db") == (0, [])
