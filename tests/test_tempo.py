"""Tempo variants (backend/generation/tempo.py, Picker.with_tempo): a part that asks slow or fast
also gets each sample played slower or faster, and the picker chooses among all of them."""
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from backend.evaluation.checker import KINDS, SPEEDS, InstructionChecker
from backend.evaluation.pick import Picker
from backend.generation.tempo import TEMPO, stretch_codes
from backend.generation.vqvae import MotionVQVAE, VQVAEConfig

IDENTITY = SimpleNamespace(normalize=lambda x: x, denormalize=lambda x: x)


def _tiny_vqvae():
    torch.manual_seed(0)
    m = MotionVQVAE(VQVAEConfig(nb_code=16, code_dim=8, width=16, depth=1, dilation_growth_rate=2))
    m.train()
    m(torch.randn(2, 32, 263))          # initialise the codebook
    return m.eval()


def test_stretch_codes_plays_the_motion_slower_or_faster():
    vq = _tiny_vqvae()
    codes = np.arange(10) % 16
    n = len(codes) * vq.config.downsample           # frames the codes decode to
    slow = stretch_codes(codes, TEMPO["slow"], vq, IDENTITY)
    fast = stretch_codes(codes, TEMPO["fast"], vq, IDENTITY)
    # the decoded motion's duration times the factor (joints -> features drops one frame), to
    # the tokenizer's resolution
    assert len(slow) == int((n - 1) * 1.33) // vq.config.downsample == 12
    assert len(fast) == int((n - 1) * 0.75) // vq.config.downsample == 7
    assert slow.dtype == np.int64 and slow.min() >= 0 and slow.max() < 16
    assert len(stretch_codes(codes, 2.0, vq, IDENTITY, max_tokens=12)) == 12     # cut to the bound
    assert stretch_codes(codes, 1.0, vq, IDENTITY) is None                        # nothing to copy
    assert stretch_codes(codes[:1], 0.5, vq, IDENTITY) is None                   # too short to encode
    with pytest.raises(ValueError, match="positive"):
        stretch_codes(codes, 0.0, vq, IDENTITY)


class _Paced(InstructionChecker):
    """Motion i (features filled with i) is a jump for sure, slow when i >= 100, else normal."""

    def probabilities(self, features, batch=64):
        out = []
        for f in features:
            i = float(np.asarray(f)[0, 0])
            p = {"presence": np.zeros(len(KINDS)), "reps": np.full((len(KINDS), 5), 0.2),
                 "speed": np.zeros((len(KINDS), 3)), "side": np.full((len(KINDS), 2), 0.5),
                 "turn": np.full((len(KINDS), 3), 1 / 3)}
            p["presence"][KINDS.index("jump")] = 1.0
            p["speed"][:, SPEEDS.index("slow" if i >= 100 else "normal")] = 1.0
            out.append(p)
        return out


def _reading(speed):
    return {"action": "jump", "reps": 1, "speed": speed, "side": None, "turn": None}


def test_parts_asking_a_speed_get_a_copy_of_each_sample_at_that_tempo():
    picker = Picker(_Paced(), sees="decoded", samples=2)
    asked = picker.asked([_reading("slow"), _reading("normal"), _reading("fast"), None])
    owners = picker.rows(asked)
    assert owners == [0, 0, 1, 1, 2, 2, 3]
    codes = [np.array([r]) for r in range(len(owners))]
    factors = []

    def stretch(c, f):
        factors.append(f)
        return c + 100                      # "played slower": the checker reads it as slow

    out, own, before = picker.with_tempo(codes, owners, asked, stretch)
    assert before == {0: 2, 2: 2}           # the slow and the fast part; not normal, not one row
    assert own == owners + [0, 0, 2, 2]
    assert [int(c[0]) for c in out[len(codes):]] == [100, 101, 104, 105]      # in row order
    assert factors == [TEMPO["slow"]] * 2 + [TEMPO["fast"]] * 2
    chosen, info = picker.choose(out, own, asked, lambda c: np.full((4, 263), float(c[0]), np.float32))
    assert int(chosen[0][0]) == 100 and info[0]["chosen"] == 2 and info[0]["samples"] == 4  # slow copy
    assert int(chosen[1][0]) == 2                       # normal asked: an original
    # a part any of whose rows cannot be stretched gets no copies at all
    out, own, before = picker.with_tempo(codes, owners, asked, lambda c, f: None if c[0] == 1 else c)
    assert before == {2: 2} and own == owners + [2, 2]


class _Unsure(InstructionChecker):
    """Motion i is a jump for sure, read slow with probability (i % 100) / 100."""

    def probabilities(self, features, batch=64):
        out = _Paced().probabilities(features)
        for f, p in zip(features, out):
            q = (float(np.asarray(f)[0, 0]) % 100) / 100
            p["speed"][:] = 0.0
            p["speed"][:, SPEEDS.index("slow")], p["speed"][:, SPEEDS.index("normal")] = q, 1 - q
        return out


def test_a_tempo_copy_is_kept_only_when_it_reads_the_margin_better():
    asked = [[("kind", "jump", True), ("speed", "jump", "slow")]]
    owners = [0, 0, 0, 0]               # two samples, then their two copies (with_tempo's layout)
    decode = lambda c: np.full((4, 263), float(c[0]), np.float32)  # noqa: E731
    for margin, copy_slow, kept in ((0.1, 70, True), (0.1, 55, False), (0.0, 55, True), (0.1, 64, False)):
        picker = Picker(_Unsure(), sees="decoded", samples=2, tempo_margin=margin)
        codes = [np.array([40]), np.array([45]), np.array([copy_slow]), np.array([10])]
        # scores: mean of (kind 1, slow q): samples 0.70, 0.725; the copy (1 + q) / 2
        chosen, info = picker.choose(codes, owners, asked, decode, copies={0: 2})
        assert (info[0]["chosen"] == 2) is kept, (margin, copy_slow)
        assert info[0]["score"] == pytest.approx((1 + (copy_slow if kept else 45) / 100) / 2)
        # without ``copies`` every row is a sample: the best reading wins
        assert picker.choose(codes, owners, asked, decode)[1][0]["chosen"] == (2 if copy_slow > 45 else 1)
    with pytest.raises(ValueError, match="tempo_margin"):
        Picker(_Unsure(), tempo_margin=-0.1)


class _Counted(InstructionChecker):
    """Motion i is a jump for sure; slow when i >= 100; done twice unless i >= 200 (a copy that
    loses the count)."""

    def probabilities(self, features, batch=64):
        out = _Paced().probabilities(features)
        for f, p in zip(features, out):
            i = float(np.asarray(f)[0, 0])
            p["reps"][:] = 0.0
            p["reps"][:, 0 if i >= 200 else 1] = 1.0
        return out


def test_retime_keeps_a_slower_copy_only_when_it_reads_slower_and_nothing_else_worse():
    picker = Picker(_Counted(), sees="decoded", samples=2)
    twice_slow = {**_reading("slow"), "reps": 2}
    asked = picker.asked([twice_slow, _reading("normal"), twice_slow, None])
    decode = lambda c: np.full((4, 263), float(c[0]), np.float32)
    chosen = [np.array([1]), np.array([2]), np.array([3]), np.array([4])]
    factors = []

    def stretch(c, f):
        factors.append(f)
        return c + (100 if c[0] == 1 else 200)     # part 0 stays twice; part 2's copy loses the count

    out, kept = picker.retime(chosen, asked, stretch, decode)
    assert kept == [True, False, False, False] and int(out[0][0]) == 101
    assert [int(c[0]) for c in out[1:]] == [2, 3, 4] and factors == [TEMPO["slow"]] * 2
    out, kept = picker.retime(chosen, asked, stretch, decode, tol=1.0)    # count loss tolerated
    assert kept == [True, False, True, False]
    out, kept = picker.retime([np.array([150])], asked[:1], lambda c, f: c + 100, decode)
    assert kept == [False]                   # already read as slow: no surer in the copy
    assert picker.retime(chosen, asked, lambda c, f: None, decode)[1] == [False] * 4


def stub_picking_pipeline(monkeypatch, checker: InstructionChecker, reading: dict):
    """A pipeline without models (``test_compose._stub_pipeline``) whose parts all read as
    ``reading``, picked among by ``checker``; code c decodes to motion c / 10, cleaning is a no-op."""
    import backend.pipeline as pl
    from test_compose import _stub_pipeline      # pytest puts tests/ on sys.path

    monkeypatch.setattr(pl, "clean_motion", lambda f, plant_feet=True: SimpleNamespace(joints=np.zeros((len(f), 22, 3))))
    pipe = _stub_pipeline({})
    pipe.restater = SimpleNamespace(
        understood=lambda texts, skip=None, known_too=True, gate=None: [reading for _ in texts],
        restated=lambda t, r, skip=None: [None] * len(t), keeps=lambda lead: False, serves=lambda llm: True,
        config=SimpleNamespace(gate=0.9))
    pipe.picker = Picker(checker, sees="decoded", samples=2, gate=0.5)
    pipe.decode = lambda codes, model=None: np.full((4 * len(codes), 263), float(codes[0]) / 10, np.float32)
    return pipe


def test_the_pipeline_keeps_a_slower_copy_when_the_words_ask_slow(monkeypatch):
    import backend.pipeline as pl

    monkeypatch.setattr(pl, "stretch_codes", lambda c, f, vq, norm, max_tokens=None: np.asarray(c) + 1000)
    pipe = stub_picking_pipeline(monkeypatch, _Paced(), _reading("slow"))
    res = pipe.generate("a person jumps slowly", retime="pool")
    assert res.picks[0]["samples"] == 4 and res.picks[0]["tempo"] is True      # a copy: read as slow
    assert int(res.codes[0]) >= 1000
    res = pipe.generate("a person jumps slowly", retime="kept")     # the kept sample, then its copy
    assert res.picks[0]["samples"] == 2 and res.picks[0]["tempo"] is True and int(res.codes[0]) >= 1000
    res = pipe.generate("a person jumps slowly", retime="off")
    assert res.picks[0]["samples"] == 2 and "tempo" not in res.picks[0] and int(res.codes[0]) < 1000
    for retime in ("pool", "kept"):                                 # exact length: never retimed
        res = pipe.generate("a person jumps slowly", retime=retime, length_s=2.0)
        assert res.picks[0]["samples"] == 2 and not res.picks[0].get("tempo") and len(res.codes) == 10
    with pytest.raises(ValueError, match="retime"):
        pipe.generate("a person jumps slowly", retime="faster")


def stub_row(picker: Picker, reading: dict):
    """An eval LLM row without models: sample i of a batch is code i, code c decodes to motion c,
    every part reads as ``reading``, and ``picker`` chooses."""
    from backend.evaluation import rows as rw

    row = rw.LLMRow.__new__(rw.LLMRow)
    row.llm = SimpleNamespace(generate=lambda texts, videos, **kw: [np.array([i]) for i in range(len(texts))])
    row.compose, row.batch, row.guidance, row.temperature, row.top_k = True, 32, 0.0, 1.0, 0
    row.name, row.video_lead, row.mode, row._lead, row._read = "McDPO (stub)", None, "none", {}, {}
    row.videos = lambda texts, rng: [None] * len(texts)
    row.restate_words = False
    row.restater = SimpleNamespace(keeps=lambda w: False, config=SimpleNamespace(gate=0.9),
                                   understood=lambda texts, skip=None, gate=None: [reading for _ in texts])
    row.picker = picker
    row._decode = lambda c: np.full((4, 263), float(c[0]), np.float32)
    return row


def test_eval_rows_retime_the_kept_sample_as_the_pipeline_does():
    row = stub_row(Picker(_Paced(), sees="decoded", samples=2), _reading("slow"))
    row._stretch = lambda c, f: c + 100
    items = [SimpleNamespace(caption=SimpleNamespace(text="a person jumps slowly"))]
    for retime, first in (("off", 0.0), ("kept", 100.0), ("pool", 100.0)):
        row.retime = retime
        assert row.generate(items, np.random.default_rng(0))[0][0, 0] == first
