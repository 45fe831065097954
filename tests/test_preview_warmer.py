"""The app's preview warmer: database videos' previews made in the background, one at a time,
only while no request runs; what exists is kept, a failing video does not stop the rest."""
from __future__ import annotations

import threading
import time
from pathlib import Path
from types import SimpleNamespace

import app.service as service_mod
from app.service import AppService


class Holder:
    def __init__(self, retriever):
        self.pipeline = SimpleNamespace(retriever=retriever)

    def wait(self, timeout=None):
        return True

    def get(self):
        return self.pipeline


def _fake_media(monkeypatch, root: Path, log: list, broken=()):
    def display_path(r, vid):
        return root / f"{vid}.mp4"

    def thumbnail_path(r, vid):
        return root / f"{vid}.jpg"

    def display_video(r, vid):
        log.append(("video", vid, threading.current_thread().name))
        if vid in broken:
            raise RuntimeError("unreadable")
        display_path(r, vid).write_bytes(b"mp4")
        return display_path(r, vid)

    def make_thumbnail(r, vid, out):
        log.append(("thumb", vid, threading.current_thread().name))
        out.write_bytes(b"jpg")
        return out

    for name, fn in (("display_path", display_path), ("thumbnail_path", thumbnail_path),
                     ("display_video", display_video), ("make_thumbnail", make_thumbnail)):
        monkeypatch.setattr(service_mod, name, fn)


def _service(tmp_path, ids):
    return AppService(Holder(SimpleNamespace(video_ids=ids)), tmp_path / "work")


def test_the_warmer_makes_what_is_missing_keeps_what_exists_and_survives_a_bad_video(tmp_path, monkeypatch):
    media, log = tmp_path / "media", []
    media.mkdir()
    (media / "v2.mp4").write_bytes(b"old")
    (media / "v2.jpg").write_bytes(b"old")
    (media / "v4.mp4").write_bytes(b"old")                 # the thumbnail is missing: made
    _fake_media(monkeypatch, media, log, broken={"v3"})
    svc = _service(tmp_path, ["v1", "v2", "v3", "v4", "v5"])
    svc.start_preview_warmer(quiet_s=0.0).join(10)
    assert svc.warmed["done"] and svc.warmed["made"] == 3 and svc.warmed["already_there"] == 1
    assert list(svc.warmed["failed"]) == ["v3"] and "unreadable" in svc.warmed["failed"]["v3"]
    assert (media / "v2.mp4").read_bytes() == b"old"          # kept, not made again
    assert all(f.is_file() for v in ("v1", "v4", "v5") for f in (media / f"{v}.mp4", media / f"{v}.jpg"))
    assert {name for *_, name in log} == {"vimorag-previews"}     # never on a request's thread
    assert [v for kind, v, _ in log if kind == "video"] == ["v1", "v3", "v4", "v5"]


def test_the_warmer_waits_while_a_request_runs_and_until_it_has_been_quiet(tmp_path, monkeypatch):
    media, log = tmp_path / "media", []
    media.mkdir()
    _fake_media(monkeypatch, media, log)
    svc = _service(tmp_path, ["v1", "v2"])
    with svc._busy():                                         # a request is being worked on
        svc.start_preview_warmer(quiet_s=0.3)
        time.sleep(0.5)
        assert log == []
    t_end = time.monotonic()
    svc._warmer.join(10)
    assert svc.warmed["made"] == 2 and len(log) == 4
    assert svc._last_active <= t_end and time.monotonic() - t_end >= 0.3   # waited for quiet first


def test_a_request_through_call_counts_as_busy_and_stop_ends_the_warmer(tmp_path, monkeypatch):
    media, log = tmp_path / "media", []
    media.mkdir()
    _fake_media(monkeypatch, media, log)
    svc = _service(tmp_path, [f"v{i}" for i in range(50)])
    seen = []
    assert svc.call(lambda: seen.append(svc._active) or 7) == 7
    assert seen == [1] and svc._active == 0
    svc.start_preview_warmer(quiet_s=60.0)                   # never quiet long enough
    svc.stop_preview_warmer(timeout=5)
    assert not svc._warmer.is_alive() and log == [] and not svc.warmed["done"]
