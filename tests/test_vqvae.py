import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from backend.generation.train_vqvae import VQTrainConfig, train_vqvae
from backend.generation.vqvae import MotionVQVAE, QuantizeEMAReset, VQVAEConfig, load_t2m_gpt

D = 263


def tiny_cfg(**kw):
    base = dict(nb_code=16, code_dim=8, width=16, depth=2, dilation_growth_rate=2)
    return VQVAEConfig(**{**base, **kw})


def trained_tiny(seed=0):
    """Tiny model with an initialised codebook (one training-mode forward)."""
    torch.manual_seed(seed)
    m = MotionVQVAE(tiny_cfg()).train()
    m(torch.randn(4, 32, D))
    return m.eval()


# --- shapes ----------------------------------------------------------------------


def test_presets():
    p, e = VQVAEConfig.paper(), VQVAEConfig.embedded()
    assert (p.nb_code, p.code_dim, p.width, p.depth, p.dilation_growth_rate, p.down_t, p.mu) == (512, 512, 512, 3, 3, 2, 0.99)
    assert (e.nb_code, e.code_dim, e.width, e.depth, e.dilation_growth_rate, e.down_t) == (256, 256, 256, 3, 3, 2)
    assert p.downsample == e.downsample == 4


def test_shapes():
    m = trained_tiny()
    x = torch.randn(3, 24, D)
    codes = m.encode(x)
    assert codes.shape == (3, 6) and codes.dtype == torch.long
    assert m.decode(codes).shape == (3, 24, D)
    recon, commit, ppl = m(x)
    assert recon.shape == x.shape and commit.ndim == 0 and ppl.ndim == 0
    with pytest.raises(ValueError, match="multiple of 4"):
        m(torch.randn(1, 22, D))
    with pytest.raises(ValueError, match="multiple of 4"):
        m.encode(torch.randn(1, 30, D))


def test_straight_through_gradient():
    m = trained_tiny()
    z = torch.randn(2, 8, 5, requires_grad=True)
    zq, commit, _ = m.quantizer(z)
    zq.sum().backward()
    assert torch.allclose(z.grad, torch.ones_like(z))


# --- save / load -------------------------------------------------------------------


@pytest.mark.parametrize("dtype,tol", [(None, 0.0), (torch.float16, 5e-2)])
def test_save_load_roundtrip(tmp_path, dtype, tol):
    m = trained_tiny()
    m.save_pretrained(tmp_path / "m", dtype=dtype)
    assert json.loads((tmp_path / "m" / "config.json").read_text())["nb_code"] == 16
    m2 = MotionVQVAE.from_pretrained(tmp_path / "m")
    assert all(p.dtype == torch.float32 for p in m2.state_dict().values())
    assert m2.quantizer.initialised
    x = torch.randn(2, 16, D)
    codes = m.encode(x)
    if dtype is None:
        assert torch.equal(m2.encode(x), codes)
        assert torch.equal(m2(x)[0], m(x)[0])
    assert torch.allclose(m2.decode(codes), m.decode(codes), atol=tol, rtol=0)


def test_from_pretrained_missing_file(tmp_path):
    trained_tiny().save_pretrained(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        MotionVQVAE.from_pretrained(tmp_path)


# --- T2M-GPT checkpoint ----------------------------------------------------------------


def t2m_gpt_keys():
    """(key, shape) of HumanVQVAE.state_dict() for T2M-GPT's t2m.pth, written from models/encdec.py,
    models/resnet.py and models/quantize_cnn.py (activation/norm modules have no parameters;
    quantizer code_sum/code_count are plain attributes, not saved)."""
    W, C, K = 512, 512, 512

    def resblocks(prefix):
        out = []
        for b in range(3):
            out += [(f"{prefix}.{b}.conv1.weight", (W, W, 3)), (f"{prefix}.{b}.conv1.bias", (W,)),
                    (f"{prefix}.{b}.conv2.weight", (W, W, 1)), (f"{prefix}.{b}.conv2.bias", (W,))]
        return out

    keys = [("vqvae.encoder.model.0.weight", (W, 263, 3)), ("vqvae.encoder.model.0.bias", (W,))]
    for i in (2, 3):
        keys += [(f"vqvae.encoder.model.{i}.0.weight", (W, W, 4)), (f"vqvae.encoder.model.{i}.0.bias", (W,))]
        keys += resblocks(f"vqvae.encoder.model.{i}.1.model")
    keys += [("vqvae.encoder.model.4.weight", (C, W, 3)), ("vqvae.encoder.model.4.bias", (C,))]
    keys += [("vqvae.decoder.model.0.weight", (W, C, 3)), ("vqvae.decoder.model.0.bias", (W,))]
    for i in (2, 3):
        keys += resblocks(f"vqvae.decoder.model.{i}.0.model")
        keys += [(f"vqvae.decoder.model.{i}.2.weight", (W, W, 3)), (f"vqvae.decoder.model.{i}.2.bias", (W,))]
    keys += [("vqvae.decoder.model.4.weight", (W, W, 3)), ("vqvae.decoder.model.4.bias", (W,)),
             ("vqvae.decoder.model.6.weight", (263, W, 3)), ("vqvae.decoder.model.6.bias", (263,)),
             ("vqvae.quantizer.codebook", (K, C))]
    assert len(keys) == 67
    return keys


def fake_t2m_state():
    g = torch.Generator().manual_seed(0)
    sd = {}
    for k, shape in t2m_gpt_keys():
        fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 100
        sd[k] = torch.randn(shape, generator=g) / fan_in**0.5
    return sd


def ref_resstack(x, sd, prefix):
    """T2M-GPT Resnet1D forward written out: blocks run with dilations 9, 3, 1 (reverse_dilation=True)."""
    for b, dil in enumerate((9, 3, 1)):
        h = F.conv1d(F.relu(x), sd[f"{prefix}.{b}.conv1.weight"], sd[f"{prefix}.{b}.conv1.bias"], padding=dil, dilation=dil)
        x = x + F.conv1d(F.relu(h), sd[f"{prefix}.{b}.conv2.weight"], sd[f"{prefix}.{b}.conv2.bias"])
    return x


def ref_encoder(x, sd):
    p = "vqvae.encoder.model"
    h = F.relu(F.conv1d(x, sd[f"{p}.0.weight"], sd[f"{p}.0.bias"], padding=1))
    for i in (2, 3):
        h = F.conv1d(h, sd[f"{p}.{i}.0.weight"], sd[f"{p}.{i}.0.bias"], stride=2, padding=1)
        h = ref_resstack(h, sd, f"{p}.{i}.1.model")
    return F.conv1d(h, sd[f"{p}.4.weight"], sd[f"{p}.4.bias"], padding=1)


def ref_decoder(z, sd):
    p = "vqvae.decoder.model"
    h = F.relu(F.conv1d(z, sd[f"{p}.0.weight"], sd[f"{p}.0.bias"], padding=1))
    for i in (2, 3):
        h = ref_resstack(h, sd, f"{p}.{i}.0.model")
        h = F.interpolate(h, scale_factor=2, mode="nearest")
        h = F.conv1d(h, sd[f"{p}.{i}.2.weight"], sd[f"{p}.{i}.2.bias"], padding=1)
    h = F.relu(F.conv1d(h, sd[f"{p}.4.weight"], sd[f"{p}.4.bias"], padding=1))
    return F.conv1d(h, sd[f"{p}.6.weight"], sd[f"{p}.6.bias"], padding=1)


def test_load_t2m_gpt(tmp_path):
    sd = fake_t2m_state()
    path = tmp_path / "t2m.pth"
    torch.save({"net": sd}, path)
    m = load_t2m_gpt(path)
    assert m.config == VQVAEConfig.paper()
    assert not m.training and m.quantizer.initialised
    # names match one to one
    assert sorted(m.state_dict()) == sorted(k.removeprefix("vqvae.") for k in sd)
    for k, v in m.state_dict().items():
        assert torch.equal(v, sd["vqvae." + k]), k
    # behaviour matches an independent functional rewrite of T2M-GPT's forward
    torch.manual_seed(1)
    x = torch.randn(1, 16, D)
    with torch.no_grad():
        assert torch.allclose(m.encoder(x.permute(0, 2, 1)), ref_encoder(x.permute(0, 2, 1), sd), atol=1e-4)
        codes = torch.tensor([[3, 7, 500, 0]])
        z = sd["vqvae.quantizer.codebook"][codes[0]].t()[None]
        assert torch.allclose(m.decode(codes), ref_decoder(z, sd).permute(0, 2, 1), atol=1e-4)


def test_load_t2m_gpt_bad_keys(tmp_path):
    sd = fake_t2m_state()
    del sd["vqvae.decoder.model.4.bias"]
    sd["vqvae.something.else"] = torch.zeros(1)
    path = tmp_path / "t2m.pth"
    torch.save({"net": sd}, path)
    with pytest.raises(ValueError, match=r"missing keys: decoder\.model\.4\.bias") as e:
        load_t2m_gpt(path)
    assert "something.else" in str(e.value)


# --- quantizer ----------------------------------------------------------------------


def test_codebook_initialised_from_first_batch():
    torch.manual_seed(0)
    q = QuantizeEMAReset(nb_code=8, code_dim=4, mu=1.0).train()  # mu=1: EMA is a no-op
    z = torch.randn(2, 4, 10)  # 20 vectors
    assert not q.initialised and q.codebook.abs().sum() == 0
    q(z)
    assert q.initialised
    flat = z.permute(0, 2, 1).reshape(-1, 4)
    assert torch.cdist(q.codebook, flat).min(dim=1).values.max() < 1e-5  # every code is a data vector
    # model level: first training forward fills the codebook
    m = MotionVQVAE(tiny_cfg()).train()
    m(torch.randn(2, 16, D))
    assert m.quantizer.initialised and m.quantizer.codebook.abs().sum() > 0


def test_dead_code_reset_and_ema():
    torch.manual_seed(0)
    q = QuantizeEMAReset(nb_code=4, code_dim=2, mu=0.9).train()
    q.codebook.copy_(torch.tensor([[0.0, 0.0], [10.0, 10.0], [-10.0, 10.0], [100.0, 100.0]]))
    q.mark_initialised()
    q.code_count.copy_(torch.tensor([5.0, 5.0, 5.0, 1.0]))  # code 3 is about to die
    q.code_sum.copy_(q.codebook * q.code_count[:, None])
    target = torch.tensor([1.0, 1.0])
    vecs = target + 0.01 * torch.randn(12, 2)  # all nearest to code 0
    q(vecs.t()[None])  # (1, C=2, T=12)
    # EMA: code 0 moves to (mu*sum + (1-mu)*batch_sum) / (mu*count + (1-mu)*n)
    expect0 = (0.9 * 5 * torch.zeros(2) + 0.1 * vecs.sum(0)) / (0.9 * 5 + 0.1 * 12)
    assert torch.allclose(q.codebook[0], expect0, atol=1e-6)
    assert (q.codebook[0] - target).norm() < 1.0 * target.norm()
    # unused but alive codes keep their position (count 4.5 >= 1)
    assert torch.allclose(q.codebook[1], torch.tensor([10.0, 10.0]))
    # dead code 3 (count 0.9 < 1) is replaced by one of the batch vectors
    assert torch.cdist(q.codebook[3:4], vecs).min() < 1e-5


def test_eval_does_not_touch_codebook():
    m = trained_tiny()
    before = m.quantizer.codebook.clone()
    m.eval()
    m(torch.randn(2, 16, D))
    m.encode(torch.randn(2, 16, D))
    assert torch.equal(before, m.quantizer.codebook)
    fresh = MotionVQVAE(tiny_cfg()).eval()
    fresh(torch.randn(1, 8, D))
    assert not fresh.quantizer.initialised


# --- training ---------------------------------------------------------------------


def smooth_motions(n=20, seed=0):
    """Low-rank smooth signals: 4 sinusoids mixed into 263 dims."""
    rng = np.random.default_rng(seed)
    mix = rng.normal(size=(4, D)) / 2
    out = []
    for _ in range(n):
        t = np.arange(int(rng.integers(40, 80)))[:, None] / 8.0
        latent = np.sin(rng.uniform(0.3, 1.2, 4) * t + rng.uniform(0, 6.3, 4))
        out.append((latent @ mix).astype(np.float32))
    out.append(np.zeros((10, D), np.float32))  # shorter than the window: skipped
    return out


def read_log(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_train_and_resume(tmp_path):
    motions = smooth_motions()
    mcfg = tiny_cfg(nb_code=32, code_dim=32, width=64)

    def tcfg(steps):
        return VQTrainConfig(steps=steps, batch_size=8, window=32, lr=1e-3, warmup_steps=3, lr_milestones=(25,),
                             log_every=5, ckpt_every=10, threads=2, seed=7)

    full = train_vqvae(motions, mcfg, tcfg(30), tmp_path / "full")
    log = read_log(tmp_path / "full" / "train_log.jsonl")
    assert [r["step"] for r in log] == [5, 10, 15, 20, 25, 30]
    assert log[-1]["recon"] < 0.9 * log[0]["recon"]
    assert (tmp_path / "full" / "model" / "config.json").is_file()
    assert (tmp_path / "full" / "model" / "model.safetensors").is_file()
    state = torch.load(tmp_path / "full" / "train_state.pt", weights_only=True)
    assert state["step"] == 30

    # stop at 15, then resume to 30: same steps, same result, nothing redone
    train_vqvae(motions, mcfg, tcfg(15), tmp_path / "res")
    assert torch.load(tmp_path / "res" / "train_state.pt", weights_only=True)["step"] == 15
    resumed = train_vqvae(motions, mcfg, tcfg(30), tmp_path / "res")
    steps = [r["step"] for r in read_log(tmp_path / "res" / "train_log.jsonl")]
    assert steps == [5, 10, 15, 20, 25, 30]
    assert torch.load(tmp_path / "res" / "train_state.pt", weights_only=True)["step"] == 30
    for k, v in full.state_dict().items():
        assert torch.allclose(v, resumed.state_dict()[k], atol=1e-5), k
    loaded = MotionVQVAE.from_pretrained(tmp_path / "res" / "model")
    x = torch.from_numpy(motions[0][None, :32])
    assert torch.equal(loaded.encode(x), resumed.encode(x))


def test_window_sampler_gathers_the_drawn_windows_and_boost():
    from backend.generation.train_vqvae import WindowSampler, window_starts

    motions = smooth_motions(6)[:6]
    cfg = VQTrainConfig(batch_size=16, window=32, seed=3)
    weights = np.full(len(motions), 1 / len(motions))
    for step in (0, 7):
        which, starts = window_starts(np.array([len(m) for m in motions]), weights, cfg, step)
        expect = np.stack([motions[i][s:s + 32] for i, s in zip(which, starts)])
        assert np.array_equal(WindowSampler(motions, weights, cfg)(step).numpy(), expect)
    assert not np.array_equal(WindowSampler(motions, weights, cfg)(0).numpy(),
                              WindowSampler(motions, weights, cfg)(1).numpy())
    # a boosted motion is drawn (about) that many times as often
    only_last = np.zeros(len(motions))
    only_last[-1] = 1.0
    batch = WindowSampler(motions, only_last, cfg)(0).numpy()
    last = motions[-1]
    assert all(any(np.array_equal(w, last[s:s + 32]) for s in range(len(last) - 31)) for w in batch)


def test_frozen_codebook_keeps_codes_and_boost_is_checked(tmp_path):
    motions = smooth_motions()
    mcfg = tiny_cfg(nb_code=32, code_dim=32, width=64)
    base = VQTrainConfig(steps=12, batch_size=8, window=32, lr=1e-3, warmup_steps=2, log_every=4,
                         ckpt_every=12, threads=2, seed=7)
    first = train_vqvae(motions, mcfg, base, tmp_path / "a")
    frozen = VQTrainConfig(**{**base.__dict__, "freeze_codebook": True})
    tuned = train_vqvae(motions, mcfg, frozen, tmp_path / "b", init=first,
                        boost=[4.0] * 10 + [1.0] * (len(motions) - 10))
    assert torch.equal(tuned.quantizer.codebook, first.quantizer.codebook)       # codes kept
    assert not torch.equal(tuned.decoder.model[0].weight, first.decoder.model[0].weight)  # it learned
    free = train_vqvae(motions, mcfg, base, tmp_path / "c", init=first)
    assert not torch.equal(free.quantizer.codebook, first.quantizer.codebook)   # EMA moves codes
    with pytest.raises(ValueError, match="init"):
        train_vqvae(motions, mcfg, frozen, tmp_path / "d")
    with pytest.raises(ValueError, match="boost"):
        train_vqvae(motions, mcfg, base, tmp_path / "e", boost=[1.0])


def test_time_budget_lowers_steps(tmp_path):
    motions = smooth_motions()
    mcfg = tiny_cfg(nb_code=32, code_dim=32, width=64)
    cfg = VQTrainConfig(steps=100_000, batch_size=4, window=32, lr=1e-3, warmup_steps=2,
                        log_every=50, ckpt_every=100_000, val_every=100_000, threads=1,
                        time_budget_s=0.001)
    train_vqvae(motions, mcfg, cfg, tmp_path / "t")
    saved = json.loads((tmp_path / "t" / "train_config.json").read_text())
    assert saved["steps"] == 250 == cfg.steps          # stopped right after the timing steps
    assert read_log(tmp_path / "t" / "train_log.jsonl")[-1]["step"] == 250


def test_fine_tuning_keeps_codes_a_batch_does_not_use():
    """A loaded codebook restarts its EMA at the batch's average count per code, so one batch
    that misses a code does not reset it (with a count of 1 it would be replaced at once)."""
    q = QuantizeEMAReset(nb_code=8, code_dim=2, mu=0.99).train()
    q.codebook.copy_(torch.arange(16, dtype=torch.float32).view(8, 2) * 10)
    q.mark_initialised(count=4.0)
    before = q.codebook.clone()
    q(before[:1].t()[None].repeat(1, 1, 32))      # every vector sits on code 0
    assert torch.allclose(q.codebook[1:], before[1:])
    q.mark_initialised()                           # count 1: the unused codes die at once
    q(before[:1].t()[None].repeat(1, 1, 32))
    assert not torch.allclose(q.codebook[1:], before[1:])


def test_ood_validation_rows_and_curves(tmp_path):
    """A second validation set (`train vqvae --val-ood`) is logged beside the first in the same
    rows and drawn in the learning curves."""
    from backend.curves import plot_vqvae_curves

    motions = smooth_motions()
    mcfg = tiny_cfg(nb_code=32, code_dim=32, width=64)
    cfg = VQTrainConfig(steps=8, batch_size=8, window=32, lr=1e-3, warmup_steps=2, log_every=4,
                        ckpt_every=8, val_every=4, threads=1, seed=7)
    train_vqvae(motions[:10], mcfg, cfg, tmp_path / "r", val_motions=motions[10:12],
                val_ood_motions=[m * 3.0 for m in motions[12:14]])
    val = [r for r in read_log(tmp_path / "r" / "train_log.jsonl") if r.get("kind") == "val"]
    assert [r["step"] for r in val] == [4, 8]
    for r in val:
        assert 0 < r["val_recon"] < r["val_ood_recon"]     # the scaled-up set is reconstructed worse
        assert 0 < r["val_ood_codes_used"] <= 1
    png = plot_vqvae_curves(tmp_path / "r" / "train_log.jsonl", tmp_path / "c.png")
    assert png.read_bytes()[:4] == b"\x89PNG"
