"""``python -m backend bench peers``: text -> motion time against stand-ins of MoMask and T2M-GPT.

Why: issue 16 asks us to be ahead of every peer on text -> motion on this CPU. The peers' own code
is not ours to ship, so each is rebuilt here as a *timing stand-in*: our own modules at the
peer's published inference sizes, random weights, running the peer's sampling loop (how many
forward passes of which size). Sizes (read from the peers' public code and options; docs/lab-notebook.md,
*Speed against the peers*):

- CLIP ViT-B/32 text tower (both peers): 12 pre-norm layers, width 512, 8 heads, MLP 2048,
  77-token causal context, 49,408-word vocabulary, 512-d projection of the end token.
- MoMask: masked transformer and residual transformer, each 8 post-norm layers, width 384,
  6 heads, feed-forward 1024, text as a prefix token, 512 codes of 512-d; classifier-free
  guidance as two separate passes per step; ``time_steps`` 10 (its README's evaluation; the
  generation script's default is 18, which would be slower), then 5 residual layers (6
  quantizers); each transformer encodes the text with its own CLIP call; a residual
  1-D convolutional decoder (width 512, 2 upsamplings, 3 dilated blocks each) to 263-d.
- T2M-GPT: 18 pre-norm causal blocks (9 + 9), width 1024, 16 heads, MLP 4096, text as a
  prefix token, no KV cache (every step re-runs the whole prefix), one token per step until
  the end token; the same decoder layout with one codebook.

The motion length is the same for all (4 s = 20 tokens at 4 frames a token, 20 fps); ours is
``bench generate``'s fast path (retrieval + generation + decoding) and the pipeline as the app
calls it. Rounds are interleaved (same load on all); medians. Stand-ins leave out the peers'
tokenisation and their length estimator, so they are, if anything, fast.
"""
from __future__ import annotations

import math
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

TOKENS_4S = 20            # 4 s at 20 fps, 4 frames a token (both peers' HumanML3D tokenizers)


def _layers(width: int, heads: int, ff: int, n: int, pre_norm: bool) -> nn.TransformerEncoder:
    layer = nn.TransformerEncoderLayer(width, heads, ff, dropout=0.0, activation="gelu",
                                       batch_first=True, norm_first=pre_norm)
    return nn.TransformerEncoder(layer, n, enable_nested_tensor=False)


class ClipTextStandIn(nn.Module):
    """CLIP ViT-B/32's text tower at its size: token + position embeddings, 12 causal layers,
    final norm, the end token's state projected to 512."""

    def __init__(self, vocab: int = 49408, context: int = 77, width: int = 512, heads: int = 8,
                 layers: int = 12):
        super().__init__()
        self.tok = nn.Embedding(vocab, width)
        self.pos = nn.Parameter(torch.randn(context, width) * 0.01)
        self.body = _layers(width, heads, 4 * width, layers, pre_norm=True)
        self.norm = nn.LayerNorm(width)
        self.proj = nn.Linear(width, 512, bias=False)
        self.register_buffer("causal", nn.Transformer.generate_square_subsequent_mask(context), persistent=False)

    def forward(self, ids: torch.Tensor, end: int) -> torch.Tensor:
        h = self.body(self.tok(ids) + self.pos, mask=self.causal, is_causal=True)
        return self.proj(self.norm(h[:, end]))


class ConvDecoderStandIn(nn.Module):
    """The peers' 1-D convolutional motion decoder: 512-d codes -> 263-d features, x4 in time."""

    def __init__(self, width: int = 512, depth: int = 3, ups: int = 2, out: int = 263):
        super().__init__()
        blocks: list[nn.Module] = [nn.Conv1d(512, width, 3, padding=1), nn.ReLU()]
        for _ in range(ups):
            for d in reversed([3 ** i for i in range(depth)]):
                blocks.append(_DilatedBlock(width, d))
            blocks += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv1d(width, width, 3, padding=1)]
        blocks += [nn.Conv1d(width, width, 3, padding=1), nn.ReLU(), nn.Conv1d(width, out, 3, padding=1)]
        self.net = nn.Sequential(*blocks)

    def forward(self, codes: torch.Tensor) -> torch.Tensor:        # (B, T, 512) -> (B, 4T, 263)
        return self.net(codes.transpose(1, 2)).transpose(1, 2)


class _DilatedBlock(nn.Module):
    def __init__(self, width: int, dilation: int):
        super().__init__()
        self.a = nn.Conv1d(width, width, 3, padding=dilation, dilation=dilation)
        self.b = nn.Conv1d(width, width, 1)

    def forward(self, x):
        return x + self.b(F.relu(self.a(F.relu(x))))


class MoMaskStandIn(nn.Module):
    """MoMask's inference at its published sizes (module docstring): masked + residual
    transformers with guidance as separate passes, two CLIP calls, the decoder."""

    def __init__(self, time_steps: int = 10, quantizers: int = 6, codes: int = 512):
        super().__init__()
        self.time_steps, self.quantizers, self.codes = time_steps, quantizers, codes
        self.clip = ClipTextStandIn()
        self.code_emb = nn.Embedding(codes + 2, 512)
        self.res_emb = nn.Embedding(codes * quantizers, 512)
        self.inp = nn.Linear(512, 384)
        self.cond = nn.Linear(512, 384)
        self.qid = nn.Linear(quantizers, 384)
        self.mask_tf = _layers(384, 6, 1024, 8, pre_norm=False)
        self.res_tf = _layers(384, 6, 1024, 8, pre_norm=False)
        self.head = nn.Sequential(nn.Linear(384, 384), nn.GELU(), nn.LayerNorm(384), nn.Linear(384, codes))
        self.decoder = ConvDecoderStandIn()

    def _logits(self, body, prefix: list[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        h = body(torch.cat([*prefix, x], 1))
        return self.head(h[:, len(prefix):])

    @torch.no_grad()
    def generate(self, ids: torch.Tensor, end: int, tokens: int, gen: torch.Generator) -> torch.Tensor:
        text = self.cond(self.clip(ids, end))[:, None]                 # the masked transformer's CLIP call
        null = torch.zeros_like(text)
        codes = torch.full((1, tokens), self.codes, dtype=torch.long)   # all masked
        for step in range(self.time_steps):
            x = self.inp(self.code_emb(codes))
            cond, uncond = self._logits(self.mask_tf, [text], x), self._logits(self.mask_tf, [null], x)
            logits = uncond + 4.0 * (cond - uncond)
            probs = F.softmax(logits, -1)
            sampled = torch.multinomial(probs[0], 1, generator=gen).T
            conf = probs.gather(-1, sampled[..., None])[..., 0]
            keep = math.ceil(tokens * (1 - math.cos(math.pi / 2 * (step + 1) / self.time_steps)))
            order = conf.argsort(-1, descending=True)
            codes = torch.full_like(codes, self.codes)
            codes[0, order[0, :keep]] = sampled[0, order[0, :keep]]
        text = self.cond(self.clip(ids, end))[:, None]                 # the residual transformer's own
        total = self.res_emb(codes)
        for q in range(1, self.quantizers):
            qid = self.qid(F.one_hot(torch.tensor([q]), self.quantizers).float())[:, None]
            x = self.inp(total)
            cond = self._logits(self.res_tf, [text, qid], x)
            uncond = self._logits(self.res_tf, [torch.zeros_like(text), qid], x)
            nxt = (uncond + 5.0 * (cond - uncond)).argmax(-1)
            total = total + self.res_emb(nxt + q * self.codes)
        return self.decoder(total)


class T2MGPTStandIn(nn.Module):
    """T2M-GPT's inference at its published sizes: one CLIP call, 18 causal blocks re-run over
    the whole prefix for every token (no cache), the decoder."""

    def __init__(self, codes: int = 512, block: int = 51):
        super().__init__()
        self.codes = codes
        self.clip = ClipTextStandIn()
        self.cond = nn.Linear(512, 1024)
        self.tok = nn.Embedding(codes + 2, 1024)
        self.pos = nn.Parameter(torch.randn(block, 1024) * 0.01)
        self.body = _layers(1024, 16, 4096, 18, pre_norm=True)
        self.norm = nn.LayerNorm(1024)
        self.head = nn.Linear(1024, codes + 1, bias=False)
        self.code_emb = nn.Embedding(codes, 512)
        self.decoder = ConvDecoderStandIn()

    @torch.no_grad()
    def generate(self, ids: torch.Tensor, end: int, tokens: int, gen: torch.Generator) -> torch.Tensor:
        seq = self.cond(self.clip(ids, end))[:, None]
        out: list[int] = []
        for step in range(tokens + 1):                 # the last pass is the one that writes the end token
            n = seq.shape[1]
            mask = nn.Transformer.generate_square_subsequent_mask(n)
            h = self.norm(self.body(seq + self.pos[:n], mask=mask, is_causal=True))
            logits = self.head(h[:, -1])
            if step == tokens:                         # fixed length: here the end token is taken
                break
            logits[:, self.codes] = -math.inf
            nxt = int(torch.multinomial(F.softmax(logits, -1)[0], 1, generator=gen))
            out.append(nxt)
            seq = torch.cat([seq, self.tok(torch.tensor([[nxt]]))], 1)
        return self.decoder(self.code_emb(torch.tensor([out])))


def bench_peers(repeats: int = 5, threads: int = 1, model: str = "mcdpo", time_steps: int = 10) -> dict:
    """Median seconds of text -> 4-s motion for ours (fast path and pipeline) and each stand-in,
    interleaved rounds, ``threads`` torch threads."""
    from backend.bench.generate import PROMPTS
    from backend.pipeline import VimoRAGPipeline

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    pipe = VimoRAGPipeline.load(models=(model,), evaluator=False)
    llm = pipe.models[model]
    peers = {"MoMask (stand-in)": MoMaskStandIn(time_steps).eval(), "T2M-GPT (stand-in)": T2MGPTStandIn().eval()}
    params = {name: sum(p.numel() for p in m.parameters()) for name, m in peers.items()}
    gen = torch.Generator().manual_seed(0)
    fresh = iter(range(10**6))

    def prompt(i: int) -> str:
        return f"{PROMPTS[i % len(PROMPTS)][:-1]}, take {next(fresh)}."

    def ours(i: int) -> float:
        t = time.perf_counter()
        text = prompt(i)
        video = pipe._video(pipe.retrieve(text, "gemini", k=1)[0].id)
        codes = llm.generate([text], [video], greedy=False, seed=i, max_tokens=TOKENS_4S, min_tokens=TOKENS_4S)[0]
        pipe.decode(codes, model)
        return time.perf_counter() - t

    def pipeline(i: int) -> float:
        t = time.perf_counter()
        pipe.generate(prompt(i), model, seed=i, length_s=4.0)
        return time.perf_counter() - t

    def peer(m) -> float:
        ids = torch.randint(0, 49408, (1, 77), generator=gen)
        t = time.perf_counter()
        motion = m.generate(ids, 12, TOKENS_4S, gen)
        assert motion.shape == (1, 4 * TOKENS_4S, 263)
        return time.perf_counter() - t

    runs = {"ours (fast path)": ours, "ours (pipeline, as the app)": pipeline,
            **{name: (lambda i, m=m: peer(m)) for name, m in peers.items()}}
    for fn in runs.values():                   # warm-up
        fn(0)
    times: dict[str, list[float]] = {name: [] for name in runs}
    for i in range(repeats):
        for name, fn in runs.items():
            times[name].append(fn(i + 1))
    med = {name: statistics.median(ts) for name, ts in times.items()}
    base = med["ours (fast path)"]
    return {"threads": threads, "repeats": repeats, "tokens": TOKENS_4S, "momask_time_steps": time_steps,
            "median_s": {k: round(v, 4) for k, v in med.items()},
            "vs_ours": {k: round(v / base, 2) for k, v in med.items()},
            "peer_params_m": {k: round(v / 1e6, 1) for k, v in params.items()}}


def format_bench_peers(res: dict) -> str:
    lines = [f"text -> 4-s motion ({res['tokens']} tokens), median of {res['repeats']} interleaved rounds, "
             f"{res['threads']} thread(s); MoMask at time_steps {res['momask_time_steps']}",
             f"{'path':<30}{'seconds':>9}{'x ours':>9}", "-" * 48]
    for name, s in res["median_s"].items():
        lines.append(f"{name:<30}{s:>9.3f}{res['vs_ours'][name]:>9.2f}")
    lines.append("stand-ins: our modules at the peers' published sizes, random weights ("
                 + ", ".join(f"{k} {v} M parameters" for k, v in res["peer_params_m"].items())
                 + "); backend/bench/peers.py says what each runs")
    return "\n".join(lines)


__all__ = ["ClipTextStandIn", "ConvDecoderStandIn", "MoMaskStandIn", "T2MGPTStandIn", "bench_peers",
           "format_bench_peers"]
