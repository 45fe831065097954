"""When the words name a motion the generator never read, let the retrieved video lead.

The motion LLM learned the kinds of its text-motion pairs from their captions, and every other
kind (the OOD kinds: cartwheel, backflip, crawl, roll) only as *video-only pairs*: a database
video with the neutral caption -> the motion it shows (``train sft --video-only``). Given the
neutral caption and a cartwheel video it writes a cartwheel; given "a person does a cartwheel"
and the same video it writes what the words resemble among the captions it knows (a walk). So
for such a prompt the video must lead.

*Novelty* of a prompt = how much better the captions of its top-k retrieved videos describe it
than any caption the generator was trained on (cosine similarity of MiniLM sentence embeddings:
``max cos(prompt, retrieved captions) - max cos(prompt, training captions)``). A prompt of a
known kind has a training caption as close as any video's ("jumps twice": -0.01); a prompt of a
kind only the videos show does not ("does a backflip": +0.39). The video's weight rises linearly
from 0 at novelty ``low`` to 1 at ``high`` and reaches the LLM as guidance ``-weight``
(``MotionLLM.generate``: -1 = the neutral caption, the video alone).

Which embedding judges the cosines (``VideoLeadConfig.space``): "minilm", the sentence encoder, or
"retriever", the searching retriever's action-text embedding (``p``, with its caption memory;
session 16). The retriever's embedding was trained to put captions near the videos of their kind,
so a prompt of a video-only kind in words never trained on ("creeping forward on all fours") sits
far from every generator caption there, while MiniLM finds it close to "walks forward" (on the
database's held-out phrasings the share of video-only-kind captions above the 95th percentile of
the known kinds' novelty is 77 % in the retriever's space, 32 % in MiniLM's). A lead calibrated in
the retriever's space belongs to that retriever: ``bind`` refuses another one.

``calibrate`` sets ``low`` and ``high`` on the database's videos (their captions as prompts,
their own video left out of the hits): ``low`` lets through all but ``known_miss`` of
the captions of known kinds unchanged, ``high`` is the median novelty of captions of kinds only
the videos show. Videos without captions (a user's own) add nothing: their prompts keep weight 0
unless another retrieved video's captions match.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

CONFIG, EMBEDDINGS = "config.json", "train_captions.safetensors"


@dataclass
class VideoLeadConfig:
    low: float = 0.05           # novelty at or below: the words lead (video weight 0)
    high: float = 0.2           # novelty at or above: the video alone (weight 1)
    k: int = 5                  # retrieved videos whose captions are compared
    known_led: float = 0.0      # calibration: held-out captions of known kinds given weight > 0
    unknown_led: float = 0.0    # calibration: held-out captions of video-only kinds given weight >= 0.5
    space: str = "minilm"       # "minilm" or "retriever": the embedding the cosines are taken in
    retriever: str = ""         # space "retriever": fingerprint of the retriever's text side


SPACES = ("minilm", "retriever")
LED_ABOVE = 0.5        # a part whose video weight is above this is *led*: written from its video
                       # (sampled at no more than ``defaults.LED_TEMPERATURE``; the restater keeps
                       # its words at the same bound, ``RestaterConfig.led_above``)


class RetrieverText:
    """A retriever's action-text embedding as a sentence encoder (``encode(texts) -> (N, D)``)."""

    def __init__(self, retriever):
        self.retriever = retriever

    def encode(self, texts):
        return self.retriever.encode_query(list(texts))["p"]


def text_fingerprint(retriever) -> str:
    """What a retriever-space lead depends on: the retriever's predicate head and caption memory."""
    h = hashlib.sha256()
    for name, t in sorted(retriever.model.state_dict().items()):
        if name.startswith(("predicate.", "caption_memory")):
            h.update(name.encode())
            h.update(t.detach().float().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


class VideoLead:
    def __init__(self, config: VideoLeadConfig, train_embeddings: np.ndarray, encoder=None):
        if config.high <= config.low:
            raise ValueError(f"high ({config.high}) must exceed low ({config.low})")
        if config.space not in SPACES:
            raise ValueError(f"unknown video-lead space {config.space!r}; choose from {', '.join(SPACES)}")
        self.config = config
        self.train = np.asarray(train_embeddings, np.float32)        # (N, 384), unit rows
        self._encoder = encoder

    # ----------------------------------------------------------------------------- io
    def save_pretrained(self, folder: str | Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / CONFIG).write_text(json.dumps(asdict(self.config), indent=2) + "\n")
        save_file({"embeddings": torch.from_numpy(self.train.astype(np.float16))}, str(folder / EMBEDDINGS))

    @classmethod
    def from_pretrained(cls, folder: str | Path | None = None) -> "VideoLead | None":
        """The calibrated check in ``folder`` (default ``checkpoints/video-lead``); None when it
        is not there (then the words always lead, as before it existed)."""
        from backend.checkpoints import checkpoints_dir

        folder = Path(folder) if folder is not None else checkpoints_dir() / "video-lead"
        if not (folder / CONFIG).is_file():
            return None
        cfg = VideoLeadConfig(**json.loads((folder / CONFIG).read_text()))
        emb = load_file(str(folder / EMBEDDINGS))["embeddings"].float().numpy()
        return cls(cfg, emb)

    def bind(self, retriever) -> "VideoLead":
        """Use ``retriever`` for the embedding: its text side (space "retriever"; it must be the
        retriever the lead was calibrated with) or its sentence encoder (space "minilm", shared
        so a process loads MiniLM once)."""
        if self.config.space == "retriever":
            fp = text_fingerprint(retriever)
            if fp != self.config.retriever:
                raise ValueError(f"this video lead was calibrated with another retriever ({self.config.retriever} "
                                 f"vs {fp}); recalibrate it: python -m backend eval video-lead --ship")
            self._encoder = RetrieverText(retriever)
        elif getattr(retriever, "_minilm", None) is not None:
            self._encoder = retriever._minilm
        return self

    # ---------------------------------------------------------------------------- use
    @property
    def encoder(self):
        if self._encoder is None and self.config.space == "retriever":
            raise RuntimeError("a retriever-space video lead needs its retriever: call bind(retriever)")
        if self._encoder is None:
            from backend.data.text import get_minilm

            self._encoder = get_minilm()
        return self._encoder

    def _encode(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.train.shape[1]), np.float32)
        e = self.encoder.encode(list(texts))
        e = e.numpy() if hasattr(e, "numpy") else np.asarray(e)
        return (e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)).astype(np.float32)

    def novelty(self, texts: list[str], hit_captions: list[list[str]]) -> np.ndarray:
        """Per prompt: best cosine to its retrieved videos' captions minus best cosine to the
        training captions (``hit_captions[i]``: the captions of prompt i's top-k videos; empty:
        nothing to compare, novelty -inf)."""
        if len(texts) != len(hit_captions):
            raise ValueError(f"{len(texts)} prompts for {len(hit_captions)} caption lists")
        q = self._encode(texts)
        flat = [c for caps in hit_captions for c in caps]
        c = self._encode(flat)
        s_train = (q @ self.train.T).max(1) if len(self.train) else np.full(len(texts), -1.0)
        out = np.full(len(texts), -np.inf)
        at = 0
        for i, caps in enumerate(hit_captions):
            if caps:
                out[i] = float((c[at:at + len(caps)] @ q[i]).max()) - float(s_train[i])
            at += len(caps)
        return out

    def weights_from_novelty(self, novelty: np.ndarray) -> np.ndarray:
        lo, hi = self.config.low, self.config.high
        return np.clip((np.asarray(novelty, float) - lo) / (hi - lo), 0.0, 1.0)

    def weights(self, texts: list[str], hit_captions: list[list[str]]) -> np.ndarray:
        """The video's weight in [0, 1] per prompt (0: the words lead, 1: the video alone)."""
        return self.weights_from_novelty(self.novelty(texts, hit_captions))


def lead_guidance(weight, guidance, alone_above: float | None = None):
    """The guidance the LLM gets: ``-weight`` where the video leads (weight > 0), else the text
    guidance asked for (per prompt when ``weight`` is an array). ``alone_above``: a weight above
    it counts as 1, the video alone (``LED_ABOVE``: a led part is written from its video)."""
    if alone_above is not None:
        weight = np.where(np.asarray(weight) > alone_above, 1.0, weight) if np.ndim(weight) \
            else (1.0 if weight > alone_above else weight)
    return np.where(np.asarray(weight) > 0, -np.asarray(weight), guidance) if np.ndim(weight) \
        else (-float(weight) if weight > 0 else guidance)


def led_min_tokens(duration_s: float, share: float, downsample: int, limit: int, fps: float = 20.0) -> int:
    """The fewest motion codes the LLM may write for a part its video leads: ``share`` of the
    video's ``duration_s`` seconds at ``fps`` frames a second, ``downsample`` frames a code (at
    least 4, the fewest any part gets; at most ``limit``). A led part written from a short
    sample of its video read as missing once a chained prompt joined it to other parts
    (``defaults.LED_LENGTH``)."""
    if not share > 0 or not duration_s > 0:
        return min(4, int(limit))
    return int(min(limit, max(4, round(float(share) * float(duration_s) * fps / int(downsample)))))


def shown_kinds(record: dict | None) -> list:
    """The motion kinds a database video's record says it shows (``spec.kinds``; a user's own
    footage, or no record: none)."""
    return list(((record or {}).get("spec") or {}).get("kinds") or [])


def shows_video_only_kind(record: dict | None, known) -> bool:
    """Does a database video show a motion kind outside ``known`` (the kinds the words' reader,
    ``Restater``, learned from captions)? From its record's ``spec.kinds``; a user's own footage
    names none, so it never does."""
    return any(k not in known for k in shown_kinds(record))


def firm_lead(weights, records: list, known, reads: list | None = None, gate: float = 0.5) -> np.ndarray:
    """The lead's weights with every part its words left partly to the video (weight > 0) led
    fully (weight 1) where that video shows a kind the generator knows only from videos
    (``shows_video_only_kind``; ``records[i]``: part i's rank-1 database record, None: unknown).
    The novelty check gives a kind only videos taught weight 1 at its median phrasing, so an OOD
    kind in rarer words ("tumbles forward across the floor") got 0-0.5 and was written mostly
    from its words, i.e. as a known kind; the database says what the video shows. On the test
    split it firms 2 of 2,277 caption parts, one of them already led (docs/lab-notebook.md, *Firm lead*).

    ``reads`` (per part, {kind: probability} of its words, ``KindReader.read``; None: not read):
    a part is also led fully, whatever its weight, when its words read as a kind outside
    ``known`` at probability >= ``gate`` and its video shows that kind (the words and the video
    agree on a kind only videos taught: "creeping in an arc" over a crawl video; docs/lab-notebook.md,
    *Read lead*)."""
    w = np.asarray(weights, float).copy()
    for i, r in enumerate(records):
        if w[i] > 0 and shows_video_only_kind(r, known):
            w[i] = 1.0
        elif reads is not None and r is not None:
            kind = video_only_reading(reads[i], known, gate)
            if kind is not None and kind in shown_kinds(r):
                w[i] = 1.0
    return w


def video_only_reading(read: dict | None, known, gate: float = 0.5) -> str | None:
    """The kind a reading of a part's words names (``KindReader.read``: {kind: probability})
    when it is one outside ``known`` (the generator knows it only from videos) at probability
    >= ``gate``; else None. The generator cannot write such a kind from words, so such a part's
    video has to show it (``VideoRetriever.search_many(want=...)``) and lead."""
    if not read:
        return None
    kind, p = max(read.items(), key=lambda kv: kv[1])
    return kind if p >= gate and kind not in known else None


def lead_gates(reads: list[dict], kinds: list[str], known, gates=(0.0, 0.2, 0.3, 0.4, 0.5, 0.6)) -> list[dict]:
    """How ``video_only_reading`` would lead labelled parts at each gate: ``reads`` the kind
    reader's readings of parts whose true kinds are ``kinds``; per gate, the parts led
    (``led``), those led by their own kind (``right``) and by another (``wrong``; of which
    ``known_led``: parts of a kind the generator knows from words), the share of video-only-kind
    parts led by their own kind (``caught``) and ``net`` = right - wrong. docs/lab-notebook.md, *Read lead*:
    the gate is chosen on the database's held-out captions by ``net``."""
    if len(reads) != len(kinds):
        raise ValueError(f"{len(reads)} readings for {len(kinds)} kinds")
    led = [video_only_reading(r, known, 0.0) for r in reads]
    top = [max(r.values()) if r else 0.0 for r in reads]
    video_only = sum(k not in known for k in kinds)
    rows = []
    for g in gates:
        on = [(l, k) for l, p, k in zip(led, top, kinds) if l is not None and p >= g]
        right = sum(l == k for l, k in on)
        rows.append({"gate": float(g), "led": len(on), "right": right, "wrong": len(on) - right,
                     "known_led": sum(k in known for _, k in on), "net": 2 * right - len(on),
                     "caught": right / video_only if video_only else float("nan")})
    return rows


def hit_captions(db, ids) -> list[str]:
    """Every caption of the database videos ``ids`` (videos without captions add none)."""
    from backend.retrieval.train import captions_of

    return [c for v in ids for c in captions_of(db.record(v))]


def retrieved_captions(retriever, texts: list[str], k: int, exclude: list[str | None] | None = None,
                       mode: str = "gemini") -> list[list[str]]:
    """Captions of each prompt's top-k retrieved videos (``exclude[i]``: a video id left out)."""
    extra = 1 if exclude else 0
    out = []
    for i, hits in enumerate(retriever.search_many(texts, k=k + extra, mode=mode)):
        ids = [h.id for h in hits if not (exclude and h.id == exclude[i])][:k]
        out.append(hit_captions(retriever.db, ids))
    return out


def calibrate(train_captions: list[str], retriever, k: int = 5, known_miss: float = 0.05,
              encoder=None, split: str = "train", space: str = "minilm") -> tuple[VideoLead, dict]:
    """A ``VideoLead`` from the generator's training captions and the captions of the database's
    ``split`` videos, as prompts, each with its own video left out of the hits; videos marked
    ``ood`` in their spec show kinds no training caption names. The train split's captions are
    worded as users word prompts ("does a cartwheel"); the test split's use held-out phrasings
    ("a sideways handspring"), far from every caption, known kind or not."""
    from backend.retrieval.train import captions_of, split_of

    base = VideoLeadConfig(space=space, retriever=text_fingerprint(retriever) if space == "retriever" else "")
    lead = VideoLead(base, np.zeros((0, 384), np.float32), encoder)
    if space == "retriever":
        lead.bind(retriever)
    lead.train = lead._encode(sorted(set(train_captions)))
    rows = [r for r in retriever.db.records if split_of(r) == split and captions_of(r)]
    prompts = [(c, r["id"], bool((r.get("spec") or {}).get("ood"))) for r in rows for c in captions_of(r)]
    if not prompts or not any(o for *_, o in prompts) or all(o for *_, o in prompts):
        raise ValueError("calibration needs held-out captioned videos of both known and video-only kinds")
    texts = [t for t, _, _ in prompts]
    nov = lead.novelty(texts, retrieved_captions(retriever, texts, k, [v for _, v, _ in prompts]))
    unknown = np.array([o for *_, o in prompts])
    low = float(np.quantile(nov[~unknown], 1 - known_miss))
    high = max(float(np.median(nov[unknown])), low + 0.05)
    lead.config = VideoLeadConfig(low=round(low, 4), high=round(high, 4), k=k, space=space,
                                  retriever=base.retriever)
    w = lead.weights_from_novelty(nov)
    lead.config.known_led = round(float((w[~unknown] > 0).mean()), 4)
    lead.config.unknown_led = round(float((w[unknown] >= 0.5).mean()), 4)
    report = {"prompts": len(texts), "known": int((~unknown).sum()), "unknown": int(unknown.sum()),
              "novelty_known_median": float(np.median(nov[~unknown])),
              "novelty_unknown_median": float(np.median(nov[unknown])), **asdict(lead.config)}
    return lead, report


__all__ = ["LED_ABOVE", "RetrieverText", "SPACES", "VideoLead", "VideoLeadConfig", "calibrate", "firm_lead", "shown_kinds", "video_only_reading", "shows_video_only_kind", "text_fingerprint", "hit_captions", "lead_gates", "lead_guidance", "led_min_tokens", "retrieved_captions"]
