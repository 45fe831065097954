"""The pose reader (backend/generation/pose_reader.py): a video's keypoints -> motion tokens."""
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from backend.generation.pose_reader import (PoseReader, PoseReaderConfig, first_of_each, frame_times, interp_weights,
                                            draft_codes, load_pose_reader, reader_tokens, token_times, with_drafts,
                                            video_duration)
from backend.generation.train_pose_reader import (Pair, ReaderTrainConfig, evaluate, split_pairs,
                                                  train_pose_reader)

TINY = PoseReaderConfig(width=32, layers=1, heads=2, dropout=0.0, codebook_size=8)


def test_times_are_where_the_database_samples_frames_and_tokens_play():
    # 16 frames of a 160-frame (8 s) video: frame k at floor((k + .5) * 10) / 20 s
    assert np.allclose(frame_times(160, 16)[:3], [0.25, 0.75, 1.25])
    assert np.allclose(token_times(3, 4), [0.1, 0.3, 0.5])
    w = interp_weights(np.array([0.5, 1.5], np.float32), np.array([0.0, 1.0, 1.25, 9.0], np.float32))
    assert np.allclose(w.sum(1), 1.0)
    assert np.allclose(w, [[1, 0], [0.5, 0.5], [0.25, 0.75], [0, 1]])     # clamped at both ends
    assert video_duration({"duration": 5.7, "n_frames": 1}) == 5.7
    assert video_duration({"n_frames": 40, "fps": 20}) == 2.0
    reader = SimpleNamespace(config=TINY)
    assert reader_tokens(2.0, reader) == 10 and reader_tokens(0.01, reader) == 2
    assert reader_tokens(60.0, reader) == TINY.max_tokens


def test_batches_check_their_inputs_and_pad():
    m = PoseReader(TINY)
    kp = [np.zeros((16, 17, 3), np.float32), np.zeros((8, 17, 3), np.float32)]
    b = m.build_batch(kp, [2.0, 1.0], [10, 5], [np.arange(10) % 8, np.arange(3)])
    assert b.poses.shape == (2, 16, TINY.pose_dim) and b.interp.shape == (2, 10, 16)
    assert b.mask.sum().item() == 15
    assert b.targets[1].tolist() == [0, 1, 2] + [-100] * 7          # codes shorter than the part: ignored
    assert m(b).shape == (2, 10, TINY.codebook_size)
    with pytest.raises(ValueError, match="one entry per video"):
        m.build_batch(kp, [2.0], [10, 5])
    with pytest.raises(ValueError, match="n_tokens"):
        m.build_batch(kp, [2.0, 1.0], [0, 0])
    with pytest.raises(ValueError, match="n_tokens"):
        m.build_batch(kp, [2.0, 1.0], [TINY.max_tokens + 1, 1])


def _pairs(n=60, seed=0):
    """Videos whose keypoints say the code: a joint's height in frame k -> the code of the
    tokens playing then (a code per half of the video)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        a, b = rng.integers(0, 8, size=2)
        kp = rng.normal(0, 0.01, (16, 17, 3)).astype(np.float32)
        kp[..., 2] = 1.0
        kp[:8, 0, 1], kp[8:, 0, 1] = a / 8, b / 8
        out.append(Pair(f"v{i}", kp, 2.0, np.array([a] * 5 + [b] * 5, np.int64)))
    return out


def test_training_learns_to_read_and_the_model_round_trips(tmp_path):
    torch.manual_seed(0)
    pairs = _pairs()
    train, val = split_pairs(pairs, 0.2)
    assert train and val and not {p.vid for p in train} & {p.vid for p in val}
    before = evaluate(PoseReader(TINY), val)
    model = train_pose_reader(pairs, tmp_path / "run", TINY,
                              ReaderTrainConfig(steps=300, batch_size=16, lr=3e-3, warmup=10, val_share=0.2,
                                                val_every=100, patience=10, noise=0.0))
    after = evaluate(model, val)
    assert after["loss"] < before["loss"] - 1.0 and after["acc"] > 0.5       # chance: 1/8
    logs = (tmp_path / "run" / "train_log.jsonl").read_text()
    assert '"kind": "val"' in logs
    again = load_pose_reader(tmp_path / "run" / "model")
    kps, durs = [p.keypoints for p in val], [p.duration for p in val]
    assert [c.tolist() for c in again.write(kps, durs, [10] * len(val))] == \
        [c.tolist() for c in model.write(kps, durs, [10] * len(val))]
    drafts = draft_codes(model, kps[:2], durs[:2], drafts=3, temperature=1.0, seed=1)
    assert [len(d) for d in drafts] == [3, 3]
    assert drafts[0][0].tolist() == model.write(kps[:1], durs[:1], [10])[0].tolist()   # argmax first
    with pytest.raises(FileNotFoundError, match="no pose reader"):
        load_pose_reader(tmp_path / "nothing")


def test_drafts_join_their_parts_rows_in_order():
    codes, owners = with_drafts(["a0", "a1", "b0"], [0, 0, 1], {0: ["d0"], 1: ["e0", "e1"]})
    assert owners == [0, 0, 0, 1, 1, 1] and codes == ["a0", "a1", "d0", "b0", "e0", "e1"]
    assert first_of_each(codes, owners, 2) == ["a0", "b0"]


class _Reader:
    """Writes code 7 at every position of each video, as many as asked."""

    def __init__(self):
        self.config, self.calls = TINY, []

    def write(self, keypoints, durations, n_tokens, temperature=0.0, seed=0):
        self.calls.append((len(keypoints), list(durations), list(n_tokens), temperature))
        return [np.full(int(n), 7, np.int64) for n in n_tokens]


def test_the_pipeline_adds_the_readers_drafts_to_a_led_part_and_the_picker_chooses(monkeypatch):
    import backend.pipeline as pl
    from test_compose import _stub_pipeline

    monkeypatch.setattr(pl, "clean_motion", lambda f, plant_feet=True: SimpleNamespace(joints=np.zeros((len(f), 22, 3))))
    seen: dict = {}
    pipe = _stub_pipeline(seen)
    pipe._video = lambda vid, text=None: SimpleNamespace(vid=vid, keypoints=np.zeros((16, 17, 3), np.float32))
    pipe.retriever.db = SimpleNamespace(record=lambda v: {"duration": 2.0, "spec": {"kinds": ["cartwheel"]}})
    pipe.video_lead = SimpleNamespace(config=SimpleNamespace(k=5), weights=lambda parts, caps: np.array(
        [1.0 if "cartwheel" in p else 0.0 for p in parts]))              # the video leads the cartwheel
    pipe.restater = SimpleNamespace(keeps=lambda w: w > 0.5, serves=lambda llm: True,
                                    # cartwheel counted known: a part led at 0.3 stays partly
                                    # led here (the firm lead has its own test, test_video_lead)
                                    config=SimpleNamespace(gate=0.9, classes={"action": ["walk", "cartwheel"]}),
                                    understood=lambda texts, skip=None, known_too=True, gate=None: [None] * len(texts),
                                    restated=lambda texts, readings, skip=None: [None] * len(texts),
                                    manner=lambda texts: [{"reps": 1, "speed": "normal", "turn": None,
                                                           "sure": {"count": .9, "speed": .9, "turn": .9}}] * len(texts))
    chose = []

    class Picker:                   # asks something of the led part only; keeps each part's last row
        gate, samples = 0.5, 2

        def asked(self, readings):
            return [[] for _ in readings]

        def with_led(self, asked, led, texts, records, restater):
            return [[("kind", "cartwheel", True)] if l else a for a, l in zip(asked, led)]

        def rows(self, asked):
            return [i for i, a in enumerate(asked) for _ in range(self.samples if a else 1)]

        def with_tempo(self, codes, owners, asked, stretch):   # nothing here asks slow or fast
            return codes, owners, {}

        def choose(self, codes, owners, asked, decode, copies=None):
            chose.append(list(owners))
            n = [owners.count(p) for p in range(len(asked))]
            return ([[c for c, o in zip(codes, owners) if o == p][-1] for p in range(len(asked))],
                    [{"samples": k, "chosen": k - 1, "score": 1.0} if k > 1 else None for k in n])

        def retime(self, chosen, asked, stretch, decode):       # nothing here asks slow or fast
            return chosen, [False] * len(chosen)

    pipe.picker, pipe.reader = Picker(), _Reader()
    prompt = "a person walks forward, then does a cartwheel"
    res = pipe.generate(prompt, reader_drafts=1)
    assert chose == [[0, 1, 1, 1]]                      # two LLM samples + one draft for the led part
    assert pipe.reader.calls == [(1, [2.0], [10], 0.0)]  # as long as its 2-s video, the most likely codes
    assert res.parts[1]["tokens"] == 10 and res.codes[-10:].tolist() == [7] * 10
    assert res.parts[1]["pick"]["drafts"] == 1 and res.parts[1]["pick"]["reader"] is True   # said to users
    chose.clear()
    pipe.generate(prompt, reader_drafts=1, length_s=2.0)
    assert pipe.reader.calls[-1][2] == [5]              # a length asked: the part's share
    pipe.generate(prompt, reader_drafts=0)
    assert chose == [[0, 1, 1, 1], [0, 1, 1]] and len(pipe.reader.calls) == 2   # no drafts: as before
    chose.clear()                   # a part the video leads a little (0.3), its words unread by the
    pipe.video_lead.weights = lambda parts, caps: np.array([1.0 if "cartwheel" in p else 0.3 for p in parts])
    pipe.generate(prompt, reader_drafts=1)          # restater: drafted and asks what its video shows
    assert chose == [[0, 0, 0, 1, 1, 1]]
    chose.clear()
    pipe.generate(prompt, reader_drafts=1, reader_above=0.5)     # only the led part drafted
    assert chose == [[0, 1, 1, 1]]
    calls = len(pipe.reader.calls)
    pipe.retriever.db = SimpleNamespace(record=lambda v: {"spec": {"kinds": ["cartwheel"]}})   # length unknown
    pipe.generate(prompt, reader_drafts=1, reader_above=0.5)
    assert len(pipe.reader.calls) == calls                    # no draft from a video of unknown length


def test_eval_rows_add_drafts_to_led_parts_and_can_write_them_alone(monkeypatch):
    from backend.evaluation import rows as rw

    row = rw.LLMRow.__new__(rw.LLMRow)
    calls = []

    def generate(texts, videos, **kw):
        calls.append(list(texts))
        return [np.array([1, 2]) for _ in texts]

    row.llm = SimpleNamespace(generate=generate)
    row.compose, row.batch, row.guidance, row.temperature, row.top_k = True, 32, 0.0, 1.0, 0
    row.name, row.mode, row._read, row.restate_words, row.led_cues = "McDPO (stub)", "gemini", {}, False, False
    row.led_temperature, row.restater, row.picker = 0.25, None, None
    row._cache = {"she does a cartwheel": "emb-cw", "he walks": "emb-w"}
    row.videos = lambda texts, rng: [SimpleNamespace(keypoints=np.zeros((16, 17, 3))) for _ in texts]
    row.lead_weights = lambda texts: np.array([1.0 if "cartwheel" in t else 0.0 for t in texts])
    row.retriever = SimpleNamespace(db=SimpleNamespace(record=lambda v: {"duration": 1.0}))
    row.reader, row.reader_drafts, row.reader_temperature, row.reader_only = _Reader(), 2, 0.5, True
    row.reader_tempo, row.reader_above = False, 0.5
    got = []
    row._decode = lambda c: got.append(np.asarray(c).tolist()) or np.zeros((4, 263))
    items = [SimpleNamespace(caption=SimpleNamespace(text=t)) for t in ("she does a cartwheel", "he walks")]
    row.generate(items, np.random.default_rng(0))
    assert calls == [["he walks"]]                       # the led part: no LLM sample, drafts only
    assert got == [[7] * 5, [1, 2]]                       # no picker: the most likely draft (1 s = 5 tokens)
    assert [c[3] for c in row.reader.calls] == [0.0, 0.5]
    row.retriever = SimpleNamespace(db=SimpleNamespace(record=lambda v: {}))      # a video of unknown length
    calls.clear()
    got.clear()
    row.generate(items, np.random.default_rng(0))
    assert calls == [["she does a cartwheel", "he walks"]] and len(row.reader.calls) == 2   # no draft: the LLM's


def test_a_slow_or_fast_part_gets_one_more_draft_at_that_tempo():
    from backend.generation.pose_reader import TEMPO, asked_tempo

    r = _Reader()
    out = draft_codes(r, [np.zeros((16, 17, 3))] * 2, [2.0, 2.0], drafts=1, tempo=[TEMPO["slow"], 1.0])
    assert [len(d) for d in out] == [2, 1]                       # the slow part: one draft more
    assert r.calls[-1][1] == [2.0 * TEMPO["slow"]] and r.calls[-1][2] == [13]   # played 1.33x as long
    out = draft_codes(r, [np.zeros((16, 17, 3))], [2.0], drafts=1, n_tokens=[6], tempo=[TEMPO["fast"]])
    assert r.calls[-1][2] == [6] and len(out[0]) == 2             # a length asked: it stays
    sure = {"count": 0.9, "speed": 0.9, "turn": 0.9}
    assert asked_tempo({"speed": "slow", "sure": sure}) == TEMPO["slow"]
    assert asked_tempo({"speed": "fast", "sure": {**sure, "speed": 0.3}}) == 1.0     # not sure enough
    assert asked_tempo({"speed": "normal", "sure": sure}) == 1.0


def test_reader_pairs_read_every_database_and_refuse_shared_ids(tmp_path):
    from test_sft_training import _CountingTokenizer, _Identity

    from backend.generation.train_pose_reader import reader_pairs

    def rec(i, split="train", seed=4242, prefix="emb"):
        return {"id": f"{prefix}{i:05d}", "source": "synthetic", "duration": 3.0,
                "spec": {"index": i, "ood": True, "split": split, "seed": seed, "start": 0, "end": 60}}

    class DB:                       # a VideoDatabase's reading side
        def __init__(self, records):
            self.records = records
            self.keypoints = np.stack([np.full((16, 17, 3), k, np.float32) for k in range(len(records))])

        def row(self, vid):
            return [r["id"] for r in self.records].index(vid)

        def record(self, vid):
            return self.records[self.row(vid)]

    main = DB([rec(801), rec(802, "test")])
    extra = DB([rec(1, seed=777, prefix="s777-"), rec(2, seed=777, prefix="s777-")])
    pairs = reader_pairs(SimpleNamespace(db=main), _CountingTokenizer(), _Identity(), tmp_path, videos=(extra,))
    assert sorted({p.vid for p in pairs}) == ["emb00801", "s777-00001", "s777-00002"]   # train videos only
    assert len(pairs) == 6                                               # each plain and mirrored
    p = next(p for p in pairs if p.vid == "s777-00002")
    assert p.keypoints[0, 0, 0] == 1.0 and p.duration == 3.0            # its own database's row
    assert not np.array_equal(p.codes, next(q for q in pairs if q.vid == "s777-00001").codes)
    with pytest.raises(ValueError, match="share video ids"):
        reader_pairs(SimpleNamespace(db=main), _CountingTokenizer(), _Identity(), tmp_path,
                     videos=(DB([rec(801)]),))


def test_led_min_tokens_is_the_share_of_the_videos_duration_in_codes():
    from backend.generation.video_lead import led_min_tokens

    assert led_min_tokens(2.0, 1.0, 4, 49) == 10                 # 2 s at 20 fps, 4 frames a code
    assert led_min_tokens(2.0, 0.5, 4, 49) == 5
    assert led_min_tokens(20.0, 1.0, 4, 49) == 49                # at most the model's limit
    assert led_min_tokens(0.3, 1.0, 4, 49) == 4                  # at least what every part gets
    assert led_min_tokens(2.0, 0.0, 4, 49) == 4 and led_min_tokens(0.0, 1.0, 4, 49) == 4


def test_a_led_part_is_sampled_at_least_as_long_as_its_video(monkeypatch):
    import backend.pipeline as pl
    from test_compose import _stub_pipeline

    monkeypatch.setattr(pl, "clean_motion", lambda f, plant_feet=True: SimpleNamespace(joints=np.zeros((len(f), 22, 3))))
    seen: dict = {}
    pipe = _stub_pipeline(seen)
    pipe._video = lambda vid, text=None: SimpleNamespace(vid=vid, keypoints=np.zeros((16, 17, 3), np.float32))
    pipe.retriever.db = SimpleNamespace(record=lambda v: {"duration": 2.0, "spec": {"kinds": ["cartwheel"]}})
    weight = {"cartwheel": 1.0}
    pipe.video_lead = SimpleNamespace(config=SimpleNamespace(k=5), weights=lambda parts, caps: np.array(
        [weight["cartwheel"] if "cartwheel" in p else 0.0 for p in parts]))
    pipe.picker = pipe.reader = pipe.restater = None
    prompt = "a person walks forward, then does a cartwheel"

    def least(**kw):
        seen.clear()
        pipe.generate(prompt, **kw)
        return seen["calls"][0][2]["min_tokens"]

    assert least() == [4, 10]                          # the led part: its 2-s video's 10 codes
    assert least(led_length=0.5) == [4, 5] and least(led_length=0) == 4
    assert least(max_tokens=6) == [4, 6]               # never more than the codes allowed
    assert least(length_s=2.0) == [5, 5]               # an exact length asked: each part its share
    weight["cartwheel"] = 0.4                          # led only a little: its words decide
    assert least() == 4


def test_eval_rows_sample_led_parts_at_least_as_long_as_their_videos():
    from backend.evaluation import rows as rw

    row = rw.LLMRow.__new__(rw.LLMRow)
    kws = []

    def generate(texts, videos, **kw):
        kws.append(kw)
        return [np.array([1, 2]) for _ in texts]

    row.llm = SimpleNamespace(generate=generate, config=SimpleNamespace(max_motion_tokens=49))
    row.vqvae = SimpleNamespace(config=SimpleNamespace(downsample=4))
    row.compose, row.batch, row.guidance, row.temperature, row.top_k = True, 32, 0.0, 1.0, 0
    row.name, row.mode, row._read, row.restate_words, row.led_cues = "McDPO (stub)", "gemini", {}, False, False
    row.led_temperature, row.restater, row.picker, row.reader = 0.25, None, None, None
    row._cache = {"she does a cartwheel": "emb-cw", "he walks": "emb-w"}
    row.videos = lambda texts, rng: [SimpleNamespace(keypoints=np.zeros((16, 17, 3))) for _ in texts]
    row.lead_weights = lambda texts: np.array([1.0 if "cartwheel" in t else 0.0 for t in texts])
    row.retriever = SimpleNamespace(db=SimpleNamespace(record=lambda v: {"duration": 3.0}))
    row._decode = lambda c: np.zeros((4, 263))
    items = [SimpleNamespace(caption=SimpleNamespace(text=t)) for t in ("she does a cartwheel", "he walks")]
    row.led_length = 1.0
    row.generate(items, np.random.default_rng(0))
    assert kws[-1]["min_tokens"] == [15, 4]            # 3 s = 15 codes for the led part only
    row.led_length = 0.0
    row.generate(items, np.random.default_rng(0))
    assert kws[-1]["min_tokens"] == 4
    with pytest.raises(ValueError, match="led_length"):
        rw.with_sampling([], led_length=-1)
