"""Small HTML/Markdown pieces of the page (router bars, hit table, distances, status)."""
from __future__ import annotations

import html
import re
from pathlib import Path

CSS = """
#router .vr-title {font-weight: 600; margin-bottom: 6px;}
#router .vr-row {display: flex; align-items: center; gap: 8px; margin: 4px 0;}
#router .vr-name {width: 64px; font-size: 0.9em;}
#router .vr-bar {flex: 1; height: 16px; background: var(--neutral-200, #e5e7eb); border-radius: 4px; overflow: hidden;}
#router .vr-fill {height: 100%; border-radius: 4px;}
#router .vr-action {background: #f97316;}
#router .vr-object {background: #3b82f6;}
#router .vr-val {width: 190px; font-size: 0.85em; font-variant-numeric: tabular-nums;}
#router table {font-size: 0.8em; margin-top: 8px; width: 100%;}
#router td, #router th {padding: 1px 6px; text-align: right;}
#router td:first-child, #router th:first-child {text-align: left;}
#router .vr-note {font-size: 0.85em; opacity: 0.8;}
"""

RETRIEVAL_NOTE = {
    "gemini": "retrieved by Gemini-MVR (fused score = w_action · action score + w_object · object score)",
    "random": "a random database video (the paper's baseline); scores shown for reference",
    "given": "the video you chose; scores computed for this prompt",
    "object": "ranked by the object channel only",
}


# what the two video panels hold, by retrieval mode (compare mode always uses random videos)
PANEL_LABELS = {
    "gemini": ("Reference video (rank 1 of Gemini-MVR, or your choice)",
               "Top-5 retrieved videos: click one to regenerate with it as the reference"),
    "object": ("Reference video (rank 1 of the object channel)",
               "Top-5 by the object channel: click one to regenerate with it as the reference"),
    "random": ("Reference video: a RANDOM database video (not retrieved)",
               "Random database videos (not a retrieval ranking; scores are for your prompt)"),
    "given": ("Reference video: the one you chose", "Videos of the last search"),
    "none": ("No reference video (text only)", "No videos (text only)"),
}


def caption_label(record: dict, n: int = 48) -> str:
    """What a database video shows: its first caption (synthetic videos) or its file name."""
    caps = (record.get("spec") or {}).get("captions") or []
    text = caps[0] if caps else Path(str(record.get("source", ""))).name or record.get("id", "")
    return text if len(text) <= n else text[: n - 1].rstrip() + "…"


def timing_text(parts: dict[str, float], total: float | None = None,
                first_visible: float | None = None) -> str:
    """"23.4 s in all (motion shown after 5.2 s): generation 8.1 s, MP4 7.0 s, ..." (parts over
    0.05 s). ``total``: the time the person waited, from the click (default: the parts' sum;
    what the parts leave out is shown as "other"); ``first_visible``: when the motion appeared."""
    parts = dict(parts)
    if total is None:
        total = sum(parts.values())
    else:
        rest = total - sum(parts.values())
        if rest >= 0.05:
            parts["other"] = rest
    shown = ", ".join(f"{k} {v:.1f} s" for k, v in parts.items() if v >= 0.05)
    seen = f" (motion shown after {first_visible:.1f} s)" if first_visible is not None else ""
    return f"{total:.1f} s in all{seen}" + (f": {shown}" if shown else "")


def _bar(name: str, cls: str, weight: float, score: float) -> str:
    pct = max(0.0, min(1.0, float(weight))) * 100
    return (f'<div class="vr-row"><span class="vr-name">{name}</span>'
            f'<div class="vr-bar"><div class="vr-fill {cls}" style="width:{pct:.1f}%"></div></div>'
            f'<span class="vr-val">weight {weight:.2f} · score {score:+.3f}</span></div>')


def router_html(router: dict | None, retrieval: str, hits: list[dict] | None = None) -> str:
    if router is None:
        return ('<div class="vr-note">No video: the model writes the motion from the text alone, '
                'so there are no router weights to show.</div>')
    rank = f" (rank {router['rank']})" if router.get("rank") else ""
    out = [f'<div class="vr-title">Router weights of {html.escape(router["id"])}{rank}</div>',
           _bar("action", "vr-action", router["w_action"], router["action_score"]),
           _bar("object", "vr-object", router["w_object"], router["object_score"]),
           f'<div class="vr-note">fused score {router["score"]:+.3f}; '
           f'{html.escape(RETRIEVAL_NOTE.get(retrieval, retrieval))}</div>']
    if hits:
        rows = "".join(
            f"<tr><td>{h['rank']}. {html.escape(h['id'])}</td><td>{h['score']:+.3f}</td>"
            f"<td>{h['action_score']:+.3f}</td><td>{h['object_score']:+.3f}</td>"
            f"<td>{h['w_action']:.2f} / {h['w_object']:.2f}</td></tr>" for h in hits)
        out.append("<table><tr><th>top-5</th><th>fused</th><th>action</th><th>object</th>"
                   f"<th>w act / obj</th></tr>{rows}</table>")
    return "\n".join(out)


def distances_md(runs: list) -> str:
    """Text-motion distances (evaluator space; lower = the motion matches the text better)."""
    if not runs:
        return ""
    lines = ["| model | tokens | seconds | text-motion distance ↓ |", "|---|---|---|---|"]
    for r in runs:
        d = "—" if r.distance is None else f"{r.distance:.3f}"
        lines.append(f"| {r.label} | {len(r.result.codes)} | {r.result.seconds:.1f} | {d} |")
    return "\n".join(lines)


_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|~>])")
_ABS_PATH = re.compile(r"(?:/[^\s/'\"`]+)+/([^\s/'\"`]+)")


def md_text(text: str) -> str:
    """User text (a prompt, a file name, a video id) shown literally inside a status message:
    Markdown syntax escaped, so ``**x**`` or ``[a](b)`` stay text (``status_md`` escapes HTML)."""
    return _MD_SPECIAL.sub(r"\\\1", str(text))


def no_paths(message: str) -> str:
    """A message without absolute server paths: each is cut to its last component."""
    return _ABS_PATH.sub(r"\1", message)


def status_md(kind: str, message: str) -> str:
    """A status line; errors are bold (no emoji: they need fonts many systems lack). HTML in
    ``message`` is escaped: user text must never become page elements."""
    message = html.escape(message, quote=False)
    return f"**{message}**" if kind == "error" else message


__all__ = ["CSS", "PANEL_LABELS", "caption_label", "distances_md", "md_text", "no_paths", "router_html",
           "status_md", "timing_text"]
