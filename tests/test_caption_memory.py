"""The retriever's caption memory (GeminiMVR.attach_caption_memory): a query's text embedding is
mixed with those of its nearest training predicates in MiniLM space."""
import pytest
import torch
import torch.nn.functional as F

from backend.retrieval.cues import N_CUES
from backend.retrieval.model import GeminiMVR, RetrieverConfig

TINY = dict(width=32, st_blocks=1, temporal_layers=1, heads=2, embed_dim=16, dropout=0.0, text_cues=True)


def unit_rows(n, seed):
    g = torch.Generator().manual_seed(seed)
    x = F.normalize(torch.randn(n, 384, generator=g), dim=-1)
    return torch.cat([x, torch.zeros(n, N_CUES)], 1)


def model_with_memory(memory, **kw):
    torch.manual_seed(0)
    return GeminiMVR(RetrieverConfig(**TINY)).eval().attach_caption_memory(memory, **kw)


def test_a_paraphrase_takes_the_embedding_of_its_training_neighbour():
    memory = unit_rows(20, 0)
    model = model_with_memory(memory, k=1, mix=0.0)
    # a query close to memory row 7 in MiniLM space (an unseen verb for the same motion)
    query = memory[7:8].clone()
    query[:, :384] = F.normalize(query[:, :384] + 0.3 * F.normalize(torch.randn(1, 384), dim=-1), dim=-1)
    whole = torch.zeros(1, 384)
    with torch.no_grad():
        p = model.encode_text(query, whole)["p"]
        own = F.normalize(model.predicate(query), dim=-1)
        neighbour = F.normalize(model.predicate(memory[7:8]), dim=-1)
    assert torch.allclose(p, neighbour, atol=1e-5)
    assert not torch.allclose(p, own, atol=1e-3)


def test_mix_one_is_the_query_alone_and_mix_half_lies_between():
    memory = unit_rows(12, 1)
    query, whole = unit_rows(3, 2), torch.zeros(3, 384)
    torch.manual_seed(0)
    plain = GeminiMVR(RetrieverConfig(**TINY)).eval()
    with torch.no_grad():
        p_plain = plain.encode_text(query, whole)["p"]
        p_one = model_with_memory(memory, k=3, mix=1.0).encode_text(query, whole)["p"]
        p_half = model_with_memory(memory, k=3, mix=0.5).encode_text(query, whole)["p"]
        p_zero = model_with_memory(memory, k=3, mix=0.0).encode_text(query, whole)["p"]
    assert torch.allclose(p_one, p_plain, atol=1e-6)
    # the half mix is the normalised sum of the two ends: closer to each than they are to each other
    ends = (p_plain * p_zero).sum(-1)
    assert ((p_half * p_plain).sum(-1) > ends).all() and ((p_half * p_zero).sum(-1) > ends).all()


def test_the_memory_round_trips_through_save_and_load(tmp_path):
    memory = unit_rows(9, 3)
    model = model_with_memory(memory, k=4, tau=0.1, mix=0.3)
    model.save_pretrained(tmp_path / "r")
    back = GeminiMVR.from_pretrained(tmp_path / "r")
    assert (back.config.memory_size, back.config.memory_k, back.config.memory_tau, back.config.memory_mix) == (9, 4, 0.1, 0.3)
    query, whole = unit_rows(2, 4), torch.zeros(2, 384)
    with torch.no_grad():
        assert torch.allclose(model.encode_text(query, whole)["p"], back.encode_text(query, whole)["p"], atol=1e-6)


def test_a_retriever_without_memory_still_loads_and_k0_removes_it(tmp_path):
    torch.manual_seed(0)
    GeminiMVR(RetrieverConfig(**TINY)).save_pretrained(tmp_path / "old")
    old = GeminiMVR.from_pretrained(tmp_path / "old")
    assert old.config.memory_size == 0 and "caption_memory" not in dict(old.named_buffers())
    model = model_with_memory(unit_rows(5, 5), k=2)
    assert model.config.memory_size == 5
    model.attach_caption_memory(unit_rows(5, 5), k=0)
    assert model.config.memory_size == 0 and "caption_memory" not in dict(model.named_buffers())


@pytest.mark.parametrize("kw", [dict(k=-1), dict(tau=0.0), dict(mix=1.5)])
def test_bad_memory_settings_are_refused(kw):
    with pytest.raises(ValueError):
        model_with_memory(unit_rows(4, 6), **kw)


def test_memory_needs_the_cue_columns_the_retriever_reads():
    with pytest.raises(ValueError, match="columns"):
        model_with_memory(unit_rows(4, 7)[:, :384])
