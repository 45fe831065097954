"""One loader for any folder in the HumanML3D layout: the embedded corpus or the real HumanML3D.

    ROOT/new_joint_vecs/ID.npy   (T, 263) features
    ROOT/new_joints/ID.npy       (T, 22, 3) joint positions
    ROOT/texts/ID.txt            one caption per line: ``caption#tokens#start#end``
    ROOT/Mean.npy, ROOT/Std.npy  feature statistics
    ROOT/train.txt, val.txt, test.txt (and ood.txt for the embedded corpus): one ID per line

``start``/``end`` (seconds) of a caption are 0.0 when it describes the whole motion; otherwise
it describes the sub-clip ``[start*20, end*20)`` as in HumanML3D.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
from tqdm import tqdm

from backend.checkpoints import embedded_corpus_dir
from backend.data.corpus import build_corpus, corpus_is_built
from motioncore.features import Normalizer, validate_features, validate_joints
from motioncore.skeleton import FPS

REQUIRED = ("new_joint_vecs", "texts", "Mean.npy", "Std.npy")


class CorpusError(RuntimeError):
    """A dataset folder that is missing or malformed."""


@dataclass(frozen=True)
class Caption:
    text: str
    tokens: tuple[str, ...]
    start: float = 0.0
    end: float = 0.0

    @property
    def whole(self) -> bool:
        return self.start == 0.0 and self.end == 0.0


def parse_caption_line(line: str, where: str = "") -> Caption:
    parts = line.rstrip("\n").split("#")
    if len(parts) < 2 or not parts[0].strip():
        raise CorpusError(f"{where}: malformed caption line {line!r} "
                          "(expected 'caption#tokens#start#end')")
    text, tokens = parts[0].strip(), tuple(parts[1].split())
    try:
        start = float(parts[2]) if len(parts) > 2 and parts[2] else 0.0
        end = float(parts[3]) if len(parts) > 3 and parts[3] else 0.0
    except ValueError as exc:
        raise CorpusError(f"{where}: bad start/end in caption line {line!r}") from exc
    start, end = (0.0 if np.isnan(start) else start), (0.0 if np.isnan(end) else end)
    return Caption(text, tokens, start, end)


class MotionCorpus:
    """Read access to a HumanML3D-layout folder; every malformed piece gives a clear error."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        if not self.root.is_dir():
            raise CorpusError(f"dataset folder {self.root} does not exist")
        missing = [name for name in REQUIRED if not (self.root / name).exists()]
        if missing:
            raise CorpusError(f"{self.root} is not a HumanML3D-layout folder: missing "
                              f"{', '.join(missing)}")

    def __repr__(self) -> str:
        return f"MotionCorpus({str(self.root)!r})"

    @cached_property
    def normalizer(self) -> Normalizer:
        try:
            return Normalizer.load(self.root)
        except ValueError as exc:
            raise CorpusError(f"{self.root}: bad Mean.npy/Std.npy ({exc})") from exc

    def splits(self) -> list[str]:
        return sorted(p.stem for p in self.root.glob("*.txt"))

    def judge_splits(self) -> tuple[str, ...]:
        """What the judges (evaluator, instruction checker) train on: the train split, plus the
        ``ood_judge`` half of the OOD motions where the corpus has one (never the generator)."""
        return ("train",) + (("ood_judge",) if "ood_judge" in self.splits() else ())

    def split_ids(self, split: str) -> list[str]:
        path = self.root / f"{split}.txt"
        if not path.is_file():
            raise CorpusError(f"{self.root} has no split file {split}.txt "
                              f"(available: {', '.join(self.splits()) or 'none'})")
        return [line.strip() for line in path.read_text().splitlines() if line.strip()]

    def features(self, mid: str) -> np.ndarray:
        path = self.root / "new_joint_vecs" / f"{mid}.npy"
        if not path.is_file():
            raise CorpusError(f"motion {mid}: {path} is missing")
        try:
            return validate_features(np.load(path, allow_pickle=False)).astype(np.float32)
        except ValueError as exc:
            raise CorpusError(f"motion {mid}: {path}: {exc}") from exc

    def joints(self, mid: str) -> np.ndarray:
        path = self.root / "new_joints" / f"{mid}.npy"
        if not path.is_file():
            raise CorpusError(f"motion {mid}: {path} is missing")
        try:
            return validate_joints(np.load(path, allow_pickle=False), min_frames=1).astype(np.float32)
        except ValueError as exc:
            raise CorpusError(f"motion {mid}: {path}: {exc}") from exc

    def captions(self, mid: str) -> list[Caption]:
        path = self.root / "texts" / f"{mid}.txt"
        if not path.is_file():
            raise CorpusError(f"motion {mid}: {path} is missing")
        lines = [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
        if not lines:
            raise CorpusError(f"motion {mid}: {path} has no captions")
        return [parse_caption_line(ln, f"{path}:{i + 1}") for i, ln in enumerate(lines)]

    def programs(self) -> dict[str, list[dict]]:
        """Motion id -> its segments ({action, reps, side, turn, speed}) from ``programs.jsonl``
        (the embedded corpus has it; HumanML3D does not: then {})."""
        path = self.root / "programs.jsonl"
        if not path.is_file():
            return {}
        return {p["id"]: p["segments"] for p in map(json.loads, path.read_text().splitlines()) if p}

    def load_features(self, split: str, min_frames: int = 1, max_frames: int | None = None,
                      progress: bool = False) -> dict[str, np.ndarray]:
        """All motions of a split as ``{id: (T, 263)}``; too short ones are left out, too long
        ones cut to ``max_frames`` (HumanML3D's evaluation uses 40..196 frames)."""
        out = {}
        for mid in tqdm(self.split_ids(split), desc=f"loading {split}", disable=not progress):
            f = self.features(mid)
            if len(f) < min_frames:
                continue
            out[mid] = f[:max_frames] if max_frames else f
        if not out:
            raise CorpusError(f"{self.root}: split {split!r} has no motion of at least "
                              f"{min_frames} frames")
        return out

    def caption_items(self, split: str) -> list[tuple[str, Caption, np.ndarray]]:
        """(id, caption, features of the captioned span) for every caption of a split."""
        items = []
        for mid in self.split_ids(split):
            feats = self.features(mid)
            for cap in self.captions(mid):
                span = feats if cap.whole else feats[int(cap.start * FPS):int(cap.end * FPS)]
                if len(span):
                    items.append((mid, cap, span))
        return items


def random_crop(feats: np.ndarray, rng: np.random.Generator, max_frames: int = 196,
                unit: int = 4) -> np.ndarray:
    """The evaluation protocol's crop: min(T, max_frames) rounded down to a multiple of ``unit``,
    one unit shorter a third of the time, at a random start."""
    n = min(len(feats), max_frames) // unit
    if n > 1 and rng.random() < 1 / 3:
        n -= 1
    length = n * unit
    start = int(rng.integers(0, len(feats) - length + 1))
    return feats[start:start + length]


def open_corpus(path: str | Path | None = None, build: bool = True, progress: bool = True) -> MotionCorpus:
    """The corpus at ``path`` (e.g. a real HumanML3D folder), or the embedded default, built on
    first use when absent."""
    if path is not None:
        return MotionCorpus(path)

    folder = embedded_corpus_dir()
    if not corpus_is_built(folder):
        if not build:
            raise CorpusError(f"the embedded corpus is not built at {folder}; "
                              "run `python -m backend data build`")
        print(f"The embedded motion corpus is not built yet; building it at {folder} "
              "(about a minute, once).", flush=True)
        build_corpus(folder, progress=progress)
    return MotionCorpus(folder)

