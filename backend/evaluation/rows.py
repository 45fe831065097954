"""Every row the generation table can have, by name (``GENERATORS``: name -> factory(corpus)):

    real           the real motions themselves (the reference row)
    vqvae          VQ-VAE reconstruction of the real motions (the tokenizer's ceiling)
    novideo        LLM without video (MotionGPT-style baseline, its own SFT run)
    sft-gemini     SFT model + Gemini-MVR rank-1 video
    mcdpo-gemini   McDPO model + Gemini-MVR
    sft-random     SFT model + a random database video
    mcdpo-random   McDPO model + a random video
    mcdpo-object   McDPO model + object-channel-only retrieval
    vimorag        shorthand for all six
    sft-none       SFT model, no video (not in vimorag: what a video adds or costs each model)
    mcdpo-none     McDPO model, no video

Each row samples (multinomial over motion tokens, temperature 1) in batches; the retrieved
video of a caption depends only on the caption (random mode: on the repeat's generator).
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
from tqdm import tqdm

from backend.checkpoints import checkpoints_dir
from backend.defaults import (FIRM_LEAD, LEAN_WEIGHTS, LED_LENGTH, LED_TEMPERATURE, MIRROR, PICK_SEES, READ_LEAD,
                              READ_LEAD_GATE, READER_ABOVE, READER_DRAFTS, READER_TEMPO, RETIME, RETIME_CHOICES,
                              NEIGHBOUR_KINDS, PLAIN_SUBJECTS, SAY_SPEEDS, TEMPO_MARGIN)
from backend.evaluation.generation import RealMotion, VQVAEReconstruction
from backend.evaluation.pick import Picker
from backend.generation.compose import join_parts
from backend.generation.motion_llm import MotionLLM
from backend.generation.pose_reader import (READER_TEMPERATURE, asked_tempo, draft_codes, first_of_each,
                                            load_pose_reader, video_duration, with_drafts)
from backend.generation.restate import Restater
from backend.generation.mirror import mirror_codes
from backend.generation.tempo import stretch_codes
from backend.generation.video_lead import (LED_ABOVE, VideoLead, firm_lead, lead_guidance, led_min_tokens, retrieved_captions,
                                          shown_kinds, video_only_reading)
from backend.generation.vqvae import MotionVQVAE, load_llm_tokenizer
from backend.generation.kind_reader import with_kind_reader
from backend.retrieval.service import VideoRetriever
from motioncore.prompt import split_prompts
from motioncore.skeleton import FPS

ROWS = {"novideo": ("novideo", "none", "LLM without video"),
        "sft-gemini": ("sft", "gemini", "SFT + Gemini-MVR"),
        "mcdpo-gemini": ("mcdpo", "gemini", "McDPO + Gemini-MVR"),
        "sft-random": ("sft", "random", "SFT + random video"),
        "mcdpo-random": ("mcdpo", "random", "McDPO + random video"),
        "mcdpo-object": ("mcdpo", "object", "McDPO + object-only retrieval")}
GROUPS = {"vimorag": list(ROWS)}
ROWS.update({"sft-none": ("sft", "none", "SFT, no video"),           # the video models, the video left out
             "mcdpo-none": ("mcdpo", "none", "McDPO, no video")})


@lru_cache(maxsize=1)
def _shared():
    return with_kind_reader(VideoRetriever.open("embedded"))


@lru_cache(maxsize=None)
def _tokenizer(name: str):
    return load_llm_tokenizer(name=name)


@lru_cache(maxsize=None)
def _llm(name: str, weights: str = LEAN_WEIGHTS):
    """The shipped model ``name`` as the pipeline runs it: LoRA merged into its own copy and
    decoded by the lean pass with its weights in ``weights`` (``defaults.LEAN_WEIGHTS``; float32:
    the same tokens as transformers' pass), or ``int8``: the merged layers quantized
    (``MotionLLM.quantize_int8_``), the lossy fast path being measured."""
    d = checkpoints_dir() / f"llm-{name}"
    if not (d / "model.safetensors").is_file():
        raise FileNotFoundError(f"no trained motion LLM at {d}; see README, *Motion LLM: SFT and McDPO*")
    llm = MotionLLM.from_pretrained(d)
    llm.merge_lora_("float32" if weights == "int8" else weights)
    if weights == "int8":
        llm.quantize_int8_()
    return llm


class LLMRow:
    stochastic = True

    def __init__(self, model: str, mode: str, name: str, batch: int = 32, guidance: float = 0.0,
                 temperature: float = 1.0, top_k: int = 0, match_sides: bool = True):
        self.model_name, self.mode, self.name, self.batch = model, mode, name, batch
        self.match_sides = match_sides          # retrieved videos mirrored to the words' side
        self.guidance, self.temperature, self.top_k = guidance, temperature, top_k
        self.retriever = _shared()
        self.llm = _llm(model)
        self.vqvae, self.normalizer = _tokenizer(self.llm.config.tokenizer)
        self._cache: dict[str, str] = {}
        self.video_lead = None                  # a VideoLead: the video leads unknown words
        self._lead: dict[str, float] = {}
        self.compose = True                     # "A, then B" prompts written part by part (compose.py)
        self.restater = None                    # a Restater: unseen words said again in training words
        self.picker = None                      # a Picker: best of N samples per part (with the restater)
        self.restate_words = True               # False: the restater only reads (for the picker)
        self._read: dict = {}
        self.led_cues = False                   # led parts searched again with their words' reading
        self.led_temperature = LED_TEMPERATURE  # the most a part the video leads is sampled at
        self.led_alone = True                   # a part the video leads: written from it alone
        self._cued: set[str] = set()
        self.reader = None                      # a PoseReader: drafts of the parts the video leads
        self.reader_drafts = 0                  # how many drafts per led part join its samples
        self.reader_temperature = READER_TEMPERATURE
        self.reader_only = False                # True: a led part gets the reader's drafts only
        self.reader_tempo = False               # a slow/fast led part: one more draft at that tempo
        self.reader_above = LED_ABOVE           # parts with a video weight above this get drafts
        self.firm_lead = False                  # weight > 0 and a video-only kind: led fully
        self.read_lead = False                  # words read as a video-only kind: its video, led fully
        self._wanted: set[str] = set()          # texts already searched for their read kind
        self.retime = "off"                     # a slow/fast part: "kept" / "pool" (defaults.RETIME)
        self.mirror = False                     # a left/right part: its samples' mirror images too
        self.led_length = 0.0                   # a led part's samples last >= this share of its video

    def videos(self, texts: list[str], rng: np.random.Generator) -> list:
        if self.mode == "none":
            return [None] * len(texts)
        if self.mode == "random":
            ids = [self.retriever.db.ids[i] for i in rng.integers(len(self.retriever.db), size=len(texts))]
        else:
            todo = sorted({t for t in texts if t not in self._cache})
            for s in range(0, len(todo), 256):
                chunk = todo[s:s + 256]
                for t, hits in zip(chunk, self.retriever.search_many(chunk, k=1, mode=self.mode)):
                    self._cache[t] = hits[0].id
            ids = [self._cache[t] for t in texts]
        if self.mode == "random" or not self.match_sides:
            return [self.retriever.video_prior(v) for v in ids]
        return [self.retriever.video_prior(v, t) for v, t in zip(ids, texts)]

    def lead_weights(self, texts: list[str]) -> np.ndarray:
        """The video's weight per prompt (``VideoLead``; 0 without one or for random/no video)."""
        if self.video_lead is None or self.mode not in ("gemini", "object"):
            return np.zeros(len(texts))
        todo = sorted({t for t in texts if t not in self._lead})
        for s in range(0, len(todo), 256):
            chunk = todo[s:s + 256]
            caps = retrieved_captions(self.retriever, chunk, self.video_lead.config.k, mode=self.mode)
            self._lead.update(zip(chunk, self.video_lead.weights(chunk, caps).tolist()))
        return np.array([self._lead[t] for t in texts])

    def kind_reads(self, texts: list[str]) -> list[dict] | None:
        """The retriever's kind reader's reading of each text; None without one or for random /
        no video."""
        reader = getattr(self.retriever, "kind_reader", None) if self.retriever is not None else None
        if reader is None or self.mode not in ("gemini", "object"):
            return None
        return reader.read(texts)           # the reader keeps its readings

    def want_read(self, texts: list[str], reads: list[dict], known) -> bool:
        """Search again each text whose words read as a kind the generator knows only from videos
        (``video_only_reading``) while its video shows another: a video of that kind first, as
        the pipeline does. True when a video changed."""
        todo = {}
        for t, r in zip(texts, reads):
            kind = video_only_reading(r, known, READ_LEAD_GATE)
            if kind is not None and t not in todo and t not in self._wanted:
                if kind not in shown_kinds(self.retriever.db.record(self._cache[t])):
                    todo[t] = kind
        self._wanted.update(texts)
        if not todo:
            return False
        chunk = sorted(todo)
        for t, hits in zip(chunk, self.retriever.search_many(chunk, k=1, mode=self.mode,
                                                             want=[todo[t] for t in chunk])):
            self._cache[t] = hits[0].id
        return True

    def cue_led(self, texts: list[str], lead: np.ndarray) -> None:
        """Search each part the video leads again with the speed and count its words state
        (``Restater.stated_cues``): its video then shows them, as the pipeline does."""
        todo = sorted({t for t, w in zip(texts, lead) if self.restater.keeps(w) and t not in self._cued})
        if not todo or self.mode not in ("gemini", "object"):
            return
        cues = self.restater.stated_cues(todo)
        for t, hits in zip(todo, self.retriever.search_many(todo, k=1, mode=self.mode, cues=cues)):
            self._cache[t] = hits[0].id
        self._cued.update(todo)

    def _unread_drafted(self, weight: float, asked: list) -> bool:
        """A part below the led bound that still gets drafts and whose words the restater cannot
        read asks, as a led part does, what its video shows."""
        return (getattr(self, "reader", None) is not None and self.reader_drafts > 0 and not asked
                and weight > self.reader_above)

    def readings(self, texts: list[str], lead: np.ndarray) -> list[dict | None]:
        """``Restater.understood`` of each text (cached; parts the video leads are not read)."""
        key = [(t, self.restater.keeps(w)) for t, w in zip(texts, lead)]
        todo = sorted({k for k in key if k not in self._read})
        gate = min(self.restater.config.gate, self.picker.gate) if self.picker is not None else None
        for k, r in zip(todo, self.restater.understood([t for t, _ in todo], skip=[led for _, led in todo],
                                                       gate=gate)):
            self._read[k] = r
        return [self._read[k] for k in key]

    def generate(self, items, rng: np.random.Generator) -> list[np.ndarray]:
        """Each item's caption -> decoded features; with ``compose`` (as the pipeline does) a
        caption that chains motions is written part by part, each part with its own video."""
        captions = [it.caption.text for it in items]
        if self.compose:
            texts, owners = split_prompts(captions)
        else:
            texts, owners = captions, list(range(len(captions)))
        vids = self.videos(texts, rng)
        lead = self.lead_weights(texts)
        reads = self.kind_reads(texts) if getattr(self, "read_lead", False) and self.restater is not None else None
        if (lead.any() or reads is not None) and self.restater is not None and getattr(self, "firm_lead", False):
            known = set(self.restater.config.classes["action"])
            if reads is not None and self.want_read(texts, reads, known):
                vids = self.videos(texts, rng)         # from the cache: those parts' new videos
            lead = firm_lead(lead, [self.retriever.db.record(self._cache[t]) if w > 0 or reads is not None else None
                                    for t, w in zip(texts, lead)], known, reads, READ_LEAD_GATE)
        if lead.any() and self.restater is not None and self.led_cues:
            self.cue_led(texts, lead)
            vids = self.videos(texts, rng)             # from the cache: the led parts' new videos
        alone = LED_ABOVE if getattr(self, "led_alone", True) else None
        guidance = lead_guidance(lead, self.guidance, alone_above=alone) \
            if lead.any() else self.guidance
        said, asked = texts, [[] for _ in texts]
        if self.restater is not None:        # the LLM reads restated parts; retrieval and lead the words
            readings = self.readings(texts, lead)
            if self.restate_words:
                keeps = [self.restater.keeps(w) for w in lead]     # led parts keep their words
                said = [r or t for r, t in zip(self.restater.restated(texts, readings, keeps), texts)]
            if self.picker is not None:
                asked = self.picker.asked(readings)
                if lead.any():       # led parts ask their video's kind (video ids: in the cache)
                    led = [self.restater.keeps(w) or self._unread_drafted(w, a) for w, a in zip(lead, asked)]
                    records = [self.retriever.db.record(self._cache[t]) if l else None
                               for t, l in zip(texts, led)]
                    asked = self.picker.with_led(asked, led, texts, records, self.restater)
        rows = self.picker.rows(asked) if self.picker is not None else list(range(len(texts)))
        drafted = [i for i, (w, v) in enumerate(zip(lead, vids)) if w > self.reader_above and v is not None] \
            if getattr(self, "reader", None) is not None and self.reader_drafts > 0 else []
        durs = [video_duration(self.retriever.db.record(self._cache[texts[i]])) for i in drafted]
        drafted, durs = [i for i, d in zip(drafted, durs) if d > 0], [d for d in durs if d > 0]  # length known
        if drafted and self.reader_only:
            rows = [i for i in rows if i not in set(drafted)]
        guidance = np.broadcast_to(np.asarray(guidance, float), (len(texts),))
        led_t = getattr(self, "led_temperature", None)
        temps = [min(self.temperature, led_t) if led_t and w > LED_ABOVE else self.temperature for w in lead]
        least = [4] * len(texts)
        share = getattr(self, "led_length", 0.0)
        if share > 0:              # a led part's samples last at least that share of its video
            for i, (w, v) in enumerate(zip(lead, vids)):
                if w > LED_ABOVE and v is not None:
                    dur = video_duration(self.retriever.db.record(self._cache[texts[i]]))
                    least[i] = led_min_tokens(dur, share, self.vqvae.config.downsample,
                                              self.llm.config.max_motion_tokens, FPS)
        codes = []
        for s in tqdm(range(0, len(rows), self.batch), desc=f"{self.name}: sampling", unit="batch",
                      leave=False, disable=None):        # shown on a terminal only
            r = rows[s:s + self.batch]
            codes += self.llm.generate([said[i] for i in r], [vids[i] for i in r], greedy=False,
                                       seed=int(rng.integers(2 ** 31)),
                                       min_tokens=[least[i] for i in r] if max(least) > 4 else 4,
                                       guidance=[float(guidance[i]) for i in r],
                                       temperature=[temps[i] for i in r] if len(set(temps)) > 1 else temps[0],
                                       top_k=self.top_k)
        if drafted:               # the pose reader's drafts of each led part join its samples
            tempo = None
            if self.reader_tempo and self.restater is not None:
                tempo = [asked_tempo(m) for m in self.restater.manner([texts[i] for i in drafted])]
            drafts = draft_codes(self.reader, [vids[i].keypoints for i in drafted], durs, self.reader_drafts,
                                 self.reader_temperature, int(rng.integers(2 ** 31)), tempo=tempo)
            codes, rows = with_drafts(codes, rows, dict(zip(drafted, drafts)))
        if len(rows) > len(texts):
            if self.picker is None:           # no judge: the first row of each part
                codes = first_of_each(codes, rows, len(texts))
            else:
                retime, before = getattr(self, "retime", "off"), {}
                if getattr(self, "mirror", False):       # left/right parts: each sample's mirror image too
                    codes, rows, _ = self.picker.with_mirror(codes, rows, asked, self._mirror)
                if retime == "pool":
                    codes, rows, before = self.picker.with_tempo(codes, rows, asked, self._stretch)
                codes, _ = self.picker.choose(codes, rows, asked, self._decode, copies=before)
                if retime == "kept":
                    codes, _ = self.picker.retime(codes, asked, self._stretch, self._decode)
        return [self._decode(c) for c in join_parts(codes, owners, len(captions))]

    def _stretch(self, codes: np.ndarray, factor: float) -> np.ndarray | None:
        return stretch_codes(codes, factor, self.vqvae, self.normalizer,
                             max_tokens=self.llm.config.max_motion_tokens)

    def _mirror(self, codes: np.ndarray) -> np.ndarray | None:
        return mirror_codes(codes, self.vqvae, self.normalizer, max_tokens=self.llm.config.max_motion_tokens)

    @torch.no_grad()
    def _decode(self, codes: np.ndarray) -> np.ndarray:
        c = codes if len(codes) else np.zeros(1, np.int64)
        return self.normalizer.denormalize(self.vqvae.decode(torch.from_numpy(c)[None])[0].numpy())


def _llm_row(key: str):
    model, mode, name = ROWS[key]
    return lambda corpus: LLMRow(model, mode, name)


def _vqvae_row(corpus):
    return VQVAEReconstruction(MotionVQVAE.from_pretrained(checkpoints_dir() / "vqvae"), corpus)


GENERATORS = {"real": lambda corpus: RealMotion(), "vqvae": _vqvae_row,
              **{key: _llm_row(key) for key in ROWS}}


def with_sampling(generators: list, guidance: float = 0.0, temperature: float = 1.0,
                  top_k: int = 0, match_sides: bool = True, int8: bool = False,
                  video_lead: bool = False, compose: bool = True, rerank: bool = True,
                  restate: bool = True, pick: int = 0, weights: str = LEAN_WEIGHTS,
                  led_cues: bool = False, led_temperature: float | None = LED_TEMPERATURE,
                  led_alone: bool = True, reader_drafts: int = READER_DRAFTS, reader_only: bool = False,
                  reader: str | None = None, reader_tempo: bool = READER_TEMPO,
                  reader_above: float = READER_ABOVE, firm: bool = FIRM_LEAD,
                  picker_dir: str | None = None, retime: str = RETIME, read_lead: bool = READ_LEAD,
                  mirror: bool = MIRROR, picker_sees: str = PICK_SEES, led_length: float = LED_LENGTH,
                  word_speeds: bool = True, tempo_margin: float = TEMPO_MARGIN,
                  said_speeds: bool = SAY_SPEEDS, neighbour_kinds: bool = NEIGHBOUR_KINDS,
                  plain_subjects: bool = PLAIN_SUBJECTS) -> list:
    """Set how the LLM rows sample; their names say what differs from the default (guidance 0,
    temperature 1, all tokens). Text guidance (``MotionLLM.generate(guidance=...)``) applies to
    rows with a video only (as in the pipeline: with no video there is nothing to weigh the words
    against); Real and VQ-VAE rows are unchanged. ``match_sides=False``: retrieved videos reach
    the model as they are, never mirrored to the words' side. ``int8``: the LLM rows run their
    model with int8 weights (``MotionLLM.quantize_int8_``; a speed-up that must keep the tables
    within their intervals before it becomes a default). ``video_lead``: rows with retrieval let
    the video lead words the model only saw in videos (``checkpoints/video-lead``, as the
    pipeline does). ``compose=False``: every caption is written whole, even one that chains
    motions (how every row before session 17 was measured; ``backend.generation.compose``).
    ``rerank=False``: the retriever ranks by its learned scores alone, without the captions' cue
    re-ranking (``backend.retrieval.rerank``; off for every row before session 17). The rows
    share one retriever, so this holds for all of them. ``restate``: prompt parts in words the LLM
    never read reach it in training phrasing (``checkpoints/restater``, as the pipeline does;
    session 18); ``restate=False``: the words as typed (every row before session 18). ``pick``
    N > 1: each part the restater reads confidently is sampled N times and the picker keeps one
    (``backend.evaluation.pick``, as the pipeline does; needs ``checkpoints/picker``; rows with
    words as typed still read the words for the picker). ``weights``: the dtype of the lean
    decoder's weights (default ``defaults.LEAN_WEIGHTS``, as the pipeline; float32: the tokens of
    transformers' own pass; ``int8`` overrides it). ``led_cues``: a part the video leads is
    searched again with the speed and count its words state (``Restater.stated_cues``; session
    21: no gain measured, so off by default, as in the pipeline). ``led_temperature``: the most
    a part the video leads is sampled at (``defaults.LED_TEMPERATURE``, as the pipeline; None: the
    row's temperature). ``led_alone``: a led part is written from its video alone (guidance -1,
    as the pipeline; False: the lead's weight mixes the words in, as before session 21).
    ``reader_drafts`` N: a part the video leads also gets N drafts of the pose reader
    (``checkpoints/pose-reader`` or the folder ``reader``; ``backend.generation.pose_reader``)
    among its samples, the picker choosing; ``reader_only``: the drafts alone; ``reader_tempo``: a
    led part whose words ask slow or fast also gets a draft of its video played slower or faster
    (``pose_reader.asked_tempo``); ``reader_above``: the video weight above which a part gets
    drafts (``defaults.READER_ABOVE``; a part below ``LED_ABOVE`` keeps its words for the LLM's
    samples and, if the restater cannot read them, asks the picker what its video shows).
    ``firm``: a part the video leads at all whose database video shows a kind known only from
    videos is led fully (``video_lead.firm_lead``; ``defaults.FIRM_LEAD``, as the pipeline);
    ``read_lead``: with ``firm``, so is a part whose words the retriever's kind reader reads as
    such a kind when its video shows it (``defaults.READ_LEAD``, as the pipeline).
    ``picker_dir``: the picker's folder (default ``checkpoints/picker``). ``retime``: what a
    picked part whose reading asks slow or fast does about its pace (``defaults.RETIME``, as the
    pipeline: "kept" ``Picker.retime``, "pool" ``Picker.with_tempo``, "off"). ``mirror``: a
    picked part that asks a left or right turn or side also has each sample's mirror image among
    its choices (``Picker.with_mirror``; ``defaults.MIRROR``, as the pipeline; named in the row).
    ``picker_sees``: what the picker reads a sample from (``Picker.read``; ``defaults.PICK_SEES``,
    as the pipeline; named in the row unless "decoded", what rows read before session 30).
    ``led_length``: the LLM's samples of a part the video leads (weight above ``LED_ABOVE``) do
    not end before that share of its video's duration (``defaults.LED_LENGTH``, as the pipeline;
    named in the row unless 0, what rows did before session 31). ``word_speeds``: the restater reads
    the speed an unseen word states alone (``Restater.word_speeds``, ``defaults.WORD_SPEED``; as the
    pipeline; named in the row when on: rows before session 32 read it within the part only).
    ``tempo_margin``: with ``retime`` "pool", how much better a copy played slower or faster must
    read than every sample to be kept (``Picker.choose``; ``defaults.TEMPO_MARGIN``, as the
    pipeline; named in the row: the pool rows before session 35 had none). ``said_speeds``: a part
    kept in its words reaches the LLM with its unseen speed adverbs said in training words
    (``Restater.said_speeds``, ``defaults.SAY_SPEEDS``: off, as the pipeline; named in the row when
    on; tried in session 40). ``neighbour_kinds``: a part with unseen words the restater reads
    below its gate takes the kind its training-part neighbours and the kind reader agree on
    (``Restater.use_neighbours``, ``defaults.NEIGHBOUR_KINDS``; needs ``checkpoints/part-neighbours``
    and ``checkpoints/kind-reader``; named in the row when on). ``plain_subjects``: the restater
    reads a part whose subject has an unseen word with the subject said as the training captions
    say it (``Restater.reading_text``, ``defaults.PLAIN_SUBJECTS``: off, as the pipeline; named in
    the row when on; tried in session 42)."""
    if int(reader_drafts) < 0:
        raise ValueError(f"reader_drafts must be >= 0, got {reader_drafts}")
    if not float(led_length) >= 0:
        raise ValueError(f"led_length must be >= 0, got {led_length}")
    if retime not in RETIME_CHOICES:
        raise ValueError(f"retime must be one of {', '.join(RETIME_CHOICES)}, got {retime!r}")
    restater = Restater.from_pretrained() if (restate or pick > 1) else None
    if restater is not None and not word_speeds:
        restater.word_speed = 0.0
    if restater is not None:
        restater.say_speeds = bool(said_speeds)
        restater.neighbour_kinds = bool(neighbour_kinds)
        restater.plain_subjects = bool(plain_subjects)
        if neighbour_kinds:
            from backend.generation.kind_reader import KindReader
            from backend.generation.neighbours import PartNeighbours

            restater.use_neighbours(PartNeighbours.from_pretrained(), KindReader.from_pretrained())
            if restater.neighbours is None or restater.kind_reader is None:
                raise FileNotFoundError("neighbour kinds need checkpoints/part-neighbours and checkpoints/kind-reader; "
                                        "run `python -m backend train part-neighbours --ship`")
    picker = None
    if pick > 1:
        picker = Picker.from_pretrained(picker_dir, samples=pick, sees=picker_sees, tempo_margin=tempo_margin)
        if picker is None:
            raise FileNotFoundError(f"picking needs a picker ({picker_dir or 'checkpoints/picker'}); run "
                                    "`python -m backend train checker --role picker --ship`")
    pose_reader = None
    if reader_drafts > 0 and video_lead:
        pose_reader = load_pose_reader(reader)
        if pose_reader is None:
            raise FileNotFoundError(f"reader drafts need a pose reader ({reader or 'checkpoints/pose-reader'}); "
                                    "run `python -m backend train pose-reader --ship`")
    for g in generators:
        if not isinstance(g, LLMRow):
            continue
        notes = []
        if guidance and g.mode != "none":
            g.guidance = float(guidance)
            notes.append(f"guidance {guidance:g}")
        if temperature != 1.0:
            g.temperature = float(temperature)
            notes.append(f"T {temperature:g}")
        if top_k:
            g.top_k = int(top_k)
            notes.append(f"top-{top_k}")
        if not match_sides and g.mode not in ("none", "random"):
            g.match_sides = False
            notes.append("sides not matched")
        if int8:
            g.llm = _llm(g.model_name, "int8")
            notes.append("int8")
        elif weights != LEAN_WEIGHTS:
            g.llm = _llm(g.model_name, weights)
            notes.append(f"{weights} weights")
        if video_lead and g.mode in ("gemini", "object"):
            g.video_lead = VideoLead.from_pretrained()
            if g.video_lead is None:
                raise FileNotFoundError("--video-lead needs checkpoints/video-lead; run "
                                        "`python -m backend eval video-lead --ship`")
            g.video_lead.bind(g.retriever)
            notes.append("video lead")
        if not compose:
            g.compose = False
            notes.append("whole prompts")
        if not rerank and g.mode not in ("none", "random"):
            g.retriever.rerank_weight = 0.0
            notes.append("no cue re-rank")
        if restater is not None and restater.serves(getattr(g, "llm", None)):
            g.restater = restater
            g.restate_words = bool(restate)
            if restater.word_speed:
                notes.append("speed words read alone")
            if restate and restater.word_speed and restater.say_speeds:
                notes.append("said again")
            if restater.neighbour_kinds:
                notes.append("neighbour kinds")
            if restater.plain_subjects:
                notes.append("plain subjects")
            if picker is not None:
                g.picker = picker
                notes.append(f"best of {pick}")
        g.led_temperature = led_temperature
        g.led_alone = bool(led_alone)
        if video_lead and g.mode in ("gemini", "object") and not led_alone:
            notes.append("led parts mix the words in")
        if video_lead and g.mode in ("gemini", "object") and led_temperature \
                and led_temperature < g.temperature:
            notes.append(f"led parts at T {led_temperature:g}")
        if pose_reader is not None and g.mode in ("gemini", "object"):
            g.reader, g.reader_drafts, g.reader_only = pose_reader, int(reader_drafts), bool(reader_only)
            g.reader_tempo, g.reader_above = bool(reader_tempo), float(reader_above)
            notes.append(f"led parts: {reader_drafts} reader drafts" + (" only" if reader_only else "")
                         + (" + tempo" if reader_tempo else "")
                         + (f" above weight {reader_above:g}" if reader_above != LED_ABOVE else ""))
        if video_lead and g.mode in ("gemini", "object") and restater is not None:
            g.firm_lead = bool(firm)
            g.read_lead = bool(firm and read_lead and getattr(g.retriever, "kind_reader", None) is not None)
            if not firm:
                notes.append("lead not firmed")
            elif not g.read_lead:
                notes.append("lead not read")
        if picker is not None and getattr(g, "picker", None) is picker:
            g.retime = retime
            if retime != "off":
                notes.append(f"retimed ({retime}" + (f", copies kept {picker.tempo_margin:g} better)"
                                                     if retime == "pool" and picker.tempo_margin else ")"))
            g.mirror = bool(mirror)
            if mirror:
                notes.append("+ mirror images")
            if picker_sees != "decoded":      # rows before session 30 read decoded features, unnamed
                notes.append({"joints": "picker reads joints", "clean": "picker reads clean skeletons",
                              "both": "picker reads decoded + joints"}[picker_sees])
        if video_lead and g.mode in ("gemini", "object") and led_length > 0:
            g.led_length = float(led_length)
            notes.append("led parts as long as their videos" if led_length == 1
                         else f"led parts >= {led_length:g}x their videos")
        if led_cues:
            g.led_cues = True
            if video_lead:
                notes.append("led parts searched by their reading")
        if not restate:
            notes.append("words as typed")
        if notes:
            g.name = f"{g.name} ({', '.join(notes)})"
    return generators


def expand(names: list[str]) -> list[str]:
    out = []
    for n in names:
        out += GROUPS.get(n, [n])
    return out


__all__ = ["GENERATORS", "GROUPS", "LLMRow", "ROWS", "expand", "with_sampling"]
