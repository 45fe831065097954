"""A database change is one atomic commit: a writer killed at any step leaves a database that
opens, retrieves and resumes; two writers at once lose nothing (the second waits)."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import backend.retrieval.videos.database as database
from backend.retrieval.videos.database import DatabaseError, VideoDatabase, live_folder, writer_lock
from backend.retrieval.videos.ingest import IngestResult, merge, read_shards, write_shard

REPO = Path(__file__).resolve().parents[1]

LABELS = ["start", "keypoints written", "object written", "records written",
          "version folder in place", "committed"]


def result(i: int) -> IngestResult:
    rng = np.random.default_rng(i)
    rec = {"id": f"vid{i:03d}", "key": f"key{i:03d}", "source": f"/videos/{i}.mp4", "kind": "file"}
    return IngestResult(rec["key"], rec["source"], rec, rng.random((16, 17, 3), dtype=np.float32),
                        rng.random(1024, dtype=np.float32), order=i)


class Crash(RuntimeError):
    pass


def crash_at(label):
    def point(at):
        if at == label:
            raise Crash(at)
    return point


def test_save_points_are_all_exercised(tmp_path, monkeypatch):
    seen = []
    monkeypatch.setattr(database, "_crash_point", seen.append)
    VideoDatabase.empty(tmp_path).save()
    assert seen == LABELS


@pytest.mark.parametrize("label", LABELS)
def test_killed_merge_leaves_old_or_new_database_and_resumes(tmp_path, monkeypatch, label):
    root = tmp_path / "db"
    for i in range(3):
        write_shard(root, result(i))
    assert merge(root)[0] == 3
    for i in range(3, 5):                           # a second ingestion run: two more videos
        write_shard(root, result(i))
    monkeypatch.setattr(database, "_crash_point", crash_at(label))
    with pytest.raises(Crash):
        merge(root)
    monkeypatch.setattr(database, "_crash_point", lambda at: None)
    # opens: either the old 3 or the new 5 videos, arrays and records agreeing
    db = VideoDatabase.load(root)
    assert len(db) in (3, 5) and db.keypoints.shape[0] == db.object.shape[0] == len(db)
    committed = label == "committed"
    assert len(db) == (5 if committed else 3)
    # retrieves: every listed video's features are its own
    for i in range(len(db)):
        np.testing.assert_allclose(db.keypoints[db.row(f"vid{i:03d}")], result(i).keypoints, atol=2e-3)
    # resumes: the shards are still there until the commit; merging again completes the database
    assert len(read_shards(root)) == 2
    merge(root)
    db = VideoDatabase.load(root)
    assert db.ids == [f"vid{i:03d}" for i in range(5)]
    assert read_shards(root) == []
    versions = [p.name for p in root.iterdir() if p.is_dir() and p.name.startswith(("v", ".v"))]
    assert versions == [live_folder(root).name]      # stale and half-written versions removed


def test_killed_merge_then_retrieval(tmp_path, monkeypatch):
    """After a crash mid-commit the retriever opens the database and answers queries."""
    import torch

    from backend.retrieval.model import GeminiMVR, RetrieverConfig
    from backend.retrieval.service import VideoRetriever

    root = tmp_path / "db"
    for i in range(4):
        write_shard(root, result(i))
    monkeypatch.setattr(database, "_crash_point", crash_at("records written"))
    with pytest.raises(Crash):
        merge(root)
    monkeypatch.setattr(database, "_crash_point", lambda at: None)
    assert live_folder(root) is None                 # never committed: no database yet
    merge(root)
    torch.manual_seed(0)
    model = GeminiMVR(RetrieverConfig(width=32, st_blocks=1, temporal_layers=1, heads=2, embed_dim=16))
    hits = VideoRetriever(model, VideoDatabase.load(root)).search("a person walks", k=4)
    assert sorted(h.id for h in hits) == [f"vid{i:03d}" for i in range(4)]


def test_legacy_layout_is_read_and_upgraded(tmp_path):
    root = tmp_path / "db"
    root.mkdir()
    (root / "videos.jsonl").write_text('{"id": "a", "key": "k"}\n')
    np.save(root / "keypoints.npy", np.zeros((1, 16, 17, 3), np.float16))
    np.save(root / "object.npy", np.zeros((1, 1024), np.float16))
    db = VideoDatabase.load(root)
    assert db.ids == ["a"] and live_folder(root) == root
    db.save()
    assert live_folder(root).name == "v000001" and not (root / "videos.jsonl").exists()
    assert VideoDatabase.load(root).ids == ["a"]


def test_second_writer_is_told_who_holds_the_lock(tmp_path):
    root = tmp_path / "db"
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from backend.retrieval.videos.database import writer_lock
        with writer_lock({str(root)!r}):
            print("held", flush=True)
            time.sleep(2)
        print("released", flush=True)
        """)], stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(DatabaseError, match=f"process {holder.pid}"):
            with writer_lock(root, wait=False):
                pass
        with writer_lock(root, poll_s=0.05):         # waits until the holder is done
            assert holder.stdout.readline().strip() == "released"
    finally:
        holder.kill()
        holder.wait()


def test_two_writers_lose_nothing(tmp_path):
    """Two ingestion runs on one database at once (the fault: 6 of 12 videos lost)."""
    script = tmp_path / "writer.py"
    script.write_text(textwrap.dedent("""
        import sys, time
        import numpy as np
        from backend.retrieval.videos.ingest import IngestResult, run_ingestion

        def fake(i, order=0):
            time.sleep(0.05)
            rng = np.random.default_rng(i)
            rec = {"id": f"vid{i:03d}", "key": f"key{i:03d}", "source": str(i), "kind": "file"}
            return IngestResult(rec["key"], rec["source"], rec, rng.random((16, 17, 3)),
                                rng.random(1024), order=order)

        start = int(sys.argv[2])
        items = list(range(start, start + 6))
        run_ingestion(sys.argv[1], items, fake, keys=[f"key{i:03d}" for i in items], progress=False)
        """))
    root = tmp_path / "db"
    # A script's own folder (not the cwd) goes on sys.path: point it at the repository.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    procs = [subprocess.Popen([sys.executable, str(script), str(root), str(s)], cwd=REPO, env=env)
             for s in (0, 6)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    assert sorted(VideoDatabase.load(root).ids) == [f"vid{i:03d}" for i in range(12)]
