"""``python -m backend bench generate``: text -> motion latency on this CPU.

One run = retrieval (Gemini-MVR text encoding + FAISS) + motion-token generation + VQ-VAE
decoding, for a motion of a fixed length (4 s = 20 tokens; end-of-motion suppressed so every
run generates the same number of tokens). The fast path uses the motion-only head and the KV
cache, with LoRA merged into the weights and the lean Gemma 3 pass on bfloat16 weights (as the
pipeline loads it: ``defaults.LEAN_WEIGHTS``); the "float32" row is the same pass on float32
weights (the tokens of transformers' pass), with how far apart their distributions are;
the "transformers" row is the same merged model through transformers' own forward pass
(``lean_decoding = False``); the "unmerged" row is the same path with LoRA kept as adapters
(three multiplies per adapted layer); the naive path
re-runs the whole sequence every step and computes the base model's full text-vocabulary head,
as a model writing motion tokens as text would; the "int8" row is the fast path with the merged
layers quantized to int8 (``MotionLLM.quantize_int8_``: lossy, so `eval generation --int8`
must keep the tables within their intervals before it can become a default). The "pipeline"
row is ``VimoRAGPipeline.generate`` as the app calls it (top-5 retrieval, the video lead, the
clean-skeleton step; no export or rendering) for a clip of the same length. Every run has a
prompt not seen before (a fresh text encoding, no cache hit). Median of repeats.
"""
from __future__ import annotations

import statistics
import time

import torch

from backend.defaults import LEAN_WEIGHTS
from backend.checkpoints import checkpoints_dir
from backend.generation.motion_llm import MotionLLM
from backend.pipeline import VimoRAGPipeline
from motioncore.skeleton import FPS

PROMPTS = ("a person walks forward and then turns around.", "someone does a cartwheel.",
           "a man jumps twice.", "a person kicks with the left leg.", "a woman dances happily.")


def bench_generate(repeats: int = 10, seconds: float = 4.0, threads: int = 2, model: str = "mcdpo") -> dict:
    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    pipe = VimoRAGPipeline.load(models=(model,), evaluator=False)
    load_s = time.perf_counter() - t0
    llm = pipe.models[model]
    unmerged = MotionLLM.from_pretrained(checkpoints_dir() / f"llm-{model}")   # shares the base
    int8 = MotionLLM.from_pretrained(checkpoints_dir() / f"llm-{model}")
    int8.merge_lora_()
    int8.quantize_int8_()
    f32 = MotionLLM.from_pretrained(checkpoints_dir() / f"llm-{model}")
    f32.merge_lora_("float32")          # the lean pass on float32 weights (the pipeline's: LEAN_WEIGHTS)
    unpacked = MotionLLM.from_pretrained(checkpoints_dir() / f"llm-{model}")
    _merge_unpacked(unpacked)           # the same weights as plain tensors, not prepacked for oneDNN
    tokens = int(round(seconds * FPS / pipe.vqvae.config.downsample))
    fresh = iter(range(10**6))

    def prompt(i: int) -> str:
        return f"{PROMPTS[i % len(PROMPTS)][:-1]}, take {next(fresh)}."

    def run(naive: bool, text: str, seed: int, model_=None, lean: bool = True) -> dict:
        llm.lean_decoding = lean
        t = time.perf_counter()
        hits = pipe.retrieve(text, "gemini", k=1)
        t1 = time.perf_counter()
        video = pipe._video(hits[0].id)
        m = model_ or llm
        fn = m.generate_naive if naive else m.generate
        codes = fn([text], [video], greedy=False, seed=seed, max_tokens=tokens, min_tokens=tokens)[0]
        t2 = time.perf_counter()
        pipe.decode(codes, model)
        t3 = time.perf_counter()
        llm.lean_decoding = True
        return {"retrieval": t1 - t, "generation": t2 - t1, "decoding": t3 - t2, "total": t3 - t,
                "tokens": len(codes)}

    def run_pipeline(text: str, seed: int) -> dict:
        res = pipe.generate(text, model, seed=seed, length_s=seconds)
        return {"reading": 0.0, "picking": 0.0, **res.timing, "tokens": len(res.codes),
                "restated": any(res.read_as), "picked": any(res.picks)}

    run(False, prompt(0), 0)                         # warm-up (first-call allocations)
    run(False, prompt(0), 0, unmerged)
    run(False, prompt(0), 0, int8)
    run(False, prompt(0), 0, f32)
    run(False, prompt(0), 0, unpacked)
    run(False, prompt(0), 0, lean=False)
    run_pipeline(prompt(0), 0)
    fast, plain, slow, quant, whole, full, loose = [], [], [], [], [], [], []
    for i in range(repeats):                         # interleaved: same load on all
        fast.append(run(False, prompt(i), i))
        loose.append(run(False, prompt(i), i, unpacked))
        full.append(run(False, prompt(i), i, f32))
        plain.append(run(False, prompt(i), i, lean=False))
        quant.append(run(False, prompt(i), i, int8))
        whole.append(run_pipeline(prompt(i), i))
        if i % 2 == 0:
            slow.append(run(False, prompt(i), i, unmerged))
    naive = [run(True, prompt(i), i) for i in range(max(3, repeats // 3))]
    med = lambda rows, k: statistics.median(r[k] for r in rows)
    out = {"seconds": seconds, "tokens": tokens, "threads": threads, "repeats": repeats,
           "load_s": round(load_s, 2),
           "fast": {k: round(med(fast, k), 4) for k in ("retrieval", "generation", "decoding", "total")},
           "float32": {k: round(med(full, k), 4) for k in ("retrieval", "generation", "decoding", "total")},
           "unpacked": {k: round(med(loose, k), 4) for k in ("retrieval", "generation", "decoding", "total")},
           "transformers": {k: round(med(plain, k), 4) for k in ("retrieval", "generation", "decoding", "total")},
           "unmerged": {k: round(med(slow, k), 4) for k in ("retrieval", "generation", "decoding", "total")},
           "int8": {k: round(med(quant, k), 4) for k in ("retrieval", "generation", "decoding", "total")},
           "naive": {k: round(med(naive, k), 4) for k in ("retrieval", "generation", "decoding", "total")},
           "pipeline": {k: round(med(whole, k), 4) for k in ("retrieval", "generation", "decoding", "total")}}
    # the pipeline also reads prompts in words the LLM never saw (backend/generation/restate.py)
    out["pipeline"]["reading"] = round(med(whole, "reading"), 4)
    out["pipeline"]["restated"] = sum(r["restated"] for r in whole)
    # and samples each part it reads several times, keeping the picker's choice (evaluation/pick.py)
    out["pipeline"]["picking"] = round(med(whole, "picking"), 4)
    out["pipeline"]["picked"] = sum(r["picked"] for r in whole)
    out["lean_speedup"] = round(out["transformers"]["generation"] / out["fast"]["generation"], 2)
    out["speedup"] = round(out["naive"]["total"] / out["fast"]["total"], 2)
    out["merge_speedup"] = round(out["unmerged"]["generation"] / out["fast"]["generation"], 2)
    out["int8_speedup"] = round(out["fast"]["generation"] / out["int8"]["generation"], 2)
    out["int8_fidelity"] = _fidelity(pipe, f32, int8, tokens)
    out["weights"] = LEAN_WEIGHTS
    out["weights_speedup"] = round(out["float32"]["generation"] / out["fast"]["generation"], 2)
    out["packing_speedup"] = round(out["unpacked"]["generation"] / out["fast"]["generation"], 2)
    out["weights_fidelity"] = _fidelity(pipe, f32, llm, tokens, lean=True)
    out["decode_step"] = _decode_step_vs_bound(pipe, llm, tokens, prompt)
    llm.lean_decoding = False
    out["decode_step_transformers"] = _decode_step_vs_bound(pipe, llm, tokens, prompt)
    llm.lean_decoding = True
    out["target_met"] = out["fast"]["total"] < 1.0 and out["speedup"] >= 3.0
    out["decode_step_float32"] = _decode_step_vs_bound(pipe, f32, tokens, prompt)
    out["decode_step_unpacked"] = _decode_step_vs_bound(pipe, unpacked, tokens, prompt)
    assert all(r["tokens"] == tokens for r in fast + plain + slow + quant + naive + whole + full + loose)
    return out


def _merge_unpacked(llm) -> None:
    """``llm.merge_lora_`` on ``LEAN_WEIGHTS`` with the lean pass's weights left as plain
    tensors (how it multiplied before session 27), for the packing row."""
    import backend.generation.lean_decoder as lean_decoder

    keep = lean_decoder._prepacked
    lean_decoder._prepacked = lambda w: w
    try:
        llm.merge_lora_(LEAN_WEIGHTS)
    finally:
        lean_decoder._prepacked = keep


def _bandwidth_gb_s(mb: int = 256, repeats: int = 5) -> float:
    """Memory bandwidth a matrix-vector product reaches here: a float32 matrix of ``mb`` MB
    (larger than any cache) times a vector, best of ``repeats`` (GB/s)."""
    n = int((mb * 2**20 / 4) ** 0.5)
    w, x = torch.randn(n, n), torch.randn(n)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        torch.mv(w, x)
        best = min(best, time.perf_counter() - t)
    return w.numel() * 4 / best / 1e9


def _packed_bandwidth_gb_s(mb: int = 256, repeats: int = 5) -> float | None:
    """The same, for the fastest way this machine streams a matrix that we found: a bfloat16
    matrix of ``mb`` MB prepacked for oneDNN times a vector (as the lean pass multiplies); None
    without oneDNN. Often well above ``_bandwidth_gb_s`` (torch.mv does not reach the memory's
    bandwidth), so the bound it gives is the stricter one."""
    from backend.generation.lean_decoder import _prepacked

    n = int((mb * 2**20 / 2) ** 0.5)
    w = _prepacked(torch.randn(n, n).to(torch.bfloat16))
    if w.layout != torch._mkldnn:
        return None
    x = torch.randn(1, n).to(torch.bfloat16)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        torch.ops.mkldnn._linear_pointwise(x, w, None, "none", [], "")
        best = min(best, time.perf_counter() - t)
    return n * n * 2 / best / 1e9


def _decode_step_vs_bound(pipe, llm, tokens: int, prompt) -> dict:
    """One decode step (one motion token with the KV cache: the time of 2N tokens minus that of
    N, over N; median of 3) against the bound set by reading every weight a step uses once at
    the measured bandwidth (the decoder's layers and the motion head; the token-embedding
    table is only gathered from, not read)."""
    lean = llm._lean if llm.lean_decoding else None
    if lean is not None:           # what the lean pass reads: its fused weights, in their dtype
        weights = lean.weight_bytes()
    else:
        weights = sum(p.numel() * p.element_size() for n, p in llm.decoder.named_parameters()
                      if "embed_tokens" not in n)
        weights += sum(b.numel() * b.element_size() for n, b in llm.decoder.named_buffers()
                       if "embed_tokens" not in n and b.is_floating_point())
    weights += sum(p.numel() * p.element_size() for p in llm.motion_head.parameters())
    gb_s = _bandwidth_gb_s()
    text = prompt(0)
    video = pipe._video(pipe.retrieve(text, "gemini", k=1)[0].id)

    def gen(n: int) -> float:
        t = time.perf_counter()
        llm.generate([text], [video], greedy=False, seed=0, max_tokens=n, min_tokens=n)
        return time.perf_counter() - t

    steps = []
    for _ in range(3):
        short, long_ = gen(tokens), gen(2 * tokens)
        steps.append((long_ - short) / tokens)
    step = statistics.median(steps)
    bound = weights / (gb_s * 1e9)
    out = {"step_ms": round(1000 * step, 2), "bound_ms": round(1000 * bound, 2),
           "ratio": round(step / bound, 2), "weights_mb": round(weights / 2**20, 1),
           "bandwidth_gb_s": round(gb_s, 2), "target_ratio": 1.5}
    packed = _packed_bandwidth_gb_s()
    if packed is not None:
        strict = weights / (packed * 1e9)
        out.update({"packed_bandwidth_gb_s": round(packed, 2), "strict_bound_ms": round(1000 * strict, 2),
                    "strict_ratio": round(step / strict, 2)})
    return out


def _lean_logits(model, batch) -> torch.Tensor:
    """(B, M, vocab) motion logits of ``batch``'s targets through ``model``'s lean pass."""
    lean = model._lean
    h = lean(model.embed(batch), batch.attention_mask, batch.position_ids,
             lean.new_cache(len(batch), batch.attention_mask.shape[1]))
    return model.motion_head(h.gather(1, batch.target_positions[..., None].expand(-1, -1, h.shape[-1])))


@torch.no_grad()
def _fidelity(pipe, ref, other, tokens: int, lean: bool = False) -> dict:
    """How far ``other``'s next-token distributions are from ``ref``'s, teacher-forced on
    ``ref``'s own samples for the benchmark prompts (their rank-1 videos): mean KL(ref || other)
    in nats per token and the share of positions where both rank the same token first. ``lean``:
    both through their lean pass (else transformers' forward)."""
    texts = list(PROMPTS)
    videos = [pipe._video(pipe.retrieve(t, "gemini", k=1)[0].id) for t in texts]
    codes = ref.generate(texts, videos, greedy=False, seed=0, max_tokens=tokens, min_tokens=tokens)
    batch = ref.build_batch(texts, videos, codes=[c for c in codes])
    fwd = _lean_logits if lean else (lambda m, b: m(b))
    a, b = fwd(ref, batch).float().log_softmax(-1), fwd(other, batch).float().log_softmax(-1)
    valid = batch.targets >= 0
    kl = (a.exp() * (a - b)).sum(-1)[valid]
    same = (a.argmax(-1) == b.argmax(-1))[valid].float()
    return {"kl_nats_per_token": round(float(kl.mean()), 4), "top1_agreement": round(float(same.mean()), 3),
            "positions": int(valid.sum())}


def format_bench_generate(res: dict) -> str:
    lines = [f"text -> {res['seconds']:.0f}-s motion ({res['tokens']} tokens), median of "
             f"{res['repeats']} runs, {res['threads']} threads", f"{'path':<13}{'retrieval':>11}"
             f"{'generation':>12}{'decoding':>10}{'total':>9}"]
    for p in ("fast", "float32", "transformers", "unmerged", "int8", "naive", "pipeline"):
        r = res[p]
        lines.append(f"{p:<13}{r['retrieval']:>10.3f}s{r['generation']:>11.3f}s{r['decoding']:>9.3f}s"
                     f"{r['total']:>8.3f}s")
    if "reading" in res["pipeline"]:
        lines.append(f"pipeline: reading unseen words {res['pipeline']['reading']:.3f}s median (within its total; "
                     f"{res['pipeline']['restated']} of {res['repeats']} prompts restated)")
    if "picking" in res["pipeline"]:
        lines.append(f"pipeline: picking among samples {res['pipeline']['picking']:.3f}s median (within its "
                     f"total; {res['pipeline']['picked']} of {res['repeats']} prompts sampled several "
                     "times, backend/evaluation/pick.py)")
    w = res["weights_fidelity"]
    lines.append(f"fast = the lean pass on {res['weights']} weights: generation {res['weights_speedup']:.2f}x "
                 f"faster than on float32 ones; KL {w['kl_nats_per_token']:.4f} nats/token, same first "
                 f"choice {100 * w['top1_agreement']:.0f} % (backend.defaults.LEAN_WEIGHTS)")
    lines.append(f"lean pass: generation {res['lean_speedup']:.2f}x faster than transformers' own; "
                 f"merged LoRA: {res['merge_speedup']:.2f}x faster than unmerged; "
                 f"int8 weights: {res['int8_speedup']:.2f}x faster than fast, lossy: KL "
                 f"{res['int8_fidelity']['kl_nats_per_token']:.3f} nats/token, same first choice "
                 f"{100 * res['int8_fidelity']['top1_agreement']:.0f} %")
    d = res["decode_step"]
    lines.append(f"decode step {d['step_ms']:.1f} ms against a bound of {d['bound_ms']:.1f} ms "
                 f"({d['weights_mb']:.0f} MB of weights at {d['bandwidth_gb_s']:.1f} GB/s): "
                 f"{d['ratio']:.2f}x the bound (target <= {d['target_ratio']}x); through "
                 f"transformers' pass {res['decode_step_transformers']['step_ms']:.1f} ms "
                 f"({res['decode_step_transformers']['ratio']:.2f}x); lean on float32 weights "
                 f"{res['decode_step_float32']['step_ms']:.1f} ms ({res['decode_step_float32']['ratio']:.2f}x)")
    u = res["decode_step_unpacked"]
    lines.append(f"oneDNN-prepacked weights (the default): generation {res['packing_speedup']:.2f}x faster "
                 f"than the same weights as plain tensors; their decode step {u['step_ms']:.1f} ms "
                 f"({u['ratio']:.2f}x the bound)")
    if "strict_ratio" in d:
        lines.append(f"against the stricter bound of a oneDNN-prepacked bfloat16 matrix-vector product "
                     f"({d['packed_bandwidth_gb_s']:.1f} GB/s): {d['strict_bound_ms']:.1f} ms, the step "
                     f"{d['strict_ratio']:.2f}x it")
    lines.append(f"speed-up {res['speedup']:.1f}x (target: total < 1 s and >= 3x: "
                 f"{'met' if res['target_met'] else 'NOT met'}); model loading {res['load_s']:.1f} s")
    return "\n".join(lines)


__all__ = ["bench_generate", "format_bench_generate"]
