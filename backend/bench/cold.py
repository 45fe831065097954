"""``bench cold``: start-up costs, each from a new process (nothing cached in memory; files on
disk, such as the converted Gemma base, stay as they are).

* ``help_s``: ``python -m backend --help`` (must not load torch).
* ``generate_s``: ``python -m backend generate TEXT`` end to end (load, retrieve, generate,
  export ``formats``), as a person runs it.
* parts, timed inside one new process in the order ``generate`` meets them: importing torch,
  transformers and peft; the base tokenizer (with how many times ``tokenizer.json`` was parsed);
  the base model; ``VimoRAGPipeline.load`` (one model, no evaluator: what ``generate`` loads);
  the first generation.
* with ``conversion=True``: the first-use conversion of the packaged GGUF (``_load_embedded`` into
  an empty data folder, each from a new process), the fast path (``gguf_fast``) and transformers'
  own reading, interleaved, with their ratio; the two converted folders must be byte-identical.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from backend.checkpoints import sha256

ROOT = Path(__file__).resolve().parents[2]

_PARTS = r'''
import json, sys, time
parts = {}
def lap(name, t0):
    parts[name] = round(time.perf_counter() - t0, 3)
t = time.perf_counter(); import torch; lap("import_torch_s", t)
t = time.perf_counter(); import transformers; lap("import_transformers_s", t)
t = time.perf_counter(); import peft; lap("import_peft_s", t)
import tokenizers
parsed = [0]
for name in ("from_file", "from_str", "from_buffer"):
    orig = getattr(tokenizers.Tokenizer, name)
    def counted(*a, _o=orig, **k):
        parsed[0] += 1
        return _o(*a, **k)
    setattr(tokenizers.Tokenizer, name, staticmethod(counted))
from backend.generation import motion_llm
t = time.perf_counter(); tok = motion_llm.load_base_tokenizer(motion_llm.EMBEDDED); lap("base_tokenizer_s", t)
parts["tokenizer_json_parses"] = parsed[0]
t = time.perf_counter(); motion_llm.load_base(motion_llm.EMBEDDED); lap("base_model_s", t)
parts["tokenizer_json_parses_after_base"] = parsed[0]
from backend.pipeline import VimoRAGPipeline
t = time.perf_counter(); pipe = VimoRAGPipeline.load(models=(MODEL,), evaluator=False); lap("pipeline_load_s", t)
parts["tokenizer_json_parses_after_load"] = parsed[0]
t = time.perf_counter(); pipe.generate(TEXT, model=MODEL); lap("first_generation_s", t)
print(json.dumps(parts))
'''


_CONVERT = r'''
import json, time
from backend.generation import motion_llm
t = time.perf_counter(); motion_llm._load_embedded(fast_conversion=FAST)
print(json.dumps({"s": round(time.perf_counter() - t, 2)}))
'''


def bench_conversion(repeats: int = 1) -> dict:
    """Seconds of the first-use GGUF conversion, fast and transformers' own, from new processes."""
    py = sys.executable
    times: dict = {"fast": [], "transformers": []}
    digests: dict = {}
    for i in range(repeats):
        for which in (("fast", "transformers") if i % 2 == 0 else ("transformers", "fast")):
            with tempfile.TemporaryDirectory(prefix="vimorag-convert-") as tmp:
                code = f"FAST = {which == 'fast'}\n" + _CONVERT
                _, out = _run([py, "-c", code], env={"VIMORAG_DATA": tmp})
                times[which].append(json.loads(out.strip().splitlines()[-1])["s"])
                folder = Path(tmp) / "models" / "gemma3-270m"
                digests[which] = {f.name: sha256(f) for f in sorted(folder.iterdir()) if f.is_file()}
    fast, slow = min(times["fast"]), min(times["transformers"])
    return {"fast_s": fast, "transformers_s": slow, "speedup": round(slow / fast, 2),
            "identical_folders": digests["fast"] == digests["transformers"], "target_s": 30.0}


def _run(cmd: list[str], timeout: float = 900, env: dict | None = None) -> tuple[float, str]:
    t = time.perf_counter()
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                         env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})
    wall = time.perf_counter() - t
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])}... failed:\n{out.stderr[-1500:]}")
    return wall, out.stdout


def bench_cold(text: str = "a person walks forward", model: str = "mcdpo",
               formats: str = "bvh,fbx,glb,mp4,npy", conversion: bool = False) -> dict:
    py = sys.executable
    res: dict = {"text": text, "model": model, "formats": formats, "cpus": os.cpu_count(),
                 "load_avg_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None}
    res["help_s"], _ = _run([py, "-m", "backend", "--help"])
    with tempfile.TemporaryDirectory(prefix="vimorag-cold-") as tmp:
        res["generate_s"], _ = _run([py, "-m", "backend", "generate", text, "--model", model,
                                     "--formats", formats, "--out", tmp])
    code = f"MODEL = {model!r}\nTEXT = {text!r}\n" + _PARTS
    _, out = _run([py, "-c", code])
    res["parts"] = json.loads(out.strip().splitlines()[-1])
    res["target_generate_s"] = 15.0
    if conversion:
        res["conversion"] = bench_conversion()
    return res


def format_bench_cold(r: dict) -> str:
    lines = [f"cold start ({r['cpus']} CPUs, load average {r['load_avg_1min']:.1f}); each line a new process:",
             f"  python -m backend --help                     {r['help_s']:7.2f} s",
             f"  python -m backend generate ({r['formats']}) {r['generate_s']:7.2f} s "
             f"(target < {r['target_generate_s']:.0f} s)",
             "  parts, in one new process:"]
    for k, v in r["parts"].items():
        lines.append(f"    {k:<36}{v:>9}")
    c = r.get("conversion")
    if c:
        lines.append(f"  first-use GGUF conversion: {c['fast_s']:.1f} s (transformers' own reading "
                     f"{c['transformers_s']:.1f} s, {c['speedup']:.2f}x; target < {c['target_s']:.0f} s); "
                     f"converted folders identical: {c['identical_folders']}")
    return "\n".join(lines)


__all__ = ["bench_cold", "bench_conversion", "format_bench_cold"]
