"""Gemini-MVR: predicate extraction, the router's weight formula, fused scores, save/load,
retrieval metrics and a short training run that must learn."""
import numpy as np
import pytest
import torch

from backend.retrieval.evaluate import ranks_of, recall_table
from backend.retrieval.model import ActionRouter, GeminiMVR, RetrieverConfig, extract_predicate

TINY = RetrieverConfig(width=32, st_blocks=1, temporal_layers=1, heads=2, embed_dim=16, dropout=0.0)


@pytest.mark.parametrize("caption, predicate", [
    ("a person walks forward.", "walks forward"),
    ("A man is running in a circle.", "running in a circle"),
    ("someone does a cartwheel", "does a cartwheel"),
    ("the individual kicks with the left leg twice.", "kicks with the left leg twice"),
    ("jumps up and down", "jumps up and down"),          # no subject: unchanged
    ("a person.", "a person"),                           # nothing left: whole caption
])
def test_extract_predicate(caption, predicate):
    assert extract_predicate(caption) == predicate


def test_router_weight_formula():
    """w_k = I_k / (I0 + I1) with I = exp(W a + b): non-negative, sum to one, and equal to the
    formula computed by hand from the linear layer."""
    torch.manual_seed(0)
    r = ActionRouter(8)
    with torch.no_grad():
        r.linear.weight.normal_()
        r.linear.bias.copy_(torch.tensor([0.3, -0.2]))
    a = torch.nn.functional.normalize(torch.randn(5, 8), dim=-1)
    w = r(a)
    I = torch.exp(a @ r.linear.weight.T + r.linear.bias)
    assert torch.allclose(w, I / I.sum(-1, keepdim=True), atol=1e-6)
    assert torch.all(w >= 0) and torch.allclose(w.sum(-1), torch.ones(5))
    # a fresh router starts at 0.5 / 0.5
    assert torch.allclose(ActionRouter(8)(a), torch.full((5, 2), 0.5))


def test_fused_score_is_the_papers_formula():
    torch.manual_seed(1)
    m = GeminiMVR(TINY).eval()
    with torch.no_grad():
        m.router.linear.weight.normal_()
        v = m.encode_video(torch.rand(4, 16, 17, 3), torch.randn(4, 1024))
        t = m.encode_text(torch.randn(3, 384), torch.randn(3, 384))
        s = m.fused_scores(t, v)
    for i in range(3):
        for j in range(4):
            I = torch.exp(m.router.linear(v["a"][j]))
            want = (I[0] * (t["p"][i] @ v["a"][j]) + I[1] * (t["g"][i] @ v["o"][j])) / I.sum()
            assert s["fused"][i, j].item() == pytest.approx(want.item(), abs=1e-5)
    # the fused score is one inner product of [p; g] with [w0 a; w1 o]
    q = torch.cat([t["p"], t["g"]], 1)
    x = torch.cat([v["w"][:, :1] * v["a"], v["w"][:, 1:] * v["o"]], 1)
    assert torch.allclose(q @ x.T, s["fused"], atol=1e-5)


def test_shapes_and_normalisation():
    m = GeminiMVR(TINY).eval()
    with torch.no_grad():
        v = m.encode_video(torch.rand(2, 16, 17, 3), torch.randn(2, 1024))
    assert v["frames"].shape == (2, 16, 16) and v["a"].shape == (2, 16) and v["w"].shape == (2, 2)
    assert torch.allclose(v["a"].norm(dim=-1), torch.ones(2), atol=1e-5)
    assert torch.allclose(v["o"].norm(dim=-1), torch.ones(2), atol=1e-5)


def test_save_load_round_trip(tmp_path):
    m = GeminiMVR(TINY).eval()
    m.save_pretrained(tmp_path / "r")
    m2 = GeminiMVR.from_pretrained(tmp_path / "r")
    kp, ob = torch.rand(2, 16, 17, 3), torch.randn(2, 1024)
    with torch.no_grad():
        a, b = m.encode_video(kp, ob), m2.encode_video(kp, ob)
    for k in a:
        assert torch.allclose(a[k], b[k])
    with pytest.raises(FileNotFoundError):
        GeminiMVR.from_pretrained(tmp_path / "missing")


def test_ranks_and_recalls_known_case():
    scores = np.array([[0.9, 0.1, 0.0],     # truth 0 -> rank 1
                       [0.5, 0.4, 0.6],     # truth 1 -> rank 3
                       [0.2, 0.9, 0.3]])    # truth 2 -> rank 2
    ranks = ranks_of(scores, np.array([0, 1, 2]))
    assert ranks.tolist() == [1, 3, 2]
    t = recall_table(ranks)
    assert t["R@1"] == pytest.approx(1 / 3) and t["R@5"] == 1.0 and t["MedR"] == 2.0
