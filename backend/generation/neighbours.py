"""The motion kind a prompt part names, by the training caption parts nearest it (``PartNeighbours``).

Why: a part whose words the motion LLM never read ("a figure is dashing forward for a while") and
whose kind the ``Restater`` reads below its gate reaches the LLM as typed; the picker then asks
nothing of its drafts. On the test split such parts are the weakest followed: runs ("dashing",
"sprinting") 74 % of the time of the right kind (docs/lab-notebook.md, *Runs are the test split's
weakest kind*). The Restater's heads read Gemma 3 270M's middle layers, which do not know these
words; a sentence encoder trained for paraphrase (MiniLM, what the retriever reads text with)
places "dashing ahead" near the training captions' "running forward".

``PartNeighbours`` keeps the MiniLM embedding of every distinct part of the training captions
(``restate.training_parts``: a caption cut by ``split_prompt`` into as many parts as its program
has segments) with that segment's kind. ``vote`` gives, per text, the kind most of its ``k``
nearest parts (cosine) carry and how many of them carry it. ``agreed`` keeps that kind only
where at least ``need`` of the ``k`` agree *and* the retriever's ``KindReader`` (the base LM's
reading, trained on the video database's captions, which know the kinds the generator saw only
in videos) reads the same kind first: a part of a kind the generator never read with text (a
cartwheel) has training neighbours of some other kind, and the kind reader says cartwheel.

Chosen on the validation split's parts kept in the user's words (session 41, ``data/logs/knn41.py``,
throwaway): k = 20, need = 16 and the kind reader's agreement: 97 of 210 parts, the kind right for
91 (94 %); the neighbours alone at that need 91 %, the Restater on the same parts 77 %.

    nb = PartNeighbours.from_pretrained()          # None when not shipped
    nb.vote(["a figure is dashing forward for a while."])     # [("run", 19)]

``python -m backend train part-neighbours --ship`` (about a minute: MiniLM over 8,000 parts).
Training captions only: the held-out wording stays held out.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

CONFIG, WEIGHTS = "config.json", "model.safetensors"
FOLDER = "part-neighbours"        # under checkpoints/


@dataclass
class PartNeighboursConfig:
    k: int = 20                     # neighbours that vote
    need: int = 16                  # votes the kind needs (``agreed``)
    kinds: list = field(default_factory=list)    # kind labels, index = the stored kind number
    parts: int = 0                  # distinct training parts stored

    def __post_init__(self):
        if self.k < 1:
            raise ValueError(f"k must be >= 1, got {self.k}")
        if not 1 <= self.need <= self.k:
            raise ValueError(f"need must be in 1..k ({self.k}), got {self.need}")


class PartNeighbours:
    def __init__(self, config: PartNeighboursConfig, embeddings: torch.Tensor, kinds: torch.Tensor,
                 encoder=None):
        embeddings = torch.as_tensor(embeddings).float()
        kinds = torch.as_tensor(kinds).long()
        if embeddings.ndim != 2 or len(embeddings) != len(kinds) or len(kinds) == 0:
            raise ValueError(f"need (N, D) embeddings and N kinds, got {tuple(embeddings.shape)} and {tuple(kinds.shape)}")
        if int(kinds.max()) >= len(config.kinds) or int(kinds.min()) < 0:
            raise ValueError("a stored kind number is outside the config's kinds")
        self.config = config
        self.embeddings = torch.nn.functional.normalize(embeddings, dim=-1)
        self.kinds = kinds
        self._encoder = encoder

    # ----------------------------------------------------------------------------- io
    def save_pretrained(self, folder: str | Path) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / CONFIG).write_text(json.dumps(asdict(self.config), indent=1) + "\n")
        save_file({"embeddings": self.embeddings.half().contiguous(), "kinds": self.kinds.to(torch.int16)},
                  str(folder / WEIGHTS))
        return folder

    @classmethod
    def from_pretrained(cls, folder: str | Path | None = None) -> "PartNeighbours | None":
        """The index in ``folder`` (default ``checkpoints/part-neighbours``); None when not there."""
        from backend.checkpoints import checkpoints_dir

        folder = Path(folder) if folder is not None else checkpoints_dir() / FOLDER
        if not (folder / CONFIG).is_file():
            return None
        cfg = PartNeighboursConfig(**json.loads((folder / CONFIG).read_text()))
        t = load_file(str(folder / WEIGHTS))
        return cls(cfg, t["embeddings"], t["kinds"])

    # ------------------------------------------------------------------------ reading
    @property
    def encoder(self):
        if self._encoder is None:                 # the process-wide one the retriever reads with too
            from backend.data.text import get_minilm

            self._encoder = get_minilm()
        return self._encoder

    def bind(self, retriever) -> "PartNeighbours":
        """Share ``retriever``'s MiniLM, where it has one (a process loads MiniLM once)."""
        if getattr(retriever, "_minilm", None) is not None:
            self._encoder = retriever._minilm
        return self

    def vote(self, texts: list[str]) -> list[tuple[str, int]]:
        """Per text: the kind most of its ``k`` nearest training parts carry, and how many do
        (ties: the kind of the nearer part)."""
        if not texts:
            return []
        q = torch.nn.functional.normalize(self.encoder.encode(list(texts)).float(), dim=-1)
        k = min(self.config.k, len(self.kinds))
        top = (q @ self.embeddings.T).topk(k, dim=1).indices
        out = []
        for row in self.kinds[top].tolist():
            counts: dict[int, int] = {}
            for kind in row:                      # in order of nearness: ties go to the nearer
                counts[kind] = counts.get(kind, 0) + 1
            best = max(counts, key=counts.get)
            out.append((self.config.kinds[best], counts[best]))
        return out

    def agreed(self, texts: list[str], kind_reads: list[dict] | None) -> list[str | None]:
        """Per text: the neighbours' kind where at least ``need`` of ``k`` carry it and the kind
        reading ``kind_reads[i]`` (``KindReader.read``: kind -> probability) puts it first; else
        None. Without kind readings (no kind reader), None for all."""
        if kind_reads is None or not texts:
            return [None] * len(texts)
        out = []
        for (kind, n), read in zip(self.vote(texts), kind_reads):
            first = max(read, key=read.get) if read else None
            out.append(kind if n >= self.config.need and first == kind else None)
        return out


def build_part_neighbours(corpus, config: PartNeighboursConfig | None = None, encoder=None,
                          progress: bool = True) -> PartNeighbours:
    """The index of the distinct parts of ``corpus``'s training captions with their kinds."""
    from backend.generation.restate import training_parts

    config = PartNeighboursConfig(**asdict(config)) if config is not None else PartNeighboursConfig()
    parts, segments, _ = training_parts(corpus, "train")
    pairs = sorted({(p, s["action"]) for p, s in zip(parts, segments)})
    if not pairs:
        raise ValueError("the corpus's training captions give no parts with a kind")
    config.kinds = sorted({k for _, k in pairs})
    config.parts = len(pairs)
    if encoder is None:
        from backend.data.text import get_minilm

        encoder = get_minilm()
    texts = [p for p, _ in pairs]
    if progress:
        from tqdm import tqdm

        chunks = [texts[i:i + 512] for i in range(0, len(texts), 512)]
        emb = torch.cat([encoder.encode(c) for c in tqdm(chunks, desc="part-neighbours: encoding", unit="chunk")])
    else:
        emb = encoder.encode(texts)
    kinds = torch.tensor([config.kinds.index(k) for _, k in pairs])
    return PartNeighbours(config, emb, kinds, encoder=encoder)


__all__ = ["FOLDER", "PartNeighbours", "PartNeighboursConfig", "build_part_neighbours"]
