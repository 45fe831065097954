"""The lean Gemma 3 inference pass (backend/generation/lean_decoder.py) against transformers' own:
same hidden states on a tiny random Gemma 3 with left padding, a prompt longer than the sliding
window and a grouped KV head, and the same generated tokens through MotionLLM after merging."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from fake_stack import tiny_tokenizer

from backend.generation.lean_decoder import LeanGemma3
from backend.generation.motion_llm import MotionLLM, MotionLLMConfig, VideoFeatures

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def tiny_gemma(tmp_path_factory):
    """A folder with a tiny random Gemma 3 (3 layers: two sliding-window of 6 positions, one
    full; 4 query heads over 2 KV heads) and a small byte-level BPE tokenizer."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    d = tmp_path_factory.mktemp("tiny_gemma3")
    tok = tiny_tokenizer(d, ["a person walks forward", "someone jumps twice", "Video: Text: Motion:"] * 4, 300)
    torch.manual_seed(0)
    cfg = Gemma3TextConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=48, num_hidden_layers=3,
                           num_attention_heads=4, num_key_value_heads=2, head_dim=8,
                           query_pre_attn_scalar=8, sliding_window=6,
                           layer_types=["sliding_attention", "full_attention", "sliding_attention"],
                           max_position_embeddings=256, initializer_range=0.3,
                           pad_token_id=0, bos_token_id=1, eos_token_id=2)
    model = Gemma3ForCausalLM(cfg)
    with torch.no_grad():   # non-trivial norms (Gemma's start at zero: scale 1)
        for n, p in model.named_parameters():
            if "norm" in n:
                p.normal_(0, 0.3)
    model.save_pretrained(d)
    return d


def _config(path):
    return MotionLLMConfig.phi3(path, 16, lora_r=4, lora_alpha=8, lora_dropout=0.0, max_motion_tokens=12,
                                action_dim=24, object_dim=20, max_text_tokens=32,
                                lora_targets=["q_proj", "k_proj", "v_proj", "o_proj",
                                              "gate_proj", "up_proj", "down_proj"])


def _model(path, seed=1):
    torch.manual_seed(seed)
    model = MotionLLM(_config(path))
    with torch.no_grad():   # a non-trivial adapter (LoRA B starts at zero)
        for n, p in model.named_parameters():
            if ".lora_B." in n:
                p.normal_(0, 0.3)
    return model


def _video(seed):
    rng = np.random.default_rng(seed)
    return VideoFeatures(rng.standard_normal((16, 24)), rng.standard_normal(20))


TEXTS = ["a person walks forward", "someone jumps twice and then walks forward slowly", "jumps"]


def test_supports_only_plain_gemma_bodies(tiny_gemma):
    model = _model(tiny_gemma)
    assert not LeanGemma3.supports(model.decoder)        # LoRA layers still in place
    with pytest.raises(ValueError, match="merge LoRA"):
        LeanGemma3(model.decoder)
    model.merge_lora_()
    assert LeanGemma3.supports(model.decoder) and model._lean is not None


def test_lean_pass_equals_transformers_prefill_and_steps(tiny_gemma):
    """Hidden states of a left-padded batch whose longest row exceeds the sliding window, fed as one
    prefill and then token by token, match transformers' forward with its own cache."""
    from transformers import DynamicCache

    model = _model(tiny_gemma)
    model.merge_lora_()
    lean = model._lean
    batch = model.build_batch(TEXTS, [_video(0), None, _video(2)], padding="left")
    assert batch.attention_mask.shape[1] > 6 and not bool(batch.attention_mask.all())
    embeds, mask, pos = model.embed(batch), batch.attention_mask, batch.position_ids
    with torch.no_grad():
        ref_cache = DynamicCache(config=model.base_model.config)
        ref = model._body(embeds, mask, pos, ref_cache)
        cache = lean.new_cache(len(batch), mask.shape[1] + 5)
        got = lean(embeds, mask, pos, cache)
        real = mask.bool()
        assert torch.allclose(got[real], ref[real], atol=1e-5, rtol=1e-4)
        ones = torch.ones(len(batch), 1, dtype=mask.dtype)
        for step in range(5):
            x = model.motion_embed(torch.full((len(batch),), step + 3))[:, None]
            mask = torch.cat([mask, ones], 1)
            pos = pos[:, -1:] + 1
            a = model._body(x, mask, pos, ref_cache)
            b = lean(x, mask, pos, cache)
            assert torch.allclose(a, b, atol=1e-5, rtol=1e-4), step
        with pytest.raises(ValueError, match="cache holds"):
            lean(x, torch.cat([mask, ones], 1), pos + 1, cache)


def test_unpadded_decoding_skips_masks_and_still_equals_transformers(tiny_gemma):
    """One unpadded row decoded from inside the sliding window (no mask at all) to beyond it (a
    window mask for the sliding layers only): the same hidden states as transformers'."""
    from transformers import DynamicCache

    model = _model(tiny_gemma)
    model.merge_lora_()
    lean = model._lean
    D = model.base_model.config.hidden_size
    gen = torch.Generator().manual_seed(0)
    embeds = torch.randn(1, 3, D, generator=gen)
    mask = torch.ones(1, 3, dtype=torch.long)
    pos = torch.arange(3)[None]
    with torch.no_grad():
        ref_cache = DynamicCache(config=model.base_model.config)
        cache = lean.new_cache(1, 12)
        assert torch.allclose(lean(embeds, mask, pos, cache), model._body(embeds, mask, pos, ref_cache),
                              atol=1e-5, rtol=1e-4)
        for step in range(7):
            mask = torch.cat([mask, mask[:, :1]], 1)
            pos = pos[:, -1:] + 1
            masks = lean._masks(mask, cache.length, 1)
            assert masks["full_attention"] is None
            assert (masks["sliding_attention"] is None) == (mask.shape[1] <= 6), step
            x = torch.randn(1, 1, D, generator=gen)
            a = model._body(x, mask, pos, ref_cache)
            b = lean(x, mask, pos, cache)
            assert torch.allclose(a, b, atol=1e-5, rtol=1e-4), step


def test_merged_model_generates_the_same_tokens_with_either_pass(tiny_gemma):
    model = _model(tiny_gemma, seed=3)
    videos = [_video(0), None, _video(2)]
    kw = {"max_tokens": 10, "min_tokens": 10}
    before = model.generate(TEXTS, videos, **kw)
    model.merge_lora_()
    assert model._lean is not None
    lean = model.generate(TEXTS, videos, **kw)
    sampled = model.generate(TEXTS, videos, greedy=False, top_k=8, seed=5, guidance=[0.0, 1.5, -0.5], **kw)
    model.lean_decoding = False
    plain = model.generate(TEXTS, videos, **kw)
    sampled_plain = model.generate(TEXTS, videos, greedy=False, top_k=8, seed=5, guidance=[0.0, 1.5, -0.5], **kw)
    assert [c.tolist() for c in lean] == [c.tolist() for c in plain] == [c.tolist() for c in before]
    assert [c.tolist() for c in sampled] == [c.tolist() for c in sampled_plain]
    model.lean_decoding = True
    model.quantize_int8_()                       # int8 layers: back to transformers' pass
    assert model._lean is None
    assert [len(c) for c in model.generate(TEXTS, videos, **kw)] == [10, 10, 10]


def test_repeated_rows_share_the_prompt_pass_and_sample_as_separate_rows(tiny_gemma):
    """Several samples of one prompt (best-of-N): rows with the same words and video object run
    the prompt once and copy its cache; the samples equal those of the unshared pass."""
    model = _model(tiny_gemma, seed=4)
    model.merge_lora_()
    v = _video(1)
    texts = [TEXTS[0]] * 3 + [TEXTS[1]] * 2
    videos = [v, v, v, None, None]
    kw = {"max_tokens": 8, "min_tokens": 2, "greedy": False, "top_k": 8, "seed": 11}
    calls = []
    lean = model._lean
    pass_ = type(lean).__call__
    monkey = pytest.MonkeyPatch()
    monkey.setattr(type(lean), "__call__", lambda self, embeds, *a: calls.append(len(embeds)) or pass_(self, embeds, *a))
    try:
        shared = model.generate(texts, videos, guidance=[0.0, 0.0, 0.0, 1.5, 1.5], **kw)
    finally:
        monkey.undo()
    assert calls[0] == 2 * 2 and calls[1] == 2 * 5   # 2 prompts (+ neutral rows), then every row
    model.lean_decoding = False                  # transformers' pass: every row its own prompt
    plain = model.generate(texts, videos, guidance=[0.0, 0.0, 0.0, 1.5, 1.5], **kw)
    assert [c.tolist() for c in shared] == [c.tolist() for c in plain]
    assert len({tuple(c.tolist()) for c in shared[:3]}) > 1      # the samples differ


def test_bfloat16_weights_stay_close_and_leave_the_layers_alone(tiny_gemma):
    """``merge_lora_("bfloat16")``: the lean pass reads bfloat16 copies of the fused weights;
    activations and the cache stay float32, the layers keep their float32 weights (so
    transformers' forward is unchanged), and the hidden states stay within bfloat16's rounding."""
    from transformers import DynamicCache

    ref_model, model = _model(tiny_gemma), _model(tiny_gemma)
    ref_model.merge_lora_()
    model.merge_lora_("bfloat16")
    lean = model._lean
    assert lean.layers[0].qkv.dtype == torch.bfloat16 and lean.dtype == torch.float32
    assert model.decoder.layers[0].self_attn.q_proj.weight.dtype == torch.float32
    batch = model.build_batch(TEXTS, [_video(0), None, _video(2)], padding="left")
    embeds, mask, pos = model.embed(batch), batch.attention_mask, batch.position_ids
    real = mask.bool()
    with torch.no_grad():
        cache = lean.new_cache(len(batch), mask.shape[1])
        assert cache.k[0].dtype == torch.float32
        got = lean(embeds, mask, pos, cache)
        ref = ref_model._lean(embeds, mask, pos, ref_model._lean.new_cache(len(batch), mask.shape[1]))
        body = model._body(embeds, mask, pos, DynamicCache(config=model.base_model.config))
    assert got.dtype == torch.float32
    err = (got[real] - ref[real]).abs().max().item()
    assert 0 < err < 0.05 * ref[real].abs().max().item()           # rounded, but close
    assert torch.allclose(body[real], ref[real], atol=1e-5, rtol=1e-4)   # transformers' pass: float32
    with pytest.raises(ValueError, match="lean_weights"):
        _model(tiny_gemma).merge_lora_("float16")


def test_prepacked_bfloat16_weights_give_the_plain_products_bit_for_bit(tiny_gemma, monkeypatch):
    """The default bfloat16 copies are handed to oneDNN prepacked (``_prepacked``); the hidden
    states and the sampled tokens equal those of plain input-major bfloat16 weights exactly."""
    import backend.generation.lean_decoder as ld

    if not torch.backends.mkldnn.is_available():
        pytest.skip("this torch has no oneDNN: the weights stay plain tensors")
    packed_model, plain_model = _model(tiny_gemma), _model(tiny_gemma)
    packed_model.merge_lora_("bfloat16")
    monkeypatch.setattr(ld, "_prepacked", lambda w: w)
    plain_model.merge_lora_("bfloat16")
    monkeypatch.undo()
    packed, plain = packed_model._lean, plain_model._lean
    assert packed.layers[0].qkv.layout == torch._mkldnn and plain.layers[0].qkv.layout == torch.strided
    assert packed.weight_bytes() == plain.weight_bytes() == sum(
        w.numel() * 2 for L in plain.layers for w in (L.qkv, L.o, L.gate_up, L.down))
    batch = packed_model.build_batch(TEXTS, [_video(0), None, _video(2)], padding="left")
    embeds, mask, pos = packed_model.embed(batch), batch.attention_mask, batch.position_ids
    with torch.no_grad():
        a = packed(embeds, mask, pos, packed.new_cache(len(batch), mask.shape[1]))
        b = plain(embeds, mask, pos, plain.new_cache(len(batch), mask.shape[1]))
    assert torch.equal(a, b)
    kw = dict(greedy=False, seed=3, max_tokens=6, min_tokens=6)
    videos = [_video(0), None, _video(2)]
    assert [c.tolist() for c in packed_model.generate(TEXTS, videos, **kw)] == \
        [c.tolist() for c in plain_model.generate(TEXTS, videos, **kw)]
