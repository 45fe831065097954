"""Two rows of the generation protocol compared repeat by repeat (``eval paired``).

Every row of a protocol repeat is scored against the same draw: repeat ``r`` of split ``s`` with
seed ``k`` picks the same caption and the same crop of every motion whatever the rows or the run
(``generation.draw_repeat`` with ``default_rng([k, r])``). Much of a row's spread over repeats is
that draw's, shared by every row (on OOD a hard draw lifts the FID of both random-video rows by
several points). The difference of two rows within one repeat leaves it out, so the mean of those
differences, with a Student-t interval over the repeats, says whether one row is below the other
far more sharply than two overlapping mean ± 1.96·std/√n intervals do.

The rows are read from ``eval generation --resume`` folders (``generation-<split>.json``); both
may come from one folder or from two runs made with the same seed, split and motions.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

METRICS = ("fid", "r_top1", "r_top3", "mm_dist", "diversity")
SAME_DRAW = ("seed", "split", "max_motions")       # config keys that fix each repeat's draw


@dataclass
class PairedResult:
    split: str
    metric: str
    row_a: str
    row_b: str
    repeats: list[int]
    a: list[float]
    b: list[float]

    @property
    def differences(self) -> np.ndarray:
        return np.asarray(self.a) - np.asarray(self.b)

    @property
    def mean(self) -> float:
        return float(self.differences.mean())

    @property
    def half_width(self) -> float:
        """Half the 95 % Student-t interval of the mean difference (nan with one repeat)."""
        n = len(self.repeats)
        if n < 2:
            return float("nan")
        from scipy.stats import t

        return float(t.ppf(0.975, n - 1) * self.differences.std(ddof=1) / np.sqrt(n))

    def verdict(self) -> str:
        lo, hi = self.mean - self.half_width, self.mean + self.half_width
        if not np.isfinite(self.half_width):
            return "one repeat: no interval"
        if hi < 0:
            return "A below B"
        if lo > 0:
            return "A above B"
        return "no difference shown"

    def to_json(self) -> dict:
        return {"split": self.split, "metric": self.metric, "row_a": self.row_a, "row_b": self.row_b,
                "repeats": self.repeats, "a": self.a, "b": self.b, "mean_difference": self.mean,
                "half_width": self.half_width, "verdict": self.verdict()}


def load_progress(folder: str | Path, split: str) -> dict:
    """The progress file of ``split`` in a ``--resume`` folder ({"config", "done"})."""
    path = Path(folder) / f"generation-{split}.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: not an `eval generation --resume` folder for split {split!r}")
    try:
        saved = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path} is not a protocol progress file ({exc})") from exc
    if not isinstance(saved, dict) or not isinstance(saved.get("done"), dict):
        raise ValueError(f"{path} is not a protocol progress file (no 'done' table)")
    return saved


def row_names(saved: dict) -> list[str]:
    """Every row name of a progress file, in the order its first repeat holds them."""
    names: list[str] = []
    for key, rows in saved["done"].items():
        if key.isdigit():
            names += [n for n in rows if n not in names]
    return names


def find_row(saved: dict, prefix: str, where: str) -> str:
    """The one row whose name starts with ``prefix`` (case-insensitive; a row's notes in
    brackets need not be typed)."""
    names = row_names(saved)
    exact = [n for n in names if n.split(" (")[0].lower() == prefix.strip().lower()]
    hits = exact or [n for n in names if n.lower().startswith(prefix.strip().lower())]
    if len(hits) != 1:
        short = ", ".join(sorted({n.split(" (")[0] for n in names})) or "none"
        what = "no row" if not hits else f"{len(hits)} rows"
        raise ValueError(f"{what} of {where} start with {prefix!r} (rows: {short})")
    return hits[0]


def paired(folder_a, row_a: str, folder_b, row_b: str, split: str,
           metrics=METRICS) -> list[PairedResult]:
    """Row A minus row B per repeat that both have finished, for each metric."""
    sa, sb = load_progress(folder_a, split), load_progress(folder_b, split)
    ca, cb = sa.get("config") or {}, sb.get("config") or {}
    differ = [k for k in SAME_DRAW if ca.get(k) != cb.get(k)]
    if differ:
        raise ValueError(f"{folder_a} and {folder_b} drew their repeats differently "
                         f"({', '.join(differ)} differ); their rows cannot be paired")
    na, nb = find_row(sa, row_a, str(folder_a)), find_row(sb, row_b, str(folder_b))
    reps = sorted(int(k) for k in sa["done"] if k.isdigit() and na in sa["done"][k]
                  and k in sb["done"] and nb in sb["done"][k])
    if not reps:
        raise ValueError(f"no repeat of split {split!r} has both {na.split(' (')[0]!r} and {nb.split(' (')[0]!r} finished")
    out = []
    for m in metrics:
        missing = [r for r in reps for s, n in ((sa, na), (sb, nb)) if m not in s["done"][str(r)][n]["results"]]
        if missing:
            raise ValueError(f"metric {m!r} is not in every repeat of these rows (repeat {missing[0]} lacks it)")
        a = [float(sa["done"][str(r)][na]["results"][m]) for r in reps]
        b = [float(sb["done"][str(r)][nb]["results"][m]) for r in reps]
        out.append(PairedResult(split, m, na, nb, reps, a, b))
    return out


def format_paired(results: list[PairedResult]) -> str:
    if not results:
        return ""
    r0 = results[0]
    lines = [f"{r0.split}: A = {r0.row_a.split(' (')[0]}, B = {r0.row_b.split(' (')[0]}, "
             f"repeats {', '.join(map(str, r0.repeats))}",
             f"{'metric':10s} {'A':>9s} {'B':>9s} {'A - B':>18s}  per repeat A - B",
             "-" * 78]
    for r in results:
        diff = f"{r.mean:+.3f} ± {r.half_width:.3f}"
        per = " ".join(f"{d:+.2f}" for d in r.differences)
        lines.append(f"{r.metric:10s} {np.mean(r.a):9.3f} {np.mean(r.b):9.3f} {diff:>18s}  {per}  ({r.verdict()})")
    return "\n".join(lines)
