"""The embedded corpus: retargeting, augmentation, captions, splits, determinism, layout."""
import hashlib
import json

import numpy as np
import pytest

from backend.data.corpus import OOD_KINDS, CorpusConfig, build_corpus, corpus_is_built
from backend.data.dataset import MotionCorpus
from backend.data.mocap import blend, load_base_clips
from motioncore.features import features_to_joints
from motioncore.skeleton import ADULT_OFFSETS, PARENTS

SMALL = CorpusConfig(n_in_dist=60, n_ood=20, seed=7)


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory):
    return build_corpus(tmp_path_factory.mktemp("c") / "corpus", SMALL, progress=False)


@pytest.fixture(scope="module")
def clips():
    return {b.name: b for b in load_base_clips()}


def test_retargeted_clips_keep_adult_bone_lengths_and_stand_on_the_floor(clips):
    for name, b in clips.items():
        j = b.clip.joints()
        for child in range(1, 22):
            length = np.linalg.norm(j[:, child] - j[:, PARENTS[child]], axis=-1)
            assert np.allclose(length, np.linalg.norm(ADULT_OFFSETS[child]), atol=1e-6), name
        assert abs(j[..., 1].min()) < 1e-9, f"{name}: lowest point on the floor"
    walk = clips["humanoid3d_walk.txt"].clip.joints()
    # Standing upright: head well above the pelvis, pelvis near adult hip height, y up.
    assert 0.8 < walk[:, 0, 1].mean() < 1.0
    assert (walk[:, 15, 1] - walk[:, 0, 1]).min() > 0.4


def test_side_and_direction_labels_follow_the_data(clips):
    kick = clips["humanoid3d_kick.txt"]
    j = kick.clip.joints()
    kicking = 8 if kick.side == "right" else 7
    other = 7 if kicking == 8 else 8
    assert j[:, kicking, 1].max() > j[:, other, 1].max() + 0.3
    # Mirroring moves the kick to the other leg.
    m = kick.clip.mirrored().joints()
    assert m[:, other, 1].max() > m[:, kicking, 1].max() + 0.3
    assert clips["walker/turn_left0.txt"].turn == "left"
    assert clips["walker/turn_right0.txt"].turn == "right"


def test_blend_has_no_root_jump_or_foot_teleport(clips):
    a = clips["humanoid3d_walk.txt"].clip.repeated(2, True)
    b = clips["humanoid3d_kick.txt"].clip
    out = blend(a, b)
    j = out.joints()
    step = np.linalg.norm(np.diff(j, axis=0), axis=-1)  # (T-1, 22) metres per frame
    src_max = max(np.linalg.norm(np.diff(c.joints(), axis=0), axis=-1).max() for c in (a, b))
    assert step[:, 0].max() < 0.15, "root moves less than 3 m/s between frames"
    assert step[:, [7, 8, 10, 11]].max() <= src_max * 1.1 + 1e-6


def test_corpus_layout_splits_and_counts(small_corpus):
    c = MotionCorpus(small_corpus)
    for sub in ("new_joint_vecs", "new_joints", "texts"):
        assert len(list((small_corpus / sub).iterdir())) == 80
    ids = {s: set(c.split_ids(s)) for s in ("train", "val", "test", "ood_judge", "ood")}
    assert len(ids["ood_judge"]) == len(ids["ood"]) == 10, "the OOD motions split in two halves"
    assert sum(map(len, ids.values())) == 80
    for a in ids:
        for b in ids:
            assert a == b or not (ids[a] & ids[b])
    assert corpus_is_built(small_corpus)
    programs = [json.loads(line) for line in (small_corpus / "programs.jsonl").read_text().splitlines()]
    for p in programs:
        kinds = {s["action"] for s in p["segments"]}
        if p["split"] in ("ood", "ood_judge"):
            assert kinds & set(OOD_KINDS)
        else:
            assert not kinds & set(OOD_KINDS), "OOD kinds never appear in train/val/test"
        f = c.features(p["id"])
        assert 2.0 <= (len(f) + 1) / 20 <= 10.05
        assert np.allclose(features_to_joints(f), c.joints(p["id"]), atol=1e-5)


def test_captions_are_plentiful_distinct_and_match_the_labels(small_corpus):
    c = MotionCorpus(small_corpus)
    programs = [json.loads(line) for line in (small_corpus / "programs.jsonl").read_text().splitlines()]
    for p in programs:
        caps = c.captions(p["id"])
        assert len(caps) >= 3 and len({x.text for x in caps}) == len(caps)
        for cap in caps:
            assert cap.text.endswith(".") and cap.tokens and cap.whole
        sides = {s["side"] for s in p["segments"] if s["side"]} | \
                {s["turn"] for s in p["segments"] if s["turn"]}
        if sides == {"left"}:
            assert all("right" not in x.text for x in caps), (p, [x.text for x in caps])


def test_build_is_deterministic(small_corpus, tmp_path):
    again = build_corpus(tmp_path / "again", SMALL, progress=False)

    def digest(root):
        h = hashlib.sha256()
        for f in sorted(p for p in root.rglob("*") if p.is_file()):
            h.update(f.relative_to(root).as_posix().encode())
            h.update(f.read_bytes())
        return h.hexdigest()

    assert digest(again) == digest(small_corpus)


def test_generator_never_trains_on_an_ood_text_motion_pair(small_corpus, tmp_path):
    # Both generator stages (SFT and McDPO) draw their pairs through build_examples' default
    # split; with a tiny tokenizer, list every pair it would train on.
    import torch

    from backend.generation.vqvae import MotionVQVAE, VQVAEConfig
    from backend.generation.train_llm import build_examples

    torch.manual_seed(0)
    tiny = MotionVQVAE(VQVAEConfig(nb_code=8, code_dim=8, width=8, depth=1)).eval()
    c = MotionCorpus(small_corpus)
    examples = build_examples(c, tiny, None, "none", tmp_path)
    assert examples
    ood_ids = set(c.split_ids("ood")) | set(c.split_ids("ood_judge"))
    assert not {e.mid for e in examples} & ood_ids
    import re

    ood_words = re.compile(r"\b(cartwheel|backflip|flip|crawl|roll|somersault)", re.I)
    assert not [e.text for e in examples if ood_words.search(e.text)]


def test_extra_train_split_leaves_every_other_split_as_it_was(small_corpus, tmp_path):
    """--extra adds generator-only train motions (in-distribution kinds, train phrasings) after
    every other index: the splits, their files, captions and the normaliser are unchanged."""
    from dataclasses import replace

    extra = build_corpus(tmp_path / "extra", replace(SMALL, n_extra=12), progress=False)
    c, base = MotionCorpus(extra), MotionCorpus(small_corpus)
    assert len(c.split_ids("train_extra")) == 12 and "train_extra" not in base.splits()
    assert not set(c.split_ids("train_extra")) & set((small_corpus / "all.txt").read_text().split())
    for split in ("train", "val", "test", "ood_judge", "ood"):
        assert c.split_ids(split) == base.split_ids(split)
        for mid in c.split_ids(split):
            assert (extra / "texts" / f"{mid}.txt").read_bytes() == (small_corpus / "texts" / f"{mid}.txt").read_bytes()
            assert np.array_equal(c.features(mid), base.features(mid))
    for name in ("Mean.npy", "Std.npy"):
        assert (extra / name).read_bytes() == (small_corpus / name).read_bytes()
    assert "n_extra" not in json.loads((small_corpus / "BUILD.json").read_text())["config"]
    assert c.judge_splits() == base.judge_splits()
    programs = [json.loads(line) for line in (extra / "programs.jsonl").read_text().splitlines()]
    extras = [p for p in programs if p["split"] == "train_extra"]
    assert len(extras) == 12
    assert not {s["action"] for p in extras for s in p["segments"]} & set(OOD_KINDS)
    from backend.data.captions import normalize_text, split_vocabulary

    held = split_vocabulary()["held_out_markers"]
    texts = [normalize_text(cap.text) for p in extras for cap in c.captions(p["id"])]
    assert texts and not [t for t in texts if any(f" {m} " in t for m in held)]


def test_mocap_dir_can_be_a_copy(tmp_path, monkeypatch):
    """VIMORAG_MOCAP_DIR serves the clips where pybullet is not installed (a bare GPU machine)."""
    import shutil

    from backend.data.mocap import load_base_clips, pybullet_motion_dir

    original = pybullet_motion_dir()
    shutil.copytree(original, tmp_path / "motions")
    monkeypatch.setenv("VIMORAG_MOCAP_DIR", str(tmp_path / "motions"))
    assert pybullet_motion_dir() == tmp_path / "motions"
    copy = load_base_clips(["walk"])
    monkeypatch.delenv("VIMORAG_MOCAP_DIR")
    assert [c.clip.joints().shape for c in copy] == [c.clip.joints().shape for c in load_base_clips(["walk"])]
    monkeypatch.setenv("VIMORAG_MOCAP_DIR", str(tmp_path / "missing"))
    with pytest.raises(RuntimeError, match="VIMORAG_MOCAP_DIR"):
        pybullet_motion_dir()


def test_video_motions_need_no_renderer():
    """The tokenizer's video-only motions import no rendering module."""
    import subprocess
    import sys

    code = ("import sys; import backend.data.video_motions as v; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('viewer', 'pyrender', 'mannequin', 'cv2')]; "
            "print(bad); sys.exit(1 if bad else 0)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_program_motions_are_new_ood_kind_motions(embedded_corpus):
    """The tokenizer's extra caption-free motions (`train vqvae --extra-ood`): each contains an
    OOD kind, the same index and seed give the same motion, the validation seed other motions,
    and none is a motion of the corpus's OOD splits (what the tokenizer is judged on)."""
    from backend.data.video_motions import PROGRAM_SEED, PROGRAM_VAL_SEED, program_motion, program_motion_features

    motions = [program_motion(i) for i in range(12)]
    for m in motions:
        assert any(s["action"] in OOD_KINDS for s in m["segments"]), m["segments"]
        assert 40 <= len(m["features"]) <= 201 and m["features"].shape[1] == 263
    again = program_motion_features(3, PROGRAM_SEED)
    assert all(np.array_equal(a, m["features"]) for a, m in zip(again, motions))
    val = program_motion_features(3, PROGRAM_VAL_SEED)
    assert not any(len(a) == len(b) and np.allclose(a, b) for a in val for b in again)
    judged = [f for split in ("ood", "ood_judge")
              for f in embedded_corpus.load_features(split).values()]
    assert len(judged) == 500
    assert not any(len(f) == len(m["features"]) and np.allclose(f, m["features"])
                   for f in judged for m in motions)


def test_judge_motions_are_labelled_new_motions_of_both_kinds(embedded_corpus):
    """The checker's extra motions (`train checker --more N`): the first half in-distribution,
    the second half with an OOD kind, each with the segments it was made of, and none a motion of
    the corpus's evaluation splits or of the tokenizer's program motions."""
    from backend.data.video_motions import JUDGE_VAL_SEED, judge_motions, program_motion

    motions = judge_motions(8)
    assert len(motions) == 8
    for i, (f, segs) in enumerate(motions):
        has_ood = any(s["action"] in OOD_KINDS for s in segs)
        assert has_ood == (i >= 4), (i, segs)
        assert f.shape[1] == 263 and len(f) >= 40
        assert all("speed" in s and "reps" in s for s in segs)
    val = judge_motions(4, seed=JUDGE_VAL_SEED)
    assert not any(len(a) == len(b) and np.allclose(a, b) for a, _ in val for b, _ in motions)
    judged = [f for split in ("test", "ood") for f in embedded_corpus.load_features(split).values()]
    tokenizer = [program_motion(i)["features"] for i in range(8)]
    assert not any(len(f) == len(m) and np.allclose(f, m) for f in judged + tokenizer for m, _ in motions)
