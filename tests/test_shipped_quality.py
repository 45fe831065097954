"""The shipped judges and tokenizer on the embedded corpus: the figures the README reports, as
floors that a regression would break (README: root-aligned MPJPE 30.2 mm on test and 43.0 mm on
OOD, 96 % of codes in use; instruction checker right on 96 % of what held-out real prompts ask)."""
import pytest

from backend.checkpoints import checkpoints_dir
from backend.defaults import READER_DRAFTS, SAMPLES, TEMPERATURE
from backend.evaluation.tokenizer import evaluate_split
from backend.generation.vqvae import MotionVQVAE

# docs/lab-notebook.md (*Open turns*): the shipped McDPO (video lead on, the app's temperature, best of 4)
# passes all 15 checks of the app's example prompts at 3 of 3 seeds (session 37; 93 % in
# sessions 34-36, 78 % in session 19, 20 % before "Motion quality II"; with 2-3 samples a prompt,
# +-12 points is noise), and the OOD-kind prompts (cartwheel, backflip, crawl, roll) give their
# kind in every sample (0 % before session 12). Floors against regressions, not goals.
EXAMPLES_FLOOR = 0.75
PICKER_FLOOR = 0.85     # docs/lab-notebook.md *Picked samples*: the shipped picker on the test split's real motions
PICKER_OOD_FLOOR = 0.6  # ... and on the OOD split's (70.9 %: it learned the database's train videos)
OOD_EXAMPLES = [("a person does a cartwheel", "cartwheel"), ("someone does a backflip", "backflip"),
                ("a person crawls forward", "crawl"), ("a person rolls on the ground", "roll")]


@pytest.fixture(scope="module")
def vqvae():
    return MotionVQVAE.from_pretrained(checkpoints_dir() / "vqvae")


def test_shipped_vqvae_reconstructs_the_test_split(embedded_corpus, vqvae):
    r = evaluate_split(vqvae, embedded_corpus, "test")
    assert r["motions"] == 495
    assert r["mpjpe_root_aligned_mm"] < 35, "the issue's target: below 35 mm on test"
    assert r["codes_used_fraction"] >= 0.8, "the issue's target: 80 % of the codebook in use"
    assert r["perplexity"] > 150


def test_shipped_vqvae_expresses_ood_kinds(embedded_corpus, vqvae):
    # The tokenizer trained on the video-only motions and 2,000 caption-free program motions
    # (OOD kinds included, no text): the OOD half it is evaluated on was 265 mm with the first
    # tokenizer (train split only), 65.8 mm with stage 3; README: 43.0 mm with stage 4.
    r = evaluate_split(vqvae, embedded_corpus, "ood")
    assert r["motions"] == 250
    assert r["mpjpe_root_aligned_mm"] < 50, "the issue's target: below 50 mm on OOD"
    assert r["codes_used_fraction"] >= 0.8


def test_shipped_checker_on_held_out_real_motions(embedded_corpus):
    from backend.evaluation.follow import load_programs, score
    from backend.evaluation.checker import InstructionChecker
    from motioncore.clean import clean_motion
    from motioncore.features import joints_to_features

    checker = InstructionChecker.from_pretrained(checkpoints_dir() / "checker")
    programs = load_programs(embedded_corpus)
    for split, n_attrs in (("test", 1500), ("ood", 500)):
        feats = embedded_corpus.load_features(split, min_frames=8)
        ids = sorted(feats)
        res = score(checker, [programs[m] for m in ids], [feats[m] for m in ids])
        assert res["attributes"] > n_attrs
        # docs/lab-notebook.md *The checker, stage 3*: test 96.2 %, OOD 95.8 % (the target: 95 %)
        assert res["followed"] >= 0.95, (split, res)
        assert res["kind"] >= 0.95 and res["speed"] >= 0.85, (split, res)
        if split == "ood":
            # it reads a motion as the clean-up returns it the same (stage 2 lost 1.9 points there)
            cleaned = [joints_to_features(clean_motion(feats[m]).joints) for m in ids]
            again = score(checker, [programs[m] for m in ids], cleaned)
            assert abs(again["followed"] - res["followed"]) < 0.015, (res["followed"], again["followed"])


def test_shipped_picker_on_held_out_real_motions(embedded_corpus):
    """The picker (best-of-N, docs/lab-notebook.md *Picked samples*) reads held-out real motions nearly as well
    as the judge, though it never saw the OOD judge half."""
    from backend.evaluation.follow import load_programs, score
    from backend.evaluation.pick import Picker

    picker = Picker.from_pretrained()
    assert picker is not None, "checkpoints/picker is missing: python -m backend train checker --role picker --ship"
    programs = load_programs(embedded_corpus)
    feats = embedded_corpus.load_features("test", min_frames=8)
    ids = sorted(feats)
    res = score(picker.checker, [programs[m] for m in ids], [feats[m] for m in ids])
    assert res["followed"] >= PICKER_FLOOR and res["kind"] >= 0.9
    feats = embedded_corpus.load_features("ood", min_frames=8)
    ids = sorted(feats)
    res = score(picker.checker, [programs[m] for m in ids], [feats[m] for m in ids])
    assert res["followed"] >= PICKER_OOD_FLOOR, res


@pytest.fixture(scope="module")
def mcdpo_pipe():
    from backend.pipeline import VimoRAGPipeline

    return VimoRAGPipeline.load(models=("mcdpo",), evaluator=False)


def test_shipped_generator_does_what_the_app_examples_say(mcdpo_pipe):
    """The app's example prompts through the shipped McDPO model (Gemini-MVR retrieval, seeds
    0-1), cleaned as users get them, checked by the instruction checker (what each asks:
    ``backend.evaluation.follow.EXAMPLE_PROMPTS``). A floor under the README's figure."""
    import numpy as np

    from backend.evaluation.follow import example_motions, score_examples
    from backend.evaluation.checker import InstructionChecker

    pipe = mcdpo_pipe
    checker = InstructionChecker.from_pretrained(checkpoints_dir() / "checker")
    rows = score_examples(checker, example_motions(pipe, "mcdpo", seeds=2, temperature=TEMPERATURE,
                                                   video_lead=True))
    shares = [v for r in rows.values() for v in r["checks"].values()]
    assert len(shares) == 15
    assert np.mean(shares) >= EXAMPLES_FLOOR, rows
    # the kinds it knows only from videos (the video leads their words): before the video-only
    # pairs and the lead, none of the four ever came out
    ood = [rows[p]["checks"][f"kind {k}=True"] for p, k in OOD_EXAMPLES]
    assert np.mean(ood) > 0, rows
    # a chained prompt is written part by part (compose.py): the second motion comes out too
    # (written whole, the spin after the punch never did)
    assert rows["a person punches forward, then spins"]["checks"]["kind spin=True"] > 0, rows
    # "turns around" names no side: written as a left turn (open_turn.py), it is seen as a turn
    # (as typed it came out a straight walk or a double spin, 0 of 3)
    assert rows["a person walks forward and then turns around"]["checks"]["kind turn=True"] > 0, rows


def test_clip_length_and_in_place_on_the_shipped_model(mcdpo_pipe):
    """A requested length is the clip's length (to the tokenizer's 0.2 s); in place keeps the
    pelvis over its start while the same seed without it travels."""
    import numpy as np

    moving = mcdpo_pipe.generate("a person walks forward quickly", seed=0, length_s=3.0)
    still = mcdpo_pipe.generate("a person walks forward quickly", seed=0, length_s=3.0, in_place=True)
    assert len(moving.joints) == len(still.joints) == 60 and len(moving.codes) == 15
    assert np.linalg.norm(moving.joints[-1, 0, [0, 2]] - moving.joints[0, 0, [0, 2]]) > 0.5
    assert np.abs(still.joints[:, 0, [0, 2]] - still.joints[0, 0, [0, 2]]).max() < 1e-5
    assert len(mcdpo_pipe.generate("a person jumps", seed=1, length_s=9.8).joints) == 196


def test_look_reads_a_forward_walk_as_forward(mcdpo_pipe, tmp_path):
    """`eval look` on the shipped model: a forward walk travels forward in the body's own frame
    (guards the facts' sign convention against real generated motion, not only hand-made)."""
    from backend.evaluation.look import look
    from viewer.sheet import contact_sheet

    (row,) = look(mcdpo_pipe, ["a person walks forward quickly"], seed=0, length_s=3.0)
    assert row["forward_m"] > 0.5 and abs(row["left_m"]) < row["forward_m"], row
    assert row["upside_down_pct"] == 0.0 and abs(row["lowest_m"]) < 0.05
    assert contact_sheet([(row["prompt"], row["joints"])], tmp_path / "look.png").stat().st_size > 0


def test_unseen_count_words_reach_the_model_in_its_own_words(mcdpo_pipe):
    """Restated prompts (README): "thrice" is no training word; the shipped restater reads it and
    the LLM gets "three times"; retrieval still searched the user's words."""
    r = mcdpo_pipe.generate("a guy leaps into the air thrice", seed=0)
    assert r.read_as[0] is not None and "three times" in r.read_as[0], r.read_as
    assert r.hits and "reading" in r.timing
    typed = mcdpo_pipe.generate("a guy leaps into the air thrice", seed=0, restate=False)
    assert typed.read_as == [None] and [h.id for h in typed.hits] == [h.id for h in r.hits]
    assert mcdpo_pipe.generate("a person jumps twice", seed=0).read_as == [None]   # training words


def test_a_held_out_run_word_reaches_the_model_as_a_run(mcdpo_pipe):
    """Neighbour kinds (docs/lab-notebook.md, *Neighbour kinds*): "dashing" is no training word and
    the restater's heads read it under their gate; its nearest training caption parts and the
    kind reader agree on a run, so the LLM reads a run that curves left."""
    assert mcdpo_pipe.restater.neighbours is not None and mcdpo_pipe.restater.neighbour_kinds
    r = mcdpo_pipe.generate("a guy is dashing in an arc to the left for a while", seed=0)
    assert r.read_as[0] is not None and ("run" in r.read_as[0] or "jog" in r.read_as[0]), r.read_as
    assert "left" in r.read_as[0], r.read_as


def test_the_picker_keeps_the_sample_that_does_the_count(mcdpo_pipe):
    """Best of N (docs/lab-notebook.md *Picked samples*): a counted prompt is sampled N times and the judge
    (another checker than the picker) sees the asked count in the kept sample far more often
    than in one sample (seeds 0-7; measured over seeds 0-11: 6 of 12 against 1 of 12, the same
    single samples on float32 and bfloat16 weights)."""
    from backend.evaluation.checker import InstructionChecker
    from backend.evaluation.follow import check
    from motioncore.features import joints_to_features

    judge = InstructionChecker.from_pretrained(checkpoints_dir() / "checker")
    asked = [("kind", "jump", True), ("count", "jump", 3)]

    def follows(r) -> bool:
        pred = judge.predict([joints_to_features(r.joints)])[0]
        return all(ok for _, ok in check(pred, asked))

    picked, one = 0, 0
    for seed in range(8):
        r = mcdpo_pipe.generate("a person jumps three times", seed=seed)
        assert r.picks[0] is not None and r.picks[0]["samples"] == SAMPLES and "picking" in r.timing
        picked += follows(r)
        single = mcdpo_pipe.generate("a person jumps three times", seed=seed, pick=False)
        assert single.picks == [None] and "picking" not in single.timing
        one += follows(single)
    assert picked >= 3 and picked >= one + 2, (picked, one)


def test_the_shipped_pose_reader_reads_held_out_database_videos():
    """The pose reader (docs/lab-notebook.md *Pose reader*) writes most of what a held-out OOD-kind database
    video shows (measured 79.5 % where the LLM wrote 48 %; the judge's ceiling 88 %)."""
    from backend.evaluation.checker import InstructionChecker
    from backend.evaluation.video_reading import video_reading
    from backend.generation.pose_reader import load_pose_reader
    from backend.generation.vqvae import load_llm_tokenizer
    from backend.retrieval.service import VideoRetriever

    reader = load_pose_reader()
    assert reader is not None, "checkpoints/pose-reader is missing: python -m backend train pose-reader --ship"
    vqvae, normalizer = load_llm_tokenizer()
    checker = InstructionChecker.from_pretrained(checkpoints_dir() / "checker")
    res = video_reading(None, vqvae, normalizer, VideoRetriever.open("embedded"), checker, "test",
                        ood_only=True, temperature=0.0, reader=reader)
    assert res["questions"] >= 40
    assert res["generated"]["followed"] >= 0.7, res["generated"]
    assert res["generated"]["kind"]["share"] >= 0.85, res["generated"]


def test_a_part_the_video_leads_is_picked_for_its_videos_kind(mcdpo_pipe):
    """A prompt naming a kind the model knows only from videos: the video leads it, and its
    samples are picked among for the kind the retrieved database video shows (docs/lab-notebook.md *Picked
    samples*, session 20)."""
    r = mcdpo_pipe.generate("someone does a cartwheel twice", seed=0)
    assert r.video_lead > 0.5, r.video_lead
    # its samples and the pose reader's draft (docs/lab-notebook.md *Pose reader*)
    assert r.picks[0] is not None and r.picks[0]["samples"] == SAMPLES + READER_DRAFTS, r.picks
    assert "cartwheel" in mcdpo_pipe.retriever.db.record(r.video_id)["spec"]["kinds"]


def test_a_walk_asked_backwards_travels_backwards(mcdpo_pipe):
    """No training motion travels backwards; the part is written as the forward walk the model
    knows and played in reverse (backend/generation/reverse.py): it travels backwards along its
    own facing, and a forward walk of the same seed forwards."""
    from backend.generation.reverse import travel_along_facing

    for text in ("a person walks backwards", "someone walks backwards slowly"):
        res = mcdpo_pipe.generate(text, seed=0)
        assert res.backwards == [True] and travel_along_facing(res.joints) < -0.5, text
    res = mcdpo_pipe.generate("a person walks forward", seed=0)
    assert res.backwards == [False] and travel_along_facing(res.joints) > 0.5
