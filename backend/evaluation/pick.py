"""Best-of-N: sample a prompt part several times and keep the motion that does what it asks.

The motion LLM samples; some samples follow the words (the count, the speed, the side) and
some do not (session 18: a count in training words is followed 68 % of the time). What a part
asks is known before any motion exists: the ``Restater`` reads its kind, count, speed, side and
turn off the base LM's states. The *picker*, an ``InstructionChecker`` trained on what the
generator learns from, its train split and the database's train-video motions (``python -m
backend train checker --role picker --videos embedded --ship``; the judge of ``eval follow`` is
another checker, trained on the OOD judge half instead of the videos), reads the same
attributes off each sampled motion, and ``Picker.choose`` keeps the sample with the highest
expected share of them satisfied (``scores``); ties keep the earliest sample. It reads a sample
as decoded and as its joints show it (``read``, ``seen_as``, ``defaults.PICK_SEES``): a decoded
motion's turn and velocity channels need not agree with its body, which is what users see.

A part is picked for when its kind is read with probability >= ``PICK_GATE`` (0.5: lower than
the restater's 0.9 for rewriting words, since a wrong reading here only chooses among the model's
own samples of the user's words). A part the video leads (words naming a motion the model knows
only from videos, which the restater cannot read) asks the kind its retrieved video shows (a
database video's own record; a user's footage has none) and the count, speed and turn its words
state (``Restater.manner``, each as sure as the gate): ``asked_led``, ``with_led``. Other parts
get one sample, as without a picker. A part that asks a slow or fast speed can also have each
sample played slower or faster among its choices (``with_tempo``), or its kept sample so played
when the picker reads the speed better that way and nothing else worse (``retime``;
``backend.generation.tempo``).
"""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Callable

import numpy as np

from backend.defaults import PICK_SEES, PICK_SEES_CHOICES, PICK_VIEWS, SAMPLES, TEMPO_MARGIN
from backend.data.captions import ALWAYS_TURNING, COUNTED_ACTIONS, TURN_ACTIONS
from backend.evaluation.checker import KINDS, MAX_REPS, SIDES, SPEEDS, TURNS, InstructionChecker
from backend.evaluation.follow import asked_attributes
from backend.generation.mirror import asks_left_or_right
from backend.generation.restate import named_turn
from backend.retrieval.sides import sides_of
from backend.generation.tempo import TEMPO
from motioncore.clean import clean_motion
from motioncore.features import features_to_joints, joints_to_features

PICK_GATE = 0.5      # a part is picked for when its kind is read with p >= 0.5 (docs/lab-notebook.md, *Picked samples*)
RETIME_TOL = 0.1     # how much surer of the other asked attributes a kept sample may leave a retimed copy


class Picker:
    def __init__(self, checker: InstructionChecker, samples: int = SAMPLES, gate: float = PICK_GATE,
                 sees: str = PICK_SEES, tempo_margin: float = TEMPO_MARGIN):
        if int(samples) < 1:
            raise ValueError(f"samples must be >= 1, got {samples}")
        if sees not in PICK_SEES_CHOICES:
            raise ValueError(f"sees must be one of {', '.join(PICK_SEES_CHOICES)}, got {sees!r}")
        self.checker, self.samples = checker.eval(), int(samples)
        self.gate = float(gate)       # the reading's kind probability a part needs to be picked for
        self.sees = sees              # what a sample is read from (``read``; ``defaults.PICK_SEES``)
        if not float(tempo_margin) >= 0:
            raise ValueError(f"tempo_margin must be >= 0, got {tempo_margin}")
        self.tempo_margin = float(tempo_margin)   # how much better a tempo copy must read (``choose``)

    def read(self, features: list[np.ndarray], asked: list[list[tuple[str, str, object]]]
             ) -> list[np.ndarray]:
        """``attribute_probabilities`` of decoded samples as the picker reads them (``sees``: one
        view, ``seen_as``; "both": the mean over the decoded features and their joints')."""
        views = ("decoded", "joints") if self.sees == "both" else (self.sees,)
        reads = [self.attribute_probabilities([seen_as(f, v) for f in features], asked) for v in views]
        return [np.mean(r, axis=0) for r in zip(*reads)]

    @classmethod
    def from_pretrained(cls, folder: str | Path | None = None, samples: int = SAMPLES,
                        sees: str = PICK_SEES, tempo_margin: float = TEMPO_MARGIN) -> "Picker | None":
        """The shipped picker (``checkpoints/picker``), or None when it is not there (every part
        then gets one sample)."""
        from backend.checkpoints import checkpoints_dir

        folder = Path(folder) if folder is not None else checkpoints_dir() / "picker"
        if not (folder / "model.safetensors").is_file():
            return None
        return cls(InstructionChecker.from_pretrained(folder), samples, sees=sees, tempo_margin=tempo_margin)

    def asked(self, readings: list[dict | None]) -> list[list[tuple[str, str, object]]]:
        """What each part asks (``follow.asked_attributes`` of its reading; [] for None or a
        reading less confident than ``gate``). A side the words name is already the reading's
        turn (``Restater.understood``)."""
        return [asked_attributes([r]) if r and r.get("confidence", 1.0) >= self.gate else [] for r in readings]

    def asked_led(self, kind: str | None, manner: dict, named: frozenset = frozenset()
                  ) -> list[tuple[str, str, object]]:
        """What a part the video leads asks: ``kind`` (what its video shows; None or a kind the
        picker does not know: nothing) and, from ``manner`` (``Restater.manner`` of its words),
        the count, the turn and a slow/fast speed, each where it is read at least ``gate`` sure.
        ``named``: the sides its words name (``retrieval.sides.sides_of``); exactly one, for a
        turning kind without a limb side (a cartwheel, a crawl, a walk), is the turn asked,
        whatever ``manner`` reads (its heads learned turns from the training kinds' phrasing
        only and read "a cartwheel to the right" as no turn or a left one; docs/lab-notebook.md, *Named turns
        and mirror images*)."""
        if kind not in KINDS:
            return []
        side = named_turn(kind, named)
        if side is not None:
            manner = {**manner, "turn": side, "sure": {**manner["sure"], "turn": 1.0}}
        sure = manner["sure"]
        out = [("kind", kind, True)]
        if kind in COUNTED_ACTIONS and sure["count"] >= self.gate and 1 <= manner["reps"] <= MAX_REPS:
            out.append(("count", kind, int(manner["reps"])))
        if kind in TURN_ACTIONS and sure["turn"] >= self.gate and (manner["turn"] or kind not in ALWAYS_TURNING):
            out.append(("direction", kind, manner["turn"] or "none"))
        if manner["speed"] in ("slow", "fast") and sure["speed"] >= self.gate:
            out.append(("speed", kind, manner["speed"]))
        return out

    def with_led(self, asked: list[list], led: list[bool], texts: list[str], records: list[dict | None],
                 restater) -> list[list]:
        """``asked`` with each part the video leads (``led[i]``, its video's database record
        ``records[i]``) asking ``asked_led`` of its video's kind and its words' manner."""
        idx = [i for i, (l, r) in enumerate(zip(led, records)) if l and r is not None]
        if not idx:
            return asked
        known = set(restater.config.classes["action"])
        out = list(asked)
        for i, m in zip(idx, restater.manner([texts[i] for i in idx])):
            out[i] = self.asked_led(video_kind(records[i], known), m, sides_of(texts[i]))
        return out

    def scores(self, features: list[np.ndarray], asked: list[list[tuple[str, str, object]]]) -> np.ndarray:
        """Per decoded motion, the expected share of its ``asked`` attributes satisfied under the
        picker's probabilities as it reads them (``read``; a count of a kind counts only as far as
        the kind is there); NaN where nothing is asked."""
        return np.array([float(np.mean(h)) if len(h) else np.nan
                         for h in self.read(features, asked)])

    def attribute_probabilities(self, features: list[np.ndarray], asked: list[list[tuple[str, str, object]]]
                                ) -> list[np.ndarray]:
        """Per motion, the picker's probability of each of its ``asked`` attributes (in order;
        a count, side, turn or speed of a kind only as far as the kind is there)."""
        out = []
        for p, want in zip(self.checker.probabilities(features), asked):
            hits = []
            for attr, kind, value in want:
                k = KINDS.index(kind)
                there = float(p["presence"][k])
                if attr == "kind":
                    hits.append(there)
                    continue
                head, labels = {"count": ("reps", None), "side": ("side", SIDES),
                                "direction": ("turn", TURNS), "speed": ("speed", SPEEDS)}[attr]
                j = int(value) - 1 if labels is None else labels.index(value)
                hits.append(there * float(p[head][k][j]))
            out.append(np.array(hits, float))
        return out

    def rows(self, asked: list[list], greedy: bool = False) -> list[int]:
        """Which part each generated row belongs to: ``samples`` rows for a part that asks
        something (one when sampling is greedy: its samples would all be the same), else one."""
        n = [1 if greedy or not a else self.samples for a in asked]
        return [i for i, k in enumerate(n) for _ in range(k)]

    def with_tempo(self, codes: list[np.ndarray], owners: list[int], asked: list[list],
                   stretch: Callable[[np.ndarray, float], np.ndarray | None]
                   ) -> tuple[list[np.ndarray], list[int], dict[int, int]]:
        """``codes``/``owners`` (as ``rows`` and ``choose`` lay them out) with, for each part that
        has several rows and asks a slow or fast speed, each of its rows played ``TEMPO[speed]``
        times as long (``stretch(codes, factor)``, e.g. ``tempo.stretch_codes``) added after them,
        in the same order (``backend.generation.tempo``; a part any of whose rows cannot be
        stretched, ``stretch`` giving None, gets none). Returns (codes, owners, {part: rows it had
        before the copies}) for the parts that got copies."""
        def copier(part):
            speed = next((v for a, _, v in asked[part] if a == "speed"), None) if part < len(asked) else None
            return (lambda c: stretch(c, TEMPO[speed])) if speed in TEMPO else None

        return _with_copies(codes, owners, copier)

    def with_mirror(self, codes: list[np.ndarray], owners: list[int], asked: list[list],
                    mirror: Callable[[np.ndarray], np.ndarray | None]
                    ) -> tuple[list[np.ndarray], list[int], dict[int, int]]:
        """As ``with_tempo``, for each part with several rows that asks a left or right turn or
        limb side (``mirror.asks_left_or_right``): each of its rows' mirror image
        (``mirror(codes)``, e.g. ``mirror.mirror_codes``) added after them."""
        def copier(part):
            return mirror if part < len(asked) and asks_left_or_right(asked[part]) else None

        return _with_copies(codes, owners, copier)

    def retime(self, chosen: list[np.ndarray], asked: list[list],
               stretch: Callable[[np.ndarray, float], np.ndarray | None],
               decode: Callable[[np.ndarray], np.ndarray], tol: float = RETIME_TOL
               ) -> tuple[list[np.ndarray], list[bool]]:
        """Each part's ``chosen`` codes, replaced by themselves played ``TEMPO[speed]`` times as
        long (``stretch``, e.g. ``tempo.stretch_codes``) where the part asks a slow or fast speed
        and the picker reads that speed more surely in the copy while reading none of the part's
        other asked attributes less surely by more than ``tol`` (a copy may change what a count
        looks like). Returns (codes, per part whether the copy was kept)."""
        out, kept = list(chosen), [False] * len(chosen)
        for i, want in enumerate(asked):
            speed = next((v for a, _, v in want if a == "speed"), None)
            if speed not in TEMPO:
                continue
            copy = stretch(chosen[i], TEMPO[speed])
            if copy is None or not len(copy):
                continue
            old, new = self.read([decode(chosen[i]), decode(copy)], [want, want])
            is_speed = np.array([a == "speed" for a, _, _ in want])
            if (new - old)[is_speed].max() > 0 and (old - new)[~is_speed].max(initial=0.0) <= tol:
                out[i], kept[i] = copy, True
        return out, kept

    def choose(self, codes: list[np.ndarray], owners: list[int], asked: list[list],
               decode: Callable[[np.ndarray], np.ndarray], copies: dict[int, int] | None = None
               ) -> tuple[list[np.ndarray], list[dict | None]]:
        """``codes``: generated rows, row r for part ``owners[r]`` (as ``rows`` lays them out);
        ``decode``: codes -> (T, 263) features, read as ``read`` says. ``copies``: {part: rows it
        had before its tempo copies} (``with_tempo``'s third value): such a copy is kept only when
        it reads ``tempo_margin`` better than every row before it. Returns per part the chosen
        codes and what the choice was ({"samples", "chosen", "score"}; None for a part with one
        sample)."""
        groups: dict[int, list[int]] = defaultdict(list)
        for r, o in enumerate(owners):
            groups[o].append(r)
        chosen, info = [], []
        for part in range(len(groups)):
            rows = groups[part]
            if len(rows) == 1:
                chosen.append(codes[rows[0]])
                info.append(None)
                continue
            s = self.scores([decode(codes[r]) for r in rows], [asked[part]] * len(rows))
            ranked = s.copy()
            if copies and part in copies:   # a tempo copy must read clearly better to be kept
                ranked[copies[part]:] -= self.tempo_margin
            j = int(np.argmax(ranked))     # the first of equal scores
            chosen.append(codes[rows[j]])
            info.append({"samples": len(rows), "chosen": j, "score": round(float(s[j]), 3)})
        return chosen, info


def seen_as(features: np.ndarray, sees: str) -> np.ndarray:
    """Decoded features (T, 263) as read from ``sees``: as decoded ("decoded"), recomputed from the
    joints they recover ("joints": a decoded motion's turn and velocity channels need not agree
    with its joints, which are what the body shows), or from the clean skeleton users get
    ("clean", ``motioncore.clean.clean_motion``). Fewer than 2 frames: as they are."""
    if sees not in PICK_VIEWS:
        raise ValueError(f"sees must be one of {', '.join(PICK_VIEWS)}, got {sees!r}")
    if sees == "decoded" or len(features) < 2:
        return features
    if sees == "joints":
        return joints_to_features(features_to_joints(features))
    return joints_to_features(clean_motion(features).joints)


def _with_copies(codes: list[np.ndarray], owners: list[int], copier: Callable[[int], Callable | None]
                 ) -> tuple[list[np.ndarray], list[int], dict[int, int]]:
    """``codes``/``owners`` with, for each part that has several rows and a ``copier(part)``, a
    copy of each of its rows added after all rows, in the same order (a part any of whose rows
    cannot be copied gets none). Returns (codes, owners, {part: rows it had before})."""
    rows: dict[int, list[int]] = defaultdict(list)
    for r, o in enumerate(owners):
        rows[o].append(r)
    codes, owners, before = list(codes), list(owners), {}
    for part, mine in sorted(rows.items()):
        copy = copier(part) if len(mine) >= 2 else None
        if copy is None:
            continue
        copies = [copy(codes[r]) for r in mine]
        if all(c is not None and len(c) for c in copies):     # copy i is row i's: all or none
            before[part] = len(mine)
            codes += copies
            owners += [part] * len(copies)
    return codes, owners, before


def video_kind(record: dict | None, known: set[str]) -> str | None:
    """The motion kind a database video shows that a led part asks for: of the kinds its record
    names (``spec.kinds``; a user's footage names none), those the words' reader does not know
    (``known``: the restater's kinds), or all of them when it knows every one; None unless that
    leaves exactly one."""
    kinds = list(dict.fromkeys(((record or {}).get("spec") or {}).get("kinds") or []))
    unknown = [k for k in kinds if k not in known]
    pool = unknown or kinds
    return pool[0] if len(pool) == 1 else None


__all__ = ["PICK_GATE", "Picker", "SAMPLES", "seen_as", "video_kind"]
