"""`python -m backend index DIR --engine ray` on a local Ray instance gives the same database as
the process pool: same ids, same features. The pose / video models are the cheap stand-in of
``test_ingest`` (``fake_analyse``; it reaches the Ray workers by import, like any map function),
so the test measures our plumbing, not MediaPipe; Ray's start-up is most of its time."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from test_ingest import fake_analyse, write_video

RAY_MISSING = importlib.util.find_spec("ray") is None or importlib.util.find_spec("pyarrow") is None
pytestmark = pytest.mark.skipif(RAY_MISSING, reason="Ray Data is not installed (pip install "
                                                    "'ray[data]==2.60.0', as in requirements.txt)")


@pytest.fixture
def cli_env(tmp_path, monkeypatch):
    """The CLI on a private data folder, with the stand-in models and no retriever (so `index`
    stops after the database: '(index not updated ...)')."""
    import backend.retrieval.videos.ingest as ingest

    monkeypatch.setenv("VIMORAG_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("VIMORAG_CHECKPOINTS", str(tmp_path / "no-checkpoints"))
    real = ingest.index_folder
    monkeypatch.setattr(ingest, "index_folder",
                        lambda *a, **kw: real(*a, **{**kw, "analyse": fake_analyse, "progress": False}))
    folder = tmp_path / "videos"
    folder.mkdir()
    for i, shade in enumerate((70, 110, 150, 190, 230)):
        write_video(folder / f"clip{i}.mp4", shade, n=12 + 3 * i)
    (folder / "broken.mp4").write_bytes(b"\x00" * 500)           # skipped by both engines
    return folder


def test_index_engine_ray_matches_the_process_pool(cli_env, capsys):
    from backend.cli import main
    from backend.retrieval.videos.database import VideoDatabase, database_dir

    assert main(["index", str(cli_env), "--db", "pool", "--workers", "1"]) == 0
    assert main(["index", str(cli_env), "--db", "ray", "--engine", "ray", "--workers", "2"]) == 0
    out = capsys.readouterr().out
    assert out.count("5 video(s) added, 0 already in the database, 1 skipped") == 2
    pool, ray = VideoDatabase.load(database_dir("pool")), VideoDatabase.load(database_dir("ray"))
    assert ray.ids == pool.ids and len(ray) == 5
    assert [r["key"] for r in ray.records] == [r["key"] for r in pool.records]
    np.testing.assert_allclose(ray.keypoints[:], pool.keypoints[:], atol=1e-3)
    np.testing.assert_allclose(ray.object[:], pool.object[:], atol=1e-3)
    assert not list((database_dir("ray") / "shards").glob("*"))   # merged and cleaned up


def test_address_needs_the_ray_engine(cli_env, capsys):
    from backend.cli import main

    assert main(["index", str(cli_env), "--db", "x", "--address", "127.0.0.1:6379"]) == 2
    assert "--engine ray" in capsys.readouterr().err
