"""Retrieval latency benchmark for the fused Gemini-MVR index.

Synthetic but structured data: action and object embeddings are drawn from
mixtures of Gaussians on the unit sphere (each video picks an action cluster and
an object cluster; the noise is about as large as the cluster centre, so members
of a cluster have cosine ~0.5 to each other), router weights are random, and the
database is stored in fused form [w0 a ; w1 o]. Queries are fresh draws from the
same mixtures, fused as [p ; g]. Latency is per query, one query at a time, as an
interactive user searches.

Public API:
    bench_retrieval(sizes=(1_000, 100_000, 1_000_000), dim=512, queries=200, k=10,
                    encode_text=None, seed=0, progress=True, *, hnsw_m=HNSW_M,
                    ef_construction=HNSW_EF_CONSTRUCTION, ef_search=HNSW_EF_SEARCH,
                    threads=None, clusters=None, ef_search_sweep=()) -> dict
    format_bench(result) -> str
"""

from __future__ import annotations

import platform
import time

import numpy as np
from tqdm import tqdm

from backend.retrieval.index import (HNSW_EF_CONSTRUCTION, HNSW_EF_SEARCH, HNSW_M, FusedIndex,
                                     fuse_queries, fuse_videos)

_CHUNK = 50_000
_VERBS = ["walks", "runs", "jumps", "kicks", "waves", "turns", "crawls", "dances", "throws", "squats",
          "climbs", "stumbles", "bows", "spins", "punches", "stretches", "skips", "hops", "sits", "lifts"]
_MODS = ["slowly", "quickly", "to the left", "in a circle", "backwards", "forward", "twice", "with both arms",
         "on one leg", "while looking up", "and stops", "happily", "carefully", "in place", "diagonally"]


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


class _Mixture:
    """Two independent mixtures of Gaussians on the sphere (action half, object half)."""

    def __init__(self, dim: int, clusters: int, rng: np.random.Generator):
        self.da = dim // 2
        self.do = dim - self.da
        self.ca = _unit(rng.standard_normal((clusters, self.da))).astype(np.float32)
        self.co = _unit(rng.standard_normal((clusters, self.do))).astype(np.float32)

    def _draw(self, centres: np.ndarray, idx: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        d = centres.shape[1]
        noise = rng.standard_normal((len(idx), d), dtype=np.float32) / np.float32(np.sqrt(d))
        return _unit(centres[idx] + noise)

    def videos(self, n: int, rng: np.random.Generator) -> np.ndarray:
        c = len(self.ca)
        a = self._draw(self.ca, rng.integers(0, c, n), rng)
        o = self._draw(self.co, rng.integers(0, c, n), rng)
        w0 = 1.0 / (1.0 + np.exp(-1.5 * rng.standard_normal(n)))
        return fuse_videos(a, o, np.stack([w0, 1.0 - w0], axis=1))

    def queries(self, m: int, rng: np.random.Generator) -> np.ndarray:
        c = len(self.ca)
        return fuse_queries(self._draw(self.ca, rng.integers(0, c, m), rng),
                            self._draw(self.co, rng.integers(0, c, m), rng))


def _latencies(index: FusedIndex, q: np.ndarray, k: int) -> np.ndarray:
    """Milliseconds per single-query search (after a short warm-up)."""
    for i in range(min(5, len(q))):
        index.search(q[i:i + 1], k)
    out = np.empty(len(q))
    for i in range(len(q)):
        t = time.perf_counter()
        index.search(q[i:i + 1], k)
        out[i] = (time.perf_counter() - t) * 1e3
    return out


def _recall(index: FusedIndex, q: np.ndarray, k: int, exact_scores, exact_ids) -> tuple[float, float]:
    """(recall@1, recall@k) of `index` against the exact results."""
    scores, ids = index.search(q, k)
    # a different id with the exact top-1 score (a tie) still counts as a hit
    hit1 = [bool(a) and (a[0] == e[0] or abs(float(s[0]) - float(es[0])) <= 1e-6)
            for a, e, s, es in zip(ids, exact_ids, scores, exact_scores)]
    recall_k = [len(set(a) & set(e)) / len(e) for a, e in zip(ids, exact_ids)]
    return float(np.mean(hit1)), float(np.mean(recall_k))


def _stats(ms: np.ndarray) -> dict:
    return {"median_ms": float(np.median(ms)), "p90_ms": float(np.percentile(ms, 90)),
            "mean_ms": float(ms.mean())}


def _bench_text(encode_text, queries: int, seed: int) -> dict:
    rng = np.random.default_rng(seed + 7)
    texts = [f"a person {_VERBS[rng.integers(len(_VERBS))]} {_MODS[rng.integers(len(_MODS))]} "
             f"then {_VERBS[rng.integers(len(_VERBS))]} {_MODS[rng.integers(len(_MODS))]} ({i})"
             for i in range(queries)]  # distinct texts, so no encoder-side cache can answer
    for t in ("a person waves", "someone jumps twice", "a man walks in a circle"):
        encode_text([t])  # warm-up: model load and first-call overheads are not per-query costs
    ms = np.empty(len(texts))
    for i, t in enumerate(texts):
        start = time.perf_counter()
        np.asarray(encode_text([t]))
        ms[i] = (time.perf_counter() - start) * 1e3
    return _stats(ms)


def bench_retrieval(sizes=(1_000, 100_000, 1_000_000), dim: int = 512, queries: int = 200, k: int = 10,
                    encode_text=None, seed: int = 0, progress: bool = True, *, hnsw_m: int = HNSW_M,
                    ef_construction: int = HNSW_EF_CONSTRUCTION, ef_search: int = HNSW_EF_SEARCH,
                    threads: int | None = None, clusters: int | None = None, ef_search_sweep=()) -> dict:
    """Per-query latency of exact flat vs HNSW search over fused vectors, with HNSW recall@1.

    For each size N: build times of both indexes (vectors added in chunks, with a tqdm
    bar), median / p90 single-query latency, HNSW recall@1 and recall@k against the exact
    index. With `encode_text` (list[str] -> array) the median per-text encoding time is
    measured once and added to the HNSW median as an end-to-end figure.
    threads: FAISS OpenMP threads during the run (None = leave FAISS's setting);
    clusters: mixture components per half (None = 1024);
    ef_search_sweep: further efSearch values measured on the same HNSW graph (latency, recall@1).
    """
    import faiss

    if dim < 2 or queries < 1 or k < 1 or not sizes:
        raise ValueError("need dim >= 2, queries >= 1, k >= 1 and at least one size")
    old_threads = faiss.omp_get_max_threads()
    if threads is not None:
        faiss.omp_set_num_threads(int(threads))
    result = {
        "dim": dim, "queries": queries, "k": k, "seed": seed,
        "threads": faiss.omp_get_max_threads(), "faiss": faiss.__version__,
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "hnsw": {"m": hnsw_m, "ef_construction": ef_construction, "ef_search": ef_search},
        "data": f"fused [w0 a; w1 o] unit-Gaussian mixtures, {clusters or 1024} clusters per half",
        "sizes": [], "text_encoding": None,
    }
    try:
        if encode_text is not None:
            result["text_encoding"] = _bench_text(encode_text, queries, seed)
        for n in sizes:
            n = int(n)
            rng = np.random.default_rng([seed, n])
            mix = _Mixture(dim, clusters or 1024, rng)
            q = mix.queries(queries, rng)
            flat = FusedIndex(dim, kind="flat", gpu=False)
            hnsw = FusedIndex(dim, kind="hnsw", gpu=False, hnsw_m=hnsw_m, ef_construction=ef_construction,
                              ef_search=ef_search)
            t_flat = t_hnsw = 0.0
            bar = tqdm(total=n, desc=f"building {n:,}", unit="vec", unit_scale=True, disable=not progress,
                       dynamic_ncols=True)
            for start in range(0, n, _CHUNK):
                m = min(_CHUNK, n - start)
                x = mix.videos(m, rng)
                ids = [f"v{i}" for i in range(start, start + m)]
                t = time.perf_counter()
                flat.add(ids, x)
                t_flat += time.perf_counter() - t
                t = time.perf_counter()
                hnsw.add(ids, x)
                t_hnsw += time.perf_counter() - t
                bar.update(m)
            bar.close()
            del x
            kk = min(k, n)
            exact_scores, exact_ids = flat.search(q, kk)
            recall_1, recall_k = _recall(hnsw, q, kk, exact_scores, exact_ids)
            row = {"n": n,
                   "flat": {"build_s": t_flat, **_stats(_latencies(flat, q, kk))},
                   "hnsw": {"build_s": t_hnsw, **_stats(_latencies(hnsw, q, kk)),
                            "recall_at_1": recall_1, f"recall_at_{kk}": recall_k}}
            if ef_search_sweep:
                row["hnsw_sweep"] = []
                for ef in ef_search_sweep:
                    hnsw.ef_search = int(ef)
                    r1, _ = _recall(hnsw, q, kk, exact_scores, exact_ids)
                    row["hnsw_sweep"].append({"ef_search": int(ef), **_stats(_latencies(hnsw, q, kk)),
                                              "recall_at_1": r1})
                hnsw.ef_search = ef_search
            if result["text_encoding"] is not None:
                row["end_to_end_median_ms"] = result["text_encoding"]["median_ms"] + row["hnsw"]["median_ms"]
            result["sizes"].append(row)
            if progress:
                tqdm.write(f"N={n:,}: flat {row['flat']['median_ms']:.2f} ms, HNSW {row['hnsw']['median_ms']:.3f} ms, "
                           f"recall@1 {row['hnsw']['recall_at_1']:.3f}, HNSW build {t_hnsw:.1f} s")
            del flat, hnsw
    finally:
        faiss.omp_set_num_threads(old_threads)
    return result


def format_bench(result: dict) -> str:
    """A readable table of `bench_retrieval`'s result."""
    h = result["hnsw"]
    lines = [f"Fused retrieval benchmark: dim {result['dim']}, {result['queries']} single queries, k={result['k']}, "
             f"FAISS {result['faiss']} with {result['threads']} thread(s)",
             f"HNSW M={h['m']} efConstruction={h['ef_construction']} efSearch={h['ef_search']}; data: {result['data']}",
             ""]
    te = result.get("text_encoding")
    head = ["N", "flat build s", "flat med ms", "flat p90 ms", "HNSW build s", "HNSW med ms", "HNSW p90 ms",
            "recall@1", f"recall@{result['k']}"]
    if te:
        head.append("end-to-end ms")
    rows = []
    for r in result["sizes"]:
        f, hn = r["flat"], r["hnsw"]
        rk = next((v for key, v in hn.items() if key.startswith("recall_at_") and key != "recall_at_1"), float("nan"))
        row = [f"{r['n']:,}", f"{f['build_s']:.2f}", f"{f['median_ms']:.3f}", f"{f['p90_ms']:.3f}",
               f"{hn['build_s']:.1f}", f"{hn['median_ms']:.3f}", f"{hn['p90_ms']:.3f}",
               f"{hn['recall_at_1']:.3f}", f"{rk:.3f}"]
        if te:
            row.append(f"{r['end_to_end_median_ms']:.2f}")
        rows.append(row)
    widths = [max(len(head[i]), *(len(r[i]) for r in rows)) if rows else len(head[i]) for i in range(len(head))]
    lines.append(" | ".join(c.rjust(wd) for c, wd in zip(head, widths)))
    lines.append("-+-".join("-" * wd for wd in widths))
    lines += [" | ".join(c.rjust(wd) for c, wd in zip(r, widths)) for r in rows]
    sweeps = [(r["n"], s) for r in result["sizes"] for s in r.get("hnsw_sweep", ())]
    if sweeps:
        lines += ["", "HNSW efSearch sweep (same graph):"]
        lines += [f"  N={n:,} efSearch={s['ef_search']}: median {s['median_ms']:.3f} ms, p90 {s['p90_ms']:.3f} ms, "
                  f"recall@1 {s['recall_at_1']:.3f}" for n, s in sweeps]
    if te:
        lines.append("")
        lines.append(f"text encoding per query: median {te['median_ms']:.2f} ms, p90 {te['p90_ms']:.2f} ms "
                     "(end-to-end = text encoding median + HNSW median)")
    return "\n".join(lines)
