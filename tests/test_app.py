"""The browser app end to end: ``python launch.py`` in a subprocess, driven with gradio_client.

By default the app runs on a fabricated checkpoints folder (``tests/fake_stack.py``: random
tiny models of the real layout), so this checks the plumbing, not motion quality.
``VIMORAG_APP_REAL=1`` runs the same tests against the shipped checkpoints.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fake_stack import REPO, real_stack_missing, real_stack_requested, shared_app_server

pytest.importorskip("gradio_client")
from gradio_client import handle_file  # noqa: E402

OUTPUTS = ["status", "retrieved", "router", "gallery", "video_a", "video_b", "model3d", "distances",
           "downloads", "details", "video_id", "retrieval"]


@pytest.fixture(scope="session")
def app_server():
    if real_stack_requested() and real_stack_missing():
        pytest.fail("VIMORAG_APP_REAL=1 but the shipped checkpoints are incomplete: "
                    + ", ".join(real_stack_missing()))
    return shared_app_server()


@pytest.fixture
def client(app_server):
    from gradio_client import Client

    return Client(app_server.url, verbose=False)


def generate(client, prompt, model="mcdpo", retrieval="gemini", seed=0, temperature=1.0,
             mode="single", video_id=""):
    out = client.predict(prompt, model, retrieval, seed, temperature, mode, video_id,
                         api_name="/generate")
    return dict(zip(OUTPUTS, out))


def path_of(value) -> Path | None:
    """A file output as the client returns it (a path, or a dict holding one)."""
    if isinstance(value, dict):
        value = value.get("value") or value.get("video") or value.get("path")
        return path_of(value)
    return Path(value) if value else None


def assert_clean(status: str):
    assert "Traceback" not in status and 'File "' not in status, status


# ------------------------------------------------------------------------------ command line
def test_launch_help_explains_options():
    out = subprocess.run([sys.executable, "launch.py", "--help"], cwd=REPO, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    for opt in ("--host", "--port", "--share", "--db", "--concurrency", "127.0.0.1", "7860"):
        assert opt in out.stdout
    bad = subprocess.run([sys.executable, "launch.py", "--port", "0"], cwd=REPO, capture_output=True,
                         text=True, timeout=60)
    assert bad.returncode == 2 and "--port" in bad.stderr


# ----------------------------------------------------------------------------------- the app
def test_prompt_to_motion_video_glb_bvh_and_router_weights(client, app_server):
    import bvh

    job = client.submit("a person does a cartwheel", "mcdpo", "gemini", 3, 1.0, "single", "",
                        api_name="/generate")
    r = dict(zip(OUTPUTS, job.result(timeout=300)))
    assert r["status"].startswith("Done"), r["status"] + app_server.log_tail()
    d = r["details"]
    assert d["prompt_used"] == "a person does a cartwheel" and d["retrieval"] == "gemini"
    # router weights + channel scores of the rank-1 video
    router = d["router"]
    assert router["id"] == d["video_id"] == d["hits"][0]["id"] and router["rank"] == 1
    assert math.isclose(router["w_action"] + router["w_object"], 1.0, abs_tol=1e-3)
    assert all(math.isfinite(router[k]) for k in ("action_score", "object_score", "score"))
    assert "Router weights" in r["router"] and "vr-action" in r["router"]
    assert len(d["hits"]) == 5 and len(r["gallery"]) == 5
    assert all(path_of(g.get("image") if isinstance(g, dict) else g[0]).is_file() for g in r["gallery"])
    # the retrieved video plays, the result renders
    ref = path_of(r["retrieved"])
    assert ref.suffix == ".mp4" and ref.stat().st_size > 1000
    mp4 = path_of(r["video_a"])
    assert mp4.suffix == ".mp4" and mp4.stat().st_size > 1000
    # the 3D view got the animated GLB (in the update after rendering; see app/main.py)
    glbs = [path_of(dict(zip(OUTPUTS, o))["model3d"]) for o in job.outputs()]
    glb = next(p for p in glbs if p is not None)
    assert glb.suffix == ".glb" and glb.read_bytes()[:4] == b"glTF"
    pygltflib = pytest.importorskip("pygltflib")
    preview = pygltflib.GLTF2().load(str(glb))
    assert preview.animations, "the GLB is not animated"
    assert "floor" in [n.name for n in preview.nodes], "the 3D view shows the motion on a floor"
    # downloads: every format; the BVH parses with an independent reader
    files = {Path(p).name: Path(p) for p in r["downloads"]}
    suffixes = sorted(p.suffix for p in files.values())
    assert suffixes == sorted([".bvh", ".fbx", ".glb", ".mp4", ".npy", ".npy"]), files
    download_glb = next(p for p in files.values() if p.suffix == ".glb")
    assert "floor" not in [n.name for n in pygltflib.GLTF2().load(str(download_glb)).nodes]
    bvh_path = next(p for p in files.values() if p.suffix == ".bvh")
    mocap = bvh.Bvh(bvh_path.read_text())
    frames = d["results"][0]["frames"]
    assert mocap.nframes == frames and len(mocap.get_joints_names()) == 22
    joints = np.load(next(p for n, p in files.items() if n.endswith("_joints.npy")))
    assert joints.shape == (frames, 22, 3) and np.isfinite(joints).all()
    dist = d["results"][0]["text_motion_distance"]
    assert dist is not None and math.isfinite(dist) and "text-motion distance" in r["distances"]


def test_clip_options_length_in_place_units_and_names(client, app_server):
    """The clip controls reach the motion and the files: 2 s = 40 frames, no root travel, BVH in
    metres, download names saying what was asked; a bad length is explained."""
    import bvh

    out = client.predict("a person walks forward", "sft", "gemini", 1, 1.0, "single", "",
                         2.0, True, False, "m", api_name="/generate")
    r = dict(zip(OUTPUTS, out))
    assert r["status"].startswith("Done"), r["status"] + app_server.log_tail()
    d = r["details"]
    assert d["clip"] == {"length_s": 2.0, "in_place": True, "foot_lock": False, "bvh_units": "m"}
    assert d["results"][0]["frames"] == 40
    files = {Path(p).name: Path(p) for p in r["downloads"]}
    assert all(n.startswith("vimorag_sft_a_person_walks_forward_2.0s_inplace") for n in files), files
    joints = np.load(next(p for n, p in files.items() if n.endswith("_joints.npy")))
    assert joints.shape[0] == 40
    assert np.abs(joints[:, 0, [0, 2]] - joints[0, 0, [0, 2]]).max() < 1e-4
    mocap = bvh.Bvh(next(p for p in files.values() if p.suffix == ".bvh").read_text())
    legs = [np.linalg.norm(mocap.joint_offset(j)) for j in mocap.get_joints_names()[1:]]
    assert 0.05 < max(legs) < 1.0, "offsets in metres"
    bad = dict(zip(OUTPUTS, client.predict("a person walks", "sft", "gemini", 1, 1.0, "single", "",
                                           0.4, False, True, "cm", api_name="/generate")))
    assert "clip length must be between 1 and 9.8" in bad["status"]


@pytest.mark.parametrize("prompt, expect", [
    ("", "empty"),
    (" \n\t  ", "empty"),
    ("a person walks forward and waves " * 160, "cut to 500"),
    ("🤸‍♀️ 💃🕺", "Done"),
], ids=["empty", "blank", "5000-chars", "emoji"])
def test_bad_prompts_give_clear_messages(client, prompt, expect):
    r = generate(client, prompt)
    assert expect in r["status"], r["status"]
    assert_clean(r["status"])
    if expect != "empty":                      # a valid result all the same
        assert path_of(r["video_a"]).is_file()
        assert len(r["details"]["prompt_used"]) <= 500


def test_compare_mode_same_random_video_and_distances(client):
    r = generate(client, "someone does a backflip", retrieval="random", mode="compare", seed=5)
    assert r["status"].startswith("Done"), r["status"]
    res = r["details"]["results"]
    assert [x["model"] for x in res] == ["mcdpo", "sft"]
    assert res[0]["video_id"] == res[1]["video_id"] == r["details"]["video_id"] is not None
    a, b = path_of(r["video_a"]), path_of(r["video_b"])
    assert a.is_file() and b.is_file() and a.name != b.name
    assert "McDPO" in r["distances"] and "SFT" in r["distances"]
    assert all(math.isfinite(x["text_motion_distance"]) for x in res)
    assert "random" in r["router"]
    joints = [np.load(f) for f in r["downloads"] if f.endswith("_joints.npy")]
    assert len(joints) == 2 and not (joints[0].shape == joints[1].shape and np.allclose(*joints))


def test_chosen_video_none_and_unknown_video(client):
    r = generate(client, "a person crawls forward")
    vid = r["details"]["hits"][2]["id"]
    g = generate(client, "a person crawls forward", retrieval="given", video_id=vid)
    assert g["status"].startswith("Done"), g["status"]
    assert g["details"]["video_id"] == vid and vid in g["router"]
    n = generate(client, "a person crawls forward", retrieval="none")
    assert n["details"]["video_id"] is None and "No video" in n["router"]
    bad = generate(client, "a person crawls forward", retrieval="given", video_id="no-such-video")
    assert "no video 'no-such-video'" in bad["status"]
    missing = generate(client, "a person crawls forward", retrieval="given", video_id="")
    assert "No video chosen" in missing["status"]


def test_corrupt_upload_is_reported_and_app_keeps_serving(client, tmp_path):
    bad = tmp_path / "holiday.mp4"
    bad.write_bytes(b"\x00\x01not a video at all" * 500)
    out = dict(zip(OUTPUTS, client.predict(handle_file(str(bad)), "a person jumps", "mcdpo", 0, 1.0,
                                           "single", api_name="/add_video")))
    assert "cannot be used" in out["status"] and "unreadable" in out["status"], out["status"]
    assert_clean(out["status"])
    # still answers, and generation works afterwards
    assert "Ready" in client.predict(api_name="/status")[0]
    r = generate(client, "a person jumps")
    assert r["status"].startswith("Done"), r["status"]


def test_uploads_with_and_without_a_person(client, tmp_path):
    """A video without a person is refused with the reason; a video of a person is indexed
    and becomes the reference video of the generation."""
    import imageio.v2 as iio

    from backend.retrieval.videos.synth import VideoSpec, make_spec, render_video

    blank = tmp_path / "empty_room.mp4"
    with iio.get_writer(blank, fps=10, codec="libx264", macro_block_size=16) as w:
        for i in range(24):
            w.append_data(np.full((128, 128, 3), 40 + 5 * i, np.uint8))
    out = dict(zip(OUTPUTS, client.predict(handle_file(str(blank)), "a person jumps", "mcdpo", 0,
                                           1.0, "single", api_name="/add_video")))
    assert "cannot be used" in out["status"] and "no person" in out["status"], out["status"]

    spec = make_spec(3).to_json()
    spec.update(size=224, end=spec["start"] + 40)
    person = render_video(VideoSpec.from_json(spec), tmp_path / "my_dance.mp4")
    out = dict(zip(OUTPUTS, client.predict(handle_file(str(person)), "a person dances", "sft", 2,
                                           1.0, "single", api_name="/add_video")))
    assert out["status"].startswith("Done") and "my_dance" in out["status"], out["status"]
    vid = out["details"]["video_id"]
    assert vid.startswith("upload-my_dance") and out["video_id"] == vid and out["retrieval"] == "given"
    assert out["details"]["router"]["id"] == vid and path_of(out["retrieved"]).is_file()
    # a new prompt goes back to retrieval (the upload was chosen for "a person dances") ...
    new = dict(zip(OUTPUTS, client.predict("a person jumps", "mcdpo", "given", 4, 1.0, "single", vid,
                                           api_name="/generate")))
    assert new["status"].startswith("Done") and "back to Gemini-MVR" in new["status"], new["status"]
    assert new["details"]["retrieval"] == "gemini" and new["details"]["video_id"] != vid
    assert new["retrieval"] == "gemini" and new["video_id"] == ""
    # ... unless the person keeps the video: then the same session can generate with it again
    again = dict(zip(OUTPUTS, client.predict("a person jumps", "mcdpo", "given", 4, 1.0, "single", vid,
                                             0.0, False, True, "cm", True, api_name="/generate")))
    assert again["status"].startswith("Done") and again["details"]["video_id"] == vid, again["status"]
    assert "back to" not in again["status"] and again["retrieval"] == "given"


def test_uploads_are_private_to_their_session(app_server, tmp_path):
    """An upload is its uploader's reference only: not in the shared database (no other
    session's search can return it), not usable from another session, gone with the session."""
    from gradio_client import Client

    from backend.retrieval.videos.database import VideoDatabase
    from backend.retrieval.videos.synth import VideoSpec, make_spec, render_video

    spec = make_spec(5).to_json()
    spec.update(size=224, end=spec["start"] + 40)
    mine = render_video(VideoSpec.from_json(spec), tmp_path / "private_clip.mp4")
    owner, other = Client(app_server.url, verbose=False), Client(app_server.url, verbose=False)
    out = dict(zip(OUTPUTS, owner.predict(handle_file(str(mine)), "a person dances", "mcdpo", 1,
                                          1.0, "single", api_name="/add_video")))
    assert out["status"].startswith("Done"), out["status"]
    vid = out["details"]["video_id"]
    if not real_stack_requested():
        db = app_server.log_path.parent / "data" / "videodb" / "embedded"
        records = VideoDatabase.load(db).records            # flat or sharded layout
        assert records and not any("private_clip" in json.dumps(r) for r in records)
    stolen = generate(other, "a person dances", retrieval="given", video_id=vid)
    assert "not one of this browser session's uploads" in stolen["status"], stolen["status"]
    hits = generate(other, "a person dances")["details"]["hits"]
    assert all("private_clip" not in h["id"] for h in hits)


def test_two_sessions_get_their_own_results(app_server):
    from gradio_client import Client

    prompts = ["a person jumps up twice", "a man kicks with his right leg"]
    clients = [Client(app_server.url, verbose=False) for _ in prompts]
    jobs = [c.submit(p, "mcdpo", "gemini", 1, 1.0, "single", "", api_name="/generate")
            for c, p in zip(clients, prompts)]
    results = [dict(zip(OUTPUTS, j.result(timeout=300))) for j in jobs]
    for p, r in zip(prompts, results):
        assert r["details"]["prompt_used"] == p, r["status"]
        stem = p.replace(" ", "_")
        assert all(stem in Path(f).name for f in r["downloads"])


def test_generate_before_ready_and_failed_load_are_explained(tmp_path):
    """In process: a factory that blocks, then fails, through the real handler."""
    import threading

    from gradio_client import Client

    from app.main import build_app
    from fake_stack import free_port

    gate = threading.Event()

    def factory():
        gate.wait(60)
        raise FileNotFoundError("missing trained model(s) mcdpo in /nowhere")

    demo = build_app(factory, workdir=tmp_path)
    demo.queue(default_concurrency_limit=1)
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
                ssr_mode=False)
    try:
        c = Client(f"http://127.0.0.1:{port}/", verbose=False)
        assert "Loading models" in c.predict(api_name="/status")[0]
        r = generate(c, "a person walks")
        assert "still loading" in r["status"], r["status"]
        gate.set()
        demo.vimorag_service.holder.wait(30)
        assert "could not be loaded" in c.predict(api_name="/status")[0]
        r = generate(c, "a person walks")
        assert "could not be loaded" in r["status"] and "missing trained model" in r["status"]
    finally:
        gate.set()
        demo.close()


@pytest.mark.skipif(os.environ.get("VIMORAG_APP_REAL") is None, reason="VIMORAG_APP_REAL not set")
def test_real_stack_status_names_models(app_server):
    from fake_stack import _SHARED

    assert "McDPO" in _SHARED["status"] or "SFT" in _SHARED["status"]


# ------------------------------------------------------------------- security and escaping
def _get(url: str) -> int:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=30) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_file_route_serves_previews_but_not_the_database(client, app_server):
    if real_stack_requested():
        pytest.skip("the data folder of the real stack is the user's own")
    from backend.retrieval.videos.database import live_folder

    r = generate(client, "a person walks forward", seed=2)
    assert r["status"].startswith("Done"), r["status"]
    vid = r["details"]["video_id"]
    db = app_server.log_path.parent / "data" / "videodb" / "embedded"
    preview = db / "media" / f"{vid}.mp4"
    assert preview.is_file()
    assert _get(f"{app_server.url}gradio_api/file={preview}") == 200       # the route works
    stored = sorted(p for p in live_folder(db).iterdir() if p.suffix in (".json", ".jsonl", ".npy"))
    assert len(stored) >= 3                     # records, arrays, manifest (whatever the layout)
    for secret in (db / "CURRENT", *stored):
        assert secret.is_file()
        assert _get(f"{app_server.url}gradio_api/file={secret}") in (403, 404), secret


def test_user_text_is_shown_as_text(client):
    r = generate(client, "<img src=x onerror=alert(1)> a person **walks** forward", seed=1)
    assert r["status"].startswith("Done"), r["status"]
    assert "<img" not in r["status"] and "&lt;img" in r["status"]
    assert "\\*\\*walks\\*\\*" in r["status"]
    bad = generate(client, "a person walks", retrieval="given", video_id="<b>nope</b>")
    assert "<b>" not in bad["status"] and "&lt;b&gt;" in bad["status"]
