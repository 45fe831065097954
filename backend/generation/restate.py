"""Say a prompt again in the words the motion LLM was trained on (``Restater``).

The embedded motion LLM learned its text-motion pairs from captions of a small vocabulary (about
160 words); words it never read ("thrice", "swiftly", "pirouettes") it follows far less often
(session 17: a count in training words is followed 68 % of the time, in unseen words 16 %). The
frozen base LM it is built on knows more English than its fine-tuning taught it: the base's
middle-layer states (mean over a part's tokens; layers 6 and 8 of Gemma 3 270M) carry what
unseen words mean. A sentence encoder does not do this here: on the same captions a linear read of
MiniLM's embedding gets 37 % of unseen count words right, of the base's layer 8 79 % (throwaway
probes, session 18).

``Restater`` is that read: one linear head per attribute of a motion segment (kind, count of a
counted kind, extent of the others, speed, limb side, turn) plus a *single* head (does the part name one motion?), trained on the
parts of the training captions and their programs (``python -m backend train restater``; the
training captions only, so every unseen word stays unseen). ``restate`` gives, for each prompt
part whose words are not all in the training vocabulary, the part written again from what the
heads read, in training phrasing (``backend.data.captions.plain_caption``), when the reading is
confident: kind probability >= ``gate`` and single probability >= ``single_gate``; otherwise None
(the words are kept). Parts the retrieved video leads (``video_lead``: a kind the model only knows
from videos) at a weight above ``led_above`` are never restated. The pipeline gives the LLM the
restated part; retrieval, side matching and the video lead keep the user's words, and the result
says how each part was read. A speed stated in an unseen word is read from that word alone
(``Restater.word_speeds``): within a part whose kind words are unseen too, the mean state drowns it.
"""
from __future__ import annotations

import copy
import json
import re
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from safetensors.torch import load_file, save_file

from backend.data.captions import ACTIONS, COUNTED_ACTIONS, SIDE_ACTIONS, TURN_ACTIONS, plain_caption
from backend.defaults import NEIGHBOUR_KINDS, PLAIN_SUBJECTS, SAY_SPEEDS, WORD_SPEED
from backend.retrieval.sides import sides_of
from motioncore.prompt import split_prompt

CONFIG, WEIGHTS = "config.json", "model.safetensors"
WORD_SPEED_SENTENCE = "a person walks forward {}."    # training words around the one being read
SAID_SPEED = {"slow": "slowly", "fast": "quickly"}     # the training adverb of each speed
HEADS = ("action", "reps", "extent", "speed", "side", "turn")
_WORD = re.compile(r"[a-z]+")
PLAIN_SUBJECT = "a person"                            # the subject training captions use most
# A part's subject: a determiner and one word, or a pronoun, then an optional auxiliary, where the
# next word (after an adverb in -ly) is a verb form ("walks", "dashing", "kicked"; "a tall man runs"
# is left alone).
_SUBJECT = re.compile(r"^\s*(?:(?:a|an|the|one|some|this|that)\s+[a-z]+|someone|somebody|he|she|they)\s+"
                      r"(?:(?:is|are|was|were)\s+)?(?=(?:[a-z]+ly\s+)?[a-z]+(?:s|ing|ed)\b)", re.IGNORECASE)


def words(text: str) -> list[str]:
    """Lower-case words of ``text`` (what the vocabulary test looks at)."""
    return _WORD.findall(text.lower())


@dataclass
class RestaterConfig:
    base: str = "embedded"                   # the motion LLM's base, whose states are read
    layers: tuple[int, ...] = (6, 8)         # hidden states averaged over the part's tokens
    c: float = 0.1                           # inverse L2 strength of the heads (as scikit-learn's C)
    gate: float = 0.9                        # probability needed to restate a part (see `sure_of`)
    sure_of: str = "kind"                    # "all": every attribute written (kind, count of a
    #                                          counted kind, speed, side of a sided kind, turn)
    #                                          must reach `gate`; "kind" (default): the kind alone
    single_gate: float = 0.5                 # probability that the part names one motion
    led_above: float = 0.5                   # parts whose video lead is above this keep their words
    classes: dict = field(default_factory=dict)   # head -> class labels ("None" = no side/turn)
    vocabulary: list = field(default_factory=list)  # every word of the training captions
    train_parts: int = 0                     # training record
    train_accuracy: dict = field(default_factory=dict)

    def __post_init__(self):
        self.layers = tuple(int(x) for x in self.layers)
        if not self.layers or min(self.layers) < 1:
            raise ValueError(f"layers must be >= 1, got {self.layers}")
        if self.sure_of not in ("all", "kind"):
            raise ValueError(f"sure_of must be 'all' or 'kind', got {self.sure_of!r}")


_TRUNKS: dict = {}
_TRUNK_LOCK = threading.Lock()


def base_trunk(base: str, depth: int):
    """(the base LM's first ``depth`` decoder layers as a module sharing the base's weights,
    tokenizer), once per process. Hidden state ``l < depth`` is computed exactly as in the whole
    model (the final norm only ever touches the last one)."""
    with _TRUNK_LOCK:
        if (base, depth) not in _TRUNKS:
            from backend.generation.motion_llm import load_base

            model, tok = load_base(base)
            inner = model.model
            trunk = copy.copy(inner)
            trunk._modules = dict(inner._modules)        # never touch the shared model's own layers
            trunk.layers = nn.ModuleList(list(inner.layers)[:depth])
            _TRUNKS[(base, depth)] = (trunk, tok)
        return _TRUNKS[(base, depth)]


@torch.no_grad()
def raw_features(texts: list[str], config: RestaterConfig, batch_size: int = 64,
                 progress: bool = False) -> np.ndarray:
    """(N, hidden x len(layers)): the base's hidden states at ``config.layers``, each averaged over
    the text's tokens (padding and BOS left out)."""
    model, tok = base_trunk(config.base, max(config.layers) + 1)
    out = []
    chunks = range(0, len(texts), batch_size)
    if progress:
        from tqdm import tqdm

        chunks = tqdm(chunks, desc="reading caption parts", unit="batch")
    for s in chunks:
        b = tok(list(texts[s:s + batch_size]), return_tensors="pt", padding=True)
        pos = (b["attention_mask"].cumsum(-1) - 1).clamp_min(0)      # a text reads the same padded or not
        h = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"], position_ids=pos,
                  output_hidden_states=True).hidden_states
        m = b["attention_mask"][..., None].float()
        if tok.bos_token_id is not None:
            m = m * (b["input_ids"] != tok.bos_token_id)[..., None].float()
        m = m / m.sum(1, keepdim=True).clamp_min(1.0)
        out.append(torch.cat([(h[layer] * m).sum(1) for layer in config.layers], 1).float().numpy())
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def named_turn(kind: str, named: frozenset) -> str | None:
    """The turn the words of a part of ``kind`` name: their one side (``named``, from
    ``retrieval.sides.sides_of``) for a turning kind without a limb side, else None ("kicks with
    the right leg" names a leg, not a turn; two sides name no one turn)."""
    if len(named) == 1 and kind in TURN_ACTIONS and kind not in SIDE_ACTIONS:
        return next(iter(named))
    return None


class Restater:
    def __init__(self, config: RestaterConfig, mean: np.ndarray, std: np.ndarray,
                 heads: dict[str, tuple[np.ndarray, np.ndarray]]):
        missing = [h for h in (*HEADS, "single") if h not in heads]
        if missing:
            raise ValueError(f"restater heads missing: {', '.join(missing)}")
        self.config = config
        self.mean, self.std = np.asarray(mean, np.float32), np.asarray(std, np.float32)
        self.heads = {k: (np.asarray(w, np.float32), np.asarray(b, np.float32)) for k, (w, b) in heads.items()}
        self.vocabulary = frozenset(config.vocabulary)
        self.word_speed = WORD_SPEED        # how sure a word read alone must be (0: never; ``word_speeds``)
        self.say_speeds = SAY_SPEEDS        # kept parts: unseen speed adverbs said in training words
        self.neighbour_kinds = NEIGHBOUR_KINDS   # unsure parts: the kind their training neighbours agree on
        self.neighbours = self.kind_reader = None    # ``use_neighbours``
        self.plain_subjects = PLAIN_SUBJECTS    # read parts with their subject as training says it
        self._word_speeds: dict[str, tuple[str, float] | None] = {}

    # ----------------------------------------------------------------------------- io
    def save_pretrained(self, folder: str | Path) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / CONFIG).write_text(json.dumps(asdict(self.config), indent=1) + "\n")
        tensors = {"mean": torch.from_numpy(self.mean), "std": torch.from_numpy(self.std)}
        for k, (w, b) in self.heads.items():
            tensors[f"{k}.weight"], tensors[f"{k}.bias"] = torch.from_numpy(w), torch.from_numpy(b)
        save_file(tensors, str(folder / WEIGHTS))
        return folder

    @classmethod
    def from_pretrained(cls, folder: str | Path | None = None) -> "Restater | None":
        """The trained restater in ``folder`` (default ``checkpoints/restater``); None when it is
        not there (the words then always reach the LLM as typed)."""
        from backend.checkpoints import checkpoints_dir

        folder = Path(folder) if folder is not None else checkpoints_dir() / "restater"
        if not (folder / CONFIG).is_file():
            return None
        cfg = RestaterConfig(**json.loads((folder / CONFIG).read_text()))
        t = {k: v.float().numpy() for k, v in load_file(str(folder / WEIGHTS)).items()}
        heads = {k: (t[f"{k}.weight"], t[f"{k}.bias"]) for k in (*HEADS, "single")}
        return cls(cfg, t["mean"], t["std"], heads)

    # ------------------------------------------------------------------------ reading
    def features(self, texts: list[str], batch_size: int = 64, progress: bool = False) -> np.ndarray:
        """(N, D) standardized features of ``texts`` (what the heads read; each text as
        ``reading_text`` gives it)."""
        texts = [self.reading_text(t) for t in texts]
        return (raw_features(texts, self.config, batch_size, progress) - self.mean) / self.std

    def reading_text(self, text: str) -> str:
        """``text`` as the heads read it: with ``plain_subjects`` on, a subject (and auxiliary)
        with a word the training captions never used said as they say it ("A guy is dashing
        forward." -> "a person dashing forward."; "the man dashes" stays; ``defaults.PLAIN_SUBJECTS``);
        else as it is."""
        if not self.plain_subjects:
            return text
        m = _SUBJECT.match(text)
        if m is None or not self.unknown_words(m.group(0)):    # a training subject reads as it is
            return text
        return PLAIN_SUBJECT + " " + text[m.end():]

    def probabilities(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Head -> (N, classes) probabilities for standardized features ``x``."""
        out = {}
        for k, (w, b) in self.heads.items():
            z = x @ w.T + b
            z = np.exp(z - z.max(1, keepdims=True))
            out[k] = z / z.sum(1, keepdims=True)
        return out

    def read(self, texts: list[str], kinds: list[str | None] | None = None) -> list[dict]:
        """Per text: the segment the heads read ({action, reps, side, turn, speed}) with
        ``confidence`` (the kind's probability, or with ``sure_of`` "all" the least probability of
        the attributes the segment's caption states) and ``single`` (probability it names one
        motion). ``kinds[i]``, where given, is the kind read otherwise (``PartNeighbours``): the
        segment is that kind's (its count or extent, its side), ``confidence`` the heads' as ever."""
        if not texts:
            return []
        return self._read(texts, self.probabilities(self.features(list(texts))), kinds)

    def _read(self, texts: list[str], p: dict[str, np.ndarray], kinds: list[str | None] | None = None) -> list[dict]:
        """``read`` from the heads' probabilities ``p`` of ``texts`` (one base-LM pass per text)."""
        stated = self.word_speeds(texts)
        kinds = [None] * len(texts) if kinds is None else list(kinds)
        out = []
        for i in range(len(texts)):
            lab = {k: self.config.classes[k][int(p[k][i].argmax())] for k in HEADS}
            if kinds[i] is not None:
                lab["action"] = kinds[i]
            reps = lab["reps"] if lab["action"] in COUNTED_ACTIONS else lab["extent"]
            sure = {"kind": float(p["action"][i].max()), "speed": float(p["speed"][i].max()),
                    "turn": float(p["turn"][i].max())}
            if stated[i] is not None:
                lab["speed"], sure["speed"] = stated[i]
            if lab["action"] in COUNTED_ACTIONS:
                sure["count"] = float(p["reps"][i].max())
            if lab["action"] in SIDE_ACTIONS:
                sure["side"] = float(p["side"][i].max())
            out.append({"action": lab["action"], "reps": int(reps), "speed": lab["speed"],
                        "side": None if lab["side"] == "None" else lab["side"],
                        "turn": None if lab["turn"] == "None" else lab["turn"],
                        "confidence": sure["kind"] if self.config.sure_of == "kind" else min(sure.values()),
                        "single": float(p["single"][i][self.config.classes["single"].index("1")])})
        return out

    def manner(self, texts: list[str]) -> list[dict]:
        """Per text: the count, speed and turn its words state, whatever motion they name
        ({"reps", "speed", "turn"} and ``sure``: each one's probability); for a part whose kind
        the heads cannot read (one the model knows only from videos), its video supplies the kind
        (``Picker.asked_led``)."""
        if not texts:
            return []
        p = self.probabilities(self.features(list(texts)))
        stated = self.word_speeds(texts)
        cls = self.config.classes
        out = []
        for i in range(len(texts)):
            lab = {k: cls[k][int(p[k][i].argmax())] for k in ("reps", "speed", "turn")}
            speed, sure = (lab["speed"], float(p["speed"][i].max())) if stated[i] is None else stated[i]
            out.append({"reps": int(lab["reps"]), "speed": speed,
                        "turn": None if lab["turn"] == "None" else lab["turn"],
                        "sure": {"count": float(p["reps"][i].max()), "speed": sure,
                                 "turn": float(p["turn"][i].max())}})
        return out

    def word_speeds(self, texts: list[str]) -> list[tuple[str, float] | None]:
        """Per text: the speed ("slow" / "fast", with its probability) that its unseen words
        state, each read alone in a training sentence (``WORD_SPEED_SENTENCE``) by the speed head,
        where one reads so at least ``word_speed`` (``defaults.WORD_SPEED``) and none reads the
        other way; else None (the part's own reading stands). Read with the rest of a part whose
        other words are unseen too, the head misreads such words; alone, it reads them as the
        base LM understands them ("hastily" fast, "sluggishly" slow). Words are read once and kept."""
        if not self.word_speed or not {"slow", "fast"} <= set(self.config.classes.get("speed", ())):
            return [None] * len(texts)              # off, or a speed head that cannot say it
        unseen = [self.unknown_words(t) for t in texts]
        todo = sorted({w for ws in unseen for w in ws} - set(self._word_speeds))
        if todo:
            p = self.probabilities(self.features([WORD_SPEED_SENTENCE.format(w) for w in todo]))["speed"]
            labels = self.config.classes["speed"]
            for w, row in zip(todo, p):
                self._word_speeds[w] = (labels[int(row.argmax())], float(row.max()))
        out = []
        for ws in unseen:
            said = {}
            for w in ws:
                speed, prob = self._word_speeds[w]
                if speed in ("slow", "fast") and prob >= self.word_speed:
                    said[speed] = max(prob, said.get(speed, 0.0))
            out.append(next(iter(said.items())) if len(said) == 1 else None)
        return out

    def stated_cues(self, texts: list[str], sure: float = 0.5) -> np.ndarray:
        """(N, 4) retrieval cue codes (``backend.retrieval.rerank.stated_cues``) of the speed and
        count each text's words state by ``manner``, where that reading is at least ``sure``
        (-1 elsewhere): what a part the video leads asks its video to show, in words the
        retriever's cue lists may miss ("unhurriedly", "a couple of times")."""
        from backend.retrieval.rerank import stated_cues

        rows = [stated_cues(m["speed"] if m["sure"]["speed"] >= sure else None,
                            m["reps"] if m["sure"]["count"] >= sure else None) for m in self.manner(texts)]
        return np.stack(rows) if rows else np.zeros((0, 4), np.int64)

    def unknown_words(self, text: str) -> list[str]:
        return [w for w in words(text) if w not in self.vocabulary]

    def serves(self, llm) -> bool:
        """Is this restater for ``llm``: the same base (its states are what the heads read; the
        training words are that model's)? A motion LLM on another base reads the words as typed."""
        return getattr(getattr(llm, "config", None), "base", None) == self.config.base

    def keeps(self, lead: float) -> bool:
        """Does a part the retrieved video leads at weight ``lead`` keep its words?"""
        return float(lead) > self.config.led_above

    def understood(self, texts: list[str], skip=None, known_too: bool = True,
                   gate: float | None = None) -> list[dict | None]:
        """Per text: the segment read ({action, reps, speed, side, turn} and ``confidence``)
        where its confidence is at least ``gate`` (default the config's) and it names one motion,
        else None; None too where ``skip[i]`` is true and, with ``known_too=False``, where every
        word of the text is a training word. A turning kind without a limb side whose words name
        exactly one side turns that way, whatever the turn head reads (``named_turn``: the head
        learned turns from the training phrasing only, and read "twirls clockwise" as no turn and
        "pirouettes to the right" as a left one; docs/lab-notebook.md, *Open turns*)."""
        gate = self.config.gate if gate is None else float(gate)
        skip = [False] * len(texts) if skip is None else [bool(s) for s in skip]
        todo = [i for i, t in enumerate(texts) if not skip[i] and (known_too or self.unknown_words(t))]
        out: list[dict | None] = [None] * len(texts)
        unsure = []
        p = self.probabilities(self.features([texts[i] for i in todo])) if todo else {}
        for i, r in zip(todo, self._read([texts[i] for i in todo], p) if todo else []):
            if r["single"] < self.config.single_gate:
                continue
            if r["confidence"] >= gate:
                out[i] = self._understood(texts[i], r)
            if r["confidence"] < self.config.gate and self.unknown_words(texts[i]):
                unsure.append(i)         # kept in its words unless its neighbours settle the kind
        if unsure and self.neighbour_kinds and self.neighbours is not None and self.kind_reader is not None:
            part = [self.reading_text(texts[i]) for i in unsure]
            agreed = self.neighbours.agreed(part, self.kind_reader.read(part))
            again = [(i, k) for i, k in zip(unsure, agreed) if k is not None and k in self.config.classes["action"]]
            rows = [todo.index(i) for i, _ in again]          # the heads' reading, read once
            reads = self._read([texts[i] for i, _ in again], {h: v[rows] for h, v in p.items()},
                               [k for _, k in again]) if again else []
            for (i, _), r in zip(again, reads):
                out[i] = self._understood(texts[i], {**r, "confidence": self.config.gate})
                out[i]["by"] = "neighbours"
        return out

    @staticmethod
    def _understood(text: str, r: dict) -> dict:
        out = {k: r[k] for k in ("action", "reps", "speed", "side", "turn", "confidence")}
        out["turn"] = named_turn(r["action"], sides_of(text)) or r["turn"]
        return out

    def use_neighbours(self, neighbours, kind_reader) -> "Restater":
        """Read the kind of a part with unseen words that the heads read below the gate from its
        training-part neighbours where they and ``kind_reader`` agree (``PartNeighbours.agreed``;
        ``neighbour_kinds``, ``defaults.NEIGHBOUR_KINDS``, turns it on); None for either: off."""
        self.neighbours, self.kind_reader = neighbours, kind_reader
        return self

    def restated(self, texts: list[str], readings: list[dict | None], skip=None) -> list[str | None]:
        """Per text: its reading in training phrasing where it has one as confident as the
        config's gate and a word outside the training words; else, unless ``skip[i]`` (a part its
        video leads) or ``say_speeds`` is off, the words as typed with their unseen speed adverbs
        said in training words (``said_speeds``); else None (the words as typed)."""
        seg = ("action", "reps", "speed", "side", "turn")
        skip = [False] * len(texts) if skip is None else [bool(s) for s in skip]
        out = [self.render({k: r[k] for k in seg})
               if r is not None and r.get("confidence", 1.0) >= self.config.gate and self.unknown_words(t)
               else None for t, r in zip(texts, readings)]
        kept = [i for i, (o, s) in enumerate(zip(out, skip)) if o is None and not s] if self.say_speeds else []
        for i, said in zip(kept, self.said_speeds([texts[i] for i in kept])):
            out[i] = said
        return out

    def said_speeds(self, texts: list[str]) -> list[str | None]:
        """Per text: the text with each unseen adverb ("-ly") that, read alone, states its one
        speed (``word_speeds``: at least ``word_speed`` sure, no word stating the other) replaced by
        the training adverb of that speed (``SAID_SPEED``); None where no word changes. "a man is
        jabbing sluggishly" -> "a man is jabbing slowly": the motion LLM learned speed from a few
        adverbs and follows one it never read far less often."""
        out: list[str | None] = []
        for t, stated in zip(texts, self.word_speeds(texts)):
            if stated is None:
                out.append(None)
                continue
            swap = {w for w in self.unknown_words(t) if w.endswith("ly") and self._word_speeds.get(w)
                    and self._word_speeds[w][0] == stated[0] and self._word_speeds[w][1] >= self.word_speed}
            new = re.sub(r"[A-Za-z]+", lambda m: SAID_SPEED[stated[0]] if m.group(0).lower() in swap
                         else m.group(0), t)
            out.append(new if new != t else None)
        return out

    def restate(self, texts: list[str], skip=None) -> list[str | None]:
        """Per text: the text in training phrasing, or None where it is kept as typed (all its
        words known, ``skip[i]`` true, or the reading not confident enough)."""
        return self.restated(texts, self.understood(texts, skip, known_too=False), skip)

    def render(self, segment: dict, tries: int = 16) -> str:
        """``segment`` in training phrasing, with templates whose words all occur in the training
        captions (the grammar has templates the sampled captions never used): the first of
        ``tries`` fixed draws that qualifies, else the first draw."""
        first = plain_caption(segment, 0)
        for seed in range(tries):
            text = first if seed == 0 else plain_caption(segment, seed)
            if not self.unknown_words(text):
                return text
        return first


# ---------------------------------------------------------------------------- training
def training_parts(corpus, split: str = "train") -> tuple[list[str], list[dict], list[str]]:
    """(parts, their segments, multi-motion parts) of ``split``'s captions: a caption cut by
    ``split_prompt`` into as many parts as its program has segments gives one (part, segment) per
    segment; an uncut caption of several segments is a multi-motion part (the single head's 0)."""
    programs = corpus.programs()
    parts, segs, multi = [], [], []
    for mid in corpus.split_ids(split):
        prog = programs.get(mid)
        if not prog:
            continue
        for cap in corpus.captions(mid):
            ps = split_prompt(cap.text)
            if len(ps) == len(prog):
                parts += ps
                segs += prog
            elif len(ps) == 1:
                multi.append(ps[0])
    return parts, segs, multi


def fit_softmax(x: np.ndarray, y: np.ndarray, classes: int, c: float, iters: int = 200
                ) -> tuple[np.ndarray, np.ndarray]:
    """Multinomial logistic regression: mean cross-entropy + ||W||^2 / (2 c N) (scikit-learn's
    objective divided by N), fitted with L-BFGS. Returns (W (classes, D), b (classes,))."""
    torch.manual_seed(0)
    X, Y = torch.from_numpy(np.asarray(x, np.float32)), torch.from_numpy(np.asarray(y, np.int64))
    W = torch.zeros(classes, X.shape[1], requires_grad=True)
    b = torch.zeros(classes, requires_grad=True)
    opt = torch.optim.LBFGS([W, b], lr=1.0, max_iter=iters, history_size=20, line_search_fn="strong_wolfe")
    lam = 1.0 / (2.0 * c * len(X))

    def closure():
        opt.zero_grad()
        loss = nn.functional.cross_entropy(X @ W.T + b, Y) + lam * (W * W).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return W.detach().numpy(), b.detach().numpy()


def train_restater(corpus, config: RestaterConfig | None = None, progress: bool = True) -> Restater:
    """Fit the heads on the train split's caption parts (see the module docstring)."""
    config = copy.deepcopy(config or RestaterConfig())
    parts, segs, multi = training_parts(corpus, "train")
    if not parts:
        raise ValueError("no training caption parts with programs: the restater needs the embedded "
                         "corpus's programs.jsonl")
    config.vocabulary = sorted({w for t in parts + multi for w in words(t)})
    raw = raw_features(parts + multi, config, progress=progress)
    mean, std = raw.mean(0), raw.std(0) + 1e-6
    x = (raw - mean) / std
    xs, xm = x[:len(parts)], x[len(parts):]
    heads, acc = {}, {}
    counted = np.array([s["action"] in COUNTED_ACTIONS for s in segs])
    sided = np.array([s["action"] in SIDE_ACTIONS for s in segs])
    every = np.ones(len(segs), bool)
    reps = [str(int(s.get("reps") or 1)) for s in segs]
    labels = {"action": ([s["action"] for s in segs], every),
              "reps": (reps, counted),             # a count: "twice", "three times"
              "extent": (reps, ~counted),          # how long the others go on: "for a while"
              "speed": ([s.get("speed") or "normal" for s in segs], every),
              "side": ([str(s.get("side")) for s in segs], sided),
              "turn": ([str(s.get("turn")) for s in segs], every)}
    for k, (ys, rows) in labels.items():
        if not rows.any():
            rows = every
        ys = [y for y, r in zip(ys, rows) if r]
        cls = sorted(set(ys), key=lambda v: (ACTIONS.index(v) if k == "action" else 0, v))
        y = np.array([cls.index(v) for v in ys])
        heads[k] = fit_softmax(xs[rows], y, len(cls), config.c)
        acc[k] = float(((xs[rows] @ heads[k][0].T + heads[k][1]).argmax(1) == y).mean())
        config.classes[k] = cls
    y1 = np.r_[np.ones(len(xs), np.int64), np.zeros(len(xm), np.int64)]
    config.classes["single"] = ["0", "1"]
    heads["single"] = fit_softmax(x, y1, 2, config.c)
    acc["single"] = float(((x @ heads["single"][0].T + heads["single"][1]).argmax(1) == y1).mean())
    config.train_parts, config.train_accuracy = len(parts), {k: round(v, 4) for k, v in acc.items()}
    return Restater(config, mean, std, heads)


__all__ = ["HEADS", "Restater", "RestaterConfig", "fit_softmax", "named_turn", "train_restater", "training_parts",
           "words"]
