"""Cold start: the command line answers --help without the heavy libraries (torch,
transformers, peft, gradio, the renderer). One short subprocess each, no timing."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("torch", "transformers", "peft", "gradio", "pyrender", "cv2")


def _modules_after(code: str) -> dict:
    probe = code + f"\nimport json, sys\nprint(json.dumps({{m: m in sys.modules for m in {HEAVY!r}}}))"
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("argv", [["--help"], ["generate", "--help"], ["bench", "--help"],
                                  ["export", "--help"]])
def test_help_imports_no_heavy_library(argv):
    code = ("from backend.cli import build_parser\n"
            f"try:\n    build_parser().parse_args({argv!r})\nexcept SystemExit:\n    pass")
    loaded = _modules_after(code)
    assert not any(loaded.values()), loaded
