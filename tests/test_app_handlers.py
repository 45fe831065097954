"""The app's request handling without Gradio or a browser: a fake service stands in for the
models, so these check what the page is told, step by step, and what happens on bad input."""
from __future__ import annotations

from dataclasses import dataclass, field

from app import handlers
from app.service import UserError


@dataclass
class Hit:
    id: str
    rank: int
    score: float = 0.5

    def to_json(self):
        return {"id": self.id, "rank": self.rank, "score": self.score, "action_score": 0.3,
                "object_score": 0.2, "w_action": 0.6, "w_object": 0.4}


@dataclass
class Result:
    video_id: str | None
    hits: list = field(default_factory=list)
    codes: tuple = (1, 2, 3)
    seconds: float = 0.6
    mirrored: bool = False
    video_lead: float = 0.0

    def summary(self):
        return {"video_id": self.video_id}


class FakeService:
    """Records the calls; ``fail`` makes ``check_inputs`` raise it."""

    def __init__(self, fail: Exception | None = None, warn: str | None = None):
        self.fail, self.warn, self.calls, self.exports = fail, warn, [], []

    def check_inputs(self, prompt, model, retrieval, seed, temperature, video_id, compare, uploads):
        if self.fail:
            raise self.fail
        return "pipe", prompt.strip().lower(), int(seed), float(temperature), video_id, (
            ["mcdpo", "sft"] if compare else [model])

    def generate_motion(self, pipe, text, model, retrieval, seed, temperature, vid, uploads, clip):
        self.calls.append((model, retrieval, vid))
        if retrieval == "given":
            return Result(vid)
        return Result("v1", [Hit("v1", 1), Hit("v2", 2)]) if retrieval != "none" else Result(None)

    def router_for(self, pipe, text, video_id, hits, uploads):
        return None if video_id is None else {"id": video_id, "w_action": 0.6, "w_object": 0.4,
                                              "action_score": 0.3, "object_score": 0.2,
                                              "score": 0.26, "rank": 1}

    def new_run_dir(self, st):
        return "run"

    def export(self, res, run_dir, stem, units, formats=("bvh", "fbx", "glb", "mp4", "npy")):
        self.exports.append(tuple(formats))
        return {k: f"{run_dir}/{stem}.{k}" for k in formats}

    def distance(self, pipe, res):
        return 3.5

    def servability(self, pipe, result, distance):
        return self.warn

    def video_for_display(self, vid, uploads):
        return f"media/{vid}.mp4"

    def prefetch_media(self, vid, hit_ids, uploads):
        from concurrent.futures import Future

        done = Future()
        done.set_result((self.video_for_display(vid, uploads) if vid else None,
                         [self.thumbnail(h) for h in hit_ids]))
        return done

    def thumbnail(self, vid):
        return f"thumbs/{vid}.jpg"

    def caption(self, vid):
        return f"caption of {vid}"


def _last(updates):
    out = {}
    for u in updates:
        out.update(u)
    return out, updates[-1]


def test_generate_fills_the_page_step_by_step():
    svc = FakeService()
    updates = list(handlers.generate(svc, handlers.Request("A person Walks"), {}))
    assert "Working" in updates[0]["status"]
    assert "router" in updates[1] and "video_a" not in updates[1]     # the router comes first
    assert updates[2]["model3d"].endswith(".glb")                      # the 3D view: one update
    assert sum("model3d" in u for u in updates) == 1
    # the 3D view and the downloads are shown before the MP4 is rendered, which comes next
    assert "video_a" not in updates[2] and all(".mp4" not in d for d in updates[2]["downloads"])
    assert updates[3]["video_a"].endswith(".mp4") and any(".mp4" in d for d in updates[3]["downloads"])
    assert svc.exports == [("bvh", "fbx", "glb", "npy"), ("mp4",)]
    page, final = _last(updates)
    assert "Done" in final["status"] and "info" not in final
    assert "s in all (motion shown after" in final["status"]
    assert page["video_a"].endswith(".mp4") and page["video_b"] is None
    assert page["retrieved"] == "media/v1.mp4" and len(page["gallery"]) == 2
    assert page["details"]["prompt_used"] == "a person walks"
    assert page["state"]["hits"][0]["id"] == "v1"
    assert set(page) - {"info", "warning"} <= set(handlers.OUTPUTS)
    assert "mirrored" not in final["status"]


def test_a_mirrored_reference_video_is_said_in_the_status():
    class Mirroring(FakeService):
        def generate_motion(self, *a):
            r = super().generate_motion(*a)
            r.mirrored = True
            return r

    page, final = _last(list(handlers.generate(Mirroring(), handlers.Request("kick left"), {})))
    assert "v1, read mirrored" in final["status"]


def test_a_video_leading_the_words_is_said_in_the_status():
    class Leading(FakeService):
        def generate_motion(self, *a):
            r = super().generate_motion(*a)
            r.video_lead = 1.0
            return r

    page, final = _last(list(handlers.generate(Leading(), handlers.Request("a cartwheel"), {})))
    assert "led your words at weight 100%" in final["status"]
    _, plain = _last(list(handlers.generate(FakeService(), handlers.Request("a person walks"), {})))
    assert "led your words" not in plain["status"]


def test_a_chained_prompt_lists_its_parts_and_their_videos_in_the_status():
    class Chaining(FakeService):
        def generate_motion(self, *a):
            r = super().generate_motion(*a)
            r.video_lead = 1.0
            r.parts = [{"text": "a person kicks.", "video_id": "v1", "tokens": 5, "mirrored": False,
                        "video_lead": 0.0},
                       {"text": "a person does a cartwheel.", "video_id": "v9", "tokens": 6,
                        "mirrored": False, "video_lead": 1.0}]
            return r

    page, final = _last(list(handlers.generate(Chaining(), handlers.Request("kick, then cartwheel"), {})))
    status = final["status"]
    assert "chains 2 motions" in status and "v9, led by its video at 100%" in status
    assert "led your words" not in status      # the lead belongs to the second part, not to v1


def test_how_the_words_were_read_and_the_kept_sample_are_said_in_the_status():
    class Reading(FakeService):
        def generate_motion(self, *a):
            r = super().generate_motion(*a)
            r.read_as = ["a person jumps three times."]
            r.picks = [{"samples": 4, "chosen": 2, "score": 0.8}]
            return r

    _, final = _last(list(handlers.generate(Reading(), handlers.Request("a guy leaps thrice"), {})))
    assert "read them as “a person jumps three times" in final["status"]
    assert "best of 4 samples" in final["status"] and "mirror image" not in final["status"]
    assert "pace" not in final["status"]

    class Mirrored(FakeService):
        def generate_motion(self, *a):
            r = super().generate_motion(*a)
            r.picks = [{"samples": 8, "chosen": 6, "score": 0.9, "mirror": True, "tempo": True}]
            return r

    _, final = _last(list(handlers.generate(Mirrored(), handlers.Request("a slow cartwheel to the left"), {})))
    assert "best of 8 samples" in final["status"] and "mirror image, which turns the way your words ask" in final["status"]
    assert "at the pace your words ask" in final["status"]
    _, plain = _last(list(handlers.generate(FakeService(), handlers.Request("a person walks"), {})))
    assert "best of" not in plain["status"] and "read them as" not in plain["status"]
    assert "reverse" not in plain["status"]

    class Backwards(FakeService):
        def generate_motion(self, *a):
            r = super().generate_motion(*a)
            r.backwards = [True]
            return r

    _, back = _last(list(handlers.generate(Backwards(), handlers.Request("a person walks backwards"), {})))
    assert "written going forwards and is played in reverse" in back["status"]

    class OpenTurn(FakeService):
        def generate_motion(self, *a):
            r = super().generate_motion(*a)
            r.open_turns, r.read_as = [True], ["a person turns left."]
            return r

    _, turn = _last(list(handlers.generate(OpenTurn(), handlers.Request("a person turns around"), {})))
    assert "name no side for the turn, so it was written as “a person turns left" in turn["status"]
    assert "never saw some of your words" not in turn["status"]


def test_compare_runs_both_models_and_a_warning_becomes_a_note():
    svc = FakeService(warn="This prompt may not be servable.")
    page, final = _last(list(handlers.generate(
        svc, handlers.Request("a person jumps", mode="compare", retrieval="random"), {})))
    assert [c[0] for c in svc.calls] == ["mcdpo", "sft"]
    assert page["video_b"].endswith(".mp4")
    assert "servable" not in final["status"]       # the warning is only for Gemini-MVR retrieval
    page, final = _last(list(handlers.generate(svc, handlers.Request("a person jumps"), {})))
    assert "servable" in final["status"] and "servable" in final["info"]


def test_bad_input_ends_as_a_message_not_an_exception():
    svc = FakeService(fail=UserError("the seed must be a whole number, got 'x'"))
    updates = list(handlers.generate(svc, handlers.Request("walk", seed="x"), {"hits": []}))
    assert len(updates) == 1
    assert "The seed must be a whole number" in updates[0]["status"]
    assert updates[0]["warning"].startswith("The seed")
    assert updates[0]["state"] == {"hits": []}


def test_error_messages_never_show_server_paths():
    msg = handlers.error_message(FileNotFoundError("/srv/vimorag/checkpoints/llm-sft/model.safetensors"))
    assert "A file is missing" in msg and "/srv/vimorag" not in msg
    assert handlers.error_message(ValueError("bad")).startswith("Invalid input")
    assert "still running" in handlers.error_message(RuntimeError("boom"))


def test_pick_uses_the_clicked_video_and_rejects_a_stale_index():
    svc = FakeService()
    st = {"hits": [{"id": "v1", "rank": 1, "score": 0.5}, {"id": "v2", "rank": 2, "score": 0.4}]}
    updates = list(handlers.pick(svc, handlers.Request("a person walks"), 1, st))
    assert updates[0] == {"video_id": "v2", "retrieval": "given"}
    assert svc.calls == [("mcdpo", "given", "v2")]
    page, final = _last(updates)
    assert "rank-2 video v2" in final["status"]
    assert page["state"]["chosen"] == {"id": "v2", "prompt": "a person walks"}
    stale = list(handlers.pick(svc, handlers.Request("a person walks"), 7, st))
    assert len(stale) == 1 and "no longer listed" in stale[0]["status"]


def test_clear_choice_forgets_the_chosen_video():
    assert handlers.clear_choice({"chosen": {"id": "v2"}, "hits": [1]}) == ("", "gemini", False, {"hits": [1]})
    assert handlers.clear_choice(None) == ("", "gemini", False, {})
