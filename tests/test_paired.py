"""`eval paired`: two protocol rows compared repeat by repeat, on fabricated progress files."""
import json

import numpy as np
import pytest

from backend.cli import main
from backend.evaluation.paired import find_row, load_progress, paired

SFT = "SFT + random video (speed words read alone, best of 4)"
MCDPO = "McDPO + random video (speed words read alone, best of 4)"


def write_progress(folder, split, rows: dict, seed=0, max_motions=0):
    """rows: {row name: [fid per repeat, None where not finished]}."""
    folder.mkdir(parents=True, exist_ok=True)
    done = {}
    for name, fids in rows.items():
        for r, fid in enumerate(fids):
            if fid is not None:
                done.setdefault(str(r), {})[name] = {
                    "results": {"fid": fid, "r_top1": 0.5, "r_top3": 0.8, "mm_dist": 3.0, "diversity": 9.0},
                    "rng": {}}
    done["plausibility"] = {"Real motion": {}}
    cfg = {"seed": seed, "split": split, "max_motions": max_motions, "rows": list(rows)}
    (folder / f"generation-{split}.json").write_text(json.dumps({"config": cfg, "done": done}))
    return folder


def test_difference_and_student_t_interval(tmp_path):
    d = write_progress(tmp_path / "p", "ood", {"Real motion": [0.0] * 3, SFT: [10.0, 20.0, 30.0],
                                              MCDPO: [11.0, 22.0, 33.0]})
    fid = paired(d, "McDPO + random video", d, "SFT + random video", "ood", ("fid",))[0]
    assert fid.repeats == [0, 1, 2]
    np.testing.assert_allclose(fid.differences, [1.0, 2.0, 3.0])
    assert fid.mean == pytest.approx(2.0)
    assert fid.half_width == pytest.approx(4.302653 * 1.0 / np.sqrt(3), rel=1e-5)   # t(0.975, 2)
    assert fid.verdict() == "no difference shown"            # 2 ± 2.48 straddles 0
    # the draw's spread (10 -> 30) is shared, so unpaired intervals would overlap far more
    assert fid.half_width < 1.96 * np.std([11, 22, 33], ddof=1) / np.sqrt(3)


def test_a_row_below_in_every_repeat_is_shown_below(tmp_path):
    d = write_progress(tmp_path / "p", "test", {SFT: [5.0, 9.0, 7.0, 6.0], MCDPO: [4.0, 8.1, 6.2, 4.9]})
    fid = paired(d, "mcdpo + random", d, "sft", "test", ("fid",))[0]
    assert fid.verdict() == "A below B" and fid.mean < 0
    assert paired(d, "sft", d, "mcdpo", "test", ("fid",))[0].verdict() == "A above B"


def test_only_repeats_both_rows_finished_count(tmp_path):
    d = write_progress(tmp_path / "p", "ood", {SFT: [1.0, 2.0, 3.0, 4.0], MCDPO: [2.0, None, 4.0, None]})
    fid = paired(d, "McDPO", d, "SFT", "ood", ("fid",))[0]
    assert fid.repeats == [0, 2] and fid.a == [2.0, 4.0] and fid.b == [1.0, 3.0]


def test_rows_from_two_runs_with_the_same_draws(tmp_path):
    a = write_progress(tmp_path / "new", "ood", {MCDPO: [3.0, 4.0]})
    b = write_progress(tmp_path / "old", "ood", {MCDPO.replace("best of 4", "best of 2"): [3.5, 4.5]})
    fid = paired(a, "McDPO + random video", b, "McDPO + random video", "ood", ("fid",))[0]
    assert fid.mean == pytest.approx(-0.5)
    other = write_progress(tmp_path / "seed1", "ood", {MCDPO: [3.0, 4.0]}, seed=1)
    with pytest.raises(ValueError, match="seed"):
        paired(a, "McDPO", other, "McDPO", "ood")
    subset = write_progress(tmp_path / "sub", "ood", {MCDPO: [3.0, 4.0]}, max_motions=100)
    with pytest.raises(ValueError, match="max_motions"):
        paired(a, "McDPO", subset, "McDPO", "ood")


def test_row_names_must_name_one_row(tmp_path):
    d = write_progress(tmp_path / "p", "ood", {SFT: [1.0], MCDPO: [2.0], "McDPO + Gemini-MVR (x)": [0.5]})
    saved = load_progress(d, "ood")
    assert find_row(saved, "mcdpo + random video", "p") == MCDPO      # the name before its notes
    with pytest.raises(ValueError, match="2 rows"):
        find_row(saved, "McDPO", "p")
    with pytest.raises(ValueError, match="no row.*rows: McDPO \\+ Gemini-MVR, McDPO \\+ random video"):
        find_row(saved, "LLM without video", "p")
    with pytest.raises(ValueError, match="metric 'mmodality' is not in every repeat"):
        paired(d, "SFT", d, "McDPO + random", "ood", ("fid", "mmodality"))
    with pytest.raises(ValueError, match="no repeat"):
        paired(write_progress(tmp_path / "q", "ood", {SFT: [1.0, None], MCDPO: [None, 2.0]}),
               "McDPO", tmp_path / "q", "SFT", "ood")


def test_bad_folders_are_said(tmp_path):
    with pytest.raises(FileNotFoundError, match="generation-ood.json"):
        load_progress(tmp_path, "ood")
    (tmp_path / "generation-ood.json").write_text("{not json")
    with pytest.raises(ValueError, match="not a protocol progress file"):
        load_progress(tmp_path, "ood")
    (tmp_path / "generation-ood.json").write_text(json.dumps({"config": {}}))
    with pytest.raises(ValueError, match="no 'done' table"):
        load_progress(tmp_path, "ood")


def test_command_prints_table_and_json(tmp_path, capsys):
    d = write_progress(tmp_path / "p", "ood", {SFT: [10.0, 20.0, 30.0], MCDPO: [9.0, 19.5, 29.0]})
    assert main(["eval", "paired", str(d), "McDPO + random video", "SFT + random video",
                 "--splits", "ood", "--metrics", "fid,r_top1", "--json"]) == 0
    out = capsys.readouterr().out
    assert "A = McDPO + random video, B = SFT + random video" in out and "A below B" in out
    last = json.loads(out.strip().splitlines()[-1])
    assert [r["metric"] for r in last["ood"]] == ["fid", "r_top1"]
    assert last["ood"][0]["mean_difference"] == pytest.approx(-5 / 6)
    assert main(["eval", "paired", str(d), "McDPO", "SFT", "--splits", "test"]) == 2
    assert "generation-test.json not found" in capsys.readouterr().err
    assert main(["eval", "paired", str(d), "McDPO", "SFT", "--metrics", "fidd"]) == 2
    assert "unknown metric fidd" in capsys.readouterr().err
