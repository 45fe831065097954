"""The peers' timing stand-ins run the sampling loops the benchmark says they run (forward passes
counted) and produce a 4-s motion of HumanML3D's 263-d features."""
import torch

from backend.bench.peers import TOKENS_4S, MoMaskStandIn, T2MGPTStandIn


def _count(module, store, key):
    def hook(mod, args, kwargs=None):
        store.setdefault(key, []).append(args[0].shape[1])
    module.register_forward_pre_hook(hook)


def test_momask_stand_in_runs_guided_masked_and_residual_passes():
    torch.manual_seed(0)
    m = MoMaskStandIn(time_steps=3).eval()
    calls = {}
    _count(m.clip, calls, "clip")
    _count(m.mask_tf, calls, "mask")
    _count(m.res_tf, calls, "res")
    out = m.generate(torch.randint(0, 49408, (1, 77)), 12, TOKENS_4S, torch.Generator().manual_seed(0))
    assert out.shape == (1, 4 * TOKENS_4S, 263) and torch.isfinite(out).all()
    assert len(calls["clip"]) == 2                                  # each transformer encodes the text
    assert calls["mask"] == [TOKENS_4S + 1] * (2 * 3)               # text prefix; guided: 2 per step
    assert calls["res"] == [TOKENS_4S + 2] * (2 * 5)                # 6 quantizers: 5 residual layers


def test_t2m_gpt_stand_in_reruns_the_whole_prefix_for_every_token():
    torch.manual_seed(0)
    m = T2MGPTStandIn().eval()
    calls = {}
    _count(m.body, calls, "body")
    out = m.generate(torch.randint(0, 49408, (1, 77)), 12, 5, torch.Generator().manual_seed(0))
    assert out.shape == (1, 20, 263) and torch.isfinite(out).all()
    assert calls["body"] == [1, 2, 3, 4, 5, 6]                      # no cache; the last pass ends it


def test_bench_peers_refuses_bad_counts_before_loading_anything(capsys):
    from backend.cli import main

    assert main(["bench", "peers", "--repeats", "0"]) == 2
    assert "--repeats and --threads must be at least 1" in capsys.readouterr().err
    assert main(["bench", "peers", "--threads", "0"]) == 2
