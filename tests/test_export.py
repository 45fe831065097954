"""`python -m backend export`: every format from features or joints, read back independently;
bad input leaves nothing behind."""
import numpy as np
import pytest

from backend.cli import main
from backend.data.mocap import load_base_clips
from motioncore.features import joints_to_features


@pytest.fixture(scope="module")
def cartwheel():
    clip = next(b for b in load_base_clips(["cartwheel"]))
    return clip.clip.joints()[:40].astype(np.float32)


def test_export_all_formats_from_features(tmp_path, cartwheel, capsys):
    src = tmp_path / "cart.npy"
    np.save(src, joints_to_features(cartwheel))
    out = tmp_path / "out"
    assert main(["export", str(src), "--out", str(out), "--size", "128"]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == ["cart.bvh", "cart.fbx", "cart.glb", "cart.mp4", "cart_features.npy",
                     "cart_joints.npy"]
    joints = np.load(out / "cart_joints.npy")
    assert joints.shape == (39, 22, 3)  # features have T-1 frames

    from bvh import Bvh
    bvh = Bvh((out / "cart.bvh").read_text())
    assert bvh.nframes == 39 and abs(bvh.frame_time - 0.05) < 1e-9
    assert len(bvh.get_joints()) == 22

    import pufbx
    scene = pufbx.load_fbx(str(out / "cart.fbx"))
    assert scene.num_bones == 22
    assert scene.anim_stacks[0].time_end == pytest.approx(38 * 0.05)   # 39 frames at 20 fps

    import pygltflib
    glb = pygltflib.GLTF2().load(str(out / "cart.glb"))
    assert len(glb.animations) == 1 and len(glb.animations[0].channels) >= 22

    import imageio.v3 as iio
    frames = iio.imread(out / "cart.mp4")
    assert frames.shape[0] == 39 and frames.shape[1:3] == (128, 128)
    assert frames.std() > 10, "frames are not blank"


def test_export_joints_skeleton_only_subset(tmp_path, cartwheel):
    src = tmp_path / "j.npy"
    np.save(src, cartwheel.reshape(len(cartwheel), 66))
    assert main(["export", str(src), "--out", str(tmp_path / "o"), "--formats", "bvh,mp4",
                 "--skeleton-only", "--size", "96"]) == 0
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["j.bvh", "j.mp4"]


@pytest.mark.parametrize("bad, message", [
    (np.full((10, 22, 3), np.nan, np.float32), "NaN"),
    (np.zeros((0, 263), np.float32), "frames"),
    (np.zeros((10, 7), np.float32), "shape"),
])
def test_bad_motion_gives_clear_error_and_no_files(tmp_path, bad, message, capsys):
    src = tmp_path / "bad.npy"
    np.save(src, bad)
    out = tmp_path / "out"
    assert main(["export", str(src), "--out", str(out)]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists() or not any(out.iterdir())


def test_unknown_format_and_unwritable_output(tmp_path, cartwheel, capsys):
    src = tmp_path / "m.npy"
    np.save(src, cartwheel)
    assert main(["export", str(src), "--out", str(tmp_path / "o"), "--formats", "bvh,obj"]) == 2
    assert "unknown export format obj" in capsys.readouterr().err
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["export", str(src), "--out", str(blocker), "--formats", "bvh"]) == 2
    assert "is a file" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "missing.npy"), "--out", str(tmp_path / "o2")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_too_long_motion_is_refused(tmp_path, capsys):
    from viewer.export import MAX_FRAMES

    src = tmp_path / "long.npy"
    np.save(src, np.zeros((MAX_FRAMES + 1, 22, 3), np.float32))
    out = tmp_path / "out"
    assert main(["export", str(src), "--out", str(out), "--formats", "bvh"]) == 2
    assert "limited to 12,000" in capsys.readouterr().err
    assert not out.exists() or not any(out.iterdir())


def test_killed_export_leaves_no_files(tmp_path, cartwheel):
    """SIGKILL in the middle of an export: no file under a final name (the BVH is done, the MP4
    is being rendered, both still in the hidden temporary folder)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from fake_stack import REPO

    src = tmp_path / "m.npy"
    np.save(src, np.concatenate([cartwheel] * 5))
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "backend", "export", str(src), "--out", str(out),
                             "--formats", "bvh,mp4", "--size", "256"], cwd=REPO,
                            env={**os.environ, "PYOPENGL_PLATFORM": "egl"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        t_end = time.time() + 120
        while not list(out.glob(".export-*/m.bvh")):
            assert proc.poll() is None, "the export ended before it could be killed"
            assert time.time() < t_end
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        proc.kill()
    assert [p.name for p in out.iterdir() if not p.name.startswith(".")] == []
