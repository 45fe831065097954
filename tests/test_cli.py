"""The command line, end to end: help texts, data build, and eval vqvae on the shipped model."""
import json
import subprocess
import sys

import numpy as np
import pytest

from backend.checkpoints import REPO_ROOT, checkpoints_dir, read_manifest, verify
from backend.cli import build_parser, main
from backend.data.corpus import CorpusConfig, build_corpus


def run_cli(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "backend", *args], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("argv", [[], ["data"], ["data", "build"], ["train"], ["train", "vqvae"],
                                  ["train", "evaluator"], ["eval"], ["eval", "vqvae"],
                                  ["eval", "generation"], ["eval", "paired"], ["export"], ["body"],
                                  ["body", "convert-pkl"], ["bench"], ["bench", "render"]])
def test_every_level_has_help(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(argv + ["--help"])
    assert exc.value.code == 0
    assert "usage: python -m backend" in capsys.readouterr().out


def test_shipped_checkpoints_match_the_manifest():
    rows = read_manifest()
    assert any(rel.startswith("vqvae/") for _, rel, _ in rows)
    assert any(rel.startswith("evaluator/") for _, rel, _ in rows)
    assert verify() == []
    for _, rel, command in rows:
        assert command.startswith("python -m backend "), f"{rel}: command that made it"
    shipped = {p.relative_to(checkpoints_dir()).as_posix()
               for p in checkpoints_dir().rglob("*")
               if p.is_file() and p.name != "MANIFEST" and "body_models" not in p.parts}
    assert shipped <= {rel for _, rel, _ in rows}, "every shipped file is in the MANIFEST"


def test_data_build_then_eval_vqvae_json(tmp_path):
    out = tmp_path / "corpus"
    r = run_cli("data", "build", "--out", str(out), "--n-in-dist", "40", "--n-ood", "12")
    assert r.returncode == 0, r.stderr
    assert "Wrote 52 motions" in r.stdout
    r = run_cli("eval", "vqvae", "--data", str(out), "--json")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert "MPJPE" in r.stdout and lines[-1].startswith("{")
    figures = json.loads(lines[-1])["results"]
    assert set(figures) == {"test", "ood"}
    for split in ("test", "ood"):
        f = figures[split]
        assert f["motions"] > 0 and 0 < f["mpjpe_root_aligned_mm"] < 1000 and np.isfinite(f["mpjpe_mm"])
        assert 0 < f["codes_used_fraction"] <= 1 and 1 <= f["perplexity"] <= f["codebook_size"]


def test_clear_error_for_missing_dataset_or_checkpoint(tmp_path, capsys):
    assert main(["eval", "vqvae", "--data", str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err
    out = build_corpus(tmp_path / "c", CorpusConfig(n_in_dist=8, n_ood=2), progress=False)
    assert main(["eval", "vqvae", "--data", str(out), "--checkpoint", str(tmp_path)]) == 2
    assert "config.json" in capsys.readouterr().err
