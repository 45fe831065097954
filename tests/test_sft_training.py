"""SFT training loop: self-video pairs, validation, early stopping; self-video specs."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from test_motion_llm import TEXTS, make_config, tiny_base  # noqa: F401  (fixture)

from backend.generation.train_llm import (Example, LLMTrainConfig, VideoBank, self_video_ids,
                                          train_sft, validation_loss)
from backend.retrieval.videos.synth import VideoSpec, make_spec, motion_video_spec, spec_joints


class FakeRetriever:
    """Per-frame (16, 24) action features + a (20,) object feature for a fixed set of ids."""

    def __init__(self, ids, seed):
        rng = np.random.default_rng(seed)
        self.feats = {i: (rng.standard_normal((16, 24)).astype(np.float32),
                          rng.standard_normal(20).astype(np.float32)) for i in ids}

    def has_video(self, vid):
        return vid in self.feats

    def video_features(self, vid):
        return self.feats[vid]


def _examples():
    rng = np.random.default_rng(0)
    return [Example(t, rng.integers(0, 16, size=5), video_id=f"db{i}", mid=f"m{i}")
            for i, t in enumerate(TEXTS * 2)]


def test_video_bank_and_self_ids():
    db, own = FakeRetriever(["db0", "db1"], 0), FakeRetriever(["self-m0"], 1)
    bank = VideoBank(db, own, None)
    assert bank.video_features("db1")[0] is db.feats["db1"][0]
    assert bank.video_features("self-m0")[1] is own.feats["self-m0"][1]
    with pytest.raises(KeyError):
        bank.video_features("nowhere")
    assert self_video_ids(own, ["m0", "m1"]) == {"m0": "self-m0"}
    assert self_video_ids(None, ["m0"]) == {}


@pytest.mark.parametrize("share,drop", [(0.0, 1.0), (1.0, 0.0), (1.0, 1.0)])
def test_sft_self_video_share(tiny_base, tmp_path, share, drop):  # noqa: F811
    from backend.generation.motion_llm import MotionLLM

    ex = _examples()
    db = FakeRetriever([e.video_id for e in ex], 0)
    own = FakeRetriever([f"self-{e.mid}" for e in ex[:3]], 1)   # half the motions have one
    torch.manual_seed(0)
    model = MotionLLM(make_config(tiny_base, num_prefix=17))
    cfg = LLMTrainConfig(steps=4, batch_size=6, warmup=1, ckpt_every=10, threads=1, self_video=share,
                         caption_drop=drop)
    train_sft(model, ex, VideoBank(db, own), cfg, tmp_path, self_videos=self_video_ids(own, [e.mid for e in ex]))
    rows = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    # every batch is a whole pass over the 6 examples; 3 of them have their own video, and only
    # those (never a caption shown its retrieved video) may lose their caption
    assert [r["self_videos"] for r in rows] == [3 * int(share)] * len(rows)
    assert [r["captions_hidden"] for r in rows] == [3 * int(share * drop)] * len(rows)


@pytest.mark.parametrize("random_share,drop,counts", [(1.0, 0.0, (6, 0)), (0.0, 1.0, (0, 6)),
                                                       (0.5, 0.5, None)])
def test_sft_random_and_dropped_videos(tiny_base, tmp_path, random_share, drop, counts):  # noqa: F811
    from backend.generation.motion_llm import MotionLLM

    ex = _examples()
    pool = ["rnd0", "rnd1"]
    shown = []

    class Spy(FakeRetriever):
        def video_features(self, vid):
            shown.append(vid)
            return super().video_features(vid)

    spy = Spy([e.video_id for e in ex] + pool, 0)
    torch.manual_seed(0)
    model = MotionLLM(make_config(tiny_base, num_prefix=17))
    cfg = LLMTrainConfig(steps=3, batch_size=6, warmup=1, ckpt_every=10, threads=1,
                         random_video=random_share, drop_video=drop, log_every=1)
    train_sft(model, ex, spy, cfg, tmp_path, random_pool=pool)
    rows = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()
            if "random_videos" in line]
    assert len(rows) == 3
    for r in rows:
        assert r["random_videos"] + r["no_videos"] == 6 and r["self_videos"] == 0
        if counts:
            assert (r["random_videos"], r["no_videos"]) == counts
    # what the model was shown: only pool videos (never a rank-1 one), one per random pick
    assert set(shown) <= set(pool) and len(shown) == sum(r["random_videos"] for r in rows)
    with pytest.raises(ValueError, match="random_pool"):
        train_sft(model, ex, spy, LLMTrainConfig(steps=1, random_video=0.3), tmp_path / "b")
    with pytest.raises(ValueError, match="exceed 1"):
        train_sft(model, ex, spy, LLMTrainConfig(steps=1, self_video=0.5, random_video=0.3,
                                                 drop_video=0.3), tmp_path / "c", random_pool=pool)


@pytest.mark.parametrize("share", [0.0, 1.0])
def test_sft_mirror_shows_mirrored_caption_codes_and_video(tiny_base, tmp_path, share):  # noqa: F811
    from backend.generation.motion_llm import MotionLLM, VideoFeatures

    texts = ["a person kicks with the left leg", "someone turns right twice", "a man jumps"]
    ex = [Example(t, np.full(5, i), video_id=f"db{i}", mid=f"m{i}", mirror_codes=np.full(5, 10 + i))
          for i, t in enumerate(texts)]
    ex.append(Example("a person waves the left hand", np.full(5, 3), video_id="db3", mid="m3"))
    mirrored = []

    class Mirroring(FakeRetriever):
        def mirrored_prior(self, vid):
            mirrored.append(vid)
            return VideoFeatures(*self.feats[vid])

    db = Mirroring([e.video_id for e in ex], 0)
    torch.manual_seed(0)
    model = MotionLLM(make_config(tiny_base, num_prefix=17))
    seen = []
    build = model.build_batch

    def spy(texts, videos, codes, **kw):
        seen.append((list(texts), [int(c[0]) for c in codes]))
        return build(texts, videos, codes, **kw)

    model.build_batch = spy
    cfg = LLMTrainConfig(steps=2, batch_size=4, warmup=1, ckpt_every=10, threads=1, mirror=share,
                         log_every=1)
    train_sft(model, ex, db, cfg, tmp_path)
    assert len(seen) == 2
    for shown_texts, shown_codes in seen:
        pairs = dict(zip(shown_texts, shown_codes))
        if share:      # every example with mirror codes comes mirrored: sides swapped, its codes
            assert pairs == {"a person kicks with the right leg": 10, "someone turns left twice": 11,
                             "a man jumps": 12, "a person waves the left hand": 3}
        else:
            assert pairs == {"a person kicks with the left leg": 0, "someone turns right twice": 1,
                             "a man jumps": 2, "a person waves the left hand": 3}
    assert sorted(set(mirrored)) == (["db0", "db1", "db2"] if share else [])
    rows = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()
            if "mirrored" in line]
    assert [r["mirrored"] for r in rows] == [3 * int(share)] * 2


def test_sft_validation_early_stop_keeps_best(tiny_base, tmp_path):  # noqa: F811
    from backend.generation.motion_llm import MotionLLM

    ex = _examples()
    db = FakeRetriever([e.video_id for e in ex], 0)
    torch.manual_seed(0)
    model = MotionLLM(make_config(tiny_base, num_prefix=17))
    # a learning rate this large makes training diverge after the first steps: validation stops
    # improving, the loop stops early and hands back the best weights it saw
    cfg = LLMTrainConfig(steps=40, batch_size=6, lr=3.0, warmup=1, ckpt_every=100, threads=1,
                         val_every=1, patience=2, grad_clip=1e9)
    out = train_sft(model, ex, db, cfg, tmp_path, val_examples=ex[:3])
    rows = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    val = [r for r in rows if r.get("kind") == "val"]
    assert len(val) < 40                                   # stopped early
    best = min(val, key=lambda r: r["val_loss"])
    assert [r["step"] for r in val][-1] == best["step"] + 2   # patience 2 after the best
    assert validation_loss(out, ex[:3], db) == pytest.approx(best["val_loss"], rel=1e-4)
    state = torch.load(tmp_path / "state.pt", weights_only=True)
    assert json.loads(state["best"])["step"] == best["step"]
    # rerunning the finished run (e.g. to ship it) trains no further and gives the same best
    again = train_sft(MotionLLM(make_config(tiny_base, num_prefix=17)), ex, db, cfg, tmp_path,
                      val_examples=ex[:3])
    assert len((tmp_path / "log.jsonl").read_text().splitlines()) == len(rows)
    assert validation_loss(again, ex[:3], db) == pytest.approx(best["val_loss"], rel=1e-4)


def test_motion_video_spec_shows_the_motion(tmp_path):
    joints = np.random.default_rng(0).standard_normal((250, 22, 3))
    np.save(tmp_path / "m.npy", joints)
    spec = motion_video_spec("m", tmp_path / "m.npy", len(joints), index=3)
    assert (spec.start, spec.end) == (0, 196)                 # the frames the tokens cover
    np.testing.assert_array_equal(spec_joints(spec), joints[:196])
    back = VideoSpec.from_json(json.loads(json.dumps(spec.to_json())))
    np.testing.assert_array_equal(spec_joints(back), joints[:196])
    assert motion_video_spec("m", tmp_path / "m.npy", 80, index=4).to_json() != spec.to_json()
    # database specs keep their original JSON (no motion_file key), so their content keys hold
    assert "motion_file" not in make_spec(0).to_json()


def test_llm_tokenizer_by_name(tmp_path):
    """A model's ``config.tokenizer`` names its VQ-VAE folder; a folder with its own Mean/Std
    (an older tokenizer kept for the models trained on it) uses those, others ``normalizer/``."""
    import shutil

    from backend.generation.vqvae import load_llm_tokenizer
    from backend.checkpoints import checkpoints_dir

    ck = tmp_path / "ck"
    shutil.copytree(checkpoints_dir() / "vqvae", ck / "vqvae")
    shutil.copytree(checkpoints_dir() / "vqvae", ck / "old")
    (ck / "normalizer").mkdir()
    np.save(ck / "normalizer" / "Mean.npy", np.zeros(263, np.float32))
    np.save(ck / "normalizer" / "Std.npy", np.ones(263, np.float32))
    np.save(ck / "old" / "Mean.npy", np.full(263, 2.0, np.float32))
    np.save(ck / "old" / "Std.npy", np.full(263, 3.0, np.float32))
    _, norm = load_llm_tokenizer(ck, "vqvae")
    _, old = load_llm_tokenizer(ck, "old")
    assert float(norm.mean[0]) == 0.0 and float(old.mean[0]) == 2.0 and float(old.std[0]) == 3.0
    with pytest.raises(FileNotFoundError, match="missing"):
        load_llm_tokenizer(ck, "nope")


def test_mcdpo_held_out_pairs_are_validated_and_best_kept(tiny_base, tmp_path):  # noqa: F811
    from backend.generation.motion_llm import MotionLLM
    from backend.generation.train_llm import Preference, train_mcdpo

    rng = np.random.default_rng(1)
    prefs = [Preference(t, f"db{i}", rng.integers(0, 16, size=5), rng.integers(0, 16, size=5), 1.0,
                        False) for i, t in enumerate(TEXTS * 3)]
    db = FakeRetriever([p.video_id for p in prefs], 0)
    torch.manual_seed(0)
    policy = MotionLLM(make_config(tiny_base, num_prefix=17))
    reference = MotionLLM(make_config(tiny_base, num_prefix=17))
    reference.load_trainable_state_dict(policy.trainable_state_dict())
    cfg = LLMTrainConfig(steps=12, batch_size=3, lr=1e-2, warmup=1, ckpt_every=100, threads=1,
                         val_every=3, patience=0)
    out = train_mcdpo(policy, reference, prefs[:6], db, cfg, tmp_path, val_prefs=prefs[6:])
    rows = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    val = [r for r in rows if r.get("kind") == "val"]
    assert [r["step"] for r in val] == [3, 6, 9, 12]
    assert {"val_loss", "val_margin", "val_accuracy"} <= set(val[0])
    train_margin = [r["margin"] for r in rows if r.get("kind") != "val"]
    assert train_margin[-1] > 0                              # it learned the training pairs
    best = min(val, key=lambda r: r["val_loss"])
    # the returned weights are the best held-out step's: same held-out loss again
    from backend.generation.preference import dpo_loss

    def lp(m, which):
        ps = prefs[6:]
        b = m.build_batch([p.text for p in ps], [VideoBank(db).video_prior(p.video_id) for p in ps],
                          [getattr(p, which) for p in ps], padding="right")
        return m.sequence_logprob(b)

    with torch.no_grad():
        _, m = dpo_loss(lp(out, "chosen"), lp(out, "rejected"), lp(reference, "chosen"),
                        lp(reference, "rejected"))
    assert m["loss"] == pytest.approx(best["val_loss"], rel=1e-3)


def test_epoch_sampler_passes_and_resumes_where_it_left_off():
    from backend.generation.train_llm import _epoch_sampler

    cfg = LLMTrainConfig(batch_size=4, seed=3)
    draw = _epoch_sampler(10, cfg)
    straight = [draw(s) for s in range(5)]
    assert sorted(sum(straight, [])[:10]) == list(range(10))          # the first pass: every item once
    resumed = _epoch_sampler(10, cfg)
    assert [resumed(s) for s in (3, 4)] == straight[3:]              # continues, does not replay
    with pytest.raises(ValueError, match="already drawn"):
        resumed(2)


def test_resumed_sft_sees_the_batches_an_uninterrupted_run_would(tiny_base, tmp_path):  # noqa: F811
    from backend.generation.motion_llm import MotionLLM

    ex = _examples()
    db = FakeRetriever([e.video_id for e in ex], 0)

    def run(workdir, steps):
        torch.manual_seed(0)
        model = MotionLLM(make_config(tiny_base, num_prefix=17))
        seen = []
        build = model.build_batch

        def spy(texts, videos, codes, **kw):
            seen.append(list(texts))
            return build(texts, videos, codes, **kw)

        model.build_batch = spy
        cfg = LLMTrainConfig(steps=steps, batch_size=4, warmup=1, ckpt_every=1, threads=1)
        train_sft(model, ex, db, cfg, workdir)
        return seen

    straight = run(tmp_path / "a", 4)
    run(tmp_path / "b", 2)
    assert run(tmp_path / "b", 4) == straight[2:]


@pytest.mark.parametrize("share", [0.0, 1.0])
def test_sft_video_only_pairs_show_database_videos_without_words(tiny_base, tmp_path, share):  # noqa: F811
    from backend.generation.motion_llm import NEUTRAL_TEXT, MotionLLM

    ex = _examples()
    vonly = [Example(NEUTRAL_TEXT, np.full(4, 13 + i), video_id=f"vid{i}", mid=f"video-vid{i}")
             for i in range(3)]
    db = FakeRetriever([e.video_id for e in ex + vonly], 0)
    torch.manual_seed(0)
    model = MotionLLM(make_config(tiny_base, num_prefix=17))
    seen = []
    build = model.build_batch

    def spy(texts, videos, codes, **kw):
        seen.append((list(texts), [len(c) for c in codes]))
        return build(texts, videos, codes, **kw)

    model.build_batch = spy
    cfg = LLMTrainConfig(steps=3, batch_size=6, warmup=1, ckpt_every=10, threads=1, log_every=1,
                         video_only=share, val_every=3)
    train_sft(model, ex, db, cfg, tmp_path, video_only=vonly, val_examples=ex[:2], val_video=vonly[:2])
    train_batches = [s for s in seen if len(s[0]) == 6]
    assert len(train_batches) == 3
    for texts, codes in train_batches:
        if share:              # every slot is a video-only pair: no words, that video's motion
            assert texts == [NEUTRAL_TEXT] * 6 and codes == [4] * 6     # the 4-code motions
        else:
            assert NEUTRAL_TEXT not in texts and codes == [5] * 6
    rows = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["video_only"] for r in rows if "video_only" in r] == [6 * int(share)] * 3
    val = [r for r in rows if r.get("kind") == "val"][-1]
    assert val["val_loss"] == pytest.approx((val["val_caption_loss"] + val["val_video_loss"]) / 2)
    assert val["val_video_loss"] == pytest.approx(validation_loss(model, vonly[:2], db), rel=1e-4)
    with pytest.raises(ValueError, match="video-only examples"):
        train_sft(model, ex, db, LLMTrainConfig(steps=1, video_only=0.2), tmp_path / "b")


class _CountingTokenizer(torch.nn.Module):
    """A stand-in VQ-VAE: one code per 4 frames, the code = the frame block's mean of feature 0
    (so plain and mirrored motions, and different motions, get told apart)."""

    class config:      # noqa: N801 - the attribute the real one has
        downsample = 4

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(1))
        self.calls = 0

    def encode(self, x):
        self.calls += 1
        blocks = x[0, :, 0].reshape(-1, 4).mean(1)
        return (blocks * 1000).round().long()[None]


class _Identity:
    def normalize(self, f):
        return f


def test_video_only_examples_are_the_database_motions(tmp_path):
    from backend.data.video_motions import video_motion
    from backend.generation.motion_llm import NEUTRAL_TEXT
    from backend.generation.train_llm import video_only_examples
    from motioncore.features import joints_to_features, mirror_features

    def rec(index, split, source="synthetic", ood=False):
        return {"id": f"emb{index:05d}", "source": source,
                "spec": {"index": index, "ood": ood, "split": split, "seed": 4242, "start": 0, "end": 60}}

    class DB:
        records = [rec(1, "train"), rec(2, "test"), rec(3, "train", source="upload"),
                   rec(801, "train", ood=True)]

    class R:
        db = DB()

    tok = _CountingTokenizer()
    train = video_only_examples(R(), tok, _Identity(), tmp_path, "train")
    assert [e.video_id for e in train] == ["emb00001", "emb00801"]      # no upload, no test video
    assert all(e.text == NEUTRAL_TEXT and e.mid == f"video-{e.video_id}" for e in train)
    feats = joints_to_features(video_motion(801, True)[0][:60])
    want = (torch.from_numpy(feats[:len(feats) // 4 * 4, 0].reshape(-1, 4).mean(1)) * 1000).round().long()
    assert np.array_equal(train[1].codes, want.numpy())
    mirrored = mirror_features(feats)
    assert train[1].mirror_codes is not None and len(train[1].mirror_codes) == len(mirrored) // 4
    test = video_only_examples(R(), tok, _Identity(), tmp_path, "test")
    assert [e.video_id for e in test] == ["emb00002"]
    calls = tok.calls
    again = video_only_examples(R(), tok, _Identity(), tmp_path, "train")    # cached: no encoding
    assert tok.calls == calls and np.array_equal(again[1].codes, train[1].codes)
