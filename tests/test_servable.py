"""The warning for prompts the models cannot serve: calibration, rates, text, save/load."""
import numpy as np

from backend.evaluation.servable import UNSERVABLE_PROMPTS, ServableCheck, calibrate


def test_calibration_on_separable_signals():
    rng = np.random.default_rng(0)
    served = np.stack([rng.normal(0.6, 0.05, 400), rng.normal(3.0, 0.3, 400)], 1)
    absent = np.stack([rng.normal(0.2, 0.05, 24), rng.normal(3.0, 0.3, 24)], 1)   # retrieval separates
    check = calibrate(served, absent, miss=0.025)
    assert 0.45 < check.min_retrieval < 0.55 and 3.4 < check.max_distance < 3.8
    assert check.false_alarm <= 0.1 and check.hit_rate == 1.0
    # a distance-only miss is caught too
    far = np.stack([rng.normal(0.6, 0.05, 24), rng.normal(6.0, 0.3, 24)], 1)
    assert calibrate(served, far).hit_rate == 1.0


def test_held_out_rates_judge_any_check_on_the_held_out_rows():
    """``held_out_rates`` measures a check (the shipped one, say) on the rows ``calibrate`` holds
    out: thresholds calibrated on other models show there how far they drifted."""
    from backend.evaluation.servable import held_out_rates

    served = np.array([[0.9, 3.0], [0.7, 3.0], [0.9, 3.0], [0.3, 3.0]])     # odd rows held out
    absent = np.array([[0.1, 3.0], [0.2, 3.0], [0.9, 9.0], [0.9, 3.0]])
    assert held_out_rates(ServableCheck(0.5, 5.0), served, absent) == (0.5, 0.5)
    assert held_out_rates(ServableCheck(0.1, 2.0), served, absent) == (1.0, 1.0)
    stale = ServableCheck(0.0, 20.0)                                         # flags nothing
    assert held_out_rates(stale, served, absent) == (0.0, 0.0)
    check = calibrate(served, absent, miss=0.0)
    assert (check.false_alarm, check.hit_rate) == held_out_rates(check, served, absent)


def test_calibration_that_cannot_separate_says_so():
    rng = np.random.default_rng(1)
    same = np.stack([rng.normal(0.5, 0.1, 400), rng.normal(3.0, 0.3, 400)], 1)
    check = calibrate(same, same[:24].copy())
    assert check.hit_rate < 0.3, "indistinguishable prompts cannot be flagged often"


def test_warning_names_the_reason_and_the_known_kinds(tmp_path):
    check = ServableCheck(min_retrieval=0.4, max_distance=4.0)
    assert check.warning(0.6, 3.0) is None and check.warning(None, None) is None
    w = check.warning(0.1, 3.0)
    assert "no database video matches it well" in w and "walking" in w and "cartwheels" in w
    assert "far from the words" in check.warning(0.6, 5.5)
    check.save_pretrained(tmp_path / "s")
    assert ServableCheck.from_pretrained(tmp_path / "s") == check
    assert ServableCheck.from_pretrained(tmp_path / "missing") is None


def test_unservable_prompts_name_no_corpus_kind():
    from backend.data.corpus import IN_DIST_KINDS, OOD_KINDS

    words = {"walk", "turn", "run", "jump", "kick", "punch", "spin", "dance", "get up", "cartwheel",
             "backflip", "crawl", "roll"}
    assert len(IN_DIST_KINDS) + len(OOD_KINDS) == 16
    for p in UNSERVABLE_PROMPTS:
        assert not any(w in p.split() or w + "s" in p.split() for w in words), p


def test_stale_sources_name_the_weights_that_changed(tmp_path):
    from backend.evaluation.servable import signal_sources, stale_sources

    lines = ["# sha256\tpath\tcommand", "aa\tretriever/model.safetensors\tx", "ab\tretriever/config.json\tx",
             "bb\tevaluator/model.safetensors\tx", "cc\tllm-mcdpo/model.safetensors\tx",
             "dd\tllm-sft/model.safetensors\tx", "ee\tpicker/model.safetensors\tx"]
    (tmp_path / "MANIFEST").write_text("\n".join(lines) + "\n")
    src = signal_sources("mcdpo", tmp_path)
    assert src == {"retriever/model.safetensors": "aa", "evaluator/model.safetensors": "bb",
                   "llm-mcdpo/model.safetensors": "cc"}
    check = ServableCheck(0.5, 9.0, sources=src)
    assert stale_sources(check, tmp_path) == []
    (tmp_path / "MANIFEST").write_text("\n".join(lines).replace("bb\tevaluator", "b2\tevaluator") + "\n")
    assert stale_sources(check, tmp_path) == ["evaluator/model.safetensors"]
    assert len(stale_sources(ServableCheck(0.5, 9.0), tmp_path)) == 3     # a check that recorded none


def test_the_shipped_thresholds_were_calibrated_on_the_shipped_weights():
    """checkpoints/servable is what the app warns from: it loads, it was calibrated on the
    retriever, evaluator and model shipped now (thresholds of other weights are stale: those shipped
    before session 43 flagged 25 % of unservable prompts by then), and its held-out rates are those of a useful
    warning (few false alarms, most unservable prompts flagged)."""
    from backend.evaluation.servable import stale_sources

    shipped = ServableCheck.from_pretrained()
    assert shipped is not None, "checkpoints/servable/config.json is missing"
    assert not stale_sources(shipped), ("recalibrate: python -m backend eval servable --captions 495 "
                                        "--ship (calibrated on other weights of "
                                        + ", ".join(stale_sources(shipped)) + ")")
    assert shipped.false_alarm <= 0.1 and shipped.hit_rate >= 0.5, shipped


def test_pipeline_warns_from_its_thresholds():
    """``VimoRAGPipeline.servability_warning``: the best Gemini-MVR score even when another
    retrieval mode was used; no calibration, no warning."""
    from types import SimpleNamespace

    from backend.pipeline import VimoRAGPipeline

    pipe = VimoRAGPipeline.__new__(VimoRAGPipeline)
    pipe.servable = None
    res = SimpleNamespace(text="a person swims", retrieval="random", hits=[])
    assert pipe.servability_warning(res, 9.0) is None
    pipe.servable = ServableCheck(min_retrieval=0.4, max_distance=4.0)
    asked = []
    pipe.retrieve = lambda text, mode, k=5, seed=None: asked.append(mode) or [SimpleNamespace(score=0.1)]
    assert "no database video matches" in pipe.servability_warning(res)
    assert asked == ["gemini"]
    good = SimpleNamespace(text="a person walks", retrieval="gemini", hits=[SimpleNamespace(score=0.7)])
    assert pipe.servability_warning(good, 3.0) is None and asked == ["gemini"]
