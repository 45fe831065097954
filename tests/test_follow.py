"""Instruction following: what a prompt asks (from its program) and how a checker prediction is
scored, on hand-made cases; the checker model's shapes and save/load."""
import numpy as np
import pytest

from backend.evaluation.checker import KINDS, MAX_REPS, InstructionChecker
from backend.evaluation.follow import asked_attributes, check, targets


def seg(action, reps=1, side=None, turn=None, speed="normal"):
    return {"action": action, "reps": reps, "side": side, "turn": turn, "speed": speed}


def test_asked_attributes_of_each_kind_of_prompt():
    # "a person kicks twice with the left leg, slowly"
    assert asked_attributes([seg("kick", 2, side="left", speed="slow")]) == [
        ("kind", "kick", True), ("count", "kick", 2), ("side", "kick", "left"), ("speed", "kick", "slow")]
    # "someone walks forward" must not turn; distance is not a count
    assert asked_attributes([seg("walk", 3)]) == [("kind", "walk", True), ("direction", "walk", "none")]
    # "spins to the right three times, then jumps quickly"
    assert asked_attributes([seg("spin", 3, turn="right"), seg("jump", 1, speed="fast")]) == [
        ("kind", "spin", True), ("count", "spin", 3), ("direction", "spin", "right"),
        ("kind", "jump", True), ("count", "jump", 1), ("speed", "jump", "fast")]
    # a dance's repetitions are a duration, not a count
    assert asked_attributes([seg("dance_a", 2)]) == [("kind", "dance_a", True)]


def test_a_kind_that_always_turns_asks_no_direction_when_no_side_is_named():
    # "turns around" turns one way or the other: asking "none" would prefer samples that do not
    # turn; a walk with no side named does ask to go straight
    assert asked_attributes([seg("turn", 2)]) == [("kind", "turn", True)]
    assert asked_attributes([seg("spin", 1)]) == [("kind", "spin", True), ("count", "spin", 1)]
    assert ("direction", "turn", "left") in asked_attributes([seg("turn", 2, turn="left")])
    assert ("direction", "walk", "none") in asked_attributes([seg("walk", 2)])


def test_a_kind_named_twice_is_checked_for_presence_only():
    asked = asked_attributes([seg("kick", 1, side="left"), seg("walk"), seg("kick", 2, side="right")])
    assert asked == [("kind", "kick", True), ("kind", "walk", True), ("direction", "walk", "none")]


def prediction(**per_kind):
    """A checker output with every kind absent, then the given kinds' answers."""
    k = len(KINDS)
    p = {"presence": np.zeros(k), "reps": np.zeros(k, int), "speed": np.ones(k, int),
         "side": np.zeros(k, int), "turn": np.zeros(k, int)}
    for kind, ans in per_kind.items():
        i = KINDS.index(kind)
        p["presence"][i] = 0.9
        for key, value in ans.items():
            p[key][i] = value
    return p


def test_check_scores_each_attribute():
    asked = asked_attributes([seg("kick", 2, side="left", speed="slow")])
    right = prediction(kick={"reps": 1, "side": 0, "speed": 0})          # 2 reps, left, slow
    assert check(right, asked) == [("kind", True), ("count", True), ("side", True), ("speed", True)]
    wrong = prediction(kick={"reps": 0, "side": 1, "speed": 2})          # once, right, fast
    assert check(wrong, asked) == [("kind", True), ("count", False), ("side", False), ("speed", False)]
    assert check(prediction(walk={}), asked)[0] == ("kind", False)      # a walk is not a kick
    spin = asked_attributes([seg("spin", 1, turn="left")])
    assert dict(check(prediction(spin={"turn": 1}), spin))["direction"] is True
    assert dict(check(prediction(spin={"turn": 2}), spin))["direction"] is False


def test_training_targets_mask_what_does_not_apply():
    t = targets([seg("kick", 7, side="right", speed="fast"), seg("walk", turn="left")])
    k, w = KINDS.index("kick"), KINDS.index("walk")
    assert t["presence"][k] == t["presence"][w] == 1 and t["presence"].sum() == 2
    assert t["reps"][k] == MAX_REPS - 1                                  # clipped to 5
    assert t["side"][k] == 1 and t["side"][w] == -1
    assert t["turn"][w] == 1 and t["speed"][k] == 2
    assert (t["reps"][[i for i in range(len(KINDS)) if i not in (k, w)]] == -1).all()


def test_checker_shapes_and_round_trip(tmp_path):
    model = InstructionChecker().set_normalization(np.zeros(263), np.ones(263))
    feats = [np.random.default_rng(i).normal(size=(n, 263)).astype(np.float32) for i, n in enumerate((40, 77))]
    before = model.predict(feats)
    assert len(before) == 2 and before[0]["presence"].shape == (len(KINDS),)
    model.save_pretrained(tmp_path / "c")
    again = InstructionChecker.from_pretrained(tmp_path / "c").predict(feats)
    np.testing.assert_allclose(before[1]["presence"], again[1]["presence"], atol=1e-6)
    with pytest.raises(FileNotFoundError, match="config.json"):
        InstructionChecker.from_pretrained(tmp_path / "missing")


def test_attributes_of_an_absent_kind_are_not_followed():
    # the heads read "2 kicks, left, slow" but no kick is there: nothing asked about kicks holds
    asked = asked_attributes([seg("kick", 2, side="left", speed="slow")])
    absent = prediction(walk={})
    k = KINDS.index("kick")
    absent["reps"][k], absent["side"][k], absent["speed"][k] = 1, 0, 0
    assert [ok for _, ok in check(absent, asked)] == [False] * 4


def test_example_prompts_scoring():
    from backend.evaluation.follow import EXAMPLE_PROMPTS, score_examples

    class Fixed:                 # a checker that always sees one right-leg kick
        def predict(self, feats):
            return [prediction(kick={"side": 1}) for _ in feats]

    prompts = dict(EXAMPLE_PROMPTS)
    assert prompts["a man kicks with his right leg"] == [("kind", "kick", True), ("side", "kick", "right")]
    out = score_examples(Fixed(), {"a man kicks with his right leg": [None, None],
                                   "someone jumps up twice": [None], "a person dances happily": [None]})
    assert out["a man kicks with his right leg"]["followed"] == 1.0
    assert out["someone jumps up twice"]["followed"] == 0.0
    assert out["a person dances happily"]["followed"] is None
    assert out["a man kicks with his right leg"]["samples"] == 2


def test_mirror_features_is_an_involution_and_flips_turning():
    from motioncore.features import mirror_features
    from motioncore.features import joints_to_features
    from motioncore.skeleton import ADULT_OFFSETS, PARENTS

    # a body walking a left-hand curve, built from the rest pose
    rest = np.zeros((22, 3))
    for j in range(1, 22):
        rest[j] = rest[PARENTS[j]] + ADULT_OFFSETS[j]
    rest[:, 1] -= rest[:, 1].min()
    yaw = 0.4 * np.arange(60) / 20
    joints = np.stack([rest @ np.array([[np.cos(a), 0, -np.sin(a)], [0, 1, 0], [np.sin(a), 0, np.cos(a)]])
                       + [np.sin(a) * 2, 0, (1 - np.cos(a)) * 2] for a in yaw])
    f = joints_to_features(joints)
    m = mirror_features(f)
    assert m.shape == (len(f) - 1, 263)
    assert np.abs(f[:, 0]).min() > 4e-3                                   # it does turn
    np.testing.assert_allclose(m[:, 0], -f[: len(m), 0], atol=1e-3)       # the other way
    np.testing.assert_allclose(mirror_features(m), f[: len(f) - 2], atol=2e-2)


def test_checker_training_keeps_the_best_validation_score(tmp_path):
    import json

    from backend.data.corpus import CorpusConfig, build_corpus
    from backend.data.dataset import MotionCorpus
    from backend.evaluation.follow import CheckerTrainConfig, train_checker

    from backend.data.video_motions import video_motion
    from motioncore.features import joints_to_features

    corpus = MotionCorpus(build_corpus(tmp_path / "corpus", CorpusConfig(n_in_dist=40, n_ood=8, seed=3),
                                       progress=False))
    cfg = CheckerTrainConfig(steps=6, batch_size=4, hidden=16, layers=1, mirror=0.5, val_every=3, threads=1)
    joints, segments = video_motion(900, True)          # a database motion with an OOD kind
    model = train_checker(corpus, ("train",), cfg, tmp_path / "run", progress=False, val_split="test",
                          extra=[(joints_to_features(joints), segments)])
    rows = [json.loads(x) for x in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    vals = [r for r in rows if "val_followed" in r]
    assert [r["step"] for r in vals] == [3, 6]
    saved = json.loads((tmp_path / "run" / "train_config.json").read_text())
    assert saved["best_val_followed"] == max(r["val_followed"] for r in vals)
    assert saved["extra_motions"] == 1
    assert model.config.hidden == 16
    again = type(model).from_pretrained(tmp_path / "run" / "model")
    assert again.config.layers == 1


class _SeesJumpTwice:                        # a checker that sees a jump done twice, nothing else
    def predict(self, feats):
        k = len(KINDS)
        return [{"presence": np.eye(k)[KINDS.index("jump")], "reps": np.full(k, 1),
                 "side": np.zeros(k, int), "turn": np.zeros(k, int), "speed": np.zeros(k, int)}
                for _ in feats]


def test_followed_shares_per_motion():
    from backend.evaluation.follow import followed_shares

    twice = [{"action": "jump", "reps": 2}]
    thrice = [{"action": "jump", "reps": 3}]
    walk = [{"action": "walk", "turn": None}]
    out = followed_shares(_SeesJumpTwice(), [twice, thrice, walk], [np.zeros((5, 263))] * 3)
    assert out.tolist() == [1.0, 0.5, 0.0]
    with pytest.raises(ValueError, match="programs for"):
        followed_shares(_SeesJumpTwice(), [twice], [])


def test_score_by_kind_splits_each_attribute_by_motion_kind():
    from backend.evaluation.follow import format_by_kind, score

    progs = [[seg("jump", 2)]] * 5 + [[seg("jump", 3)]] * 5 + [[seg("walk")]] * 5
    r = score(_SeesJumpTwice(), progs, [np.zeros((5, 263))] * 15)
    assert r["by_kind"]["kind/jump"] == {"share": 1.0, "n": 10}
    assert r["by_kind"]["count/jump"] == {"share": 0.5, "n": 10}
    assert r["by_kind"]["kind/walk"] == {"share": 0.0, "n": 5}
    assert r["by_kind"]["direction/walk"] == {"share": 0.0, "n": 5}
    assert sum(v["n"] for v in r["by_kind"].values()) == r["attributes"]
    table = format_by_kind({"row": r})
    jump = next(line for line in table.splitlines() if line.strip().startswith("jump"))
    assert "100%" in jump and "50%" in jump
    assert "walk" in table and format_by_kind({"row": r}, min_n=6).count("walk") == 0


def test_follow_reward_judges_video_only_motions_by_the_video_checker():
    from backend.evaluation.follow import follow_reward

    class Sees:                              # sees one kind, done once
        def __init__(self, kind):
            self.kind = kind

        def predict(self, feats):
            k = len(KINDS)
            return [{"presence": np.eye(k)[KINDS.index(self.kind)], "reps": np.zeros(k, int),
                     "side": np.zeros(k, int), "turn": np.zeros(k, int), "speed": np.zeros(k, int)}
                    for _ in feats]

    programs = {"m1": [seg("jump")], "video-v1": [seg("cartwheel")]}
    follow = follow_reward(Sees("jump"), programs, Sees("cartwheel"))
    feats = [np.zeros((5, 263))] * 3
    assert follow(["m1", "video-v1", "m1"], feats).tolist() == [1.0, 1.0, 1.0]
    swapped = follow_reward(Sees("cartwheel"), programs, Sees("jump"))
    assert swapped(["m1", "video-v1"], feats[:2]).tolist() == [0.0, 0.0]
    with pytest.raises(ValueError, match="video_checker"):
        follow_reward(Sees("jump"), programs)(["video-v1"], feats[:1])
    assert follow_reward(Sees("jump"), programs)(["m1"], feats[:1]).tolist() == [1.0]


def test_checker_training_shows_cleaned_motions_when_asked(tmp_path, monkeypatch):
    """`train checker --clean P`: that share of the samples is the cleaned motion (what users and
    generated rows get); with P = 0 the clean-up is never even computed."""
    from backend.data.corpus import CorpusConfig, build_corpus
    from backend.data.dataset import MotionCorpus
    from backend.evaluation import follow
    import motioncore.clean as clean

    corpus = MotionCorpus(build_corpus(tmp_path / "corpus", CorpusConfig(n_in_dist=30, n_ood=6, seed=4),
                                       progress=False))
    calls, seen = [], []
    real_clean = clean.clean_motion
    monkeypatch.setattr(clean, "clean_motion", lambda f, *a, **k: calls.append(1) or real_clean(f, *a, **k))
    real_batch = follow.InstructionChecker.batch
    monkeypatch.setattr(follow.InstructionChecker, "batch",
                        lambda self, feats: seen.extend(feats) or real_batch(self, feats))
    cfg = follow.CheckerTrainConfig(steps=2, batch_size=4, hidden=8, layers=1, threads=1)
    follow.train_checker(corpus, ("train",), cfg, tmp_path / "plain", progress=False, val_split=None)
    assert not calls
    n_train = len(corpus.load_features("train"))
    cfg = follow.CheckerTrainConfig(steps=2, batch_size=4, hidden=8, layers=1, threads=1, clean=1.0)
    seen.clear()
    follow.train_checker(corpus, ("train",), cfg, tmp_path / "clean", progress=False, val_split=None)
    assert len(calls) == n_train
    raw = list(corpus.load_features("train").values())
    assert len(seen) == 8
    assert not any(len(s) == len(r) and np.allclose(s, r) for s in seen for r in raw)   # all cleaned


def test_train_checker_refuses_bad_more_and_clean(capsys, tmp_path):
    from backend.cli import main

    for argv, word in ((["--more", "-1"], "--more"), (["--clean", "1.5"], "--clean"),
                       (["--role", "picker", "--more", "10"], "picker")):
        assert main(["train", "checker", "--workdir", str(tmp_path / "w"), *argv]) == 2
        assert word in capsys.readouterr().err
    assert not (tmp_path / "w").exists()                          # refused before anything is written
