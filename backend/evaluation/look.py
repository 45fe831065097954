"""A look at what users get for prompts the models never trained on: one motion per prompt
through the pipeline (retrieval, the LLM, decoding, clean-up, as the app makes it), a contact
sheet of stick figures to look at, and the facts a reader checks the words against, measured on
the joints (``motion_facts``).

The metrics (``eval generation``, ``eval follow``) judge many motions; this is the other half
of judging quality: a person looking at a few motions of new prompts, with the measured facts
beside them, so "walks backwards" is read off the joints rather than guessed from a drawing.
``python -m backend eval look`` runs it (``--help``).
"""
from __future__ import annotations

import numpy as np

from motioncore.features import facing_direction
from motioncore.skeleton import FPS, LEFT_FOOT, NUM_JOINTS, RIGHT_FOOT, lowest_point

# Wordings not in the corpus' caption templates: an OOD kind (cartwheel, backflip, crawl), a
# count on one named foot, a direction with a speed, a side.
PROMPTS = (
    "a man turns a cartwheel",
    "a woman does a backflip",
    "a person hops on the left foot three times",
    "someone walks backwards slowly",
    "a person kicks with the right leg",
    "a person crawls on all fours",
)
UP = np.array([0.0, 1.0, 0.0])
PELVIS, HEAD = 0, 15


def initial_axes(joints: np.ndarray, frames: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """(forward, left) unit horizontal vectors of the body over its first ``frames`` frames."""
    fwd = facing_direction(joints[:frames]).mean(0)
    fwd[1] = 0.0
    fwd /= max(np.linalg.norm(fwd), 1e-9)
    return fwd, np.cross(UP, fwd)


def motion_facts(joints: np.ndarray) -> dict:
    """What a prompt's words can be checked against, from joint positions (T, 22, 3), y up,
    metres, 20 fps: travel of the pelvis relative to the body's initial facing (``forward_m``
    < 0 is backwards, ``left_m`` < 0 is to the right), its mean horizontal speed, the share of
    frames upside down (head below pelvis), the pelvis' height range, each foot's highest point,
    the lowest body part (``lowest_point``) and how far the body turned (``turned_deg``: the
    facing's net change in degrees, > 0 to the left, 360 a full spin)."""
    p = np.asarray(joints, dtype=np.float64)
    if p.ndim != 3 or p.shape[1:] != (NUM_JOINTS, 3) or len(p) < 2:
        raise ValueError(f"expected joint positions (frames >= 2, {NUM_JOINTS}, 3), got {p.shape}")
    fwd, left = initial_axes(p)
    travel = p[-1, PELVIS] - p[0, PELVIS]
    step = np.linalg.norm(np.diff(p[:, PELVIS, [0, 2]], axis=0), axis=-1)
    seconds = len(p) / FPS
    return {
        "seconds": round(seconds, 2),
        "forward_m": round(float(travel @ fwd), 2),
        "left_m": round(float(travel @ left), 2),
        "speed_mps": round(float(step.sum() / seconds), 2),
        "upside_down_pct": round(100.0 * float(np.mean(p[:, HEAD, 1] < p[:, PELVIS, 1])), 1),
        "pelvis_height_m": [round(float(p[:, PELVIS, 1].min()), 2), round(float(p[:, PELVIS, 1].max()), 2)],
        "left_foot_top_m": round(float(p[:, list(LEFT_FOOT), 1].max()), 2),
        "right_foot_top_m": round(float(p[:, list(RIGHT_FOOT), 1].max()), 2),
        "lowest_m": round(float(lowest_point(p).min()), 3),
        "turned_deg": round(turned_degrees(p), 1),
    }


def turned_degrees(joints: np.ndarray) -> float:
    """Net change of the body's facing over the motion, in degrees (> 0: to the left, i.e.
    counterclockwise seen from above), summed frame to frame so that a double spin reads 720."""
    f = facing_direction(np.asarray(joints, dtype=np.float64))
    turn = np.einsum("ti,i->t", np.cross(f[:-1], f[1:]), UP)
    return float(np.degrees(np.arctan2(turn, np.einsum("ti,ti->t", f[:-1], f[1:])).sum()))


def look(pipeline, prompts=PROMPTS, model: str = "mcdpo", seed: int = 0, **generate_kw) -> list[dict]:
    """One motion per prompt as users get it; per prompt the retrieved video, how much it led the
    words, the facts, and the joints (for ``viewer.sheet.contact_sheet``)."""
    rows = []
    for prompt in prompts:
        r = pipeline.generate(prompt, model=model, seed=seed, **generate_kw)
        rows.append({"prompt": prompt, "model": model, "seed": seed, "video": r.video_id,
                     "video_lead": round(float(r.video_lead), 2), "mirrored": bool(r.mirrored),
                     "read_as": [x for x in r.read_as if x],
                     "picked": [f"{p['chosen'] + 1} of {p['samples']}" + (" (reader)" if p.get("reader") else "")
                                for p in r.picks if p],
                     **motion_facts(r.joints), "joints": r.joints})
    return rows


def format_rows(rows: list[dict]) -> str:
    head = ("| prompt | s | forward m | left m | turned ° | m/s | upside down | pelvis m | L/R foot top m "
            "| video (lead) |")
    lines = [head, "|---" * (head.count("|") - 1) + "|"]
    for r in rows:
        lines.append(f"| {r['prompt']} | {r['seconds']} | {r['forward_m']} | {r['left_m']} | {r['turned_deg']} | "
                     f"{r['speed_mps']} | {r['upside_down_pct']} % | {r['pelvis_height_m'][0]}-"
                     f"{r['pelvis_height_m'][1]} | {r['left_foot_top_m']} / {r['right_foot_top_m']} | "
                     f"{r['video']} ({r['video_lead']}) |"
                     + (f" read as: {' / '.join(r['read_as'])}" if r.get("read_as") else "")
                     + (f" picked: {', '.join(r['picked'])}" if r.get("picked") else ""))
    return "\n".join(lines)
