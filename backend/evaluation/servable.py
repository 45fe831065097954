"""Can the models serve this prompt? A warning for motions the corpus does not contain.

Two signals, both already computed for every request:

- ``retrieval``: the best Gemini-MVR score of any database video for the prompt (a prompt about
  swimming finds no video that matches it well);
- ``distance``: the evaluator's text-motion distance between the prompt and the generated motion
  (the generator wrote *something*; the evaluator says it is far from the words).

``python -m backend eval servable`` calibrates one threshold per signal on held-out captions of
motions the corpus does contain (each threshold lets through all but ``miss`` of them) and measures
how many prompts of motions it does not contain (``UNSERVABLE_PROMPTS``, a fixed hand-written list
of kinds absent from both the training data and the video database) are flagged. Thresholds are set
on one half of each set and the rates reported on the other half. The result,
``checkpoints/servable/config.json``, is what the app and ``generate`` read. It records the
shipped files its signals came from (``sources``: the retriever's, the evaluator's and the
model's weights, by sha256): thresholds of other weights are stale (``stale_sources``), as
session 43 found (calibrated on a retriever, evaluator and model since replaced, the thresholds
then shipped flagged 25 % of the unservable prompts instead of 75 %).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from backend.checkpoints import checkpoints_dir, read_manifest
from backend.data.dataset import open_corpus

KNOWN_KINDS = ("walking", "turning", "running", "jumping", "kicking", "punching", "spinning",
               "spin kicks", "dancing", "getting up from the floor", "and, from its videos, "
               "cartwheels, backflips, crawling and rolling")

# Motions neither the generator's data nor the video database contains (corpus kinds:
# backend.data.corpus.IN_DIST_KINDS + OOD_KINDS). Even indices calibrate, odd ones measure.
UNSERVABLE_PROMPTS = (
    "a person swims breaststroke", "a person rides a bicycle", "a person plays the guitar",
    "someone juggles three balls", "a person skis down a slope", "a man rows a boat",
    "a person does push-ups on the floor", "a woman does sit-ups", "a person climbs a ladder",
    "a person swings a golf club", "a person serves a tennis ball", "someone holds a yoga tree pose",
    "a person lifts a heavy box from the floor", "a person sits down on a chair",
    "a person lies down in bed and sleeps", "a person types on a keyboard",
    "a person brushes their teeth", "a person does deep squats", "a person rides a horse",
    "a person rides a skateboard", "a person throws a baseball", "a person paints a wall with a roller",
    "a person sweeps the floor with a broom", "a person drinks from a cup",
)


@dataclass
class ServableCheck:
    min_retrieval: float          # warn below this best Gemini-MVR score
    max_distance: float           # warn above this text-motion distance
    false_alarm: float = 0.0      # held-out servable captions flagged (share)
    hit_rate: float = 0.0         # held-out unservable prompts flagged (share)
    model: str = "mcdpo"
    sources: dict = field(default_factory=dict)    # {shipped weight file: sha256} the signals came from

    def problems(self, retrieval: float | None, distance: float | None) -> list[str]:
        out = []
        if retrieval is not None and retrieval < self.min_retrieval:
            out.append(f"no database video matches it well (best score {retrieval:+.2f}, "
                       f"usual > {self.min_retrieval:+.2f})")
        if distance is not None and distance > self.max_distance:
            out.append(f"the motion is far from the words (text-motion distance {distance:.2f}, "
                       f"usual < {self.max_distance:.2f})")
        return out

    def warning(self, retrieval: float | None, distance: float | None) -> str | None:
        """A sentence for the person, or None when nothing looks wrong."""
        probs = self.problems(retrieval, distance)
        if not probs:
            return None
        return ("This motion may be outside what the models know: " + "; ".join(probs)
                + ". They know " + ", ".join(KNOWN_KINDS) + ".")

    def save_pretrained(self, folder: str | Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "config.json").write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def from_pretrained(cls, folder: str | Path | None = None) -> "ServableCheck | None":
        """The shipped check, or None when it has not been calibrated (no warning then)."""
        f = Path(folder or checkpoints_dir() / "servable") / "config.json"
        if not f.is_file():
            return None
        return cls(**json.loads(f.read_text()))


def signal_sources(model: str = "mcdpo", root: Path | None = None) -> dict[str, str]:
    """{file: sha256} of the shipped weights the two signals depend on: the retriever (the
    score), the evaluator (the distance) and the motion LLM ``model`` (the motion it measures)."""
    folders = ("retriever", "evaluator", f"llm-{model}")
    return {rel: digest for digest, rel, _ in read_manifest(root)
            if rel.split("/")[0] in folders and rel.endswith(".safetensors")}


def stale_sources(check: ServableCheck, root: Path | None = None) -> list[str]:
    """The signal sources whose shipped weights differ from those ``check`` was calibrated on
    (every source, for a check that recorded none)."""
    now = signal_sources(check.model, root)
    return sorted(rel for rel in set(now) | set(check.sources) if now.get(rel) != check.sources.get(rel))


def prompt_signals(pipe, texts: list[str], model: str = "mcdpo", seed: int = 0,
                   progress: bool = True) -> np.ndarray:
    """(N, 2): best Gemini-MVR score and text-motion distance of ``model``'s motion per prompt."""
    rows = []
    for t in tqdm(texts, desc="servability signals", disable=not progress, leave=False):
        res = pipe.generate(t, model=model, retrieval="gemini", seed=seed, k=1)
        rows.append((res.hits[0].score if res.hits else np.nan,
                     pipe.text_motion_distance(res.text, res.features)))
    return np.asarray(rows, np.float64)


def held_out_rates(check: ServableCheck, servable: np.ndarray, unservable: np.ndarray) -> tuple[float, float]:
    """(false alarm, hit rate) of ``check`` on the odd rows of each set (those ``calibrate``
    holds out)."""
    flagged = lambda rows: float(np.mean([bool(check.problems(r, d)) for r, d in rows])) if len(rows) else 0.0
    return flagged(servable[1::2]), flagged(unservable[1::2])


def calibrate(servable: np.ndarray, unservable: np.ndarray, miss: float = 0.025,
              model: str = "mcdpo") -> ServableCheck:
    """Thresholds from the even rows of each set, rates on the odd rows. Each threshold lets
    through all but ``miss`` of the servable calibration prompts."""
    cal = servable[0::2]
    check = ServableCheck(min_retrieval=float(np.quantile(cal[:, 0], miss)),
                          max_distance=float(np.quantile(cal[:, 1], 1 - miss)), model=model)
    check.false_alarm, check.hit_rate = held_out_rates(check, servable, unservable)
    return check


def run_calibration(pipe, n_captions: int = 200, model: str = "mcdpo", seed: int = 0,
                    miss: float = 0.025, split: str = "test", progress: bool = True,
                    current: ServableCheck | None = None) -> tuple[ServableCheck, dict]:
    """Signals of ``n_captions`` held-out captions (one per motion) and of UNSERVABLE_PROMPTS.
    ``current`` (the shipped check, say) is measured on the same held-out rows, under
    ``report["current"]``: thresholds calibrated on other models or another evaluator drift."""
    corpus = open_corpus(progress=progress)
    texts = []
    for mid in corpus.split_ids(split)[:n_captions]:
        caps = corpus.captions(mid)
        if caps:
            texts.append(caps[0].text)
    serv = prompt_signals(pipe, texts, model, seed, progress)
    unserv = prompt_signals(pipe, list(UNSERVABLE_PROMPTS), model, seed, progress)
    check = calibrate(serv, unserv, miss, model)
    check.sources = signal_sources(model)
    report = {"captions": len(texts), "split": split, "unservable": len(UNSERVABLE_PROMPTS),
              "servable_median": np.median(serv, 0).round(3).tolist(),
              "unservable_median": np.median(unserv, 0).round(3).tolist(),
              "unservable_flagged_by": {
                  "retrieval": float(np.mean(unserv[1::2, 0] < check.min_retrieval)),
                  "distance": float(np.mean(unserv[1::2, 1] > check.max_distance))},
              **asdict(check)}
    if current is not None:
        fa, hit = held_out_rates(current, serv, unserv)
        report["current"] = {"min_retrieval": current.min_retrieval, "max_distance": current.max_distance,
                             "false_alarm": fa, "hit_rate": hit}
    return check, report


__all__ = ["KNOWN_KINDS", "ServableCheck", "UNSERVABLE_PROMPTS", "calibrate", "held_out_rates",
           "prompt_signals", "run_calibration", "signal_sources", "stale_sources"]
