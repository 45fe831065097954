"""``bench cold``: start-up costs, each from a new process (nothing cached in memory; files on
disk, such as the converted Gemma base, stay as they are).

* ``help_s``: ``python -m backend --help`` (must not load torch).
* ``generate_s``: ``python -m backend generate TEXT`` end to end (load, retrieve, generate,
  export ``formats``), as a person runs it.
* parts, timed inside one new process in the order ``generate`` meets them: importing torch,
  transformers and peft; the base tokenizer (with how many times ``tokenizer.json`` was parsed);
  the base model; ``VimoRAGPipeline.load`` (one model, no evaluator: what ``generate`` loads);
  the first generation.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

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


def _run(cmd: list[str], timeout: float = 900) -> tuple[float, str]:
    t = time.perf_counter()
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    wall = time.perf_counter() - t
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])}... failed:\n{out.stderr[-1500:]}")
    return wall, out.stdout


def bench_cold(text: str = "a person walks forward", model: str = "mcdpo",
               formats: str = "bvh,fbx,glb,mp4,npy") -> dict:
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
    return res


def format_bench_cold(r: dict) -> str:
    lines = [f"cold start ({r['cpus']} CPUs, load average {r['load_avg_1min']:.1f}); each line a new process:",
             f"  python -m backend --help                     {r['help_s']:7.2f} s",
             f"  python -m backend generate ({r['formats']}) {r['generate_s']:7.2f} s "
             f"(target < {r['target_generate_s']:.0f} s)",
             "  parts, in one new process:"]
    for k, v in r["parts"].items():
        lines.append(f"    {k:<36}{v:>9}")
    return "\n".join(lines)


__all__ = ["bench_cold", "format_bench_cold"]
