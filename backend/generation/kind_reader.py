"""Read the motion kind a query names from its words (``KindReader``).

Why: re-ranking by kind (``rerank.kind_agreement``) needs the kind each query (or each part of a
chained one) asks for. Read off the part's own best videos alone (``rerank.part_kind``) it is right
for 88 % of the held-out caption parts, and wrong in a pattern the words settle: "sprinting ahead"
retrieves walks, "rising from a prone position" the face-up get-up, "creeping in an arc" a spin
(session 28; the held-out captions are worded apart from the training ones by design). The frozen
base LM the motion LLM is built on knows more English than the retriever's sentence encoder
(``backend.generation.restate``): a linear head on its middle-layer states (layers 6 and 8 of
Gemma 3 270M, mean over the part's tokens) reads 92 % of the held-out parts' kinds, with other
mistakes than the videos' vote; the two together 93 % (``rerank.part_kind``: the vote's shares plus
``KIND_TEXT_WEIGHT`` x these probabilities, equal weight, not tuned).

Trained on the video database's *training* captions (``labelled_parts``: a caption cut by
``split_prompt`` into as many parts as its video has kinds gives one (part, kind) per part, a
one-kind video's caption one pair), the same captions the retriever trains on; every kind the
database records, the kinds the generator never read in words (cartwheel, ...) included. That
changes nothing the generator saw: the reader is part of retrieval (text -> video), as the
retriever is. ``python -m backend train kind-reader --ship`` (about a minute on 2 cores). It lives
here, beside the restater, because it reads with the generator's base LM; ``with_kind_reader``
attaches the shipped one to a ``VideoRetriever``.

    reader = KindReader.from_pretrained()            # None when not shipped: videos alone vote
    reader.read(["a man is creeping in an arc."])    # [{"crawl": 0.93, "walk": 0.03, ...}]
"""
from __future__ import annotations

import copy
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from motioncore.prompt import split_prompt

CONFIG, WEIGHTS = "config.json", "model.safetensors"
FOLDER = "kind-reader"          # under checkpoints/
CACHE = 4096                    # readings kept per reader


@dataclass
class KindReaderConfig:
    base: str = "embedded"                   # the base LM whose states are read (the motion LLM's)
    layers: tuple[int, ...] = (6, 8)         # hidden states averaged over the part's tokens
    c: float = 0.1                           # inverse L2 strength of the head (as scikit-learn's C)
    kinds: list = field(default_factory=list)   # the head's classes, as the database records them
    train_parts: int = 0                     # training record
    train_accuracy: float = 0.0

    def __post_init__(self):
        self.layers = tuple(int(x) for x in self.layers)
        if not self.layers or min(self.layers) < 1:
            raise ValueError(f"layers must be >= 1, got {self.layers}")
        if self.c <= 0:
            raise ValueError(f"c must be positive, got {self.c}")


def labelled_parts(records: list[dict], split: str = "train") -> tuple[list[str], list[str]]:
    """(caption parts, the kind of each) of the database ``records`` of ``split`` that record
    their kinds: a caption ``split_prompt`` cuts into as many parts as the video has kinds gives
    each part its kind in order; an uncut caption of a one-kind video gives that kind; other
    captions (parts and kinds disagree) are left out."""
    texts, kinds = [], []
    for r in records:
        spec = r.get("spec", {})
        if (r.get("split") or spec.get("split") or "train") != split:
            continue
        ks = list(dict.fromkeys(spec.get("kinds") or []))
        if not ks:
            continue
        for cap in r.get("captions") or spec.get("captions") or []:
            parts = split_prompt(cap)
            if len(parts) == len(ks):
                texts += parts
                kinds += ks
            elif len(ks) == 1:
                texts.append(cap)
                kinds.append(ks[0])
    return texts, kinds


class KindReader:
    def __init__(self, config: KindReaderConfig, mean: np.ndarray, std: np.ndarray,
                 weight: np.ndarray, bias: np.ndarray):
        if np.shape(weight) != (len(config.kinds), len(mean)) or np.shape(bias) != (len(config.kinds),):
            raise ValueError(f"kind reader head {np.shape(weight)} / {np.shape(bias)} does not fit "
                             f"{len(config.kinds)} kinds x {len(mean)} features")
        self.config = config
        self.mean, self.std = np.asarray(mean, np.float32), np.asarray(std, np.float32)
        self.weight, self.bias = np.asarray(weight, np.float32), np.asarray(bias, np.float32)
        self._cache: dict[str, dict[str, float]] = {}      # text -> reading, the last CACHE texts

    @property
    def kinds(self) -> list[str]:
        return list(self.config.kinds)

    # ----------------------------------------------------------------------------- io
    def save_pretrained(self, folder: str | Path) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / CONFIG).write_text(json.dumps(asdict(self.config), indent=1) + "\n")
        save_file({k: torch.from_numpy(v) for k, v in (("mean", self.mean), ("std", self.std),
                                                      ("weight", self.weight), ("bias", self.bias))},
                  str(folder / WEIGHTS))
        return folder

    @classmethod
    def from_pretrained(cls, folder: str | Path | None = None) -> "KindReader | None":
        """The trained reader in ``folder`` (default ``checkpoints/kind-reader``); None when it is
        not there (kinds are then read off the videos alone)."""
        from backend.checkpoints import checkpoints_dir

        folder = Path(folder) if folder is not None else checkpoints_dir() / FOLDER
        if not (folder / CONFIG).is_file():
            return None
        cfg = KindReaderConfig(**json.loads((folder / CONFIG).read_text()))
        t = {k: v.float().numpy() for k, v in load_file(str(folder / WEIGHTS)).items()}
        return cls(cfg, t["mean"], t["std"], t["weight"], t["bias"])

    # ------------------------------------------------------------------------ reading
    def probabilities(self, texts: list[str]) -> np.ndarray:
        """(N, len(kinds)) probability of each kind per text."""
        if not len(texts):
            return np.zeros((0, len(self.kinds)), np.float32)
        x = (_features(list(texts), self.config) - self.mean) / self.std
        z = x @ self.weight.T + self.bias
        z = np.exp(z - z.max(1, keepdims=True))
        return z / z.sum(1, keepdims=True)

    def read(self, texts: list[str]) -> list[dict[str, float]]:
        """Per text, {kind: probability}; the last ``CACHE`` texts' readings are kept (retrieval
        and the video lead read the same part)."""
        cache = self._cache
        todo = list(dict.fromkeys(t for t in texts if t not in cache))
        for t, p in zip(todo, self.probabilities(todo)):
            if len(cache) >= CACHE:
                cache.pop(next(iter(cache)))
            cache[t] = dict(zip(self.kinds, map(float, p)))
        return [dict(cache[t]) if t in cache else self.read([t])[0] for t in texts]


def _features(texts: list[str], config: KindReaderConfig, progress: bool = False) -> np.ndarray:
    from backend.generation.restate import RestaterConfig, raw_features

    return raw_features(texts, RestaterConfig(base=config.base, layers=config.layers), progress=progress)


def train_kind_reader(records: list[dict], config: KindReaderConfig | None = None,
                      progress: bool = True) -> KindReader:
    """Fit the head on the training captions' parts of the database ``records``."""
    from backend.generation.restate import fit_softmax

    config = copy.deepcopy(config or KindReaderConfig())
    texts, kinds = labelled_parts(records, "train")
    config.kinds = sorted(set(kinds))
    if len(config.kinds) < 2:
        raise ValueError(f"the database's training captions name {len(config.kinds)} motion kind(s); "
                         "a kind reader needs records with spec.kinds of at least two kinds")
    raw = _features(texts, config, progress)
    mean, std = raw.mean(0), raw.std(0) + 1e-6
    x = (raw - mean) / std
    y = np.array([config.kinds.index(k) for k in kinds])
    w, b = fit_softmax(x, y, len(config.kinds), config.c)
    config.train_parts = len(texts)
    config.train_accuracy = round(float(((x @ w.T + b).argmax(1) == y).mean()), 4)
    return KindReader(config, mean, std, w, b)


def with_kind_reader(retriever, folder=None):
    """``retriever`` reading every query's kinds with the kind reader in ``folder`` (default
    ``checkpoints/kind-reader``; when it is not shipped, the retriever is returned as it was; a
    ``folder`` given that holds none is an error)."""
    reader = KindReader.from_pretrained(folder)
    if reader is None and folder is not None:
        raise FileNotFoundError(f"no kind reader at {folder}; train one with "
                                "`python -m backend train kind-reader`")
    return retriever.use_kind_reader(reader) if reader is not None else retriever


__all__ = ["FOLDER", "KindReader", "KindReaderConfig", "labelled_parts", "train_kind_reader", "with_kind_reader"]
