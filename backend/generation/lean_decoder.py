"""A lean inference pass for Gemma 3 text decoders: the same arithmetic as transformers'
``Gemma3TextModel`` with far less work around it.

Why: a motion token costs one pass through the 18-layer body for one position. transformers'
general code spends much of that step outside the matrix multiplies (mask builders, cache
bookkeeping, kwargs plumbing, seven separate projections a layer). Here each layer runs three
matrix multiplies on fused weights (q|k|v, o, gate|up) plus down, with a preallocated KV cache
and one mask per attention kind built once per call.

Only for inference on a body whose projections are plain ``nn.Linear`` layers (after
``MotionLLM.merge_lora_``). The fused weights are new tensors; each projection's weight is then
re-pointed at its slice of them: no memory is added when every projection holds the model's own
merged weights (LoRA on attention and MLP, as the shipped models), and transformers' own forward
still gives the same numbers (tests compare the two).

The weights are stored input-major, (in, out), and multiplied as ``x @ W``: a decode step is a
matrix-vector product per projection, and on this CPU one over an (out, in) matrix with short
rows (in = 640) streams at about 17.5 GB/s, the same matrix stored (in, out) at about 25 GB/s
(`bench generate` reports the step against its bandwidth bound). nn.Linear's weight becomes the
transposed view of that storage, so transformers' forward still reads the same numbers.

bfloat16 weights (a copy; the default, ``defaults.LEAN_WEIGHTS``) are handed to oneDNN prepacked
in its own blocked layout (``torch.ops.mkldnn._reorder_linear_weight``) and multiplied by
``_linear_pointwise``: the same products bit for bit (tested), 2.3x faster for the 18 layers'
weights than ``x @ W`` on this CPU (5.3 against 12.2 ms for one row; docs/lab-notebook.md, *Prepacked
bfloat16*). Where oneDNN is unavailable they stay plain input-major tensors.

    LeanGemma3.supports(decoder) -> bool
    lean = LeanGemma3(decoder)
    cache = lean.new_cache(rows, capacity)
    h = lean(embeds (B, T, D), key_mask (B, S) bool over the whole sequence so far, position_ids (B, T), cache)
        -> (B, T, D) final-norm hidden states; the cache advances by T
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


def _rms(x: torch.Tensor, scale: torch.Tensor | None, eps: float) -> torch.Tensor:
    """Gemma's RMSNorm with ``scale`` = 1 + weight (computed in float32, as transformers does),
    as torch's fused kernel: one call instead of seven."""
    if x.dtype == torch.float32:
        return F.rms_norm(x, x.shape[-1:], scale, eps)
    return F.rms_norm(x.float(), x.shape[-1:], scale, eps).type_as(x)


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin_signed: torch.Tensor) -> torch.Tensor:
    """Rotary embedding of the half-split layout: ``x * cos + (-x2, x1) * sin``, with the sign
    folded into ``sin_signed`` (its first half negated) so the rotation is one roll."""
    return torch.addcmul(x * cos, x.roll(x.shape[-1] // 2, -1), sin_signed)


def _prepacked(w: torch.Tensor) -> torch.Tensor:
    """An input-major (in, out) weight as oneDNN's prepacked (out, in) tensor for
    ``torch.ops.mkldnn._linear_pointwise`` (``LeanGemma3._mm``); ``w`` itself where oneDNN cannot
    take it (not built in, or a CPU without the instructions)."""
    try:
        if not torch.backends.mkldnn.is_available():
            return w
        packed = torch.ops.mkldnn._reorder_linear_weight(w.t().contiguous(), 4)
        probe = torch.ones(1, w.shape[0], dtype=w.dtype)
        torch.ops.mkldnn._linear_pointwise(probe, packed, None, "none", [], "")
        return packed
    except (RuntimeError, AttributeError, NotImplementedError):
        return w


@dataclass
class _Layer:
    kind: str             # "sliding_attention" or "full_attention"
    qkv: torch.Tensor     # (D, H*hd + 2*K*hd): input-major, used as x @ qkv
    o: torch.Tensor       # (H*hd, D)
    gate_up: torch.Tensor  # (D, 2*I)
    down: torch.Tensor    # (I, D)
    in_norm: torch.Tensor
    post_attn_norm: torch.Tensor
    pre_ff_norm: torch.Tensor
    post_ff_norm: torch.Tensor
    qk_norm: torch.Tensor  # (H + K, hd): q_norm for the query heads, k_norm for the key heads


class LeanCache:
    """Preallocated keys and values of every layer: (rows, kv_heads, capacity, head_dim)."""

    def __init__(self, layers: int, rows: int, kv_heads: int, capacity: int, head_dim: int, dtype):
        self.k = [torch.zeros(rows, kv_heads, capacity, head_dim, dtype=dtype) for _ in range(layers)]
        self.v = [torch.zeros_like(self.k[0]) for _ in range(layers)]
        self.length = 0
        self.capacity = capacity


class LeanGemma3:
    """See the module docstring."""

    @staticmethod
    def supports(decoder) -> bool:
        cfg = getattr(decoder, "config", None)
        if type(decoder).__name__ != "Gemma3TextModel" or cfg is None:
            return False
        if cfg.attn_logit_softcapping is not None or getattr(cfg, "use_bidirectional_attention", False):
            return False
        if cfg.hidden_activation != "gelu_pytorch_tanh":
            return False
        for params in (cfg.rope_parameters or {}).values():
            if params and params.get("rope_type", "default") not in ("default", "linear"):
                return False
        for layer in decoder.layers:
            a, m = layer.self_attn, layer.mlp
            for lin in (a.q_proj, a.k_proj, a.v_proj, a.o_proj, m.gate_proj, m.up_proj, m.down_proj):
                if type(lin) is not nn.Linear or lin.bias is not None:
                    return False
        return True

    @torch.no_grad()
    def __init__(self, decoder, weight_dtype: torch.dtype | None = None):
        if not self.supports(decoder):
            raise ValueError("LeanGemma3 needs a Gemma 3 text body with plain Linear projections "
                             "(merge LoRA first)")
        cfg = decoder.config
        self.decoder = decoder
        self.dtype = decoder.layers[0].self_attn.o_proj.weight.dtype      # activations and the cache
        # weights kept in another dtype (bfloat16: half the bytes a step reads) are copies: the
        # layers keep their own weights, and transformers' forward its numbers
        self.weight_dtype = self.dtype if weight_dtype is None else weight_dtype
        self.eps = cfg.rms_norm_eps
        self.heads, self.kv_heads, self.head_dim = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
        self.scaling = cfg.query_pre_attn_scalar ** -0.5
        self.window = cfg.sliding_window
        rotary = decoder.rotary_emb
        # per attention kind: inverse frequencies and scaling (supports() admits only the rope
        # types whose whole effect is in these two)
        self.rope = {kind: (getattr(rotary, f"{kind}_inv_freq").float(),
                            float(getattr(rotary, f"{kind}_attention_scaling")))
                     for kind in sorted(set(cfg.layer_types))}
        self.final_norm = 1.0 + decoder.norm.weight.float()
        self.layers: list[_Layer] = []
        for i, layer in enumerate(decoder.layers):
            a, m = layer.self_attn, layer.mlp
            qkv = self._fuse([a.q_proj, a.k_proj, a.v_proj])
            gate_up = self._fuse([m.gate_proj, m.up_proj])
            qk_norm = torch.cat([(1.0 + a.q_norm.weight.float()).expand(self.heads, -1),
                                 (1.0 + a.k_norm.weight.float()).expand(self.kv_heads, -1)])
            self.layers.append(_Layer(
                cfg.layer_types[i], qkv, self._fuse([a.o_proj]), gate_up, self._fuse([m.down_proj]),
                *(1.0 + n.weight.float() for n in (layer.input_layernorm, layer.post_attention_layernorm,
                                                   layer.pre_feedforward_layernorm,
                                                   layer.post_feedforward_layernorm)),
                qk_norm.to(self.dtype)))
        self.kinds = sorted({layer.kind for layer in self.layers})

    def _fuse(self, linears: list[nn.Linear]) -> torch.Tensor:
        """One input-major (in, out) weight for one or several projections of the same input;
        each layer's weight becomes the transposed view of its columns (same values, no extra
        memory once the old weights are dropped). In another ``weight_dtype`` it is a copy
        (bfloat16: prepacked for oneDNN where it can, ``_prepacked``)."""
        fused = torch.cat([lin.weight.detach() for lin in linears], 0).t().contiguous()
        if self.weight_dtype != fused.dtype:
            copy = fused.to(self.weight_dtype)
            return _prepacked(copy) if self.weight_dtype == torch.bfloat16 else copy
        start = 0
        for lin in linears:
            rows = lin.weight.shape[0]
            lin.weight = nn.Parameter(fused[:, start:start + rows].t(), requires_grad=False)
            start += rows
        return fused

    def new_cache(self, rows: int, capacity: int) -> LeanCache:
        return LeanCache(len(self.layers), rows, self.kv_heads, capacity, self.head_dim, self.dtype)

    def _mm(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """``x @ w`` in the weights' dtype, the result in the activations'."""
        if w.layout == torch._mkldnn:
            return torch.ops.mkldnn._linear_pointwise(x.to(w.dtype), w, None, "none", [], "").to(x.dtype)
        if w.dtype == x.dtype:
            return x @ w
        return (x.to(w.dtype) @ w).to(x.dtype)

    def weight_bytes(self) -> int:
        """Bytes of the fused layer weights a step reads (each once)."""
        return sum(int(np.prod(w.shape)) * w.element_size()
                   for L in self.layers for w in (L.qkv, L.o, L.gate_up, L.down))

    def _masks(self, key_mask: torch.Tensor, start: int, T: int) -> dict[str, torch.Tensor | None]:
        """Additive masks (B, 1, (H/K)*T, S) per attention kind: causal, padding and (sliding)
        window, repeated for the query heads folded onto each KV head. A query may always see
        itself, so padded positions never produce NaN. None where nothing is masked: one new
        position (decoding) over keys that are all real and all inside the window."""
        S = start + T
        decoding = T == 1 and bool(key_mask[:, :S].all())
        q = torch.arange(start, S).view(T, 1)
        k = torch.arange(S).view(1, S)
        causal = k <= q
        valid = key_mask[:, None, None, :S].bool()
        masks = {}
        for kind in self.kinds:
            sliding = kind == "sliding_attention"
            if decoding and (not sliding or S <= self.window):
                masks[kind] = None
                continue
            allowed = causal & (q - k < self.window) if sliding else causal
            ok = (allowed[None, None] & valid) | (k == q)[None, None]
            mask = torch.zeros(ok.shape, dtype=self.dtype).masked_fill_(~ok, float("-inf"))
            masks[kind] = mask.repeat(1, 1, self.heads // self.kv_heads, 1)   # rows of the folded heads
        return masks

    def _rope(self, position_ids: torch.Tensor, dtype) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """(cos, sin with its first half negated), each (B, T, 1, hd), per attention kind."""
        out = {}
        pos = position_ids[..., None].float()
        for kind in self.kinds:
            inv_freq, scaling = self.rope[kind]
            freqs = pos * inv_freq                                   # (B, T, hd/2)
            cos, sin = freqs.cos() * scaling, freqs.sin() * scaling
            out[kind] = (torch.cat((cos, cos), -1)[:, :, None].to(dtype),
                         torch.cat((-sin, sin), -1)[:, :, None].to(dtype))
        return out

    @torch.no_grad()
    def __call__(self, embeds: torch.Tensor, key_mask: torch.Tensor, position_ids: torch.Tensor,
                 cache: LeanCache) -> torch.Tensor:
        B, T, _ = embeds.shape
        start = cache.length
        if start + T > cache.capacity:
            raise ValueError(f"the cache holds {cache.capacity} positions; {start + T} needed")
        H, K, hd = self.heads, self.kv_heads, self.head_dim
        masks = self._masks(key_mask, start, T)
        rope = self._rope(position_ids, embeds.dtype)
        x = embeds
        end = start + T
        for i, L in enumerate(self.layers):
            qkv = self._mm(_rms(x, L.in_norm, self.eps), L.qkv)
            # queries and keys side by side (B, T, H + K, hd): one norm, one rotation
            qk = _rms(qkv[..., :(H + K) * hd].view(B, T, H + K, hd), None, self.eps) * L.qk_norm
            cos, sin = rope[L.kind]
            qk = _rotate(qk, cos, sin)
            cache.k[i][:, :, start:end] = qk[:, :, H:].transpose(1, 2)
            cache.v[i][:, :, start:end] = qkv[..., (H + K) * hd:].view(B, T, K, hd).transpose(1, 2)
            # the H / K query heads of a KV head share its keys: fold them into the query rows
            # (B, K, (H/K)*T, hd) instead of copying keys and values for every head
            q = qk[:, :, :H].transpose(1, 2).reshape(B, K, (H // K) * T, hd)
            att = F.scaled_dot_product_attention(q, cache.k[i][:, :, :end], cache.v[i][:, :, :end],
                                                 attn_mask=masks[L.kind], scale=self.scaling)
            att = self._mm(att.view(B, H, T, hd).transpose(1, 2).reshape(B, T, H * hd), L.o)
            x = x + _rms(att, L.post_attn_norm, self.eps)
            gate, up = self._mm(_rms(x, L.pre_ff_norm, self.eps), L.gate_up).chunk(2, dim=-1)
            ff = self._mm(F.gelu(gate, approximate="tanh") * up, L.down)
            x = x + _rms(ff, L.post_ff_norm, self.eps)
        cache.length = end
        return _rms(x, self.final_norm, self.eps)
