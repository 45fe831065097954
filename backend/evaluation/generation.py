"""The paper-style generation table (Guo et al. protocol) for any number of generator rows.

One *repeat* draws, for every motion of the split (40+ frames), one of its captions and a random
protocol crop; the evaluator embeds those captions and real motions once, then every row's
motions; the metrics follow (``metrics.evaluate_embeddings``). After ``repeats`` repeats each
metric is reported as mean +- 1.96 std / sqrt(repeats).

Rows are ``Generator`` objects: ``generate(items, rng) -> list of (T, 263) features`` (not
normalised), one per item. ``real`` re-draws a fresh crop of each ground-truth motion (so its FID
is small but not zero, as in published tables); ``vqvae`` encodes and decodes the crop with the
motion tokenizer. The table's rows by name are ``backend.evaluation.rows.GENERATORS``. MultiModality is
measured for stochastic generators only (``mm_samples`` texts x ``mm_repeats`` generations).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Protocol, Sequence

import numpy as np
import torch
from tqdm import tqdm

from backend.data.dataset import Caption, MotionCorpus, random_crop
from backend.evaluation.metrics import evaluate_embeddings, summarize
from motioncore.clean import clean_motion
from motioncore.features import features_to_joints
from motioncore.io import atomic_write
from motioncore.plausibility import METRICS as PLAUS, mean_plausibility

METRICS = ("fid", "r_top1", "r_top2", "r_top3", "mm_dist", "diversity", "multimodality")
LABELS = {"fid": "FID", "r_top1": "R-Top1", "r_top2": "R-Top2", "r_top3": "R-Top3",
          "mm_dist": "MM-Dist", "diversity": "Diversity", "multimodality": "MModality"}


@dataclass
class EvalItem:
    mid: str
    caption: Caption
    features: np.ndarray   # the protocol crop of the ground truth
    full: np.ndarray       # the whole ground-truth motion


class Generator(Protocol):
    name: str
    stochastic: bool

    def generate(self, items: Sequence[EvalItem], rng: np.random.Generator) -> list[np.ndarray]: ...


class RealMotion:
    name, stochastic = "Real motion", False

    def generate(self, items, rng):
        return [random_crop(it.full, rng) for it in items]


class VQVAEReconstruction:
    name, stochastic = "VQ-VAE reconstruction", False

    def __init__(self, model, corpus: MotionCorpus):
        self.model, self.norm = model.eval(), corpus.normalizer

    @torch.no_grad()
    def generate(self, items, rng):
        out: list[np.ndarray | None] = [None] * len(items)
        by_length: dict[int, list[int]] = {}
        for i, it in enumerate(items):
            by_length.setdefault(len(it.features), []).append(i)
        for idx in by_length.values():  # same length -> one batch, no padding effects
            x = np.stack([self.norm.normalize(items[i].features) for i in idx]).astype(np.float32)
            recon = self.model.decode(self.model.encode(torch.from_numpy(x))).numpy()
            for i, r in zip(idx, recon):
                out[i] = self.norm.denormalize(r)
        return out


def load_split(corpus: MotionCorpus, split: str, min_frames: int = 40) -> dict[str, tuple[np.ndarray, list[Caption]]]:
    feats = corpus.load_features(split, min_frames=min_frames)
    return {mid: (f, corpus.captions(mid)) for mid, f in feats.items()}


def draw_repeat(data, rng: np.random.Generator) -> list[EvalItem]:
    items = []
    for mid, (feats, caps) in data.items():
        cap = caps[int(rng.integers(len(caps)))]
        items.append(EvalItem(mid, cap, random_crop(feats, rng), feats))
    return items


class Progress:
    """What a long protocol run has finished, kept in a JSON file so the same command run again
    goes on where it stopped (``eval generation --resume DIR``): per repeat (or ``"plausibility"``)
    and row, the row's results and the random generator's state after it. Rows share one
    generator per repeat, so a row resumed from the state its predecessor left gives exactly the
    numbers an uninterrupted run gives. ``config`` (the split, seed, motions and rows) must match
    the file's; the number of repeats may grow between runs. ``assumed``: options added after a
    file may have been written, each with the value that reproduces a run made before it existed
    (a file that lacks such a key is read as having that value)."""

    def __init__(self, path, config: dict, assumed: dict | None = None):
        from pathlib import Path

        self.path, self.config = Path(path), json.loads(json.dumps(config))
        assumed = json.loads(json.dumps(assumed or {}))
        self.done: dict = {}
        if self.path.is_file():
            try:
                saved = json.loads(self.path.read_text())
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise ValueError(f"{self.path} is not a protocol progress file ({exc}); move it away "
                                 "or use another --resume folder") from exc
            theirs = {**assumed, **(saved.get("config") or {})}
            if theirs != self.config:
                differ = sorted(k for k in set(theirs) | set(self.config) if theirs.get(k) != self.config.get(k))
                raise ValueError(f"{self.path} holds another run (it differs in {', '.join(differ)}); "
                                 "use another --resume folder")
            self.done = saved.get("done", {})

    def get(self, chunk, row: str):
        """(results, rng state) of a finished row, or None."""
        got = self.done.get(str(chunk), {}).get(row)
        return None if got is None else (got["results"], got["rng"])

    def put(self, chunk, row: str, results: dict, rng: np.random.Generator) -> None:
        self.done.setdefault(str(chunk), {})[row] = {"results": results, "rng": rng.bit_generator.state}
        atomic_write(self.path, lambda fh: fh.write(json.dumps({"config": self.config, "done": self.done}).encode()),
                     "protocol progress")


def _subset(data: dict, seed: int, max_motions: int | None) -> dict:
    if max_motions and max_motions < len(data):
        keep = np.random.default_rng([seed, 99]).choice(sorted(data), size=max_motions, replace=False)
        data = {mid: data[mid] for mid in sorted(keep)}
    return data


def evaluate(evaluator, corpus: MotionCorpus, split: str, generators: Sequence[Generator],
             repeats: int = 20, seed: int = 0, mm_samples: int = 100, mm_repeats: int = 30,
             progress: bool = True, max_motions: int | None = None,
             resume: "Progress | None" = None) -> dict[str, dict]:
    """{row name: {metric: MetricResult}} for one split (``max_motions``: a fixed random subset
    of the split's motions, for generators too slow to run on all of them). ``resume``: rows
    of repeats already finished are taken from it and each newly finished one is added."""
    data = _subset(load_split(corpus, split), seed, max_motions)
    runs: dict[str, list[dict]] = {g.name: [] for g in generators}
    for r in tqdm(range(repeats), desc=f"evaluating {split}", disable=not progress):
        rng = np.random.default_rng([seed, r])
        items = draw_repeat(data, rng)
        text = real = None
        for g in generators:
            got = resume.get(r, g.name) if resume is not None else None
            if got is not None:
                runs[g.name].append(got[0])
                rng.bit_generator.state = got[1]
                continue
            if text is None:
                text = evaluator.encode_text([it.caption for it in items])
                real = evaluator.encode_motion([it.features for it in items])
            motion = evaluator.encode_motion(g.generate(items, rng))
            mm = None
            if g.stochastic and mm_repeats > 1:
                subset = items[:mm_samples]
                gens = [g.generate(subset, rng) for _ in range(mm_repeats)]
                mm = np.stack([evaluator.encode_motion(x) for x in gens], axis=1)
            runs[g.name].append({k: float(v) for k, v in evaluate_embeddings(text, motion, real, rng, mm_emb=mm).items()})
            if resume is not None:
                resume.put(r, g.name, runs[g.name][-1], rng)
    return {name: summarize(rows) for name, rows in runs.items()}


def plausibility_rows(corpus: MotionCorpus, split: str, generators: Sequence[Generator], seed: int = 0,
                      max_motions: int | None = None, progress: bool = False,
                      resume: "Progress | None" = None) -> dict[str, dict]:
    """Physical plausibility (``motioncore.plausibility``) of every row on one protocol draw of the
    split: ``"<row>"`` for what users get (generated motions after ``motioncore.clean.clean_motion``;
    real motions as they are) and ``"<row> (decoded)"`` for generated motions before cleaning.
    ``resume``: as ``evaluate``'s (chunk ``"plausibility"``)."""
    data = _subset(load_split(corpus, split), seed, max_motions)
    rng = np.random.default_rng([seed, 0])
    items = draw_repeat(data, rng)
    rows = {}
    for g in generators:
        got = resume.get("plausibility", g.name) if resume is not None else None
        if got is not None:
            rows.update(got[0])
            rng.bit_generator.state = got[1]
            continue
        feats = g.generate(items, rng)
        raw = [features_to_joints(f) for f in feats]
        mine = {}
        if isinstance(g, RealMotion):
            mine[g.name] = mean_plausibility(raw)
        else:
            mine[f"{g.name} (decoded)"] = mean_plausibility(raw)
            clean = [clean_motion(f).joints for f in tqdm(feats, desc=f"cleaning {g.name}", disable=not progress)]
            mine[g.name] = mean_plausibility(clean)
        mine = {k: {m: float(v) for m, v in r.items()} for k, r in mine.items()}
        rows.update(mine)
        if resume is not None:
            resume.put("plausibility", g.name, mine, rng)
    return rows


def format_plausibility(split: str, rows: dict[str, dict]) -> str:
    labels = {"floating_pct": "floating %", "penetration_pct": "penetr. %", "skate_mps": "skate m/s",
              "bone_var_pct": "bone var %", "jerk": "jerk m/s3", "max_jump_m": "max jump m"}
    head = f"{split + ' plausibility':<34}" + "".join(f"{labels[m]:>12}" for m in PLAUS)
    lines = [head, "-" * len(head)]
    for name, r in rows.items():
        lines.append(f"{name:<34}" + "".join(f"{r[m]:>12.3f}" for m in PLAUS))
    return "\n".join(lines)


def format_table(split: str, results: dict[str, dict]) -> str:
    head = f"{split:<24}" + "".join(f"{LABELS[m]:>16}" for m in METRICS)
    lines = [head, "-" * len(head)]
    for row, metrics in results.items():
        cells = [f"{metrics[m].mean:.3f}±{metrics[m].interval:.3f}" if m in metrics else "-"
                 for m in METRICS]
        lines.append(f"{row:<24}" + "".join(f"{c:>16}" for c in cells))
    return "\n".join(lines)


def to_json(results: dict[str, dict]) -> dict:
    return {row: {m: {"mean": r.mean, "interval": r.interval} for m, r in metrics.items()}
            for row, metrics in results.items()}
