"""Word cues beside the predicate embedding (backend/retrieval/cues.py, RetrieverConfig.text_cues)."""
import numpy as np
import pytest
import torch

from backend.retrieval.cues import CUE_NAMES, N_CUES, word_cues
from backend.retrieval.model import GeminiMVR, RetrieverConfig, encode_captions
from backend.retrieval.scene import N_SCENE_CUES
from backend.retrieval.sides import mirror_caption

TINY = dict(width=32, st_blocks=1, temporal_layers=1, heads=2, embed_dim=16, dropout=0.0)


def cues_of(text):
    return {name for name, v in zip(CUE_NAMES, word_cues([text])[0]) if v}


@pytest.mark.parametrize("text, expected", [
    ("a man kicks with his left leg.", {"left"}),
    ("someone spins clockwise twice.", {"right", "turning", "twice"}),
    ("a person walks backwards slowly.", {"backward", "slow"}),
    ("a person jogs forward quickly and turns right.", {"right", "turning", "fast"}),
    ("she hops on the right foot three times.", {"right", "three+"}),
    ("a person jumps in place.", set()),
])
def test_word_cues_on_hand_made_captions(text, expected):
    assert cues_of(text) == expected


def test_a_mirrored_caption_swaps_its_side_cues_only():
    text = "a man turns left and then kicks with his left leg twice."
    a, b = word_cues([text, mirror_caption(text)])
    left, right = CUE_NAMES.index("left"), CUE_NAMES.index("right")
    assert a[left] == 1 and a[right] == 0 and b[left] == 0 and b[right] == 1
    keep = [i for i in range(N_CUES) if i not in (left, right)]
    assert np.array_equal(a[keep], b[keep])


class SameVector:
    """A stand-in for MiniLM that cannot tell any two texts apart."""
    def encode(self, texts):
        return torch.ones(len(texts), 384)


def test_cues_let_the_predicate_head_tell_sides_apart():
    torch.manual_seed(0)
    caps = ["a person kicks with the left leg.", "a person kicks with the right leg."]
    pred, whole = encode_captions(caps, SameVector())
    assert pred.shape == (2, 384 + N_CUES) and whole.shape == (2, 384 + N_SCENE_CUES)
    plain = GeminiMVR(RetrieverConfig(**TINY)).eval()
    cued = GeminiMVR(RetrieverConfig(text_cues=True, **TINY)).eval()
    with torch.no_grad():
        p_plain = plain.encode_text(pred, whole)["p"]
        p_cued = cued.encode_text(pred, whole)["p"]
    assert torch.allclose(p_plain[0], p_plain[1])          # same MiniLM input: same p
    assert not torch.allclose(p_cued[0], p_cued[1], atol=1e-4)


def test_a_plain_retriever_ignores_the_cue_columns_and_a_cued_one_needs_them():
    torch.manual_seed(0)
    plain = GeminiMVR(RetrieverConfig(**TINY)).eval()
    x, g = torch.randn(3, 384), torch.randn(3, 384)
    with torch.no_grad():
        a = plain.encode_text(x, g)["p"]
        b = plain.encode_text(torch.cat([x, torch.ones(3, N_CUES)], 1), g)["p"]
    assert torch.allclose(a, b)
    cued = GeminiMVR(RetrieverConfig(text_cues=True, **TINY)).eval()
    with pytest.raises(ValueError, match="word cues"):
        cued.encode_text(x, g)


def test_text_cues_survive_save_and_load(tmp_path):
    model = GeminiMVR(RetrieverConfig(text_cues=True, **TINY))
    model.save_pretrained(tmp_path)
    again = GeminiMVR.from_pretrained(tmp_path)
    assert again.config.text_cues
    pred, whole = encode_captions(["a person turns left."], SameVector())
    with torch.no_grad():
        assert torch.allclose(model.eval().encode_text(pred, whole)["p"], again.encode_text(pred, whole)["p"])


# ------------------------------------------------------------------ where the side is lost
from backend.retrieval.side_probe import image_right, pair_agreement  # noqa: E402
from backend.retrieval.videos.pose import COCO17_NAMES  # noqa: E402
from motioncore.skeleton import JOINT_NAMES  # noqa: E402


def test_image_right_of_a_camera_in_front_is_the_bodys_left():
    # a body facing +z (yaw 0), its left at +x; a camera in front (azimuth 0) sees +x on its right
    assert np.allclose(image_right(0.0, 0.0), [1.0, 0.0, 0.0])
    # from behind (azimuth 180) the body's left is on the image's left
    assert np.allclose(image_right(180.0, 0.0), [-1.0, 0.0, 0.0], atol=1e-12)
    # the body turned to face +x (yaw 90 degrees), camera in front of it: image right is -z
    assert np.allclose(image_right(0.0, np.pi / 2), [0.0, 0.0, -1.0], atol=1e-12)


def _hand_made(swapped: bool):
    F = 4
    joints = np.zeros((F, len(JOINT_NAMES), 3))
    kp = np.zeros((F, 17, 3), np.float32)
    for name in ("shoulder", "hip", "wrist", "ankle"):
        joints[:, JOINT_NAMES.index(f"left_{name}"), 0] = 0.2       # the body's left at +x
        joints[:, JOINT_NAMES.index(f"right_{name}"), 0] = -0.2
        left, right = (0.4, 0.6) if swapped else (0.6, 0.4)        # image x of the detections
        kp[:, COCO17_NAMES.index(f"left_{name}")] = (left, 0.5, 0.9)
        kp[:, COCO17_NAMES.index(f"right_{name}")] = (right, 0.5, 0.9)
    return joints, kp


def test_pair_agreement_counts_frames_whose_detected_order_matches_the_truth():
    joints, kp = _hand_made(swapped=False)
    front = image_right(0.0, 0.0)
    assert pair_agreement(joints, kp, front) == {n: (4, 4) for n in ("shoulder", "hip", "wrist", "ankle")}
    joints, kp = _hand_made(swapped=True)
    assert pair_agreement(joints, kp, front)["hip"] == (0, 4)
    # seen from behind, the swapped detections are the right ones
    assert pair_agreement(joints, kp, image_right(180.0, 0.0))["hip"] == (4, 4)
    # undetected joints and pairs seen edge-on are not judged
    kp[:2, COCO17_NAMES.index("left_wrist"), 2] = 0.0
    assert pair_agreement(joints, kp, front)["wrist"] == (0, 2)
    assert pair_agreement(joints, kp, image_right(90.0, 0.0))["hip"] == (0, 0)


def test_retriever_curves_are_drawn_from_the_log_and_need_stage_one(tmp_path):
    import json

    from backend.curves import plot_retriever_curves

    log = tmp_path / "log.jsonl"
    rows = [{"stage": 1, "step": s, "action": 4 - s / 100, "object": 4 - s / 120} for s in (0, 50, 100)]
    rows += [{"stage": 2, "step": s, "loss": 2 - s / 100, "w_action": 0.5 + s / 400} for s in (0, 50)]
    log.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    out = plot_retriever_curves(log, tmp_path / "curves" / "r.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    log.write_text(json.dumps(rows[-1]) + "\n")
    with pytest.raises(ValueError, match="stage-1"):
        plot_retriever_curves(log, tmp_path / "none.png")
    assert not (tmp_path / "none.png").exists()
