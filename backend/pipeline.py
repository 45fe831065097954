"""``VimoRAGPipeline``: text -> retrieved video -> motion tokens -> motion, one object.

It composes the trained components (Gemini-MVR retriever + video database, the motion LLMs
— McDPO and SFT share one frozen base — the VQ-VAE decoder and, for distances, the
evaluator). The CLI's ``generate``, the evaluation rows and the app all call ``generate``.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from backend.checkpoints import checkpoints_dir
from backend.defaults import (FIRM_LEAD, GUIDANCE, GUIDANCE_RANGE, LEAN_WEIGHTS, LED_LENGTH, LED_TEMPERATURE,
                              MIRROR, READ_LEAD, READ_LEAD_GATE, READER_ABOVE, READER_DRAFTS, READER_TEMPO, RETIME, RETIME_CHOICES, TEMPERATURE)
from backend.evaluation.pick import Picker
from backend.evaluation.servable import ServableCheck
from backend.generation.compose import join_parts
from backend.generation.motion_llm import MotionLLM
from backend.generation.pose_reader import (asked_tempo, draft_codes, first_of_each, load_pose_reader,
                                            video_duration, with_drafts)
from backend.generation.restate import Restater
from backend.generation.open_turn import open_turn_request
from backend.generation.reverse import backward_request, names_turn, reverse_segment
from backend.generation.mirror import asks_left_or_right, mirror_codes
from backend.generation.tempo import stretch_codes
from backend.generation.vqvae import load_llm_tokenizer, load_normalizer
from backend.generation.video_lead import (LED_ABOVE, VideoLead, firm_lead, hit_captions, lead_guidance, led_min_tokens,
                                          shown_kinds, video_only_reading)
from backend.generation.kind_reader import with_kind_reader
from backend.generation.neighbours import FOLDER as NEIGHBOURS, PartNeighbours
from backend.retrieval.scene import add_scene, split_scene
from backend.retrieval.service import VideoRetriever
from motioncore.clean import clean_motion, in_place as without_travel
from motioncore.features import joints_to_features
from motioncore.prompt import as_sentence, clean_prompt, is_truncated, split_prompt
from motioncore.skeleton import FPS

RETRIEVAL_MODES = ("gemini", "object", "random", "none", "given")
MODEL_NAMES = ("mcdpo", "sft", "novideo")


@dataclass
class GenerationResult:
    text: str
    model: str
    retrieval: str
    seed: int | None
    video_id: str | None
    hits: list                      # retrieval.service.Hit, top-k (empty for none/given)
    codes: np.ndarray
    features: np.ndarray            # (T, 263) un-normalised, as decoded (of ``joints`` when a part
    #                                 was played in reverse)
    joints: np.ndarray              # (T, 22, 3) after motioncore.clean.clean_motion (rigid, grounded)
    timing: dict = field(default_factory=dict)
    truncated: bool = False
    mirrored: bool = False          # the video reached the model as its mirror image (sides matched)
    video_lead: float = 0.0         # how much the video led the words (VideoLead; 1 = the video alone)
    parts: list = field(default_factory=list)   # a chained prompt written part by part: one dict
    #                                             per part (text, video_id, tokens, mirrored,
    #                                             video_lead, read_as); empty when written whole
    read_as: list = field(default_factory=list)  # per part: what the LLM read instead of words it
    #                                             never saw (backend.generation.restate), or None
    picks: list = field(default_factory=list)    # per part: {"samples", "chosen", "score"} when the
    #                                             picker chose among samples (evaluation.pick), or None
    backwards: list = field(default_factory=list)  # per part: written forwards and played in reverse
    #                                             (backend.generation.reverse: "walks backwards")
    open_turns: list = field(default_factory=list)  # per part: "turns around" with no side, written
    #                                             as a left turn (backend.generation.open_turn)

    @property
    def seconds(self) -> float:
        return len(self.joints) / FPS

    def summary(self) -> dict:
        return {"text": self.text, "model": self.model, "retrieval": self.retrieval, "seed": self.seed,
                "video_id": self.video_id, "tokens": int(len(self.codes)), "frames": int(len(self.joints)),
                "seconds": self.seconds, "truncated": self.truncated, "mirrored": self.mirrored,
                "video_lead": round(float(self.video_lead), 3), "parts": self.parts,
                "read_as": self.read_as, "picks": self.picks, "backwards": self.backwards,
                "open_turns": self.open_turns,
                "hits": [h.to_json() for h in self.hits],
                "timing_s": {k: round(v, 4) for k, v in self.timing.items()}}


MAX_SEED = 2 ** 31 - 1
TEMPERATURE_RANGE = (0.05, 5.0)
LENGTH_RANGE = (1.0, 9.8)   # s: a requested clip length (HumanML3D clips are at most 196 frames)


def check_sampling(seed: int | None, temperature: float, top_k: int = 0,
                   guidance: float = GUIDANCE) -> None:
    """ValueError naming what is wrong with sampling settings (shared by the pipeline, the
    command line and the app, which check them before any model work)."""
    if seed is not None and not 0 <= int(seed) <= MAX_SEED:
        raise ValueError(f"the seed must be between 0 and {MAX_SEED}, got {seed}")
    lo, hi = TEMPERATURE_RANGE
    if not lo <= float(temperature) <= hi:
        raise ValueError(f"the temperature must be between {lo} and {hi:g}, got {temperature}")
    if int(top_k) < 0:
        raise ValueError(f"top-k must be 0 (all tokens) or more, got {top_k}")
    lo, hi = GUIDANCE_RANGE
    if not lo <= float(guidance) <= hi:
        raise ValueError(f"the text guidance must be between {lo:g} (off) and {hi:g}, got {guidance}")


def check_length(length_s: float | None) -> float | None:
    """A requested clip length in seconds (None or 0 = the model decides), or a ValueError."""
    if length_s is None or float(length_s) == 0:
        return None
    lo, hi = LENGTH_RANGE
    if not lo <= float(length_s) <= hi:
        raise ValueError(f"the clip length must be between {lo:g} and {hi:g} seconds (0 = let the "
                         f"model decide), got {length_s}")
    return float(length_s)


class VimoRAGPipeline:
    def __init__(self, retriever, vqvae, normalizer, models: dict, evaluator=None, tokenizers=None):
        """``vqvae``/``normalizer``: the default tokenizer; ``tokenizers``: model name ->
        (vqvae, normalizer) for models that write another tokenizer's codes."""
        self.retriever, self.vqvae, self.normalizer = retriever, vqvae.eval(), normalizer
        self.models = models
        self.evaluator = evaluator
        self.tokenizers = dict(tokenizers or {})
        self.servable = None      # backend.evaluation.servable.ServableCheck, when calibrated
        self.video_lead = None    # backend.generation.video_lead.VideoLead, when calibrated
        self.restater = None      # backend.generation.restate.Restater, when trained
        self.picker = None        # backend.evaluation.pick.Picker, when trained (best-of-N)
        self.reader = None        # backend.generation.pose_reader.PoseReader, when trained

    @classmethod
    def load(cls, models=("mcdpo", "sft"), db: str = "embedded", evaluator: bool = True,
             checkpoints: Path | None = None, merge_lora: bool = True,
             lean_weights: str = LEAN_WEIGHTS) -> "VimoRAGPipeline":
        """The shipped stack, for inference. ``merge_lora``: fold each model's LoRA into its own
        copy of the adapted weights (same tokens, fewer multiplies per decode step; about 0.4 GB
        more memory per model on the embedded base), decoded by the lean pass with its weights in
        ``lean_weights`` (default bfloat16: about 0.2 GB more a model, ``defaults.LEAN_WEIGHTS``)."""
        ck = Path(checkpoints or checkpoints_dir())
        missing = [m for m in models if not (ck / f"llm-{m}" / "model.safetensors").is_file()]
        if missing:
            raise FileNotFoundError(f"missing trained model(s) {', '.join(missing)} in {ck} "
                                    f"(expected {ck}/llm-NAME/); see README, *Motion LLM: SFT and McDPO*")
        retriever = with_kind_reader(VideoRetriever.open(db))
        llms = {m: MotionLLM.from_pretrained(ck / f"llm-{m}") for m in models}
        if merge_lora:
            for llm in llms.values():
                llm.merge_lora_(lean_weights)
        loaded: dict[str, tuple] = {}
        for llm in llms.values():
            name = llm.config.tokenizer
            if name not in loaded:
                loaded[name] = load_llm_tokenizer(ck, name)
        vqvae, normalizer = loaded.get("vqvae") or load_llm_tokenizer(ck, "vqvae")
        tokenizers = {m: loaded[llm.config.tokenizer] for m, llm in llms.items()}
        ev = None
        if evaluator:
            from backend.evaluation.evaluator import TextMotionEvaluator

            ev = TextMotionEvaluator.from_pretrained(ck / "evaluator")

        pipe = cls(retriever, vqvae, normalizer, llms, ev, tokenizers)
        pipe.servable = ServableCheck.from_pretrained(ck / "servable")
        pipe.video_lead = VideoLead.from_pretrained(ck / "video-lead")
        if pipe.video_lead is not None:
            pipe.video_lead.bind(retriever)       # its embedding; one sentence encoder per process
        pipe.restater = Restater.from_pretrained(ck / "restater")
        if pipe.restater is not None:            # kinds by neighbours (defaults.NEIGHBOUR_KINDS)
            neighbours = PartNeighbours.from_pretrained(ck / NEIGHBOURS)
            pipe.restater.use_neighbours(neighbours and neighbours.bind(retriever),
                                         getattr(retriever, "kind_reader", None))
        pipe.picker = Picker.from_pretrained(ck / "picker")
        if (ck / "pose-reader" / "model.safetensors").is_file():
            pipe.reader = load_pose_reader(ck / "pose-reader")
        return pipe

    # -------------------------------------------------------------------------------- core
    def _video(self, video_id, text: str | None = None):
        return None if video_id is None else self.retriever.video_prior(video_id, text)

    def led_tokens(self, plan: tuple, share: float, model: str, max_tokens: int | None = None) -> int:
        """The fewest codes the LLM may write for a part with this plan (hits, video id, mirrored,
        prior, lead): ``share`` of its database video's duration when the video leads it (weight
        above ``LED_ABOVE``), at most ``max_tokens`` (default the model's limit); else 4."""
        rec = self._record(plan[1]) if plan[3] is not None and plan[4] > LED_ABOVE else None
        if rec is None:
            return 4
        limit = min(max_tokens or 10 ** 9, int(self.models[model].config.max_motion_tokens))
        return led_min_tokens(video_duration(rec), share, self._downsample(model), limit, FPS)

    def _record(self, video_id) -> dict | None:
        """The database record of ``video_id`` (None for no video or one not in the database)."""
        if video_id is None:
            return None
        try:
            return self.retriever.db.record(video_id)
        except KeyError:
            return None

    def retrieve(self, text: str, mode: str, k: int = 5, seed: int | None = None, cues=None,
                 want: str | None = None) -> list:
        """The ``k`` best videos for ``text`` (``cues``: ``VideoRetriever.search``'s re-ranking
        cues stated by a reading of the words; ``want``: a kind whose videos come first)."""
        if mode in ("none", "given"):
            return []
        smode = {"gemini": "gemini", "object": "object", "random": "random"}[mode]
        extra = {} if cues is None else {"cues": cues}
        if want is not None:
            extra["want"] = want
        return self.retriever.search(text, k=k, mode=smode, rng=np.random.default_rng(seed), **extra)

    @torch.no_grad()
    def decode(self, codes: np.ndarray, model: str | None = None) -> np.ndarray:
        """Motion codes -> (T, 263) features, with the tokenizer that ``model`` writes for."""
        vqvae, normalizer = self.tokenizers.get(model, (self.vqvae, self.normalizer))
        codes = np.asarray(codes, np.int64)
        if len(codes) == 0:
            codes = np.zeros(1, np.int64)
        x = vqvae.decode(torch.from_numpy(codes)[None])[0].numpy()
        return normalizer.denormalize(x)

    def check_request(self, text: str, model: str, retrieval: str, seed: int | None = 0,
                      temperature: float = TEMPERATURE, top_k: int = 0, video_id: str | None = None,
                      length_s: float | None = None, outside_video: bool = False,
                      guidance: float = GUIDANCE) -> tuple[str, float | None]:
        """The one place a generation request is checked, before any model work: (the cleaned
        prompt, the clip length or None), or a ValueError (PromptError for the prompt) that says
        what to change. ``outside_video``: the chosen video is not in the database (an upload)."""
        text = clean_prompt(text)
        if model not in self.models:
            raise ValueError(f"model {model!r} is not loaded; available: {', '.join(self.models)}")
        if retrieval not in RETRIEVAL_MODES:
            raise ValueError(f"unknown retrieval {retrieval!r}; choose from {', '.join(RETRIEVAL_MODES)}")
        check_sampling(seed, temperature, top_k, guidance)
        length_s = check_length(length_s)
        if retrieval == "given":
            if not video_id:
                raise ValueError("no video chosen: click one of the top-5 retrieved videos or upload "
                                 "your own, or pick another retrieval")
            if not outside_video:
                try:
                    self.retriever.db.record(video_id)
                except KeyError:
                    raise ValueError(f"there is no video {video_id!r} in the database") from None
        return text, length_s

    def generate(self, text: str, model: str = "mcdpo", retrieval: str = "gemini",
                 seed: int | None = 0, temperature: float = TEMPERATURE, top_k: int = 0, greedy: bool = False,
                 video_id: str | None = None, k: int = 5, max_tokens: int | None = None,
                 video=None, length_s: float | None = None, in_place: bool = False,
                 plant_feet: bool = True, guidance: float = GUIDANCE,
                 match_sides: bool = True, video_lead: bool = True,
                 compose: bool = True, restate: bool = True, pick: bool = True,
                 led_cues: bool = False, led_temperature: bool = True, led_alone: bool = True,
                 reader_drafts: int = READER_DRAFTS, reader_tempo: bool = READER_TEMPO,
                 reader_above: float = READER_ABOVE, firm: bool = FIRM_LEAD,
                 retime: str = RETIME, read_lead: bool = READ_LEAD, mirror: bool = MIRROR,
                 led_length: float = LED_LENGTH) -> GenerationResult:
        """``video``: VideoFeatures of a video outside the database (a private upload) used as
        the prior with retrieval "given"; ``video_id`` then only names it.

        Clip controls: ``length_s`` asks for a clip of that many seconds (the model writes exactly
        that many tokens, to the tokenizer's 0.2 s resolution; None = it decides), ``in_place``
        removes the horizontal root travel, ``plant_feet=False`` turns foot locking off.
        ``guidance``: text guidance (``MotionLLM.generate``; the no-video model has no video to
        weigh the words against, so it ignores it). ``match_sides``: a retrieved video (gemini or
        object retrieval) whose captions name only the other side than the words reaches the
        model as its mirror image (``VideoRetriever.video_prior``); ``result.mirrored`` says so.
        ``video_lead``: when the words name a motion the model only saw in videos (a cartwheel),
        the retrieved video leads them (``backend.generation.video_lead``; needs the calibrated
        ``checkpoints/video-lead``; gemini or object retrieval); ``result.video_lead`` is the
        video's weight, and text guidance is off while it is above 0.
        ``compose``: a prompt that chains motions ("A, then B") is written part by part, each
        part with its own retrieved video, in one batch, and the parts' codes are decoded as one
        motion (``backend.generation.compose``; not with a chosen or uploaded video, which shows
        one motion). ``result.parts`` lists the parts; ``hits``/``video_id`` are the first part's.
        ``restate``: a part in words the LLM never read reaches it in training phrasing, read by
        the base LM (``backend.generation.restate``; needs ``checkpoints/restater`` made for the
        model's base); retrieval, side matching and the video lead keep the words, and a part the
        video leads (above the restater's ``led_above``) is never restated.
        ``result.read_as`` says per part what the LLM read (None: the words as typed).
        ``pick``: a part whose reading is confident (the restater's, of the words as typed) is
        sampled ``picker.samples`` times in the same batch and the picker keeps the sample that
        does most of what the reading asks (``backend.evaluation.pick``; needs
        ``checkpoints/picker`` and the restater; not with ``greedy``); a part the video leads asks
        the kind its database video shows and the count, speed and turn of its words
        (``Picker.with_led``); ``result.picks`` says per part how many samples there were and
        which was kept. ``led_cues``: a part the video leads is searched again with the speed and
        count its words state (``Restater.stated_cues``: "unhurriedly", "a couple of times"), so
        its video shows them (gemini or object retrieval; ``hits`` are then that search's; off by
        default: no gain in OOD following was measured, docs/lab-notebook.md *Led parts*).
        ``led_temperature``: a part the video leads (weight above ``LED_ABOVE``) is sampled at no
        more than ``defaults.LED_TEMPERATURE``; ``led_alone``: and written from its video alone
        (guidance -1; False: the video's weight mixes the words' branch in, as before session 21).
        ``reader_drafts`` N: a part the video leads (a database video) also gets N drafts of the
        pose reader (``checkpoints/pose-reader``: its video's keypoints read into motion tokens,
        as long as the video or the part's share of ``length_s``) among its samples; the picker
        chooses (without one: the LLM's first sample); ``result.picks`` then also says how many
        samples were drafts (``drafts``) and whether a draft was kept (``reader``); ``reader_tempo``: a led part whose words ask
        slow or fast (the restater's reading) gets one more draft of its video played that much
        slower or faster (``pose_reader.asked_tempo``). ``reader_above``: parts whose video weight is
        above it get the drafts (``defaults.READER_ABOVE``); one below ``LED_ABOVE`` keeps its words
        for the LLM's samples and, when the restater cannot read them, the picker asks it what its
        video shows. ``firm``: a part the video leads at all whose database video shows a kind the
        model knows only from videos is led fully (``video_lead.firm_lead``; ``defaults.FIRM_LEAD``;
        ``result.video_lead`` then says 1); with ``read_lead`` so is a part whose words the
        retriever's kind reader reads as such a kind when its video shows it (``defaults.READ_LEAD``).
        ``retime``: what a picked part whose reading asks slow
        or fast does about its pace (``backend.generation.tempo``; ``defaults.RETIME``; not with
        ``length_s``, whose lengths are exact): "kept" plays its kept sample that much slower or
        faster when the picker reads the speed better that way and nothing else worse
        (``Picker.retime``), "pool" adds each of its samples so played to the picker's choices
        (``Picker.with_tempo``), "off" neither; ``result.picks`` then says whether a played copy
        was kept (``tempo``). ``mirror``: a picked part whose reading asks a left or right turn or
        limb side also has each sample's mirror image among its choices (``Picker.with_mirror``;
        ``defaults.MIRROR``); ``result.picks`` then says whether a mirror image was kept
        (``mirror``). ``led_length``: the LLM's samples of a part the video leads (weight above
        ``LED_ABOVE``, a database video) do not end before that share of its video's duration
        (``defaults.LED_LENGTH``; 0: they end where they will; not with ``length_s``).
        A part whose words ask a walk, run or crawl to go backwards ("walks backwards"; no
        training motion does) is written with "forward" in its place and its stretch of the motion played
        in reverse (``backend.generation.reverse``; mirrored too when it names a left/right turn);
        ``result.backwards`` says which parts were. A part asking a turn "around" with no side
        is searched and written as a left turn (``backend.generation.open_turn``) and
        ``result.read_as`` shows it so."""
        raw = text
        if retime not in RETIME_CHOICES:
            raise ValueError(f"retime must be one of {', '.join(RETIME_CHOICES)}, got {retime!r}")
        text, length_s = self.check_request(text, model, retrieval, seed, temperature, top_k,
                                            video_id, length_s, outside_video=video is not None,
                                            guidance=guidance)
        # what the video should look like ("..., dressed in red, in front of a white wall") is
        # for retrieval only: every part is searched with it and written without it
        body, scene = split_scene(text)
        parts = split_prompt(body) if compose and retrieval != "given" and video is None else [body]
        min_tokens = 4
        if length_s is not None:
            total = self.length_tokens(length_s, model)
            if total < min_tokens * len(parts):
                parts = [body]
            share = [total // len(parts) + (i < total % len(parts)) for i in range(len(parts))]
        else:
            share = None
        words = list(parts)                  # as typed; a part asking to walk backwards is written
        backwards = [backward_request(p) for p in parts]        # forwards, then played in reverse
        parts = [b or p for b, p in zip(backwards, parts)]
        opened = [open_turn_request(p) for p in parts]          # "turns around": a turn to one side
        parts = [o or p for o, p in zip(opened, parts)]
        timing = {}
        t0 = time.perf_counter()
        plans = []          # per part: hits, video id, mirrored, prior, lead

        def chosen(part, hits):          # (video id, mirrored, prior) of a part with these hits
            vid = video_id if retrieval == "given" else (hits[0].id if hits else None)
            if model == "novideo":
                vid = None
            mirrored = bool(match_sides and vid is not None and retrieval in ("gemini", "object")
                            and self.retriever.mirrors(part, vid))
            prior = (video if (video is not None and retrieval == "given" and model != "novideo")
                     else self._video(vid, part if mirrored else None))
            return vid, mirrored, prior

        for part in parts:
            hits = self.retrieve(add_scene(part, scene), retrieval, k, seed)
            vid, mirrored, prior = chosen(part, hits)
            lead = 0.0
            if (video_lead and self.video_lead is not None and prior is not None and hits
                    and retrieval in ("gemini", "object")):
                caps = hit_captions(self.retriever.db, [h.id for h in hits[:self.video_lead.config.k]])
                lead = float(self.video_lead.weights([part], [caps])[0])
                kinds = getattr(self.retriever, "kind_reader", None)
                if (firm and self.restater is not None and self.restater.serves(self.models[model])
                        and (0 < lead < 1 or (read_lead and kinds is not None))):
                    known = set(self.restater.config.classes["action"])
                    reads = kinds.read([part]) if read_lead and kinds is not None else None
                    wanted = video_only_reading(reads[0], known, READ_LEAD_GATE) if reads else None
                    if wanted is not None and wanted not in shown_kinds(self._record(vid)):
                        hits = self.retrieve(add_scene(part, scene), retrieval, k, seed, want=wanted)   # words read as a kind
                        vid, mirrored, prior = chosen(part, hits)                   # only videos show
                    lead = float(firm_lead([lead], [self._record(vid)], known, reads, READ_LEAD_GATE)[0])
            plans.append((hits, vid, mirrored, prior, lead))
        if (led_cues and self.restater is not None and self.restater.serves(self.models[model])
                and retrieval in ("gemini", "object")):
            led = [i for i, plan in enumerate(plans) if plan[3] is not None and self.restater.keeps(plan[4])]
            stated = self.restater.stated_cues([as_sentence(parts[i]) for i in led]) if led else []
            for i, cues in zip(led, stated):
                if (cues >= 0).any():        # searched again with the speed and count the words state
                    hits = self.retrieve(add_scene(parts[i], scene), retrieval, k, seed, cues=cues)
                    plans[i] = (hits, *chosen(parts[i], hits), plans[i][4])
        t1 = time.perf_counter()
        timing["retrieval"] = t1 - t0
        llm = self.models[model]
        said: list = [None] * len(parts)
        asked: list = [[] for _ in parts]
        sentences = [as_sentence(p) for p in parts]    # the LLM and the reading: as captions end
        reads = self.restater is not None and self.restater.serves(llm)
        picking = pick and reads and self.picker is not None and not greedy
        if reads and (restate or picking):
            skip = [self.restater.keeps(plan[4]) for plan in plans]
            gate = min(self.restater.config.gate, self.picker.gate) if picking else None
            readings = self.restater.understood(sentences, skip, known_too=picking, gate=gate)
            if restate:
                said = self.restater.restated(sentences, readings, skip)
            if picking:
                asked = self.picker.asked(readings)
                drafting = self.reader is not None and reader_drafts > 0
                skip = [s or (drafting and plan[4] > reader_above and not a)     # drafted, words unread:
                        for s, plan, a in zip(skip, plans, asked)]              # ask what the video shows
                records = [self._record(plan[1]) if s else None for plan, s in zip(plans, skip)]
                asked = self.picker.with_led(asked, skip, sentences, records, self.restater)
            timing["reading"] = time.perf_counter() - t1
            t1 = time.perf_counter()
        said = [r or (s if o else None) for r, s, o in zip(said, sentences, opened)]   # shown as read
        said_parts = [r or p for r, p in zip(said, sentences)]
        owners = self.picker.rows(asked) if picking else list(range(len(parts)))
        g = [0.0 if plan[3] is None else lead_guidance(plan[4], guidance, LED_ABOVE if led_alone else None)
             for plan in plans]          # a led part: its video alone
        if share is not None:          # exact lengths: each part its own, in the same batch
            max_tokens = min_tokens = [share[o] for o in owners]
        elif led_length > 0:           # a led part lasts at least that share of its video
            least = [self.led_tokens(plan, led_length, model, max_tokens) for plan in plans]
            if max(least) > min_tokens:
                min_tokens = [least[o] for o in owners]
        temps = [min(temperature, LED_TEMPERATURE) if led_temperature and plan[4] > LED_ABOVE else temperature
                 for plan in plans]          # a part its video leads: closer to the mode
        rows = llm.generate([said_parts[o] for o in owners], [plans[o][3] for o in owners],
                            greedy=greedy, top_k=top_k, seed=seed,
                            temperature=[temps[o] for o in owners] if len(set(temps)) > 1 else temps[0],
                            max_tokens=max_tokens, min_tokens=min_tokens,
                            guidance=[g[o] for o in owners] if len(owners) > 1 else g[0])
        drafted = {}
        if self.reader is not None and reader_drafts > 0:
            for i, plan in enumerate(plans):
                rec = self._record(plan[1]) if plan[4] > reader_above and plan[3] is not None else None
                dur = video_duration(rec) if rec is not None and plan[3].keypoints is not None else 0.0
                if dur > 0:                   # a video whose length is unknown gets no draft
                    n = [share[i]] if share is not None else None
                    tempo = None
                    if reader_tempo and self.restater is not None:
                        tempo = [asked_tempo(self.restater.manner([sentences[i]])[0])]
                    drafted[i] = draft_codes(self.reader, [plan[3].keypoints], [dur], reader_drafts,
                                             seed=0 if seed is None else int(seed), n_tokens=n, tempo=tempo)[0]
        if drafted:
            rows, owners = with_drafts(rows, owners, drafted)
        t2 = time.perf_counter()
        timing["generation"] = t2 - t1
        picks: list = [None] * len(parts)
        if len(owners) > len(parts) and not picking:
            codes = first_of_each(rows, owners, len(parts))
        elif len(owners) > len(parts):
            before, retime = {}, retime if share is None else "off"
            vqvae, normalizer = self.tokenizers.get(model, (self.vqvae, self.normalizer))

            def stretch(c, f):
                return stretch_codes(c, f, vqvae, normalizer, max_tokens=llm.config.max_motion_tokens)

            def flip(c):
                return mirror_codes(c, vqvae, normalizer, max_tokens=llm.config.max_motion_tokens)

            flipped = {}
            if mirror and any(asks_left_or_right(a) for a in asked):   # left/right parts: each sample mirrored too
                rows, owners, flipped = self.picker.with_mirror(rows, owners, asked, flip)
            if retime == "pool":                      # slow/fast parts: each sample slower/faster too
                rows, owners, before = self.picker.with_tempo(rows, owners, asked, stretch)
            codes, picks = self.picker.choose(rows, owners, asked, lambda c: self.decode(c, model), copies=before)
            for i, n in before.items():       # a copy played slower/faster was kept?
                if picks[i]:
                    picks[i]["tempo"] = picks[i]["chosen"] >= n
            for i, n in flipped.items():      # a mirror image was kept? (before any tempo copies)
                if picks[i]:
                    picks[i]["mirror"] = picks[i]["chosen"] % before.get(i, 2 * n) >= n
            if retime == "kept":              # the kept sample played slower/faster, if that reads better
                codes, kept = self.picker.retime(codes, asked, stretch, lambda c: self.decode(c, model))
                for i, k in enumerate(kept):
                    if picks[i]:
                        picks[i]["tempo"] = k
            for i, d in drafted.items():      # say which samples were the reader's and if one was kept
                if picks[i]:
                    n = flipped.get(i, before.get(i, picks[i]["samples"]))    # the rows sampled and drafted
                    picks[i]["drafts"] = len(d)
                    picks[i]["reader"] = picks[i]["chosen"] % n >= n - len(d)
            timing["picking"] = time.perf_counter() - t2
            t2 = time.perf_counter()
        else:
            codes = rows
        joined = join_parts(codes, [0] * len(parts), 1)[0]
        feats = self.decode(joined, model)
        joints = clean_motion(feats, plant_feet=plant_feet).joints
        if any(backwards):                   # those parts' stretches played in reverse
            per = self._downsample(model)                    # frames per code
            ends = np.cumsum([len(c) for c in codes]) * per
            for end, c, b in zip(ends, codes, backwards):
                if b is not None:
                    joints = reverse_segment(joints, end - len(c) * per, end, mirror=names_turn(b))
            joints = joints.astype(np.float32)
            feats = joints_to_features(np.concatenate([joints, joints[-1:]]))
        if in_place:
            joints = without_travel(joints)
        timing["decoding"] = time.perf_counter() - t2
        timing["total"] = time.perf_counter() - t0
        hits, vid, mirrored = plans[0][:3]
        described = [] if len(parts) == 1 else [
            {"text": p, "video_id": plan[1], "tokens": int(len(c)), "mirrored": plan[2],
             "video_lead": round(float(plan[4]), 3), "read_as": r, "pick": k, "backwards": b is not None,
             "open_turn": o is not None}
            for p, plan, c, r, k, b, o in zip(words, plans, codes, said, picks, backwards, opened)]
        return GenerationResult(text, model, retrieval, seed, vid, hits, joined, feats, joints, timing,
                                is_truncated(raw, text), mirrored, max(plan[4] for plan in plans),
                                described, said, picks, [b is not None for b in backwards],
                                [o is not None for o in opened])

    def length_tokens(self, length_s: float, model: str) -> int:
        """Motion tokens for a clip of ``length_s`` seconds with ``model``'s tokenizer (at most
        the model's token limit)."""
        limit = int(self.models[model].config.max_motion_tokens)
        return int(min(limit, max(1, round(float(length_s) * FPS / self._downsample(model)))))

    def _downsample(self, model: str) -> int:
        """Frames per motion code of ``model``'s tokenizer."""
        vqvae = self.tokenizers.get(model, (self.vqvae, None))[0]
        return int(getattr(getattr(vqvae, "config", None), "downsample", 4))

    def servability_warning(self, result: "GenerationResult", distance: float | None = None) -> str | None:
        """A warning when the prompt looks like a motion the models do not know (calibrated
        thresholds on the best Gemini-MVR score and the text-motion distance; see
        ``backend.evaluation.servable``), else None. Without a calibration: None."""
        if self.servable is None:
            return None
        hits = result.hits if result.retrieval == "gemini" else self.retrieve(result.text, "gemini", 1)
        return self.servable.warning(hits[0].score if hits else None, distance)

    def text_motion_distance(self, text: str, features: np.ndarray) -> float:
        """Euclidean distance between text and motion in the evaluator's joint space (lower =
        closer; the MM-Dist of one pair)."""
        if self.evaluator is None:
            raise RuntimeError("the pipeline was loaded without the evaluator")
        t = self.evaluator.encode_captions([text])[0]
        m = self.evaluator.encode_features([features])[0]
        return float(np.linalg.norm(t - m))


__all__ = ["GenerationResult", "MODEL_NAMES", "RETRIEVAL_MODES", "VimoRAGPipeline", "check_sampling",
           "load_llm_tokenizer",
           "load_normalizer"]
