import os
import pickle

import numpy as np
import pytest
import torch

from backend.data.dataset import Caption
from backend.evaluation.evaluator import (POS_ENUMERATOR, Evaluator, EvaluatorConfig, GuoEvaluator,
                                          MotionEncoderBiGRUCo, MovementConvEncoder,
                                          TextEncoderBiGRUCo, TextMotionEvaluator, WordVectorizer,
                                          load_guo_evaluator, load_plain_pickle)

D = 263

# The original extractor's parameter names and shapes (Guo et al. networks/modules.py built as in
# evaluator_wrapper.py: dim_pose 263, movement hidden/latent 512, dim_word 300, 15 POS tags,
# text hidden 512, motion hidden 1024, co-embedding 512). Stated here independently of the code.
GUO_KEYS = {
    "movement_encoder": [
        ("main.0.weight", (512, 259, 4)), ("main.0.bias", (512,)),
        ("main.3.weight", (512, 512, 4)), ("main.3.bias", (512,)),
        ("out_net.weight", (512, 512)), ("out_net.bias", (512,)),
    ],
    "text_encoder": [
        ("hidden", (2, 1, 512)),
        ("pos_emb.weight", (300, 15)), ("pos_emb.bias", (300,)),
        ("input_emb.weight", (512, 300)), ("input_emb.bias", (512,)),
        ("gru.weight_ih_l0", (1536, 512)), ("gru.weight_hh_l0", (1536, 512)),
        ("gru.bias_ih_l0", (1536,)), ("gru.bias_hh_l0", (1536,)),
        ("gru.weight_ih_l0_reverse", (1536, 512)), ("gru.weight_hh_l0_reverse", (1536, 512)),
        ("gru.bias_ih_l0_reverse", (1536,)), ("gru.bias_hh_l0_reverse", (1536,)),
        ("output_net.0.weight", (512, 1024)), ("output_net.0.bias", (512,)),
        ("output_net.1.weight", (512,)), ("output_net.1.bias", (512,)),
        ("output_net.3.weight", (512, 512)), ("output_net.3.bias", (512,)),
    ],
    "motion_encoder": [
        ("hidden", (2, 1, 1024)),
        ("input_emb.weight", (1024, 512)), ("input_emb.bias", (1024,)),
        ("gru.weight_ih_l0", (3072, 1024)), ("gru.weight_hh_l0", (3072, 1024)),
        ("gru.bias_ih_l0", (3072,)), ("gru.bias_hh_l0", (3072,)),
        ("gru.weight_ih_l0_reverse", (3072, 1024)), ("gru.weight_hh_l0_reverse", (3072, 1024)),
        ("gru.bias_ih_l0_reverse", (3072,)), ("gru.bias_hh_l0_reverse", (3072,)),
        ("output_net.0.weight", (1024, 2048)), ("output_net.0.bias", (1024,)),
        ("output_net.1.weight", (1024,)), ("output_net.1.bias", (1024,)),
        ("output_net.3.weight", (512, 1024)), ("output_net.3.bias", (512,)),
    ],
}

VOCAB = ["sos", "eos", "unk", "a", "man", "walk", "forward", "slowly", "left", "person", "jump", "the"]
CKPT = "t2m/text_mot_match/model/finest.tar"
META = "t2m/Comp_v6_KLD005/meta"


def fake_state(seed=0):
    g = torch.Generator().manual_seed(seed)
    return {mod: {k: 0.05 * torch.randn(shape, generator=g) for k, shape in keys} for mod, keys in GUO_KEYS.items()}


def write_glove(folder, vocab=VOCAB, dim=300, seed=0):
    folder.mkdir(parents=True, exist_ok=True)
    vectors = np.random.default_rng(seed).standard_normal((len(vocab), dim)).astype(np.float32)
    np.save(folder / "our_vab_data.npy", vectors)
    with open(folder / "our_vab_words.pkl", "wb") as fh:
        pickle.dump(list(vocab), fh)
    with open(folder / "our_vab_idx.pkl", "wb") as fh:
        pickle.dump({w: i for i, w in enumerate(vocab)}, fh)
    return vectors


def write_guo_folder(root, state=None, seed=0):
    (root / CKPT).parent.mkdir(parents=True, exist_ok=True)
    torch.save({**(state or fake_state(seed)), "epoch": 7, "iter": 123}, root / CKPT)
    (root / META).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    np.save(root / META / "mean.npy", rng.standard_normal(D).astype(np.float32))
    np.save(root / META / "std.npy", (0.5 + rng.random(D)).astype(np.float32))
    write_glove(root / "glove", seed=seed)
    return root


def motion(n, seed):
    return np.random.default_rng(seed).standard_normal((n, D)).astype(np.float32)


def tiny_cfg():
    return EvaluatorConfig(dim_movement_enc_hidden=32, dim_movement_latent=32, dim_motion_hidden=32,
                           dim_text_hidden=64)


@pytest.fixture(scope="module")
def guo_dir(tmp_path_factory):
    return write_guo_folder(tmp_path_factory.mktemp("guo"))


@pytest.fixture(scope="module")
def guo(guo_dir):
    return load_guo_evaluator(guo_dir)


@pytest.fixture(scope="module")
def minilm():
    from backend.data.text import get_minilm

    return get_minilm()


@pytest.fixture(scope="module")
def ours(minilm):
    torch.manual_seed(0)
    m = TextMotionEvaluator(tiny_cfg(), text_encoder=minilm)
    rng = np.random.default_rng(1)
    m.set_normalization(rng.standard_normal(D), 0.5 + rng.random(D))
    return m.eval()


# --- original module names ------------------------------------------------------------


def test_guo_module_names_and_shapes():
    built = {
        "movement_encoder": MovementConvEncoder(D - 4, 512, 512),
        "text_encoder": TextEncoderBiGRUCo(300, len(POS_ENUMERATOR), 512, 512),
        "motion_encoder": MotionEncoderBiGRUCo(512, 1024, 512),
    }
    for name, module in built.items():
        got = sorted((k, tuple(v.shape)) for k, v in module.state_dict().items())
        assert got == sorted(GUO_KEYS[name]), name
    assert len(POS_ENUMERATOR) == 15 and POS_ENUMERATOR["OTHER"] == 14


# --- word vectorizer ----------------------------------------------------------------------


def test_word_vectorizer(tmp_path):
    vectors = write_glove(tmp_path)
    wv = WordVectorizer(tmp_path)
    assert len(wv) == len(VOCAB) and "man" in wv
    vec, pos = wv["man/NOUN"]
    np.testing.assert_array_equal(vec, vectors[VOCAB.index("man")])
    assert pos.shape == (15,) and pos[POS_ENUMERATOR["NOUN"]] == 1 and pos.sum() == 1
    _, pos = wv["the/DET"]
    assert pos[POS_ENUMERATOR["DET"]] == 1
    _, pos = wv["a/WEIRDTAG"]  # unknown tag -> OTHER
    assert pos[POS_ENUMERATOR["OTHER"]] == 1
    # VIP words get their VIP category whatever their tag
    vec, pos = wv["walk/VERB"]
    np.testing.assert_array_equal(vec, vectors[VOCAB.index("walk")])
    assert pos[POS_ENUMERATOR["Act_VIP"]] == 1 and pos.sum() == 1
    assert wv["left/ADJ"][1][POS_ENUMERATOR["Loc_VIP"]] == 1
    assert wv["forward/ADV"][1][POS_ENUMERATOR["Loc_VIP"]] == 1
    assert wv["slowly/ADV"][1][POS_ENUMERATOR["Desc_VIP"]] == 1
    # unknown word -> 'unk' vector and OTHER
    vec, pos = wv["zebra/NOUN"]
    np.testing.assert_array_equal(vec, vectors[VOCAB.index("unk")])
    assert pos[POS_ENUMERATOR["OTHER"]] == 1 and pos.sum() == 1
    # a VIP word outside the vocabulary is just unknown
    vec, pos = wv["kick/VERB"]
    np.testing.assert_array_equal(vec, vectors[VOCAB.index("unk")])
    assert pos[POS_ENUMERATOR["OTHER"]] == 1


def test_word_vectorizer_sequence(tmp_path):
    vectors = write_glove(tmp_path)
    wv = WordVectorizer(tmp_path)
    words, pos, n = wv.encode(["a/DET", "man/NOUN", "walk/VERB"])
    assert words.shape == (22, 300) and pos.shape == (22, 15) and n == 5
    np.testing.assert_array_equal(words[0], vectors[VOCAB.index("sos")])
    np.testing.assert_array_equal(words[4], vectors[VOCAB.index("eos")])
    np.testing.assert_array_equal(words[5:], np.repeat(vectors[None, VOCAB.index("unk")], 17, 0))
    assert pos[0, POS_ENUMERATOR["OTHER"]] == 1 and pos[21, POS_ENUMERATOR["OTHER"]] == 1
    words, pos, n = wv.encode(["man/NOUN"] * 30)  # long captions keep 20 words
    assert n == 22 and words.shape == (22, 300)
    np.testing.assert_array_equal(words[21], vectors[VOCAB.index("eos")])


def test_pickles_with_object_references_are_refused(tmp_path):
    (tmp_path / "ok.pkl").write_bytes(pickle.dumps({"a": [1, 2.5, "x", (3,)]}))
    assert load_plain_pickle(tmp_path / "ok.pkl") == {"a": [1, 2.5, "x", (3,)]}

    (tmp_path / "global.pkl").write_bytes(pickle.dumps(os.system))
    with pytest.raises(pickle.UnpicklingError, match="global.pkl"):
        load_plain_pickle(tmp_path / "global.pkl")

    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.mkdir, (str(marker),))

    write_glove(tmp_path / "glove")
    (tmp_path / "glove" / "our_vab_idx.pkl").write_bytes(pickle.dumps(Payload()))
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        WordVectorizer(tmp_path / "glove")
    assert not marker.exists()


# --- Guo loader on fabricated files ------------------------------------------------------------


def test_guo_loads_weights(guo):
    state = fake_state()
    assert isinstance(guo, GuoEvaluator) and isinstance(guo, Evaluator)
    for name in GUO_KEYS:
        module = getattr(guo, name)
        assert not module.training
        for k, v in module.state_dict().items():
            torch.testing.assert_close(v, state[name][k], rtol=0, atol=0)


def test_guo_encodes(guo):
    caps = [Caption("a man walks forward slowly", ("a/DET", "man/NOUN", "walk/VERB", "forward/ADV", "slowly/ADV")),
            Caption("a person jumps", ("a/DET", "person/NOUN", "jump/VERB"))]
    t = guo.encode_text(caps)
    assert t.shape == (2, 512) and t.dtype == np.float32 and np.all(np.isfinite(t))
    assert not np.allclose(t[0], t[1])
    np.testing.assert_allclose(guo.encode_text(caps[::-1]), t[::-1], atol=1e-5)
    np.testing.assert_allclose(guo.encode_text([caps[1]])[0], t[1], atol=1e-5)

    motions = [motion(40, 0), motion(201, 1), motion(17, 2)]
    m = guo.encode_motion(motions)
    assert m.shape == (3, 512) and m.dtype == np.float32 and np.all(np.isfinite(m))
    np.testing.assert_allclose(guo.encode_motion(motions[::-1]), m[::-1], atol=1e-5)  # order restored
    np.testing.assert_allclose(guo.encode_motion([motions[0]])[0], m[0], atol=1e-5)  # batch-independent
    np.testing.assert_allclose(guo.encode_motion([motions[0][:43]])[0], m[0], atol=1e-5)  # cut to x4
    touched = motions[0].copy()
    touched[:, 259:263] = 7.0
    np.testing.assert_allclose(guo.encode_motion([touched])[0], m[0], atol=1e-6)  # contacts ignored
    with pytest.raises(ValueError, match="at least 4"):
        guo.encode_motion([motion(3, 0)])


def test_guo_layout_variants(guo_dir, tmp_path):
    # repository root holding checkpoints/ and glove/ side by side (T2M-GPT layout)
    root = tmp_path / "repo"
    write_guo_folder(root / "checkpoints")
    (root / "checkpoints" / "glove").rename(root / "glove")
    ev = load_guo_evaluator(root)
    np.testing.assert_allclose(ev.encode_motion([motion(40, 0)]),
                               load_guo_evaluator(guo_dir).encode_motion([motion(40, 0)]), atol=1e-6)


def test_guo_missing_key(tmp_path):
    state = fake_state()
    del state["motion_encoder"]["gru.bias_hh_l0_reverse"]
    write_guo_folder(tmp_path, state)
    with pytest.raises(ValueError, match="motion_encoder.*missing keys.*gru.bias_hh_l0_reverse"):
        load_guo_evaluator(tmp_path)
    state = fake_state()
    state["text_encoder"]["extra.weight"] = torch.zeros(3)
    write_guo_folder(tmp_path, state)
    with pytest.raises(ValueError, match="text_encoder.*unexpected keys.*extra.weight"):
        load_guo_evaluator(tmp_path)
    state = fake_state()
    del state["movement_encoder"]
    write_guo_folder(tmp_path, state)
    with pytest.raises(ValueError, match="movement_encoder"):
        load_guo_evaluator(tmp_path)


@pytest.mark.parametrize("rel", [CKPT, f"{META}/std.npy", "glove/our_vab_idx.pkl", "glove/our_vab_data.npy"])
def test_guo_missing_file(tmp_path, rel):
    write_guo_folder(tmp_path, state={k: {} for k in GUO_KEYS})
    (tmp_path / rel).unlink()
    with pytest.raises(FileNotFoundError, match=os.path.basename(rel)):
        load_guo_evaluator(tmp_path)


def test_guo_meta_fallback(tmp_path):
    write_guo_folder(tmp_path)
    (tmp_path / "t2m" / "Comp_v6_KLD005").rename(tmp_path / "t2m" / "Comp_v6_KLD01")
    assert load_guo_evaluator(tmp_path).encode_motion([motion(8, 0)]).shape == (1, 512)


# --- MiniLM -------------------------------------------------------------------------------------


def test_minilm(minilm):
    texts = ["a man walks forward", "someone jumps up and down twice, then sits on the floor", "a man walks forward"]
    e = minilm.encode(texts)
    assert e.shape == (3, 384) and e.dtype == torch.float32
    torch.testing.assert_close(e[0], e[2])
    assert minilm.normalize  # the package's modules.json ends in Normalize
    torch.testing.assert_close(e.norm(dim=1), torch.ones(3))
    minilm._cache.clear()
    torch.testing.assert_close(minilm.encode([texts[1]])[0], e[1], atol=1e-5, rtol=0)  # padding-free
    assert minilm.encode([]).shape == (0, 384)


# --- our evaluator --------------------------------------------------------------------------------


def test_presets():
    assert EvaluatorConfig.paper().dim_motion_hidden == 1024
    cfg = EvaluatorConfig.embedded()
    m = TextMotionEvaluator(cfg)
    assert m._text_model is None  # MiniLM is loaded lazily
    assert 1_000_000 < m.num_parameters() < 4_000_000
    assert all(not k.startswith("_text_model") for k in m.state_dict())


def test_ours_shapes(ours, minilm):
    assert isinstance(ours, Evaluator)
    texts = ["a man walks forward", "a person jumps"]
    t = ours.encode_text(texts)
    assert isinstance(t, torch.Tensor) and t.shape == (2, 512)
    torch.testing.assert_close(ours.encode_text_embeddings(minilm.encode(texts)), t)
    caps = [Caption(s, ()) for s in texts]
    tn = ours.encode_text(caps)
    assert isinstance(tn, np.ndarray) and tn.shape == (2, 512) and tn.dtype == np.float32
    np.testing.assert_allclose(tn, t.detach().numpy(), atol=1e-6)

    x = torch.randn(3, 50, D)
    m = ours.encode_motion(x, torch.tensor([50, 24, 9]))
    assert isinstance(m, torch.Tensor) and m.shape == (3, 512)
    mn = ours.encode_motion([motion(50, 0), motion(9, 1)])
    assert isinstance(mn, np.ndarray) and mn.shape == (2, 512) and mn.dtype == np.float32
    with pytest.raises(ValueError, match="at least 4"):
        ours.encode_motion(x, torch.tensor([50, 3, 9]))


def test_ours_gradients_reach_trainable_parts(minilm):
    torch.manual_seed(0)
    m = TextMotionEvaluator(tiny_cfg(), text_encoder=minilm).train()
    t, mo = m(torch.randn(2, 384), torch.randn(2, 20, D), torch.tensor([20, 12]))
    (t.sum() + mo.sum()).backward()
    assert all(p.grad is not None for p in m.parameters())
    assert all(not p.requires_grad for p in minilm.model.parameters())


def test_ours_ignores_contacts(ours):
    x = torch.randn(2, 40, D)
    lengths = torch.tensor([40, 28])
    base = ours.encode_motion(x, lengths)
    y = x.clone()
    y[..., 259:263] = torch.randn(2, 40, 4) * 10
    torch.testing.assert_close(ours.encode_motion(y, lengths), base, rtol=0, atol=0)
    f = motion(30, 0)
    g = f.copy()
    g[:, 259:263] = 1 - g[:, 259:263]
    np.testing.assert_array_equal(ours.encode_motion([f]), ours.encode_motion([g]))


def test_ours_padding_invariance(ours):
    a = torch.randn(1, 37, D)  # 37 frames -> 36 used
    alone = ours.encode_motion(a, torch.tensor([37]))
    for pad_to, fill in [(37, 0.0), (40, 0.0), (41, 5.0), (120, float("nan"))]:
        padded = torch.full((3, pad_to, D), fill)
        padded[1, :37] = a[0]
        padded[0] = torch.randn(pad_to, D)
        padded[2, :12] = torch.randn(12, D)
        out = ours.encode_motion(padded, torch.tensor([pad_to, 37, 12]))
        torch.testing.assert_close(out[1:2], alone, atol=1e-5, rtol=0)
    # protocol level: independent of the other motions in the list, order restored
    fs = [motion(n, i) for i, n in enumerate([37, 196, 8, 250, 64])]
    batch = ours.encode_motion(fs)
    for i, f in enumerate(fs):
        np.testing.assert_allclose(ours.encode_motion([f])[0], batch[i], atol=1e-5)
    np.testing.assert_allclose(ours.encode_motion(fs[::-1]), batch[::-1], atol=1e-5)
    np.testing.assert_allclose(ours.encode_motion([fs[3][:196]])[0], batch[3], atol=1e-6)  # 196-frame cut


def test_ours_protocol_normalises(ours):
    f = motion(24, 3)
    mean = ours.mean.numpy()
    std = ours.std.numpy()
    x = torch.from_numpy((f - mean) / std)[None]
    np.testing.assert_allclose(ours.encode_motion([f]), ours.encode_motion(x, torch.tensor([24])).detach().numpy(),
                               atol=1e-5)


def test_ours_roundtrip(ours, minilm, tmp_path):
    ours.save_pretrained(tmp_path / "ev")
    from safetensors.torch import load_file

    keys = load_file(str(tmp_path / "ev" / "model.safetensors")).keys()
    assert {"mean", "std", "text_head.0.weight", "motion_encoder.hidden", "movement_encoder.main.0.weight"} <= set(keys)
    assert not any("embeddings" in k or "encoder.layer" in k for k in keys)  # no MiniLM weights
    back = TextMotionEvaluator.from_pretrained(tmp_path / "ev")
    assert back.config == ours.config and not back.training
    assert back.text_model is minilm  # the shared instance from the package
    caps = [Caption("a man walks forward", ()), Caption("a person jumps", ())]
    fs = [motion(50, 0), motion(13, 1)]
    np.testing.assert_array_equal(back.encode_text(caps), ours.encode_text(caps))
    np.testing.assert_array_equal(back.encode_motion(fs), ours.encode_motion(fs))
    torch.testing.assert_close(back.std, ours.std, rtol=0, atol=0)
    with pytest.raises(FileNotFoundError, match="config.json"):
        TextMotionEvaluator.from_pretrained(tmp_path / "nothing")
