"""The generation table: protocol mechanics with a stand-in evaluator, and the shipped models'
figures on the embedded corpus (what the README reports)."""
import json
import subprocess
import sys

import numpy as np
import pytest

from backend.checkpoints import REPO_ROOT
from backend.data.corpus import CorpusConfig, build_corpus
from backend.data.dataset import MotionCorpus
from backend.evaluation.generation import (RealMotion, draw_repeat, evaluate, format_table,
                                           load_split)


class ProjectionEvaluator:
    """Stand-in evaluator: fixed random projections of mean features and of caption words."""

    def __init__(self):
        rng = np.random.default_rng(0)
        self.w_motion = rng.normal(size=(263, 16))

    def encode_motion(self, features):
        return np.stack([f.mean(axis=0) @ self.w_motion for f in features])

    def encode_text(self, captions):
        return np.stack([np.random.default_rng(abs(hash(c.text)) % 2**32).normal(size=16)
                         for c in captions])


class NoisyGenerator:
    name, stochastic = "noisy", True

    def generate(self, items, rng):
        return [it.features + rng.normal(scale=3.0, size=it.features.shape) for it in items]


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    root = build_corpus(tmp_path_factory.mktemp("g") / "c", CorpusConfig(n_in_dist=300, n_ood=80),
                        progress=False)
    return MotionCorpus(root)


def test_protocol_crops_and_captions(small):
    data = load_split(small, "test")
    items = draw_repeat(data, np.random.default_rng(0))
    assert len(items) == len(data)
    for it in items:
        assert len(it.features) % 4 == 0 and 40 <= len(it.features) + 4 and len(it.features) <= 196
        assert it.caption in small.captions(it.mid)


def test_rows_rank_as_expected_with_a_stand_in_evaluator(small):
    res = evaluate(ProjectionEvaluator(), small, "test", [RealMotion(), NoisyGenerator()],
                   repeats=3, mm_samples=8, mm_repeats=12, progress=False)
    real, noisy = res["Real motion"], res["noisy"]
    assert real["fid"].mean < noisy["fid"].mean
    assert "multimodality" not in real and noisy["multimodality"].mean > 0
    assert real["fid"].interval > 0, "three draws of other crops give three FIDs"
    table = format_table("test", res)
    assert "Real motion" in table and "noisy" in table and "±" in table


class _Stopping(NoisyGenerator):
    """A noisy row that fails once it has run ``budget`` times (a run cut short)."""

    def __init__(self, name, budget=10 ** 9):
        self.name, self.budget = name, budget

    def generate(self, items, rng):
        if self.budget <= 0:
            raise KeyboardInterrupt("cut short")
        self.budget -= 1
        return super().generate(items, rng)


def test_a_resumed_protocol_run_gives_the_uninterrupted_numbers(small, tmp_path):
    from backend.evaluation.generation import Progress, plausibility_rows

    ev, cfg = ProjectionEvaluator(), {"split": "test", "rows": ["a", "b"]}
    kw = dict(repeats=3, mm_samples=8, mm_repeats=10, progress=False)
    whole = evaluate(ev, small, "test", [_Stopping("a"), _Stopping("b")], **kw)
    plaus = plausibility_rows(small, "test", [RealMotion(), _Stopping("b")], seed=0)
    # cut short in repeat 1, after row a (each row: 1 generation + 10 for multimodality)
    with pytest.raises(KeyboardInterrupt):
        evaluate(ev, small, "test", [_Stopping("a", 22), _Stopping("b", 11)], **kw,
                 resume=Progress(tmp_path / "p.json", cfg))
    saved = json.loads((tmp_path / "p.json").read_text())
    assert sorted(saved["done"]) == ["0", "1"] and sorted(saved["done"]["1"]) == ["a"]
    # the rest, from a new process's point of view: rows done are not generated again
    again = evaluate(ev, small, "test", [_Stopping("a", 11), _Stopping("b", 22)], **kw,
                     resume=Progress(tmp_path / "p.json", cfg))
    for row in ("a", "b"):
        for m, r in whole[row].items():
            assert again[row][m].mean == pytest.approx(r.mean, abs=1e-12) and \
                again[row][m].interval == pytest.approx(r.interval, abs=1e-12)
    done = Progress(tmp_path / "p.json", cfg)
    assert plausibility_rows(small, "test", [RealMotion(), _Stopping("b")], seed=0, resume=done) == plaus
    assert plausibility_rows(small, "test", [RealMotion(), _Stopping("b", 0)], seed=0, resume=done) == plaus
    with pytest.raises(ValueError, match="differs in rows"):
        Progress(tmp_path / "p.json", {"split": "test", "rows": ["a"]})
    # an option added after the file was written: its old behaviour's value matches, another not
    assert Progress(tmp_path / "p.json", {**cfg, "mirror": False}, assumed={"mirror": False}).done == done.done
    with pytest.raises(ValueError, match="differs in mirror"):
        Progress(tmp_path / "p.json", {**cfg, "mirror": True}, assumed={"mirror": False})
    with pytest.raises(ValueError, match="differs in mirror"):
        Progress(tmp_path / "p.json", {**cfg, "mirror": False})
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ValueError, match="not a protocol progress file"):
        Progress(tmp_path / "bad.json", cfg)


@pytest.mark.parametrize("split", ["test", "ood"])
def test_shipped_evaluator_meets_the_sanity_target(embedded_corpus, split):
    """Real text vs real motion, batches of 32: R-Top1 >= 0.5 (HumanML3D's ground truth:
    0.511), on the test split and on the OOD half the evaluator never trained on."""
    from backend.evaluation.evaluator import TextMotionEvaluator
    from backend.checkpoints import checkpoints_dir

    ev = TextMotionEvaluator.from_pretrained(checkpoints_dir() / "evaluator")
    res = evaluate(ev, embedded_corpus, split, [RealMotion()], repeats=3, progress=False)
    real = res["Real motion"]
    assert real["r_top1"].mean >= 0.5
    assert real["r_top1"].mean <= real["r_top2"].mean <= real["r_top3"].mean
    assert real["fid"].mean < 0.5


def test_eval_generation_cli_json(small, tmp_path):
    cmd = [sys.executable, "-m", "backend", "eval", "generation", "--data", str(small.root), "--repeats", "2",
           "--json", "--resume", str(tmp_path / "p")]
    r = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    saved = json.loads((tmp_path / "p" / "generation-test.json").read_text())
    assert saved["config"]["checkpoints"] and saved["config"]["evaluator"] == "checkpoints/evaluator"
    assert sorted(saved["done"]) == ["0", "1", "plausibility"]
    # the same command again: everything from the files, the same numbers; other settings refused
    again = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert json.loads(again.stdout.strip().splitlines()[-1]) == out
    other = subprocess.run(cmd + ["--seed", "3"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert other.returncode != 0 and "differs in seed" in other.stderr
    (tmp_path / "f").write_text("x")
    afile = subprocess.run(cmd[:-1] + [str(tmp_path / "f")], cwd=REPO_ROOT, capture_output=True, text=True,
                           timeout=600)
    assert afile.returncode == 2 and "is a file, not a folder" in afile.stderr
    assert set(out["tables"]) == {"test", "ood"}
    for table in out["tables"].values():
        assert set(table) == {"Real motion", "VQ-VAE reconstruction"}
        for row in table.values():
            assert {"fid", "r_top1", "r_top2", "r_top3", "mm_dist", "diversity"} <= set(row)
    assert "FID" in r.stdout and "R-Top1" in r.stdout
    assert set(out["plausibility"]) == {"test", "ood"}
    rows = out["plausibility"]["test"]
    assert set(rows) == {"Real motion", "VQ-VAE reconstruction", "VQ-VAE reconstruction (decoded)"}
    assert rows["VQ-VAE reconstruction"]["bone_var_pct"] < 1e-3, "cleaned motions have rigid bones"


def test_the_protocol_fingerprint_ignores_what_generation_never_loads(tmp_path):
    from backend.cli.evaluate import manifest_fingerprint

    m = tmp_path / "MANIFEST"
    assert manifest_fingerprint(m) is None
    lines = ["# sha256\tpath\tcommand", "aa\tchecker/model.safetensors\ttrain checker",
             "bb\tllm-mcdpo/model.safetensors\ttrain mcdpo", "cc\tpicker/model.safetensors\ttrain picker",
             "dd\tservable/config.json\teval servable"]
    m.write_text("\n".join(lines) + "\n")
    first = manifest_fingerprint(m)
    m.write_text("\n".join(lines).replace("aa\tchecker", "a2\tchecker") + "\n")
    assert manifest_fingerprint(m) == first          # a new judge: eval generation never loads it
    m.write_text("\n".join(lines).replace("dd\tservable", "d2\tservable") + "\n")
    assert manifest_fingerprint(m) == first          # nor the app's servability thresholds
    for old, new in (("bb\tllm", "b2\tllm"), ("cc\tpicker", "c2\tpicker")):
        m.write_text("\n".join(lines).replace(old, new) + "\n")
        assert manifest_fingerprint(m) != first      # what generation loads: another run


def test_with_sampling_sets_llm_rows_and_names_them():
    from backend.evaluation.rows import LLMRow, with_sampling

    class Row(LLMRow):                    # an LLM row without models: only how it samples
        def __init__(self, mode, name):
            self.mode, self.name = mode, name
            self.guidance, self.temperature, self.top_k = 0.0, 1.0, 0

    real, novideo, mcdpo = RealMotion(), Row("none", "LLM without video"), Row("gemini", "McDPO")
    with_sampling([real, novideo, mcdpo])                       # defaults: nothing changes
    assert (mcdpo.name, mcdpo.guidance, mcdpo.temperature, mcdpo.top_k) == ("McDPO", 0.0, 1.0, 0)
    with_sampling([real, novideo, mcdpo], guidance=2, temperature=0.7, top_k=20)
    assert (mcdpo.guidance, mcdpo.temperature, mcdpo.top_k) == (2.0, 0.7, 20)
    assert mcdpo.name == "McDPO (guidance 2, T 0.7, top-20)"
    # no video: nothing to weigh the words against, so no guidance; temperature still applies
    assert (novideo.guidance, novideo.temperature) == (0.0, 0.7)
    assert novideo.name == "LLM without video (T 0.7, top-20)"
    assert real.name == RealMotion().name


def test_the_video_models_without_a_video_are_rows_of_their_own():
    from backend.evaluation.rows import GENERATORS, ROWS, LLMRow, expand

    assert ROWS["sft-none"][:2] == ("sft", "none") and ROWS["mcdpo-none"][:2] == ("mcdpo", "none")
    assert {"sft-none", "mcdpo-none"} <= set(GENERATORS)
    six = expand(["vimorag"])                 # the paper's rows only: the ablation rows are asked by name
    assert len(six) == 6 and "sft-none" not in six and "mcdpo-none" not in six
    assert expand(["mcdpo-none", "real"]) == ["mcdpo-none", "real"]

    class Row(LLMRow):                        # the row's video logic without models
        def __init__(self, mode):
            self.mode, self.video_lead, self.retriever = mode, None, None

    row = Row(ROWS["mcdpo-none"][1])
    assert row.videos(["a person jumps.", "a person waves."], np.random.default_rng(0)) == [None, None]
    assert not row.lead_weights(["a person jumps."]).any()
    assert row.kind_reads(["a person jumps."]) is None
