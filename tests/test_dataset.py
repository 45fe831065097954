"""The HumanML3D-layout loader on a small fabricated folder of the real dataset's layout."""
import numpy as np
import pytest

from backend.data.dataset import CorpusError, MotionCorpus, open_corpus


def fabricate_humanml3d(root, n=6, seed=0):
    rng = np.random.default_rng(seed)
    for sub in ("new_joint_vecs", "new_joints", "texts"):
        (root / sub).mkdir(parents=True)
    ids = [f"{i:06d}" for i in range(n)] + ["M000000"]  # HumanML3D names mirrored clips M...
    for i, mid in enumerate(ids):
        T = 40 + 10 * i
        np.save(root / "new_joint_vecs" / f"{mid}.npy", rng.normal(size=(T, 263)).astype(np.float32))
        np.save(root / "new_joints" / f"{mid}.npy", rng.normal(size=(T, 22, 3)).astype(np.float32))
        (root / "texts" / f"{mid}.txt").write_text(
            "a man kicks something or someone with his left leg.#a/DET man/NOUN kick/VERB "
            "something/PRON or/CCONJ someone/PRON with/ADP his/DET left/ADJ leg/NOUN#0.0#0.0\n"
            "a person walks then stops.#a/DET person/NOUN walk/VERB then/ADV stop/VERB#0.5#1.5\n"
            "a person waves.#a/DET person/NOUN wave/VERB#nan#nan\n")
    np.save(root / "Mean.npy", np.zeros(263, np.float32))
    np.save(root / "Std.npy", np.ones(263, np.float32))
    (root / "train.txt").write_text("\n".join(ids[:4] + ["M000000"]) + "\n")
    (root / "val.txt").write_text(ids[4] + "\n")
    (root / "test.txt").write_text(ids[5] + "\n")
    return root


def test_loads_a_humanml3d_folder(tmp_path):
    c = open_corpus(fabricate_humanml3d(tmp_path / "HumanML3D"))
    assert c.split_ids("train") == ["000000", "000001", "000002", "000003", "M000000"]
    assert c.features("000001").shape == (50, 263)
    assert c.joints("000001").shape == (50, 22, 3)
    caps = c.captions("000000")
    assert caps[0].text.startswith("a man kicks") and caps[0].tokens[1] == "man/NOUN"
    assert caps[0].whole and not caps[1].whole
    assert (caps[1].start, caps[1].end) == (0.5, 1.5)
    assert caps[2].whole, "NaN start/end (as in HumanML3D) means the whole motion"
    items = c.caption_items("test")
    assert [len(f) for _, _, f in items] == [90, 20, 90], "sub-clip captions get frames 10..30"
    feats = c.load_features("train", min_frames=45, max_frames=60)
    assert set(feats) == {"000001", "000002", "000003", "M000000"}
    assert max(len(f) for f in feats.values()) == 60
    assert np.allclose(c.normalizer.std, 1.0)


def test_missing_folder_and_files_give_clear_errors(tmp_path):
    with pytest.raises(CorpusError, match="does not exist"):
        MotionCorpus(tmp_path / "nowhere")
    root = fabricate_humanml3d(tmp_path / "h")
    (root / "Std.npy").unlink()
    with pytest.raises(CorpusError, match="Std.npy"):
        MotionCorpus(root)


def test_malformed_files_give_clear_errors(tmp_path):
    root = fabricate_humanml3d(tmp_path / "h")
    c = MotionCorpus(root)
    with pytest.raises(CorpusError, match="no split file ood.txt"):
        c.split_ids("ood")
    (root / "texts" / "000002.txt").write_text("no separators here\n")
    with pytest.raises(CorpusError, match=r"000002.txt:1: malformed caption"):
        c.captions("000002")
    np.save(root / "new_joint_vecs" / "000003.npy", np.full((40, 263), np.nan, np.float32))
    with pytest.raises(CorpusError, match="000003.*NaN"):
        c.features("000003")
    np.save(root / "new_joint_vecs" / "000001.npy", np.zeros((40, 251), np.float32))
    with pytest.raises(CorpusError, match="263"):
        c.features("000001")
    with pytest.raises(CorpusError, match="missing"):
        c.features("999999")
